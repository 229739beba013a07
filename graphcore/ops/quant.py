"""Quantized operators: QuantizeLinear / DequantizeLinear (QDQ), the QLinear* operators (QOperator) and
dynamic quantization (DynamicQuantizeLinear, MatMulInteger, ConvInteger).

A quantized tensor holds integers ``q`` standing for ``(q - zero_point) * scale``, so in the quantized
domain a removed channel is not 0 but its zero point: ``Q(0) = zp`` and ``DQ(zp) = 0`` exactly, and an
integer accumulation over ``(x - x_zp) * (w - w_zp)`` gets nothing from a weight slice holding ``w_zp``.
Each operator here declares which operands are quantized (``quantized``: data, scale and zero point
operand, and the axis or block they run along), and takes its channel semantics from the float operator
it computes (QLinearConv is a Conv, QLinearAdd an Add ...): the same rule runs on a stand-in node.

The zero flag of an integer tensor therefore means "holds its zero point". That is only sound where
every reader uses the zero point it was written with: a producer keeps the flags of its output only when
each consumer reads it as a quantized operand with an equal zero point (or, for a zero point of 0, reads
it at all); a quantized weight counts as a parameter that can be zeroed (``mark_quantized_weights``)
only when all its readers agree on its zero point, which is then what construct fills removed slices
with. Per-axis scales and zero points are linked to the channel axis they run along (sliced with it);
blocked ones tie each block of ``block_size`` channels to its scale, so only whole blocks go.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Graph, Node, Value
from graphcore.ops.common import norm_axis, rank
from graphcore.ops.registry import QuantOperand, ShrinkView, register_op, rule_for
from graphcore.ops.shape import broadcast_dims, pool_shape, same_shape, windowed_dims
from graphcore.ops.stems import gemm_shape

__all__ = ["MS", "ZeroPoint", "mark_quantized_weights", "quantized_operand", "zero_point_of"]

MS = "com.microsoft"

ZeroPoint = tuple[Any, ...]
"""What a quantized tensor's zero point is, comparable with ``==``: ``("zero",)`` (absent or all
zeros), ``("const", axis, block, shape, values)`` or ``("value", name, axis, block)`` (computed)."""
ZERO: ZeroPoint = ("zero",)


# -- zero points ------------------------------------------------------------------------------------------


def _scalar_like(v: Value | None) -> bool:
    """A scale or zero point that holds one number (shape ``[]`` or ``[1]``)."""
    return v is not None and v.shape is not None and all(d == 1 for d in v.shape)


def zero_point_of(node: Node, q: QuantOperand) -> ZeroPoint | None:
    """The zero point operand ``q`` of ``node`` is read with; None when it cannot be told."""
    zp = node.input(q.zero_point) if q.zero_point is not None else None
    if zp is None:
        return ZERO
    r = rank(node.input(q.data))
    axis = None if q.axis is None or r is None else norm_axis(q.axis, r)
    if q.axis is not None and axis is None:
        return None
    if zp.const is not None:
        arr = np.asarray(zp.const)
        if not arr.any():
            return ZERO
        if arr.size == 1:
            return ("const", None, 0, (), (int(arr.reshape(-1)[0]),))
        return ("const", axis, q.block, tuple(arr.shape), tuple(int(x) for x in arr.reshape(-1)))
    if zp.is_param:
        return None  # a weight-sized zero point whose values are not held: cannot be compared
    return ("value", zp.name, axis, q.block)


def quantized_operand(node: Node, index: int) -> QuantOperand | None:
    """How ``node`` reads operand ``index`` when it reads it as a quantized tensor (its rule's
    ``quantized`` hook), else None."""
    rule = rule_for(node)
    if rule is None or rule.quantized is None:
        return None
    return next((q for q in rule.quantized(node) if q.data == index), None)


def _readers_agree(v: Value, zp: ZeroPoint | None) -> bool:
    """Does every consumer of ``v`` read "holds the zero point ``zp``" as zero? A quantized reader must
    use the same zero point; any other reader sees the integers as they are, so ``zp`` must be 0."""
    if zp is None:
        return False
    for c, i in v.consumers:
        q = quantized_operand(c, i)
        if (q is None and zp != ZERO) or (q is not None and zero_point_of(c, q) != zp):
            return False
    return True


_NOT_INTEGER = ("float", "bfloat", "complex", "bool", "str")


def mark_quantized_weights(graph: Graph) -> None:
    """An integer weight read only as a quantized operand, with one constant zero point by all its
    readers, is a parameter that can be zeroed: its zero means its zero point (construct fills removed
    slices with it). Reads of one stored tensor that the frontend gives values of their own (``alias_of``)
    count together: the stored tensor has one zero. Called by the ONNX frontend once the graph is built."""
    stored: dict[str, list[Value]] = {}
    floating: set[str] = set()  # a float weight (a frozen statistic) holds no quantized integers
    for v in graph.params:
        key = getattr(v, "alias_of", None) or v.name
        if v.trainable or (v.dtype or "").startswith(_NOT_INTEGER):
            floating.add(key)  # most weights: they are never grouped
        else:
            stored.setdefault(key, []).append(v)
    for key, uses in stored.items():
        if key in floating:
            continue
        if not any(v.consumers for v in uses):
            continue
        seen: set[ZeroPoint] = set()
        for c, i in (use for v in uses for use in v.consumers):
            q = quantized_operand(c, i)
            zp = None if q is None else zero_point_of(c, q)
            if zp is None or zp[0] == "value":
                break
            seen.add(zp)
        else:
            if len(seen) == 1:
                for v in uses:
                    v.trainable = True


# -- the declarations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """A quantized operator as the float operator ``proxy`` it computes, on operands ``operands`` (our
    indices, None for an absent one), with its output quantized by operands ``out`` (scale, zero point;
    None: a float or int32 output, whose zero is 0)."""

    proxy: str
    operands: Callable[[Node], Sequence[int | None]]
    quantized: Callable[[Node], tuple[QuantOperand, ...]]
    out: tuple[int, int] | None = None
    attrs: Callable[[Node], dict[str, Any]] | None = None


def _stand_in(node: Node, spec: _Spec) -> Node:
    """The float operator ``node`` computes, over the same Values (so the channel links are ours)."""
    ins = [None if i is None else node.input(i) for i in spec.operands(node)]
    attrs = node.attrs if spec.attrs is None else spec.attrs(node)
    return Node(name=node.name, op=spec.proxy, inputs=ins, outputs=node.outputs, attrs=attrs)


def _relate_scale(ctx: ChannelGraph, node: Node, q: QuantOperand) -> None:
    """Link a per-axis scale and zero point to the channels they quantize; a blocked one ties each
    block of channels to its entry; a per-tensor one is structure."""
    x = node.input(q.data)
    for idx in (q.scale, q.zero_point):
        p = node.input(idx) if idx is not None else None
        if p is None or p.shape is None:
            continue
        if q.axis is None:
            if not _scalar_like(p):
                ctx.pin_all(p, f"{node.op}: a per-tensor scale with more than one value")
                ctx.pin_all(x, f"{node.op}: a per-tensor scale with more than one value")
            for a in range(len(p.shape)):
                ctx.fix(p, a, "per-tensor quantization parameter")
            continue
        r = rank(x)
        if x is None or r is None:
            ctx.pin_all(p, f"{node.op} with unknown shapes")
            continue
        ax = norm_axis(q.axis, r)
        if q.block <= 0:
            if len(p.shape) != 1 or not ctx.link(p, 0, x, ax):
                ctx.pin_all(p, f"{node.op}: per-axis scale does not fit its axis")
                ctx.pin(x, ax, f"{node.op}: per-axis scale does not fit its axis")
            continue
        assert x.shape is not None
        d = x.shape[ax]
        if len(p.shape) != r or not isinstance(d, int):
            ctx.pin_all(p, f"{node.op}: blocked scale does not fit its input")
            ctx.pin_all(x, f"{node.op}: blocked scale does not fit its input")
            continue
        # Each scale covers a block of channels: the block goes whole or not at all.
        idx_x = np.arange(d)
        ctx.link_index(x, ax, idx_x, p, ax, idx_x // q.block)
        for a in range(r):
            if a != ax:
                ctx.link(p, a, x, a)


def _relate(spec: _Spec) -> Callable[[ChannelGraph, Node], None]:
    def relate(ctx: ChannelGraph, node: Node) -> None:
        stand_in = _stand_in(node, spec)
        rule = rule_for(stand_in)
        if rule is None:  # pragma: no cover - every proxy is a built-in op
            raise RuntimeError(f"no rule for {spec.proxy}")
        rule.relate(ctx, stand_in)  # first: a group's report names the weight before its scale
        for q in spec.quantized(node):
            _relate_scale(ctx, node, q)
        y = node.outputs[0]
        out_zp: ZeroPoint | None = ZERO
        if spec.out is not None and node.input(spec.out[0]) is not None:
            _relate_out(ctx, node, *spec.out)
            out_zp = _out_zero_point(node, spec.out[1])
        if not _readers_agree(y, out_zp):
            for a in range(y.rank or 0):
                ctx.set_zero(y, a, False)

    return relate


def _relate_out(ctx: ChannelGraph, node: Node, scale_i: int, zp_i: int) -> None:
    """The output's scale and zero point: one value each (per-axis requantization is not declared)."""
    for i in (scale_i, zp_i):
        p = node.input(i)
        if p is None or p.shape is None:
            continue
        if not _scalar_like(p):
            ctx.pin_all(node.outputs[0], f"{node.op}: an output scale with more than one value")
        for a in range(len(p.shape)):
            ctx.fix(p, a, "per-tensor quantization parameter")


