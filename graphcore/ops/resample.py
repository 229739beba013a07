"""Operators that pad, resample, expand or tile axes: an axis they change is pinned, one they leave alone
passes through channel by channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node
from graphcore.ops.common import broadcast, const_ints, data_zero, is_zero, known_shape, operand_values, rank
from graphcore.ops.layout import shape_operand
from graphcore.ops.registry import LegacyAttr, register_op


def _pad(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    r = rank(x)
    if x is None or r is None:
        ctx.pin_all(y, "Pad with unknown shape")
        return
    pads = const_ints(ctx, node, 1)
    axes = const_ints(ctx, node, 3) if node.input(3) is not None else list(range(r))
    value = node.input(2)
    nonzero_fill = value is not None and (value.const is None or float(np.asarray(value.const).sum()) != 0.0)
    if pads is None or axes is None:
        ctx.pin_all(x, "Pad with computed pads")
        ctx.pin_all(y, "Pad with computed pads")
        return
    n = len(axes)
    padded = {axes[k] % r for k in range(n) if pads[k] != 0 or pads[k + n] != 0}
    for a in range(r):
        if a in padded:
            ctx.pin(x, a, "Pad pads this axis")
            ctx.pin(y, a, "Pad pads this axis")
        elif ctx.link(x, a, y, a):
            ctx.set_zero(y, a, ctx.zero(x, a) & (not nonzero_fill))


def _pad_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """Each padded axis grows by its two pads (negative pads crop); an unpadded one keeps its size,
    symbolic or not. TorchScript computes ``F.pad``'s pads from literals (folded by then), which ONNX
    shape inference cannot read: it names every output axis with a fresh symbol."""
    x = node.input(0)
    r = rank(x)
    pads = const_ints(ctx, node, 1)
    axes = const_ints(ctx, node, 3) if node.input(3) is not None else list(range(r or 0))
    if x is None or x.shape is None or r is None or pads is None or axes is None:
        return None
    if len(pads) != 2 * len(axes):
        return None
    out = list(x.shape)
    n = len(axes)
    for k, a in enumerate(axes):
        grow = pads[k] + pads[k + n]
        if grow:
            d = out[a % r]
            if not isinstance(d, int):
                return None
            out[a % r] = d + grow
    return tuple(out)


def _resize(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    r = rank(x)
    if x is None or r is None or y.shape is None:
        ctx.pin_all(x, f"{node.op} with unknown shapes")
        ctx.pin_all(y, f"{node.op} with unknown shapes")
        return
    for i in range(1, len(node.inputs)):
        ctx.handled(i)
    sizes = node.input(3)
    xs, ys = known_shape(x), y.shape
    unit = _unit_scale_axes(node, r)
    copies = _copies_unscaled_axes(node)
    for a in range(r):
        same = xs[a] == ys[a] and isinstance(xs[a], int)
        if copies and (same or a in unit):
            if ctx.link(x, a, y, a):
                ctx.set_zero(y, a, ctx.zero(x, a))
        else:
            ctx.pin(x, a, f"{node.op} resamples this axis")
            ctx.pin(y, a, f"{node.op} resamples this axis")
    if sizes is not None:
        shape_operand(ctx, node, 3, y)


def _copies_unscaled_axes(node: Node) -> bool:
    """Whether an axis Resize does not scale is copied index for index. Cropping reads a region of
    interest, and tf_half_pixel_for_nn samples half a pixel further on (rounded up, or interpolated, that
    is the next index), so neither maps index c onto index c."""
    mode = node.attr("coordinate_transformation_mode", b"half_pixel")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    return mode not in ("tf_crop_and_resize", "tf_half_pixel_for_nn")


def _unit_scale_axes(node: Node, r: int) -> set[int]:
    """Axes with a constant scale of exactly 1: unchanged even where shape inference lost the output's
    size (a Concat of computed widths before the upsampling)."""
    scales = node.input(1 if len(node.inputs) == 2 else 2)  # Upsample and Resize-10: (X, scales)
    if scales is None or scales.const is None or scales.const.size != r:
        return set()
    flat = np.asarray(scales.const, dtype=np.float64).reshape(-1)
    return {a for a in range(r) if flat[a] == 1.0}


def _expand(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    broadcast(ctx, [x], y, "all")
    shape_operand(ctx, node, 1, y)


def _tile(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    r = rank(x)
    reps = const_ints(ctx, node, 1)
    if x is None or r is None or reps is None:
        ctx.pin_all(x, "Tile with computed repeats")
        ctx.pin_all(y, "Tile with computed repeats")
        return
    for a in range(r):
        if reps[a] == 1 and ctx.link(x, a, y, a):
            ctx.set_zero(y, a, ctx.zero(x, a))
        else:
            ctx.pin(x, a, "Tile repeats this axis")
            ctx.pin(y, a, "Tile repeats this axis")


def _text(node: Node, name: str, default: str) -> str:
    value = node.attr(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _pad_zero(node: Node, zero: Sequence[bool]) -> bool:
    """Reflect, edge and wrap padding copy input elements; constant padding adds its value, which must
    be zeroed, absent or a constant 0 (an unlifted legacy ``value`` attribute is read too)."""
    if not is_zero(zero, 0):
        return False
    if _text(node, "mode", "constant") != "constant":
        return True
    if float(node.attr("value", 0.0)) != 0.0:
        return False
    if node.input(2) is None or is_zero(zero, 2):
        return True
    value = operand_values(node, zero, 2)
    return value is not None and not value.any()


def _resize_zero(node: Node, zero: Sequence[bool]) -> bool:
    """Interpolating zeros gives zeros; tf_crop_and_resize fills what falls outside the region of
    interest with extrapolation_value. The other operands (roi, scales, sizes) are settings."""
    if not is_zero(zero, 0):
        return False
    crop = _text(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    return not crop or float(node.attr("extrapolation_value", 0.0)) == 0.0


register_op(
    "Pad",
    _pad,
    shape=_pad_shape,
    legacy_attrs=(LegacyAttr("pads", 1, 11), LegacyAttr("value", 2, 11, dtype=None)),
    zero_when=_pad_zero,
)
register_op("Resize", _resize, zero_when=_resize_zero)
register_op("Upsample", _resize, zero_when=_resize_zero)
register_op("Expand", _expand, zero_when=data_zero(0))
register_op("Tile", _tile, zero_when=data_zero(0))
