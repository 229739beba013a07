"""onnxruntime's fused stems (``com.microsoft``): a Conv, Gemm or MatMul with an epilogue, and 4-bit weights.

See ``graphcore/ops/contrib.py`` for the family. ``FusedConv`` and ``FusedGemm`` are Conv's and Gemm's
declarations with the activation's f(0) in the zero tracking; ``FusedMatMul`` / ``TransposeMatMul`` are a
MatMul with the last two axes of an operand swapped; ``MatMulNBits`` prunes output rows of its packed
weight with their scales and zero points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node, Value
from graphcore.ops.common import any_zero, rank
from graphcore.ops.contrib import MS_DOMAIN, pin_node, shape_of, static
from graphcore.ops.registry import ShrinkView, register_op, rules
from graphcore.ops.shape import conv_shape

__all__: list[str] = []


def _activation(node: Node) -> str:
    act = node.attr("activation", b"")
    return act.decode() if isinstance(act, bytes) else str(act)


def _fused_conv_keeps_zero(node: Node) -> bool:
    """Is the fused activation zero at zero? Relu, LeakyRelu, Tanh: yes; Clip when its bounds hold 0;
    Sigmoid, HardSigmoid and anything else: not assumed."""
    act = _activation(node)
    if act in ("Relu", "LeakyRelu", "Tanh", ""):
        return True
    if act == "Clip":
        params = [float(p) for p in node.attr("activation_params", [])]
        return len(params) == 2 and params[0] <= 0.0 <= params[1]
    return False


def _fused_conv(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::FusedConv(X, W, B, Z) = activation(Conv(X, W, B) + Z): Conv's declaration, Z an
    addend of the output's shape, and zero tracking through the activation's f(0)."""
    conv = rules()[("", "Conv")]
    conv.relate(ctx, node)
    y, z = node.outputs[0], node.input(3)
    if z is not None:
        if rank(z) == rank(y) and z.shape == y.shape:
            for a in range(len(shape_of(z))):
                ctx.link(z, a, y, a)
            ctx.set_zero(y, 1, ctx.zero(y, 1) & ctx.zero(z, 1))
        else:
            ctx.pin_all(z, "FusedConv addend Z of another shape")
            ctx.pin_all(y, "FusedConv addend Z of another shape")
    if not _fused_conv_keeps_zero(node):
        ctx.set_zero(y, 1, False)


def _conv_hook(name: str) -> Any:
    return getattr(rules()[("", "Conv")], name)


def _fused_conv_zero(node: Node, zero: Sequence[bool]) -> bool:
    conv_zero = _conv_hook("zero_when")
    z = zero[3] if len(zero) > 3 else True
    return bool(conv_zero(node, zero)) and z and _fused_conv_keeps_zero(node)


def _fused_conv_contraction(node: Node) -> tuple[int, int] | None:
    return _conv_hook("contraction")(node)


def _fused_conv_cost(node: Node) -> int:
    return _conv_hook("cost")(node)


def _fused_conv_shrink(node: Node, plan: ShrinkView) -> dict[str, Any]:
    return _conv_hook("shrink")(node, plan)


def _gemm_hook(name: str) -> Any:
    return getattr(rules()[("", "Gemm")], name)


def _fused_gemm_keeps_zero(node: Node) -> bool:
    """FusedGemm's activations that are zero at zero (its Clip bounds are not read: not assumed)."""
    return _activation(node) in ("Relu", "LeakyRelu", "Tanh", "")