def _out_zero_point(node: Node, zp_i: int) -> ZeroPoint | None:
    """The zero point a QLinear operator writes its output with (one value), as ``zero_point_of``
    describes a reader's."""
    zp = node.input(zp_i)
    if zp is None:
        return ZERO
    if not _scalar_like(zp):
        return None
    if zp.const is not None:
        v = int(np.asarray(zp.const).reshape(-1)[0])
        return ZERO if v == 0 else ("const", None, 0, (), (v,))
    return None if zp.is_param else ("value", zp.name, None, 0)


def _per_tensor(data: int, scale: int | None, zp: int | None) -> Callable[[Node], QuantOperand]:
    return lambda node: QuantOperand(data, scale, zp)


def _per_axis(
    data: int, scale: int, zp: int | None, axis: Callable[[Node], int]
) -> Callable[[Node], QuantOperand]:
    """Per tensor when the scale holds one value, else per axis ``axis(node)``."""

    def operand(node: Node) -> QuantOperand:
        if _scalar_like(node.input(scale)):
            return QuantOperand(data, scale, zp)
        return QuantOperand(data, scale, zp, axis(node))

    return operand


def _quantized(*parts: Callable[[Node], QuantOperand]) -> Callable[[Node], tuple[QuantOperand, ...]]:
    def quantized(node: Node) -> tuple[QuantOperand, ...]:
        return tuple(p(node) for p in parts)

    return quantized


