"""Normalizations, pooling, reductions and softmax: where statistics or sums cross an axis.

The exactness rule lives here: an axis a statistic is taken over (LayerNorm's normalized axes, a mean,
a softmax) is pinned, because removing a channel there changes the result even when it is zero. Sums
are exact where the removed channel is zero, which ``require_zero`` checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Node, Value
from graphcore.ops.common import const_ints, data_zero, factor_zero, is_zero, never, operand_values, rank
from graphcore.ops.registry import LegacyAttr, ShrinkView, ZeroWhen, register_op
from graphcore.ops.shape import pool_shape, reduce_shape, same_shape


def _affine_zero(ctx: ChannelGraph, y: Value, axis: int, params: list[Value | None]) -> None:
    z = None
    for p in params:
        if p is None:
            continue
        zp = ctx.zero(p, 0)
        z = zp.copy() if z is None else z & zp
    if z is not None:
        ctx.set_zero(y, axis, z)


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
    for a in range(r):
        ctx.link(x, a, y, a)
    for p in (scale, bias, mean, var):
        ctx.link(p, 0, y, 1)
    for extra in node.outputs[1:]:
        ctx.link(extra, 0, y, 1)
    _affine_zero(ctx, y, 1, [scale, bias])
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
    ctx.link(scale, 0, y, 1)
    ctx.link(bias, 0, y, 1)
    for a in range(2, r):
        ctx.pin(x, a, "InstanceNormalization normalizes over this axis")
        ctx.pin(y, a, "InstanceNormalization normalizes over this axis")
    _affine_zero(ctx, y, 1, [scale, bias])
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


def _layernorm(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    y = node.outputs[0]
    r = rank(x)
    if r is None:
        ctx.pin_all(y, f"{node.op} with unknown shape")
        return
    axis = int(node.attr("axis", -1))
    axis = axis + r if axis < 0 else axis
    reason = f"{node.op} normalizes over this axis: removing a channel changes its statistics"
    for a in range(r):
        ctx.link(x, a, y, a)
        if a >= axis:
            # Linked so the report shows the whole channel space, pinned because it is not exact.
            ctx.pin(y, a, reason)
            for p in node.inputs[1:3]:
                ps = p.shape if p is not None else None
                pa = a - (r - len(ps)) if ps is not None else -1
                if ps is not None and pa >= 0 and ps[pa] != 1:
                    ctx.link(p, pa, y, a)
    for extra in node.outputs[1:]:
        for a in range(min(axis, rank(extra) or 0)):
            ctx.link(x, a, extra, a)


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
register_op("LayerNormalization", _layernorm, shape=same_shape, zero_when=_affine_zero_when(1, 2))
register_op("RMSNormalization", _layernorm, shape=same_shape, zero_when=_affine_zero_when(1, None))
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
    )
for _op in ("ArgMax", "ArgMin"):
    register_op(_op, _reduce, shape=reduce_shape, zero_when=never)
