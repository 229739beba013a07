"""Normalizations, pooling, reductions and softmax: where statistics or sums cross an axis.

The exactness rule lives here: an axis a statistic is taken over (a softmax, a max) is pinned, because
removing a channel there changes the result even when it is zero. Sums are exact where the removed
channel is zero, which ``require_zero`` checks. Means, LayerNorm and RMSNorm count their elements: they
are sums too once construct keeps the original count, which their ``renorm`` hook declares
(docs/hidden_size.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Node, Value
from graphcore.ops.common import (
    combine_zeros,
    const_ints,
    const_list,
    data_zero,
    factor_zero,
    is_zero,
    never,
    operand_values,
    rank,
)
from graphcore.ops.registry import LegacyAttr, Renorm, ShrinkView, ZeroWhen, register_op, renorm_of
from graphcore.ops.shape import pool_shape, reduce_shape, same_shape


def _affine_zero(ctx: ChannelGraph, y: Value, axis: int, params: list[Value | None]) -> None:
    flags = [ctx.zero(p, 0) for p in params if p is not None]
    if flags:
        ctx.set_zero(y, axis, combine_zeros(flags, every=True))


def _pin_without_epsilon(ctx: ChannelGraph, node: Node, y: Value) -> None:
    """A removed channel is normalized as (0 - 0) / sqrt(0 + epsilon): with epsilon <= 0 that is NaN in
    the zeroed model, which no multiplication by a zero weight takes back, so removal is not exact."""
    try:
        eps = float(node.attr("epsilon", 1e-5))
    except (TypeError, ValueError):
        eps = math.nan
    if not (math.isfinite(eps) and eps > 0):
        ctx.pin(node.input(0), 1, f"{node.op} with epsilon {eps:g}: a zeroed channel divides by zero")
        ctx.pin(y, 1, f"{node.op} with epsilon {eps:g}: a zeroed channel divides by zero")


def _batchnorm(ctx: ChannelGraph, node: Node) -> None:
    x, scale, bias, mean, var = (node.input(i) for i in range(5))
    y = node.outputs[0]
    r = rank(x)
    if r is None:
        ctx.pin_all(y, "BatchNormalization with unknown shape")
        return
    assert x is not None  # its rank is known
    ctx.link_axes(x, y, r, None)
    for p in (scale, bias, mean, var):
        if p is not None:  # torch's affine=False has no scale and no bias: nothing to tie
            ctx.link(p, 0, y, 1)
    for extra in node.outputs[1:]:
        ctx.link(extra, 0, y, 1)
    if scale is not None:
        _affine_zero(ctx, y, 1, [scale, bias])
    elif mean is not None:
        # Unscaled, (x - mean) / sqrt(var + epsilon) + bias: zero where the input and the running
        # mean are, and the bias is zero or absent.
        centred = combine_zeros([ctx.zero(x, 1), ctx.zero(mean, 0)], every=True)
        ctx.set_zero(
            y, 1, combine_zeros([centred, ctx.zero(bias, 0) if bias is not None else True], every=True)
        )
    _pin_without_epsilon(ctx, node, y)


def _instancenorm(ctx: ChannelGraph, node: Node) -> None:
    x, scale, bias = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    r = rank(x)
    if r is None:
        ctx.pin_all(y, "InstanceNormalization with unknown shape")
        return
    ctx.link(x, 0, y, 0)
    ctx.link(x, 1, y, 1)
    for p in (scale, bias):
        if p is not None:  # torch's affine=False has neither (ONNX requires both): nothing to tie
            ctx.link(p, 0, y, 1)
    for a in range(2, r):
        ctx.pin(x, a, "InstanceNormalization normalizes over this axis")
        ctx.pin(y, a, "InstanceNormalization normalizes over this axis")
    # Each channel is normalized alone: a zero channel is (0 - 0) / sqrt(0 + epsilon) = 0 before the
    # affine step, so it stays zero where the bias is zero or absent, whatever the scale; a zero
    # scale zeroes it too. (An absent scale is one, not zero.)
    scaled = combine_zeros(
        [ctx.zero(x, 1)] + ([ctx.zero(scale, 0)] if scale is not None else []), every=False
    )
    ctx.set_zero(y, 1, combine_zeros([scaled, ctx.zero(bias, 0) if bias is not None else True], every=True))
    _pin_without_epsilon(ctx, node, y)


def _groupnorm(ctx: ChannelGraph, node: Node) -> None:
    x, scale, bias = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    g = int(node.attr("num_groups", 1))
    shape = x.shape if x is not None else None
    c = shape[1] if shape is not None and len(shape) > 1 else None
    if shape is None or not isinstance(c, int) or c % g:
        ctx.pin_all(x, "GroupNormalization with unknown shape")
        ctx.pin_all(y, "GroupNormalization with unknown shape")
        return
    r = len(shape)
    block = c // g
    ctx.link(x, 0, y, 0)
    ctx.link(x, 1, y, 1)
    # A whole group of channels can go: the other groups' statistics do not see it.
    ctx.tie_blocks(y, 1, block)
    for p in (scale, bias):
        if p is None or p.shape is None:
            continue
        if p.shape[0] == c:
            ctx.link(p, 0, y, 1)
        elif p.shape[0] == g:
            ctx.link_index(p, 0, np.arange(g), y, 1, np.arange(g) * block)
    for a in range(2, r):
        ctx.pin(x, a, "GroupNormalization normalizes over this axis")
        ctx.pin(y, a, "GroupNormalization normalizes over this axis")
    if scale is not None and scale.shape is not None and scale.shape[0] == c:
        _affine_zero(ctx, y, 1, [scale, bias])
    _pin_without_epsilon(ctx, node, y)


def _stat_axes(node: Node, r: int) -> tuple[int, ...]:
    """LayerNormalization / RMSNormalization / SimplifiedLayerNormalization normalize over
    ``axis`` .. the last axis."""
    axis = int(node.attr("axis", -1))
    axis = axis + r if axis < 0 else axis
    return tuple(range(axis, r))


def norm_renorm(
    kind: str,
    *,
    summed: tuple[int, ...] = (0,),
    scale: int | None = 1,
    bias: int | None = None,
    stats: tuple[int, ...] = (),
    sum_output: int | None = None,
    epsilon: float = 1e-5,
    last_axis_only: bool = False,
):
    """The ``renorm`` hook of a normalization: its normalized axes and the operands of its parts."""

    def renorm(node: Node) -> Renorm | None:
        r = rank(node.input(0))
        if r is None or r < 1:
            return None
        axes = (r - 1,) if last_axis_only else _stat_axes(node, r)
        try:
            eps = float(node.attr("epsilon", epsilon))
        except (TypeError, ValueError):
            eps = math.nan
        present_stats = tuple(i for i in stats if i < len(node.outputs))
        has_sum = sum_output is not None and sum_output < len(node.outputs)
        return Renorm(
            kind,  # type: ignore[arg-type]
            axes,
            tuple(i for i in summed if node.input(i) is not None),
            scale if scale is not None and node.input(scale) is not None else None,
            bias if bias is not None and node.input(bias) is not None else None,
            present_stats,
            sum_output if has_sum else None,
            eps,
        )

    return renorm


def _aligned(ctx: ChannelGraph, p: Value | None, x: Value, r: int, axes) -> list[tuple[int, int]]:
    """(operand axis, x axis) pairs of an operand broadcast right-aligned against ``x``; an axis of
    another size than x's is pinned (it broadcasts), a size-1 axis is skipped."""
    if p is None or p.shape is None or x.shape is None:
        return []
    shift = r - len(p.shape)
    out = []
    for pa, d in enumerate(p.shape):
        xa = pa + shift
        if xa < 0 or (xa in axes and d == 1 and x.shape[xa] != 1):
            continue
        if d != x.shape[xa]:
            ctx.pin(p, pa, "broadcast over this axis")
            continue
        out.append((pa, xa))
    return out