def _linear_q(node: Node) -> tuple[QuantOperand, ...]:
    """QuantizeLinear / DequantizeLinear: operand 0 by scale 1 and zero point 2, per tensor, per
    ``axis`` or in blocks of ``block_size`` along it."""
    block = int(node.attr("block_size", 0) or 0)
    axis = int(node.attr("axis", 1))
    if block > 0:
        return (QuantOperand(0, 1, 2, axis, block),)
    return (_per_axis(0, 1, 2, lambda n: axis)(node),)


def _quantize_relate(ctx: ChannelGraph, node: Node) -> None:
    """QuantizeLinear: elementwise, Q(0) = zero point; its output is read as holding the zero point."""
    (q,) = _linear_q(node)
    stand_in = Node(name=node.name, op="Identity", inputs=[node.input(0)], outputs=node.outputs)
    rule = rule_for(stand_in)
    assert rule is not None
    rule.relate(ctx, stand_in)
    _relate_scale(ctx, node, q)
    y = node.outputs[0]
    if not _readers_agree(y, zero_point_of(node, q)):
        for a in range(y.rank or 0):
            ctx.set_zero(y, a, False)


def _dynamic_quantize_relate(ctx: ChannelGraph, node: Node) -> None:
    """DynamicQuantizeLinear: the scale comes from the range of the whole tensor, extended to hold 0,
    so removing a channel is exact only where it is zero; a zero input becomes the zero point."""
    x, y = node.input(0), node.outputs[0]
    stand_in = Node(name=node.name, op="Identity", inputs=[x], outputs=[y])
    rule = rule_for(stand_in)
    assert rule is not None
    rule.relate(ctx, stand_in)
    for a in range(rank(x) or 0):
        ctx.require_zero([(x, a)], "DynamicQuantizeLinear takes the range of the whole tensor")
    zp = node.outputs[2] if len(node.outputs) > 2 else None
    out_zp = None if zp is None else ("value", zp.name, None, 0)
    if not _readers_agree(y, out_zp):
        for a in range(y.rank or 0):
            ctx.set_zero(y, a, False)