def _fused_gemm(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::FusedGemm(A, B, C) = activation(alpha * op(A) @ op(B) + beta * C): Gemm's
    declaration, and zero tracking through the activation's f(0)."""
    _gemm_hook("relate")(ctx, node)
    y = node.outputs[0]
    if not _fused_gemm_keeps_zero(node):
        for axis in range(rank(y) or 0):
            ctx.set_zero(y, axis, False)


def _fused_gemm_zero(node: Node, zero: Sequence[bool]) -> bool:
    return bool(_gemm_hook("zero_when")(node, zero)) and _fused_gemm_keeps_zero(node)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _fused_matmul_labels(node: Node) -> tuple[str, str, str] | None:
    a, b, y = node.input(0), node.input(1), node.outputs[0]
    ra, rb, ry = rank(a), rank(b), rank(y)
    if ra is None or rb is None or ry is None or ra < 2 or rb < 2:
        return None
    batch = max(ra, rb) - 2
    labels = _LETTERS[:batch]
    la = labels[batch - (ra - 2) :] + ("KM" if int(node.attr("transA", 0)) else "MK")
    lb = labels[batch - (rb - 2) :] + ("NK" if int(node.attr("transB", 0)) else "KN")
    out = labels + "MN"
    return (la, lb, out) if len(out) == ry else None


def _fused_matmul(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::FusedMatMul(A, B) = alpha * op(A) @ op(B), op a transpose of the last two axes
    (transA, transB): a MatMul with labels swapped. transBatchA/B move the batch axes: not declared."""
    from graphcore.ops.stems import contraction

    labels = _fused_matmul_labels(node)
    a, b, y = node.input(0), node.input(1), node.outputs[0]
    batch_moved = int(node.attr("transBatchA", 0)) or int(node.attr("transBatchB", 0))
    if a is None or b is None or labels is None or batch_moved:
        pin_node(ctx, node, f"{node.op} with transBatch or shapes of rank < 2: not declared")
        return
    contraction(ctx, [(a, labels[0]), (b, labels[1])], y, labels[2], node.op)


def _fused_matmul_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    from graphcore.ops.shape import broadcast_dims

    a, b = node.input(0), node.input(1)
    if a is None or b is None or a.shape is None or b.shape is None or len(a.shape) < 2 or len(b.shape) < 2:
        return None
    if int(node.attr("transBatchA", 0)) or int(node.attr("transBatchB", 0)):
        return None
    m = a.shape[-1] if int(node.attr("transA", 0)) else a.shape[-2]
    n = b.shape[-2] if int(node.attr("transB", 0)) else b.shape[-1]
    batch = broadcast_dims([a.shape[:-2], b.shape[:-2]]) if len(a.shape) > 2 or len(b.shape) > 2 else ()
    return (*batch, m, n)


def _fused_matmul_cost(node: Node) -> int:
    a, y = node.input(0), node.outputs[0]
    if a is None or a.shape is None or y.shape is None or len(a.shape) < 2:
        return 0
    k = a.shape[-2] if int(node.attr("transA", 0)) else a.shape[-1]
    if not isinstance(k, int):
        return 0
    return 2 * math.prod(d if isinstance(d, int) else 1 for d in y.shape) * k


def _fused_matmul_contraction(node: Node) -> tuple[int, int] | None:
    b = node.input(1)
    if int(node.attr("transA", 0)) or b is None or b.rank != 2:
        return None
    return (1, 1 if int(node.attr("transB", 0)) else 0)


def _nbits(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::MatMulNBits(A (..., K), B (N, k_blocks, blob), scales (N * k_blocks or
    (N, k_blocks)), zero_points (packed uint8 (N * ceil(k_blocks * bits / 8)) or N * k_blocks of the
    scales' type), g_idx (K), bias (N)) -> Y (..., N).

    Output channel n owns row n of B, its k_blocks scales and zero points and bias n: all sliced along N
    (the shrink hook rewrites attribute ``N``). Input channels go in whole quantization blocks (block j
    of A's K axis with B[:, j] and scales[:, j], ``K`` rewritten) where nothing else is laid out along
    K: symmetric weights (no zero points, whose 4-bit values pack two blocks to a byte), no g_idx, 2-D
    scales. Otherwise the K axis is pinned.
    """
    a, b, scales, zp, g_idx, bias = (node.input(i) for i in range(6))
    y = node.outputs[0]
    n_out, k_in = int(node.attr("N", 0)), int(node.attr("K", 0))
    r = rank(a)
    ok = a is not None and b is not None and scales is not None and r is not None and r == rank(y)
    if (
        not ok
        or b is None
        or rank(b) != 3
        or static(shape_of(b)[0]) != n_out
        or n_out <= 0
        or static(shape_of(y)[-1]) != n_out
    ):
        pin_node(ctx, node, "MatMulNBits with shapes that do not match its N")
        return
    assert a is not None and b is not None and scales is not None and r is not None
    k_blocks = static(shape_of(b)[1])
    bits = int(node.attr("bits", 4))
    per_row = _per_row(scales, n_out)
    if k_blocks is None or per_row != k_blocks:
        pin_node(ctx, node, "MatMulNBits scales of an undeclared shape")
        return
    for ax in range(r - 1):
        if ctx.link(a, ax, y, ax):
            ctx.set_zero(y, ax, ctx.zero(a, ax))
    reason = "MatMulNBits packs its K axis into blocks of bits: not prunable"
    block = int(node.attr("block_size", 0))
    whole_blocks = (
        zp is None
        and g_idx is None
        and rank(scales) == 2
        and block > 0
        and k_in == k_blocks * block
        and static(shape_of(a)[r - 1]) == k_in
    )
    ctx.fix(b, 2, "MatMulNBits: the bytes of one quantization block")
    if whole_blocks:
        ctx.tie_blocks(a, r - 1, block)
        ctx.link_index(a, r - 1, np.arange(k_blocks) * block, b, 1, np.arange(k_blocks))
        ctx.link(scales, 1, b, 1)
        ctx.require_zero([(a, r - 1)], "MatMulNBits sums over its K axis")
    else:
        ctx.pin(a, r - 1, reason)
        ctx.fix(b, 1, reason)
    ctx.link(b, 0, y, r - 1)
    _link_rows(ctx, scales, n_out, k_blocks, y, r - 1, None if whole_blocks else reason)
    zero = _rows_zero(ctx, scales, n_out)
    if zp is not None:
        zp_row = k_blocks if zp.dtype == scales.dtype else (k_blocks * bits + 7) // 8
        if _per_row(zp, n_out) != zp_row:
            pin_node(ctx, node, "MatMulNBits zero_points of an undeclared shape")
            return
        _link_rows(ctx, zp, n_out, zp_row, y, r - 1, reason)
    ctx.pin_all(g_idx, "MatMulNBits g_idx: indexed by K")
    if bias is not None:
        if rank(bias) == 1 and static(shape_of(bias)[0]) == n_out:
            ctx.link(bias, 0, y, r - 1)
            zero &= ctx.zero(bias, 0)
        else:
            ctx.pin_all(bias, "MatMulNBits bias of an undeclared shape")
    ctx.set_zero(y, r - 1, zero)
    if k_in <= 0:
        ctx.pin(y, r - 1, "MatMulNBits without K")


def _per_row(v: Value, n: int) -> int | None:
    """Elements per output row of a 1-D (N * k) or 2-D (N, k) tensor."""
    s = v.static_shape
    if s is None:
        return None
    if len(s) == 1 and s[0] % n == 0:
        return s[0] // n
    if len(s) == 2 and s[0] == n:
        return s[1]
    return None


def _link_rows(
    ctx: ChannelGraph, v: Value, n: int, per_row: int, y: Value, axis: int, reason: str | None
) -> None:
    """Row r of ``v`` (its elements r * per_row .. when flat) belongs to output channel r; a 2-D
    tensor's other axis is fixed with ``reason`` (None: the caller relates it)."""
    if rank(v) == 2:
        ctx.link(v, 0, y, axis)
        if reason is not None:
            ctx.fix(v, 1, reason)
        return
    ctx.tie_blocks(v, 0, per_row)
    ctx.link_index(v, 0, np.arange(n) * per_row, y, axis, np.arange(n))


def _rows_zero(ctx: ChannelGraph, scales: Value, n: int) -> np.ndarray:
    """An output row is zero when all its scales are: every dequantized weight of it is 0 * q."""
    z = ctx.zero(scales, 0)
    if z.size == 0 or z.size % n:
        return np.zeros(n, bool)
    return np.asarray(z.reshape(n, -1).all(axis=1), dtype=bool)


def _nbits_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    a = node.input(0)
    n = int(node.attr("N", 0))
    if a is None or a.shape is None or not a.shape or n <= 0:
        return None
    return (*a.shape[:-1], n)


def _shrink_nbits(node: Node, plan: ShrinkView) -> dict[str, Any]:
    y = node.outputs[0]
    if y.shape is None:
        return {}
    attrs: dict[str, Any] = {}
    new = plan.new_shape(y)[-1]
    if isinstance(new, int) and new != y.shape[-1]:
        attrs["N"] = new
    a = node.input(0)
    if a is not None and a.shape:
        k = plan.new_shape(a)[-1]
        if isinstance(k, int) and k != a.shape[-1]:
            attrs["K"] = k
    return {"attrs": attrs} if attrs else {}


def _nbits_cost(node: Node) -> int:
    y = node.outputs[0]
    k = int(node.attr("K", 0))
    if y.shape is None:
        return 0
    return 2 * math.prod(d if isinstance(d, int) else 1 for d in y.shape) * k


def _nbits_zero(node: Node, zero: Sequence[bool]) -> bool:
    weights = zero[0] or zero[2]
    return bool(weights) and (len(zero) <= 5 or zero[5])


register_op(
    "FusedConv",
    _fused_conv,
    kind="stem",
    domain=MS_DOMAIN,
    shape=conv_shape,
    shrink=_fused_conv_shrink,
    cost=_fused_conv_cost,
    zero_when=_fused_conv_zero,
    contraction=_fused_conv_contraction,
    width_multiple=lambda node: _conv_hook("width_multiple_of")(node),
)
# TransposeMatMul: the name FusedMatMul had before it gained transBatchA/B (same operands and meaning).
for _name in ("FusedMatMul", "TransposeMatMul"):
    register_op(
        _name,
        _fused_matmul,
        kind=lambda node: rules()[("", "MatMul")].kind_of(node),
        domain=MS_DOMAIN,
        shape=_fused_matmul_shape,
        cost=_fused_matmul_cost,
        zero_when=any_zero,
        contraction=_fused_matmul_contraction,
        width_multiple=lambda node: rules()[("", "MatMul")].width_multiple_of(node),
    )
register_op(
    "FusedGemm",
    _fused_gemm,
    kind="stem",
    domain=MS_DOMAIN,
    shape=lambda ctx, node: _gemm_hook("shape")(ctx, node),
    cost=lambda node: _gemm_hook("cost")(node),
    zero_when=_fused_gemm_zero,
    contraction=lambda node: _gemm_hook("contraction")(node),
    width_multiple=lambda node: _gemm_hook("width_multiple_of")(node),
)
register_op(
    "MatMulNBits",
    _nbits,
    kind="stem",
    domain=MS_DOMAIN,
    shape=_nbits_shape,
    shrink=_shrink_nbits,
    cost=_nbits_cost,
    zero_when=_nbits_zero,
)