def hidden_norm(ctx: ChannelGraph, node: Node) -> None:
    """A normalization over its last axes (LayerNorm, RMSNorm and their fusions with a residual add).

    The normalized axes shrink exactly when every removed element of the normalized sum is zero
    (``require_zero``) and construct keeps the original count (``renorm``, docs/hidden_size.md). The
    output at a removed channel is ``(0 - mean) * rstd * scale + bias`` for LayerNorm, zero exactly when
    scale and bias are; ``0 * rstd * scale`` for RMSNorm, zero when the input or the scale is. Where a
    size is not static, epsilon is not positive or an RMSNorm's statistics output is read (folding
    changes it), the normalized axes are pinned as before.
    """
    x = node.input(0)
    y = node.outputs[0]
    r = rank(x)
    info = renorm_of(node)
    if x is None or r is None or info is None or x.shape is None:
        ctx.pin_all(y, f"{node.op} with unknown shape")
        return
    axes = set(info.axes)
    why = ""
    if not all(isinstance(x.shape[a], int) for a in axes):
        why = f"{node.op} normalizes over an axis of unknown size"
    elif not (math.isfinite(info.epsilon) and info.epsilon > 0):
        why = f"{node.op} with epsilon {info.epsilon:g}: a zeroed channel divides by zero"
    elif info.kind == "rmsnorm" and any(node.outputs[i].consumers for i in info.stats):
        why = f"{node.op}: its statistics output is read, and keeping the count changes it"
    outs = [y] + ([node.outputs[info.sum_output]] if info.sum_output is not None else [])
    for out in outs:
        if out.shape is None:
            out.shape = x.shape
        for a in range(r):
            ctx.link(x, a, out, a)
    for i in info.summed[1:]:
        for pa, xa in _aligned(ctx, node.input(i), x, r, axes):
            ctx.link(node.input(i), pa, x, xa)
    affine = [i for i in (info.scale, info.bias) if i is not None]
    for i in affine:
        pairs = _aligned(ctx, node.input(i), x, r, axes)
        for pa, xa in pairs:
            if xa in axes:
                ctx.link(node.input(i), pa, x, xa)
        if any(xa not in axes for _, xa in pairs):
            ctx.pin_all(node.input(i), f"{node.op} parameter over a non-normalized axis")
    for i in info.stats:
        stat = node.outputs[i]
        if stat.shape is None or len(stat.shape) != r:
            ctx.pin_all(stat, f"{node.op} statistics of an undeclared shape")
            continue
        for a in range(r):
            if a in axes:
                ctx.pin(stat, a, f"{node.op} statistics: reduced axis")
            else:
                ctx.link(x, a, stat, a)
    for a in sorted(axes):
        if why:
            ctx.pin(y, a, why)
            continue
        summed_zero = None
        for i in info.summed:
            v = node.input(i)
            va = a - (r - (rank(v) or 0))
            if v is None or va < 0 or v.shape is None or v.shape[va] == 1:
                continue
            ctx.require_zero([(v, va)], f"{node.op} normalizes over this axis")
            z = ctx.zero(v, va)
            summed_zero = z.copy() if summed_zero is None else summed_zero & z
        if summed_zero is None:
            summed_zero = np.zeros(ctx.zero(y, a).shape, dtype=bool)
        if info.sum_output is not None:
            ctx.set_zero(node.outputs[info.sum_output], a, summed_zero)
        scale_zero = ctx.zero(node.input(info.scale), 0) if info.scale is not None else None
        if info.kind == "rmsnorm":
            z = summed_zero if scale_zero is None else summed_zero | _at(ctx, node, info.scale, a, r)
        elif scale_zero is None:
            z = np.zeros_like(summed_zero)
        else:
            z = _at(ctx, node, info.scale, a, r)
            if info.bias is not None:
                z = z & _at(ctx, node, info.bias, a, r)
        ctx.set_zero(y, a, z)