def _from_spec(spec: _Spec, what: str) -> Callable[..., Any]:
    """A hook of the stand-in's declaration (``cost``, ``shrink``), run on the stand-in."""

    def hook(node: Node, *args: Any) -> Any:
        stand_in = _stand_in(node, spec)
        rule = rule_for(stand_in)
        fn = getattr(rule, what, None) if rule is not None else None
        if fn is None:
            return 0 if what == "cost" else {}
        return fn(stand_in, *args)

    return hook


def _register(op: str, spec: _Spec, kind: str, domain: str = "", shape: Any = None) -> None:
    cost: Callable[[Node], int] = _from_spec(spec, "cost")
    shrink: Callable[[Node, ShrinkView], dict[str, Any]] = _from_spec(spec, "shrink")
    register_op(
        op,
        _relate(spec),
        kind=kind,
        domain=domain,
        shape=shape,
        cost=cost,
        shrink=shrink,
        quantized=spec.quantized,
    )


# -- output shapes of the com.microsoft operators (ONNX's inference does not know them) -----------------


def _shape_of(*indices: int) -> Callable[[ChannelGraph, Node], tuple[Dim, ...] | None]:
    def shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
        vs = [node.input(i) for i in indices]
        shapes = [v.shape for v in vs if v is not None and v.shape is not None]
        return broadcast_dims(shapes) if len(shapes) == len(indices) else None

    return shape


def _concat_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    xs = [node.input(i) for i in range(2, len(node.inputs), 3)]
    if not xs or any(x is None or x.shape is None for x in xs):
        return None
    shapes = [x.shape for x in xs if x is not None and x.shape is not None]
    r = len(shapes[0])
    axis = norm_axis(int(node.attr("axis", 0)), r)
    dims = [s[axis] for s in shapes]
    total: Dim = sum(d for d in dims if isinstance(d, int)) if all(isinstance(d, int) for d in dims) else None
    return (*shapes[0][:axis], total, *shapes[0][axis + 1 :])


def _conv_shape(data: int, weight: int) -> Callable[[ChannelGraph, Node], tuple[Dim, ...] | None]:
    def shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
        x, w = node.input(data), node.input(weight)
        if x is None or w is None or w.static_shape is None or len(w.static_shape) < 3:
            return None
        if x.shape is None or len(x.shape) != len(w.static_shape):
            return None
        kernel: list[Dim] = [int(k) for k in node.attr("kernel_shape") or w.static_shape[2:]]
        return (x.shape[0], w.static_shape[0], *windowed_dims(node, x.shape[2:], kernel))

    return shape


def _matmul_shape(a_i: int, b_i: int) -> Callable[[ChannelGraph, Node], tuple[Dim, ...] | None]:
    def shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
        a, b = node.input(a_i), node.input(b_i)
        if (
            a is None
            or b is None
            or a.shape is None
            or b.shape is None
            or len(a.shape) < 2
            or len(b.shape) < 2
        ):
            return None
        return (*broadcast_dims([a.shape[:-2], b.shape[:-2]]), a.shape[-2], b.shape[-1])

    return shape


def _qgemm_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    return gemm_shape(ctx, node, b_index=3)


# -- the table ---------------------------------------------------------------------------------------------


def _fixed(*indices: int | None) -> Callable[[Node], Sequence[int | None]]:
    return lambda node: indices


_CONV_Q = _quantized(
    _per_tensor(0, 1, 2), _per_axis(3, 4, 5, lambda n: 0), lambda n: QuantOperand(8, None, None)
)
_CONV_INT_Q = _quantized(_per_tensor(0, None, 2), lambda n: _int_weight(n, 1, 3, 0))
_MATMUL_INT_Q = _quantized(_per_tensor(0, None, 2), lambda n: _int_weight(n, 1, 3, -1))


def _int_weight(node: Node, data: int, zp: int, axis: int) -> QuantOperand:
    """ConvInteger / MatMulInteger weights carry only a zero point: one for all, or one per output
    channel (axis 0 of a Conv weight, the last axis of a MatMul's)."""
    z = node.input(zp)
    if z is None or _scalar_like(z):
        return QuantOperand(data, None, zp)
    return QuantOperand(data, None, zp, axis)


