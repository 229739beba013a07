"""Concat, Split and Slice: channels keep their index inside a part and take an offset in the whole.

A Concat along the channel axis links each input's channels to their offset range of the output; a Split or
Slice links each output to its range of the input. ``shrink`` hooks recompute Split sizes and Slice bounds
for a smaller model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Node
from graphcore.ops.common import all_zero, combine_zeros, const_ints, const_list, data_zero, known_shape, rank
from graphcore.ops.registry import LegacyAttr, ShrinkView, register_op
from graphcore.ops.shape import concat_shape


def _concat(ctx: ChannelGraph, node: Node) -> None:
    y = node.outputs[0]
    ins = [v for v in node.inputs if v is not None]
    ry = rank(y)
    if ry is None or any(v.shape is None for v in ins):
        for v in [*ins, y]:
            ctx.pin_all(v, "Concat with unknown shapes")
        return
    axis = int(node.attr("axis", 0))
    axis = axis + ry if axis < 0 else axis
    key = ctx.slot(y, axis)
    offset = 0
    zs = []
    for v in ins:
        d = known_shape(v)[axis]
        if key is None or not isinstance(d, int):
            ctx.pin(v, axis, "Concat of unknown width")
            if key is not None:
                ctx.pin_key(key, "Concat of unknown width")
            offset = -1
            break
        ctx.link_range(v, axis, y, axis, offset)
        zs.append(ctx.zero(v, axis))
        offset += d
    if key is not None and offset == ctx.size[key]:
        ctx.set_zero(y, axis, np.concatenate(zs) if zs else False)
    for a in range(ry):
        if a == axis:
            continue
        flags = ctx.link_parts(ins, a, y, a)
        key_a = ctx.slot(y, a)  # after the links: one of them may have learned the output's size
        if key_a is None or not flags:
            continue
        # A link may learn the output's size only after an earlier input linked with no static size:
        # that input has no zero flags for the axis, so it counts as not zero (conservative).
        n = ctx.size[key_a]
        ctx.set_zero(y, a, combine_zeros([z if z.shape == (n,) else False for z in flags], every=True))


def _fill_split_shapes(ctx: ChannelGraph, node: Node) -> None:
    """Outputs whose shapes ONNX's inference left unknown (it stops after an op it does not know, a
    com.microsoft fusion): the split sizes are known from the operand, or equal parts of a static axis."""
    x, outs = node.input(0), node.outputs
    if x is None or x.shape is None or all(o.shape is not None for o in outs):
        return
    axis = int(node.attr("axis", 0)) % len(x.shape)
    d = x.shape[axis]
    sizes = const_ints(ctx, node, 1) if node.input(1) is not None else None
    if sizes is None and isinstance(d, int) and node.input(1) is None and d % len(outs) == 0:
        sizes = [d // len(outs)] * len(outs)
    if sizes is None or len(sizes) != len(outs) or (isinstance(d, int) and sum(sizes) != d):
        return
    for o, s in zip(outs, sizes):
        if o.shape is None:
            o.shape = (*x.shape[:axis], s, *x.shape[axis + 1 :])


def _split_op(ctx: ChannelGraph, node: Node) -> None:
    _fill_split_shapes(ctx, node)
    x = node.input(0)
    outs = node.outputs
    rx = rank(x)
    if x is None or rx is None or any(o.shape is None for o in outs):
        for v in [x, *outs]:
            ctx.pin_all(v, "Split with unknown shapes")
        return
    axis = int(node.attr("axis", 0))
    axis = axis + rx if axis < 0 else axis
    if node.input(1) is not None:
        ctx.handled(1)
    dims = [known_shape(o)[axis] for o in outs]
    sizes = [d for d in dims if isinstance(d, int)]
    key = ctx.slot(x, axis)
    if key is None or len(sizes) != len(dims) or sum(sizes) != ctx.size[key]:
        for v in [x, *outs]:
            ctx.pin(v, axis, "Split with unknown sizes")
    else:
        z = ctx.zero(x, axis)
        offset = 0
        for o, s in zip(outs, sizes):
            ctx.link_index(x, axis, offset + np.arange(s), o, axis, np.arange(s))
            ctx.set_zero(o, axis, z[offset : offset + s])
            offset += s
    for a in range(rx):
        if a != axis:
            for o in outs:
                if ctx.link(x, a, o, a):
                    ctx.set_zero(o, a, ctx.zero(x, a))


def slice_params(ctx: ChannelGraph, node: Node, r: int):
    """{axis: (start, end, step)} of a Slice whose operands are known."""
    starts = const_ints(ctx, node, 1)
    ends = const_ints(ctx, node, 2)
    axes = const_ints(ctx, node, 3) if node.input(3) is not None else None
    steps = const_ints(ctx, node, 4) if node.input(4) is not None else None
    if starts is None or ends is None:
        return None
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(axes)
    return {(a + r if a < 0 else a): (s, e, st) for a, s, e, st in zip(axes, starts, ends, steps)}


def slice_range(start: int, end: int, step: int, dim: int) -> range:
    """ONNX Slice clamping rules for one axis."""
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
    else:
        start = min(max(start, 0), dim - 1)
        end = min(max(end, -1), dim - 1)
    return range(start, end, step)


def _slice(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    r = rank(x)
    if x is None or r is None or y.shape is None:
        ctx.pin_all(x, "Slice with unknown shapes")
        ctx.pin_all(y, "Slice with unknown shapes")
        return
    params = slice_params(ctx, node, r)
    if params is None:
        ctx.pin_all(x, "Slice with computed bounds")
        ctx.pin_all(y, "Slice with computed bounds")
        return
    for a in range(r):
        if a not in params:
            if ctx.link(x, a, y, a):
                ctx.set_zero(y, a, ctx.zero(x, a))
            continue
        d = known_shape(x)[a]
        s, e, st = params[a]
        if not isinstance(d, int):
            ctx.pin(y, a, "Slice of an axis of unknown size")
            continue
        rg = slice_range(s, e, st, d)
        if st != 1 or len(rg) != y.shape[a]:
            ctx.pin(x, a, "Slice with a step or unexpected size")
            ctx.pin(y, a, "Slice with a step or unexpected size")
            continue
        idx = np.arange(rg.start, rg.stop, dtype=np.int64)
        ctx.link_index(x, a, idx, y, a, np.arange(len(idx)))
        ctx.touch(x, a)
        ctx.set_zero(y, a, ctx.zero(x, a)[idx])


def _shrink_split(node: Node, plan: ShrinkView) -> dict[str, Any]:
    x = node.input(0)
    r = rank(x)
    axis = int(node.attr("axis", 0))
    axis = axis + r if axis < 0 and r is not None else axis
    old = [known_shape(o)[axis] for o in node.outputs]
    new = [plan.new_shape(o)[axis] for o in node.outputs]
    if old == new:
        return {}
    return {"inputs": {1: np.array(new, dtype=np.int64)}, "drop_attrs": ["num_outputs"]}


def _shrink_slice(node: Node, plan: ShrinkView) -> dict[str, Any]:
    x = node.input(0)
    r = rank(x)
    if x is None or r is None:
        return {}
    params = slice_params(ChannelGraph(), node, r)
    if params is None:
        return {}
    axes = sorted(params)
    starts, ends, steps, changed = [], [], [], False
    for a in axes:
        s, e, st = params[a]
        steps.append(st)
        mask = plan.kept(x, a)
        d = known_shape(x)[a]
        if mask is None or mask.all() or not isinstance(d, int):
            starts.append(s)
            ends.append(e)
            continue
        rg = slice_range(s, e, st, d)
        new_start = int(mask[: rg.start].sum())
        starts.append(new_start)
        ends.append(new_start + int(mask[rg.start : rg.stop].sum()))
        changed = True
    if not changed:
        return {}
    out = {1: np.array(starts, dtype=np.int64), 2: np.array(ends, dtype=np.int64)}
    if node.input(3) is not None:
        out[3] = np.array(axes, dtype=np.int64)
    if node.input(4) is not None:
        out[4] = np.array(steps, dtype=np.int64)
    return {"inputs": out}


def _concat_fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    parts = [e for e in ins if e is not None]
    if not ins or len(parts) != len(ins):
        return None
    for i in range(len(ins)):
        ctx.handled(i)
    return [e for part in parts for e in part]


def _slice_fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    data = ins[0] if ins else None
    if data is None:
        return None
    starts, ends, axes, steps = (const_list(node.input(i)) for i in (1, 2, 3, 4))
    if starts is None or ends is None or (axes is not None and list(axes) not in ([0], [-1])):
        return None
    step = steps[0] if steps else 1
    ctx.handled(0)
    return (
        list(data[slice(starts[0], ends[0], step)]) if abs(ends[0]) < 2**62 else list(data[starts[0] :: step])
    )


def _concat_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    parts = [a for a in xs if a is not None]
    if len(parts) != len(xs):
        return None
    return np.concatenate(parts, axis=int(node.attr("axis", 0)))


def _slice_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    """The Slice rule's own reading of the operands and ONNX's clamping."""
    x = xs[0]
    if x is None:
        return None
    params = slice_params(ctx, node, x.ndim)
    if params is None:
        return None
    for a, (s, e, st) in params.items():
        x = np.take(x, np.asarray(slice_range(s, e, st, x.shape[a]), dtype=np.int64), axis=a)
    return x


register_op(
    "Concat",
    _concat,
    kind=lambda n: "joint" if len(n.inputs) > 1 else "accessory",
    shape=concat_shape,
    fold=_concat_fold,
    literal=_concat_literal,
    zero_when=all_zero,
    erased_input="cut",
)
# Split and Slice copy parts of operand 0 (every output of a Split); their other operands are sizes.
register_op(
    "Split",
    _split_op,
    shrink=_shrink_split,
    legacy_attrs=(LegacyAttr("split", 1, 13),),
    zero_when=data_zero(0),
)
register_op(
    "Slice",
    _slice,
    shrink=_shrink_slice,
    fold=_slice_fold,
    literal=_slice_literal,
    legacy_attrs=(LegacyAttr("starts", 1, 10), LegacyAttr("ends", 2, 10), LegacyAttr("axes", 3, 10)),
    zero_when=data_zero(0),
)