def _at(ctx: ChannelGraph, node: Node, i: int | None, a: int, r: int) -> np.ndarray:
    """Zero flags of operand ``i`` along its axis aligned with ``a`` of input 0 (all False when it
    broadcasts there)."""
    v = node.input(i) if i is not None else None
    va = a - (r - (rank(v) or 0))
    x = node.input(0)
    n = x.shape[a] if x is not None and x.shape is not None else None
    if not isinstance(n, int):
        raise ValueError(f"{node.label}: a normalized axis of unknown size")
    if v is None or v.shape is None or va < 0 or v.shape[va] != n:
        return np.zeros(n, dtype=bool)
    return ctx.zero(v, va)


def _axis_stat(op_label: str, axes_of):
    """Statistics over ``axes_of(node, rank)``; every other axis passes through unchanged."""

    def relate(ctx: ChannelGraph, node: Node) -> None:
        x = node.input(0)
        y = node.outputs[0]
        r = rank(x)
        if r is None:
            ctx.pin_all(y, f"{node.op} with unknown shape")
            return
        axes = axes_of(node, r)
        for a in range(r):
            ctx.link(x, a, y, a)
            if a in axes:
                ctx.pin(y, a, f"{node.op} {op_label} over this axis")

    return relate


def _all_axes(node: Node, r: int) -> set[int]:
    return set(range(r))