def _int_relate(spec: _Spec) -> Callable[[ChannelGraph, Node], None]:
    """ConvInteger / MatMulInteger: the zero point of the data operand must be one value (a per-row one
    would make each row its own quantization)."""
    inner = _relate(spec)

    def relate(ctx: ChannelGraph, node: Node) -> None:
        for q in spec.quantized(node):
            z = node.input(q.zero_point) if q.zero_point is not None else None
            if q.axis is None and z is not None and not _scalar_like(z):
                for v in [*node.inputs, *node.outputs]:
                    ctx.pin_all(v, f"{node.op} with a zero point per row")
                return
        inner(ctx, node)

    return relate


def _qgemm_b(node: Node) -> QuantOperand:
    return _per_axis(3, 4, 5, lambda n: 0 if n.attr("transB", 0) else 1)(node)


_SPECS: list[tuple[str, str, _Spec, str, Any]] = [
    ("", "DequantizeLinear", _Spec("Identity", _fixed(0), _linear_q), "accessory", None),
    ("", "QLinearConv", _Spec("Conv", _fixed(0, 3, 8), _CONV_Q, (6, 7)), "stem", _conv_shape(0, 3)),
    (
        "",
        "QLinearMatMul",
        _Spec(
            "MatMul", _fixed(0, 3), _quantized(_per_tensor(0, 1, 2), _per_axis(3, 4, 5, lambda n: -1)), (6, 7)
        ),
        "stem",
        _matmul_shape(0, 3),
    ),
    (
        MS,
        "QGemm",
        _Spec(
            "Gemm",
            _fixed(0, 3, 6),
            _quantized(_per_tensor(0, 1, 2), _qgemm_b, lambda n: QuantOperand(6, None, None)),
            (7, 8),
        ),
        "stem",
        _qgemm_shape,
    ),
    (
        MS,
        "QLinearAdd",
        _Spec("Add", _fixed(0, 3), _quantized(_per_tensor(0, 1, 2), _per_tensor(3, 4, 5)), (6, 7)),
        "joint",
        _shape_of(0, 3),
    ),
    (
        MS,
        "QLinearMul",
        _Spec("Mul", _fixed(0, 3), _quantized(_per_tensor(0, 1, 2), _per_tensor(3, 4, 5)), (6, 7)),
        "joint",
        _shape_of(0, 3),
    ),
    (
        MS,
        "QLinearConcat",
        _Spec(
            "Concat",
            lambda n: list(range(2, len(n.inputs), 3)),
            lambda n: tuple(QuantOperand(i, i + 1, i + 2) for i in range(2, len(n.inputs), 3)),
            (0, 1),
        ),
        "joint",
        _concat_shape,
    ),
    (
        MS,
        "QLinearAveragePool",
        _Spec("AveragePool", _fixed(0), _quantized(_per_tensor(0, 1, 2)), (3, 4)),
        "accessory",
        pool_shape,
    ),
    (
        MS,
        "QLinearSigmoid",
        _Spec("Sigmoid", _fixed(0), _quantized(_per_tensor(0, 1, 2)), (3, 4)),
        "accessory",
        same_shape,
    ),
    (
        MS,
        "QLinearLeakyRelu",
        _Spec("LeakyRelu", _fixed(0), _quantized(_per_tensor(0, 1, 2)), (3, 4)),
        "accessory",
        same_shape,
    ),
    (
        MS,
        "QLinearSoftmax",
        _Spec(
            "Softmax",
            _fixed(0),
            _quantized(_per_tensor(0, 1, 2)),
            (3, 4),
            # the Softmax it replaced: ``opset`` says which axis semantics (one axis, or all from it)
            lambda n: {"axis": n.attr("axis", -1), "_opset": int(n.attr("opset", 13))},
        ),
        "accessory",
        same_shape,
    ),
    # What the quantization tools write for int4 and older opsets: the same operators in com.microsoft.
    (MS, "DequantizeLinear", _Spec("Identity", _fixed(0), _linear_q), "accessory", same_shape),
]
for _domain, _op, _s, _kind, _shape in _SPECS:
    _register(_op, _s, _kind, _domain, _shape)


def global_pool_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """A global pool keeps batch and channels, every spatial axis becomes 1 (NHWC with channels_last,
    an attribute of the com.microsoft quantized pools)."""
    x = node.input(0)
    if x is None or x.shape is None or len(x.shape) < 3:
        return None
    if node.attr("channels_last", 0):
        return (x.shape[0], *[1] * (len(x.shape) - 2), x.shape[-1])
    return (x.shape[0], x.shape[1], *[1] * (len(x.shape) - 2))


