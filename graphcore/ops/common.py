"""Building blocks the op declarations are written with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node, Value
from graphcore.ops.registry import ZeroWhen

__all__ = [
    "all_zero",
    "any_zero",
    "broadcast",
    "combine_zeros",
    "const_ints",
    "const_list",
    "data_zero",
    "factor_zero",
    "identity",
    "int_dim",
    "is_zero",
    "known_shape",
    "never",
    "norm_axis",
    "operand_values",
    "rank",
    "stem_zero",
]


def known_shape(v: Value) -> tuple[Dim, ...]:
    """The shape of a value whose rule has already found it known."""
    if v.shape is None:
        raise ValueError(f"the shape of '{v.name}' is unknown")
    return v.shape


def int_dim(d: Dim) -> int:
    """A dimension the rule has already found static."""
    if not isinstance(d, int):
        raise TypeError(f"dimension {d!r} is not static")
    return d


def rank(v: Value | None) -> int | None:
    return None if v is None or v.shape is None else len(v.shape)


def norm_axis(axis: int, r: int) -> int:
    return axis + r if axis < 0 else axis


def const_list(v: Value | None) -> list[int] | None:
    """The integers of a constant operand (no folded values: for passes that run before folding)."""
    if v is None or v.const is None:
        return None
    return [int(x) for x in v.const.reshape(-1)]


def const_ints(ctx: ChannelGraph, node: Node, index: int) -> list[int] | None:
    """A small integer operand whose value is known (constant or folded), marked as consumed."""
    v = node.input(index)
    if v is None:
        return None
    if v.const is not None and v.const.dtype.kind in "iub":
        return [int(x) for x in v.const.reshape(-1)]
    entries = ctx.get_entries(v)
    if entries is None:
        return None
    values = [e.value for e in entries]
    return [int(x) for x in values if x is not None] if None not in values else None


def identity(ctx: ChannelGraph, src: Value | None, dst: Value | None, zero_preserving: bool = True) -> None:
    """Same shape in and out, channel by channel (activations, Identity, Cast, Dropout ...)."""
    if src is None or dst is None or src.shape is None:
        return
    r = len(src.shape)
    if dst.shape is None:
        dst.shape = src.shape
    if len(dst.shape) != r:
        ctx.pin_all(src, "rank changed by an elementwise op")
        ctx.pin_all(dst, "rank changed by an elementwise op")
        return
    ctx.link_axes(src, dst, r, zero_preserving)


def broadcast(
    ctx: ChannelGraph,
    ins: Sequence[Value | None],
    out: Value,
    mode: str,
) -> None:
    """Numpy broadcasting: equal-size axes are the same channel; size-1 axes are broadcast copies.

    ``mode`` says when an output slice is zero: ``all`` (Add, Sub, Max ...: every operand zero),
    ``any`` (Mul: one operand zero), ``first`` (Div, PRelu: the first operand zero), ``none``.
    """
    present = [v for v in ins if v is not None]
    if out.shape is None or any(v.shape is None for v in present):
        for u in [*present, out]:
            ctx.pin_all(u, "shape unknown")
        return
    r = len(out.shape)
    for a in range(r):
        zs: list[np.ndarray | bool] = []
        out_d = out.shape[a]
        for v in ins:
            if v is None or v.shape is None:
                zs.append(False)
                continue
            ax = a - (r - len(v.shape))
            if ax < 0:
                zs.append(False)
                continue
            d = v.shape[ax]
            if d == 1 and v.is_param:  # a layer scale's [1, C, 1, 1]: structure, not a channel
                ctx.fix(v, ax, "broadcast axis")
                zs.append(False)
            elif d == 1 and out_d != 1:
                ctx.pin(v, ax, "broadcast axis")
                zs.append(False)
            elif ctx.link(v, ax, out, a):
                zs.append(ctx.zero(v, ax))
            else:
                zs.append(False)
        if ctx.slot(out, a) is None:
            continue
        if mode == "first":
            ctx.set_zero(out, a, zs[0])
        elif mode in ("all", "any"):
            ctx.set_zero(out, a, combine_zeros(zs, every=mode == "all"))
        else:
            ctx.set_zero(out, a, False)


def combine_zeros(zs: Sequence[np.ndarray | bool], every: bool) -> np.ndarray | bool:
    """The elementwise AND (``every``) or OR of zero flags, each an array of the axis's length or a bool
    for the whole axis; no flags at all: False. Flags are often one shared array (``ChannelGraph.uniform``,
    or the same operand twice), so each distinct array is read once and a single one comes back as it is.
    """
    if len(zs) == 2 and zs[0] is zs[1] and zs[0].__class__ is np.ndarray:
        return zs[0]  # the usual pair (a weight and its bias, two residual inputs): one shared array
    arrays: list[np.ndarray] = []
    seen: set[int] = set()  # ids of the arrays kept (every one stays alive in ``zs``)
    for z in zs:
        if isinstance(z, _FLAG):
            if bool(z) != every:
                return bool(z)  # a False in an AND, a True in an OR decides the whole axis
            continue
        if id(z) not in seen:
            seen.add(id(z))
            arrays.append(z)
    if not arrays:
        return every and bool(zs)
    if len(arrays) == 1:
        return arrays[0]
    return np.logical_and.reduce(arrays) if every else np.logical_or.reduce(arrays)


_FLAG = (bool, np.bool_)


# -- zero_when: is the output exactly zero given which operands are? (see registry.OpRule) --------------


def is_zero(zero: Sequence[bool], i: int) -> bool:
    """Operand ``i`` is all-zero; a position past the operands given is absent, which counts as zero
    (an absent bias adds nothing)."""
    return zero[i] if i < len(zero) else True


def factor_zero(node: Node, zero: Sequence[bool], i: int) -> bool:
    """Operand ``i`` is a factor (a weight, a scale) and all-zero. An absent factor is not zero but one:
    a LayerNormalization without scale (torch's ``elementwise_affine=False``) normalizes, unscaled."""
    return node.input(i) is not None and is_zero(zero, i)


def data_zero(*indices: int) -> ZeroWhen:
    """Zero exactly when the data operands ``indices`` are: the op copies, moves or mixes their elements
    (a reshape, a pool, Where's two branches); its other operands are settings (axes, indices, shapes)."""

    def zero_when(node: Node, zero: Sequence[bool]) -> bool:
        return all(is_zero(zero, i) for i in indices)

    return zero_when


def all_zero(node: Node, zero: Sequence[bool]) -> bool:
    """A sum, mean or extremum of its operands: zero only when every one of them is."""
    return all(zero)


def any_zero(node: Node, zero: Sequence[bool]) -> bool:
    """A product of its operands (Mul, MatMul, Einsum): one zero factor makes it zero, the others being
    finite."""
    return any(factor_zero(node, zero, i) for i in range(len(node.inputs)))


def never(node: Node, zero: Sequence[bool]) -> bool:
    """Not zero whatever its operands are (f(0) != 0, a division by zero, an index or a shape)."""
    return False


def stem_zero(weight: int, bias: int | None, data: int = 0) -> ZeroWhen:
    """A weighted sum plus a bias (Conv, Gemm): zero when the input or the weight is zero and the bias
    is zero or absent."""

    def zero_when(node: Node, zero: Sequence[bool]) -> bool:
        product = factor_zero(node, zero, data) or factor_zero(node, zero, weight)
        return product and (bias is None or is_zero(zero, bias))

    return zero_when


def operand_values(node: Node, zero: Sequence[bool], i: int) -> np.ndarray | None:
    """The values operand ``i`` has when the flagged operands are zeroed: 0 when it is flagged, its
    constant when it has one, None when it is absent or computed (unknown)."""
    if node.input(i) is not None and is_zero(zero, i):
        return np.zeros(1)
    v = node.input(i)
    return None if v is None or v.const is None else np.asarray(v.const)