def _softmax_axes(node: Node, r: int) -> set[int]:
    axis = int(node.attr("axis", 1 if node.attr("_opset", 13) < 13 else -1))
    axis = axis + r if axis < 0 else axis
    if node.attr("_opset", 13) < 13:
        return set(range(axis, r))
    return {axis}


def _pool(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    y = node.outputs[0]
    r = rank(x)
    if r is None:
        ctx.pin_all(y, f"{node.op} with unknown shape")
        return
    for a in (0, 1):
        if ctx.link(x, a, y, a) and a == 1:
            ctx.set_zero(y, 1, ctx.zero(x, 1))
    for a in range(2, r):
        ctx.pin(x, a, f"{node.op} pools over this axis")
        ctx.pin(y, a, f"{node.op} pools over this axis")
    for extra in node.outputs[1:]:
        ctx.link(x, 0, extra, 0)
        ctx.link(x, 1, extra, 1)


SUMS = {"ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare"}
ZERO_KEEPING = SUMS | {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}
COUNTED = {"ReduceMean"}


def _mean_renorm(node: Node) -> Renorm | None:
    """ReduceMean = ReduceSum / D: with the axes it averages over (static operand or all axes)."""
    x = node.input(0)
    r = rank(x)
    if r is None:
        return None
    axes = const_list(node.input(1)) if node.input(1) is not None else None
    if node.input(1) is not None and axes is None:
        return None
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return None
        axes = list(range(r))
    return Renorm("mean", tuple(sorted({a + r if a < 0 else a for a in axes})))


def _reduce(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    y = node.outputs[0]
    r = rank(x)
    if r is None or rank(y) is None:
        ctx.pin_all(x, f"{node.op} with unknown shape")
        ctx.pin_all(y, f"{node.op} with unknown shape")
        return
    axes = None
    if node.input(1) is not None:
        axes = const_ints(ctx, node, 1)
        if axes is None:
            ctx.pin_all(x, f"{node.op} with computed axes")
            ctx.pin_all(y, f"{node.op} with computed axes")
            return
    if node.op in ("ArgMax", "ArgMin"):
        axes = [int(node.attr("axis", 0))]
    if not axes:
        axes = [] if node.attr("noop_with_empty_axes", 0) else list(range(r))
    axes_set = {a + r if a < 0 else a for a in axes}
    keep = bool(node.attr("keepdims", 1))
    oax = 0
    for a in range(r):
        if a in axes_set:
            if node.op in SUMS:
                ctx.require_zero([(x, a)], f"{node.op} sums over this axis")
            elif node.op in COUNTED and x is not None and x.shape is not None and isinstance(x.shape[a], int):
                # sum / D: exact with the removed (zero) elements gone once construct keeps D
                ctx.require_zero([(x, a)], f"{node.op} averages over this axis")
            else:
                ctx.pin(x, a, f"{node.op} reduces over this axis")
            if keep:
                ctx.pin(y, oax, f"{node.op} reduced axis")
                oax += 1
            continue
        if ctx.link(x, a, y, oax) and node.op in ZERO_KEEPING:
            ctx.set_zero(y, oax, ctx.zero(x, a))
        oax += 1


# -- zero_when --------------------------------------------------------------------------------------------
#
# A normalization ends in scale * normalized + bias: zero when scale and bias are, provided the normalized
# value is finite — it divides by sqrt(variance + epsilon), and a constant slice has variance 0.


def _epsilon(node: Node, default: float) -> float | None:
    """The node's epsilon when it keeps the division finite (positive, finite), else None."""
    try:
        eps = float(node.attr("epsilon", default))
    except (TypeError, ValueError):
        return None
    return eps if math.isfinite(eps) and eps > 0 else None


def _affine_zero_when(scale: int, bias: int | None, epsilon: float = 1e-5) -> ZeroWhen:
    """LayerNormalization and friends: zero when operand ``scale`` is (present and) zero and ``bias`` is
    zero or absent, whatever the input (``epsilon`` is the op's default)."""

    def zero_when(node: Node, zero: Sequence[bool]) -> bool:
        affine = factor_zero(node, zero, scale) and (bias is None or is_zero(zero, bias))
        return affine and _epsilon(node, epsilon) is not None

    return zero_when


def _batchnorm_zero(node: Node, zero: Sequence[bool]) -> bool:
    """scale * (x - mean) / sqrt(var + epsilon) + B: zero when scale and B are and the running variance
    keeps the root positive (read where it is known; a running variance is never negative)."""
    eps = _epsilon(node, 1e-5)
    if eps is None or not _affine_zero_when(1, 2)(node, zero):
        return False
    var = operand_values(node, zero, 4)
    return var is None or bool((var.astype(np.float64) + eps > 0).all())


def _lrn_zero(node: Node, zero: Sequence[bool]) -> bool:
    """x / (bias + alpha / size * sum(x^2)) ** beta: 0 / bias ** beta, zero for a positive bias."""
    return is_zero(zero, 0) and float(node.attr("bias", 1.0)) > 0.0


def _auto_pad(node: Node) -> str:
    mode = node.attr("auto_pad", b"NOTSET")
    return mode.decode() if isinstance(mode, bytes) else str(mode)


def _windows_see_input(node: Node) -> bool:
    """Does every window of a MaxPool / AveragePool hold at least one input element? A window that lies
    wholly in the padding has no element to take the max or mean of (-inf, or 0 / 0 without
    count_include_pad). With unit dilations it holds one when each pad is below the kernel size, and in
    ceil mode, where one more window may start past the input's end, when stride + end pad <= kernel.

    ONNX requires ``kernel_shape``; a pool without it comes from the torch frontend, whose module keeps
    the window. PyTorch refuses a padding above half the kernel and drops a window that would start in
    the right padding, and an adaptive pool's bins are never empty: each window holds an input element
    (but a dilated window on an input shorter than the dilation, which is -inf whatever the input).
    """
    if "kernel_shape" not in node.attrs:
        return True
    kernel = [int(k) for k in node.attr("kernel_shape")]
    n = len(kernel)
    if not n or any(int(d) != 1 for d in node.attr("dilations", [1] * n)):
        return False
    if _auto_pad(node) != "NOTSET":
        return True  # VALID pads nothing; SAME pads less than a kernel in total, windows start inside
    pads = [int(p) for p in node.attr("pads", [0] * 2 * n)]
    strides = [int(s) for s in node.attr("strides", [1] * n)]
    ceil_mode = bool(node.attr("ceil_mode", 0))
    for a, k in enumerate(kernel):
        begin, end = pads[a], pads[a + n]
        if begin >= k or end >= k or (ceil_mode and strides[a] + end > k):
            return False
    return True


def _max_pool_zero(node: Node, zero: Sequence[bool]) -> bool:
    return is_zero(zero, 0) and _windows_see_input(node)


def _average_pool_zero(node: Node, zero: Sequence[bool]) -> bool:
    """Counting the padding, every window divides by a positive count; not counting it, a window must
    hold an input element."""
    if not is_zero(zero, 0):
        return False
    if node.attr("count_include_pad", 0) and not node.attr("ceil_mode", 0):
        return True
    return _windows_see_input(node)


def _lp_zero(node: Node, zero: Sequence[bool]) -> bool:
    """(sum |x|^p)^(1/p) of zeros is 0 for p > 0, padding or not."""
    return is_zero(zero, 0) and float(node.attr("p", 2)) > 0.0


_POOL_ZERO_WHEN: dict[str, ZeroWhen] = {
    "MaxPool": _max_pool_zero, "AveragePool": _average_pool_zero, "LpPool": _lp_zero,
    "GlobalAveragePool": data_zero(0), "GlobalMaxPool": data_zero(0), "GlobalLpPool": _lp_zero,
}  # fmt: skip


register_op("BatchNormalization", _batchnorm, shape=same_shape, zero_when=_batchnorm_zero)
register_op("InstanceNormalization", _instancenorm, shape=same_shape, zero_when=_affine_zero_when(1, 2))


def _shrink_groupnorm(node: Node, plan: ShrinkView) -> dict[str, Any]:
    """Whole groups were removed: the group count falls with the channels."""
    y = node.outputs[0]
    assert y.shape is not None
    old, new = y.shape[1], plan.new_shape(y)[1]
    if old == new or not isinstance(old, int) or not isinstance(new, int):
        return {}
    return {"attrs": {"num_groups": int(node.attr("num_groups", 1)) * new // old}}


register_op(
    "GroupNormalization",
    _groupnorm,
    shape=same_shape,
    shrink=_shrink_groupnorm,
    zero_when=_affine_zero_when(1, 2),
)
register_op(
    "LayerNormalization",
    hidden_norm,
    shape=same_shape,
    zero_when=_affine_zero_when(1, 2),
    renorm=norm_renorm("layernorm", bias=2, stats=(1, 2)),
)
register_op(
    "RMSNormalization",
    hidden_norm,
    shape=same_shape,
    zero_when=_affine_zero_when(1, None),
    renorm=norm_renorm("rmsnorm"),
)
# Both divide by a norm with no epsilon: a zeroed slice becomes 0 / 0 wherever it is normalized, so no
# axis of theirs can carry a removable channel (not only the normalized ones). ONNX's
# MeanVarianceNormalization adds 1e-9 to the deviation, so an all-zero input gives 0 / 1e-9 = 0.
register_op(
    "LpNormalization", _axis_stat("divides by a norm taken", _all_axes), shape=same_shape, zero_when=never
)
register_op(
    "MeanVarianceNormalization",
    _axis_stat("divides by a deviation taken", _all_axes),
    shape=same_shape,
    zero_when=data_zero(0),
)
register_op("LRN", _axis_stat("normalizes", lambda n, r: {1}), shape=same_shape, zero_when=_lrn_zero)
for _op in ("Softmax", "LogSoftmax", "Hardmax"):
    register_op(_op, _axis_stat("normalizes", _softmax_axes), shape=same_shape, zero_when=never)
for _op in (
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "MaxRoiPool",
):
    register_op(_op, _pool, shape=pool_shape, zero_when=_POOL_ZERO_WHEN.get(_op))
# Reductions read their axes from operand 1; older opsets spell it as an attribute (ReduceSum until 13,
# the others until 18).
for _op in (
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp",
):  # fmt: skip
    register_op(
        _op,
        _reduce,
        shape=reduce_shape,
        legacy_attrs=(LegacyAttr("axes", 1, 13 if _op == "ReduceSum" else 18),),
        # a sum, mean, extremum, norm or product of zeros is 0; log(0) and log(n * e^0) are not
        zero_when=data_zero(0) if _op in ZERO_KEEPING else never,
        renorm=_mean_renorm if _op in COUNTED else None,
    )
for _op in ("ArgMax", "ArgMin"):
    register_op(_op, _reduce, shape=reduce_shape, zero_when=never)