# QLinearGlobalAveragePool pools NCHW (or NHWC with channels_last, not declared: pinned as unknown).
_GAP = _Spec("GlobalAveragePool", _fixed(0), _quantized(_per_tensor(0, 1, 2)), (3, 4))


def _global_pool_relate(ctx: ChannelGraph, node: Node) -> None:
    if node.attr("channels_last", 0):
        for v in [*node.inputs, *node.outputs]:
            ctx.pin_all(v, "QLinearGlobalAveragePool with channels_last")
        return
    _relate(_GAP)(ctx, node)


register_op(
    "QLinearGlobalAveragePool",
    _global_pool_relate,
    domain=MS,
    shape=global_pool_shape,
    quantized=_GAP.quantized,
)
register_op("QuantizeLinear", _quantize_relate)
register_op("QuantizeLinear", _quantize_relate, domain=MS, shape=same_shape)
register_op("DynamicQuantizeLinear", _dynamic_quantize_relate)
_CONV_INT = _Spec("Conv", _fixed(0, 1), _CONV_INT_Q)
_MATMUL_INT = _Spec("MatMul", _fixed(0, 1), _MATMUL_INT_Q)
register_op(
    "ConvInteger",
    _int_relate(_CONV_INT),
    kind="stem",
    shape=_conv_shape(0, 1),
    cost=_from_spec(_CONV_INT, "cost"),
    shrink=_from_spec(_CONV_INT, "shrink"),
    quantized=_CONV_INT_Q,
)
register_op(
    "MatMulInteger",
    _int_relate(_MATMUL_INT),
    kind="stem",
    shape=_matmul_shape(0, 1),
    cost=_from_spec(_MATMUL_INT, "cost"),
    quantized=_MATMUL_INT_Q,
)


# -- what onnxruntime's optimizer fuses dynamic quantization into (com.microsoft) -------------------------


def _with_bias(
    inner: Callable[[ChannelGraph, Node], None], bias: int
) -> Callable[[ChannelGraph, Node], None]:
    """A product plus a float bias along the output's last axis (the product's output channels)."""

    def relate(ctx: ChannelGraph, node: Node) -> None:
        inner(ctx, node)
        b, y = node.input(bias), node.outputs[0]
        r = rank(y)
        if b is None or r is None:
            return
        if b.rank != 1 or not ctx.link(b, 0, y, r - 1):
            ctx.pin_all(b, f"{node.op}: a bias that is not one value per output channel")
            ctx.pin(y, r - 1, f"{node.op}: a bias that is not one value per output channel")
            return
        ctx.set_zero(y, r - 1, ctx.zero(y, r - 1) & ctx.zero(b, 0))

    return relate


def _dynamic_matmul_relate(ctx: ChannelGraph, node: Node) -> None:
    """DynamicQuantizeMatMul quantizes its float input with a range taken over the whole tensor (held
    to include 0), like DynamicQuantizeLinear: a channel goes only where that input is zero."""
    a = node.input(0)
    for ax in range(rank(a) or 0):
        ctx.require_zero([(a, ax)], "DynamicQuantizeMatMul takes the range of its whole input")
    _relate(_DYNAMIC_MATMUL)(ctx, node)


_DYNAMIC_MATMUL = _Spec("MatMul", _fixed(0, 1), _quantized(_per_axis(1, 2, 3, lambda n: -1)))
_INT_TO_FLOAT = _Spec(
    "MatMul", _fixed(0, 1), _quantized(_per_tensor(0, 2, 4), _per_axis(1, 3, 5, lambda n: -1))
)
register_op(
    "DynamicQuantizeMatMul",
    _with_bias(_dynamic_matmul_relate, 4),
    kind="stem",
    domain=MS,
    shape=_matmul_shape(0, 1),
    cost=_from_spec(_DYNAMIC_MATMUL, "cost"),
    quantized=_DYNAMIC_MATMUL.quantized,
)
register_op(
    "MatMulIntegerToFloat",
    _with_bias(_relate(_INT_TO_FLOAT), 6),
    kind="stem",
    domain=MS,
    shape=_matmul_shape(0, 1),
    cost=_from_spec(_INT_TO_FLOAT, "cost"),
    quantized=_INT_TO_FLOAT.quantized,
)
