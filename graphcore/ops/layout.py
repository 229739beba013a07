"""Operators that move, regroup, cut or join axes without computing: the places channels change address.

Reshape-like ops are matched axis group by axis group. When several axes merge into one (Flatten before a
Linear, heads merged back into the hidden size) the output index carries the *carrier* axis: channel c
owns a whole block of the merged axis. When one axis splits (hidden size into heads × head size) the
carrier is the outermost part: removing a head removes a whole block. The other parts are pinned, so
every removal keeps the tensor rectangular.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Dim, Node, Value
from graphcore.ops.common import broadcast, const_ints, const_list, identity, int_dim, known_shape, rank
from graphcore.ops.registry import LegacyAttr, ShrinkView, register_op

Groups = list[tuple[list[int], list[int]]]


def _greedy(a: list[Dim], b: list[Dim]) -> tuple[Groups, int, int]:
    """Match leading axes of ``a`` and ``b`` by products; stop at the first axis that cannot match."""
    groups: Groups = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == 1 and b[j] != 1:
            groups.append(([i], []))
            i += 1
            continue
        if b[j] == 1 and a[i] != 1:
            groups.append(([], [j]))
            j += 1
            continue
        if not isinstance(a[i], int) or not isinstance(b[j], int):
            if a[i] is not None and a[i] == b[j]:
                groups.append(([i], [j]))
                i += 1
                j += 1
                continue
            break
        pa, pb = int_dim(a[i]), int_dim(b[j])
        ia, ib = [i], [j]
        ii, jj = i + 1, j + 1
        ok = True
        while pa != pb:
            if pa < pb:
                if ii >= len(a) or not isinstance(a[ii], int):
                    ok = False
                    break
                pa *= int_dim(a[ii])
                ia.append(ii)
                ii += 1
            else:
                if jj >= len(b) or not isinstance(b[jj], int):
                    ok = False
                    break
                pb *= int_dim(b[jj])
                ib.append(jj)
                jj += 1
        if not ok:
            break
        groups.append((ia, ib))
        i, j = ii, jj
    while i < len(a) and a[i] == 1 and j == len(b):
        groups.append(([i], []))
        i += 1
    while j < len(b) and b[j] == 1 and i == len(a):
        groups.append(([], [j]))
        j += 1
    return groups, i, j


def factorize(a: list[Dim], b: list[Dim]) -> Groups:
    """Pair axis groups of two shapes with equal element counts; an unmatched middle is one group."""
    head, i, j = _greedy(a, b)
    if i == len(a) and j == len(b):
        return head
    ra, rb = a[i:][::-1], b[j:][::-1]
    tail, ti, tj = _greedy(ra, rb)
    na, nb = len(a), len(b)
    tail_groups = [([na - 1 - x for x in ia][::-1], [nb - 1 - y for y in ib][::-1]) for ia, ib in tail][::-1]
    middle = (list(range(i, na - ti)), list(range(j, nb - tj)))
    return [*head, middle, *tail_groups]


def regroup(ctx: ChannelGraph, x: Value, y: Value, what: str) -> None:
    """Link ``x`` to ``y`` (same elements, different shape) group by group."""
    assert x.shape is not None and y.shape is not None
    for ia, ib in factorize(list(x.shape), list(y.shape)):
        if not ia or not ib:
            for a in ia:
                ctx.pin(x, a, f"{what}: size-1 axis")
            for b in ib:
                ctx.pin(y, b, f"{what}: size-1 axis")
            continue
        sa = [x.shape[a] for a in ia]
        sb = [y.shape[b] for b in ib]
        if len(ia) == 1 and len(ib) == 1 and sa[0] == sb[0]:
            if ctx.link(x, ia[0], y, ib[0]):
                ctx.set_zero(y, ib[0], ctx.zero(x, ia[0]))
            continue
        if not all(isinstance(s, int) for s in [*sa, *sb]):
            for a in ia:
                ctx.pin(x, a, f"{what}: axes regrouped with unknown sizes")
            for b in ib:
                ctx.pin(y, b, f"{what}: axes regrouped with unknown sizes")
            continue
        if len(ib) == 1:
            _merge(ctx, x, ia, y, ib[0], what)
        elif len(ia) == 1:
            _split(ctx, x, ia[0], y, ib, what)
        else:
            for a in ia:
                ctx.pin(x, a, f"{what}: axes regrouped many-to-many")
            for b in ib:
                ctx.pin(y, b, f"{what}: axes regrouped many-to-many")


def _carrier(sizes: list[int], pinned: list[bool]) -> int:
    candidates = [k for k, s in enumerate(sizes) if s > 1]
    free = [k for k in candidates if not pinned[k]]
    return (free or candidates or [0])[0]


def _merge(ctx: ChannelGraph, x: Value, ia: list[int], y: Value, b: int, what: str) -> None:
    sizes = [int_dim(known_shape(x)[a]) for a in ia]
    c = _carrier(sizes, [ctx.is_pinned(x, a) for a in ia])
    stride = math.prod(sizes[c + 1 :])
    n = math.prod(sizes)
    out_idx = np.arange(n, dtype=np.int64)
    src = (out_idx // stride) % sizes[c]
    ctx.link_index(y, b, out_idx, x, ia[c], src)
    ctx.set_zero(y, b, ctx.zero(x, ia[c])[src])
    for k, a in enumerate(ia):
        if k != c:
            ctx.pin(x, a, f"{what}: merged into another axis's blocks")


_AXIS_PRESERVING = {"Identity", "Cast", "Relu", "Dropout", "Contiguous"}


def _indexed_downstream(v: Value, axis: int, depth: int = 8) -> bool:
    """Is this axis soon indexed or cut (Gather/Split/Slice along it)? Then it makes a poor carrier:
    packed q/k/v projections are split as [3, hidden] and then indexed along the 3."""
    frontier = [(v, axis, depth)]
    while frontier:
        val, ax, d = frontier.pop()
        if d == 0:
            continue
        for node, idx in val.consumers:
            if idx != 0 or not node.outputs:
                continue
            r = val.rank or 0
            if node.op in ("Gather", "Split") and int(node.attr("axis", 0)) % max(r, 1) == ax:
                return True
            if node.op == "Slice":
                axes_v = node.input(3)
                if axes_v is None:
                    return True
                if axes_v.const is None or ax in {int(q) % max(r, 1) for q in axes_v.const.reshape(-1)}:
                    return True
                continue
            out = node.outputs[0]
            if node.op == "Transpose":
                perm = node.attr("perm") or list(range(r))[::-1]
                if ax in perm:
                    frontier.append((out, perm.index(ax), d - 1))
            elif node.op in ("Squeeze", "Unsqueeze") and out.rank is not None:
                axes = const_list(node.input(1))
                if axes is None:
                    continue
                if node.op == "Unsqueeze":
                    ins = sorted(a % out.rank for a in axes)
                    kept = [i for i in range(out.rank) if i not in ins]
                    frontier.append((out, kept[ax], d - 1))
                else:
                    rem = {a % r for a in axes}
                    if ax not in rem:
                        frontier.append((out, ax - sum(1 for q in rem if q < ax), d - 1))
            elif node.op in _AXIS_PRESERVING:
                frontier.append((out, ax, d - 1))
    return False


def _split(ctx: ChannelGraph, x: Value, a: int, y: Value, ib: list[int], what: str) -> None:
    sizes = [int_dim(known_shape(y)[b]) for b in ib]
    c = _carrier(sizes, [_indexed_downstream(y, b) for b in ib])
    stride = math.prod(sizes[c + 1 :])
    n = math.prod(sizes)
    in_idx = np.arange(n, dtype=np.int64)
    dst = (in_idx // stride) % sizes[c]
    ctx.link_index(x, a, in_idx, y, ib[c], dst)
    z = np.ones(sizes[c], dtype=bool)
    np.logical_and.at(z, dst, ctx.zero(x, a))
    ctx.set_zero(y, ib[c], z)
    for k, b in enumerate(ib):
        if k != c:
            ctx.pin(y, b, f"{what}: part of a split axis (only whole blocks are removable)")


def shape_operand(ctx: ChannelGraph, node: Node, index: int, out: Value) -> None:
    """A tensor that spells ``out``'s shape (Reshape target, Expand shape ...).

    Known literals are rewritten by construct; a runtime copy of another axis's size must be the same
    channel space as the output axis it sizes; anything computed pins that output axis.
    """
    v = node.input(index)
    if v is None:
        return
    ctx.handled(index)
    entries = ctx.get_entries(v, node, index)
    r = rank(out)
    if r is None:
        return
    if entries is not None and len(entries) == r:
        ctx.shape_operands.append((node.name, index, out.name, entries))
    if entries is None or len(entries) != r:
        for k in range(r):
            ctx.pin(out, k, f"{node.op} shape operand not understood")
        return
    if all(e.value is not None for e in entries):
        # Entirely static: construct writes the new shape as a fresh constant. Runtime copies of other
        # axes must still be the same channel space, else the model itself would change sizes.
        for k, e in enumerate(entries):
            if e.kind == "dim" and e.ref is not None and ctx.slot(out, k) is not None:
                src = ctx.values.get(e.ref[0])
                if src is not None:
                    ctx.link(src, e.ref[1], out, k)
        return
    for k, e in enumerate(entries):
        if ctx.slot(out, k) is None:
            continue
        if e.kind == "lit" and e.src is not None:
            continue
        if e.kind == "dim" and e.ref is not None:
            src = ctx.values.get(e.ref[0])
            if src is not None and ctx.link(src, e.ref[1], out, k):
                continue
        ctx.pin(out, k, f"{node.op} shape operand is computed at run time")


def _refine_target(ctx: ChannelGraph, node: Node, x: Value, y: Value) -> None:
    """Fill output dims that shape inference left unknown from the tracked target entries.

    A dim learned this way also resolves the same symbol everywhere downstream (``ctx.subst``).
    """
    entries = ctx.get_entries(node.input(1))
    if entries is None or y.shape is None or len(entries) != len(y.shape) or x.shape is None:
        return
    dims: list[Dim] = list(y.shape)
    infer_at = None
    for k, e in enumerate(entries):
        if isinstance(dims[k], int):
            continue
        if e.value is not None and e.value > 0:
            dims[k] = int(e.value)
        elif e.value == 0 and k < len(x.shape) and not node.attr("allowzero", 0):
            dims[k] = x.shape[k]
        elif e.value == -1:
            infer_at = k
        elif e.kind == "dim" and e.ref is not None:
            src = ctx.values.get(e.ref[0])
            if src is not None and src.shape is not None and e.ref[1] < len(src.shape):
                dims[k] = src.shape[e.ref[1]]
    if infer_at is not None:
        dims[infer_at] = _divide(list(x.shape), [d for i, d in enumerate(dims) if i != infer_at])
    for old, new in zip(y.shape, dims):
        if isinstance(old, str) and isinstance(new, int):
            ctx.subst.setdefault(old, new)
    y.shape = tuple(dims)


def _divide(num: list[Dim], den: list[Dim]) -> Dim:
    """numel(num) / numel(den) when symbols cancel and integers divide; else None."""
    syms = [d for d in num if not isinstance(d, int)]
    n = math.prod([d for d in num if isinstance(d, int)])
    d_int = 1
    for d in den:
        if isinstance(d, int):
            d_int *= d
        elif d in syms and d is not None:
            syms.remove(d)
        else:
            return None
    if syms or d_int == 0 or n % d_int:
        return None
    return n // d_int


def _reshape(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    if node.op == "Reshape" and x is not None and y.shape is not None:
        _refine_target(ctx, node, x, y)
    if x is None or x.shape is None or y.shape is None:
        ctx.pin_all(x, f"{node.op} with unknown shapes")
        ctx.pin_all(y, f"{node.op} with unknown shapes")
        ctx.handled(1)
        return
    regroup(ctx, x, y, node.op)
    if node.op == "Reshape":
        shape_operand(ctx, node, 1, y)


def _transpose(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    r = rank(x)
    if r is None:
        ctx.pin_all(y, "Transpose with unknown shape")
        return
    perm = node.attr("perm") or list(range(r))[::-1]
    for k, p in enumerate(perm):
        if ctx.link(x, p, y, k):
            ctx.set_zero(y, k, ctx.zero(x, p))


def _squeeze_like(ctx: ChannelGraph, node: Node) -> None:
    x, y = node.input(0), node.outputs[0]
    rx, ry = rank(x), rank(y)
    if x is None or rx is None or ry is None:
        ctx.pin_all(x, f"{node.op} with unknown shapes")
        ctx.pin_all(y, f"{node.op} with unknown shapes")
        return
    axes = None
    if node.input(1) is not None:
        ctx.handled(1)
        axes = const_ints(ctx, node, 1)
        if axes is None:
            ctx.pin_all(x, f"{node.op} with computed axes")
            ctx.pin_all(y, f"{node.op} with computed axes")
            return
    if node.op == "Squeeze":
        if axes is None:
            axes = [a for a, d in enumerate(known_shape(x)) if d == 1]
        removed = {a % rx for a in axes}
        kept_in = [a for a in range(rx) if a not in removed]
        kept_out = list(range(ry))
    else:
        inserted = {a % ry for a in (axes or [])}
        kept_in = list(range(rx))
        kept_out = [a for a in range(ry) if a not in inserted]
    if len(kept_in) != len(kept_out):
        ctx.pin_all(x, f"{node.op} rank mismatch")
        ctx.pin_all(y, f"{node.op} rank mismatch")
        return
    for a, b in zip(kept_in, kept_out):
        if ctx.link(x, a, y, b):
            ctx.set_zero(y, b, ctx.zero(x, a))


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
        ctx.link_index(v, axis, np.arange(d), y, axis, offset + np.arange(d))
        zs.append(ctx.zero(v, axis))
        offset += d
    if key is not None and offset == ctx.size[key]:
        ctx.set_zero(y, axis, np.concatenate(zs) if zs else np.zeros(0, bool))
    for a in range(ry):
        if a == axis:
            continue
        linked = [v for v in ins if ctx.link(v, a, y, a)]
        key_a = ctx.slot(y, a)
        if key_a is None or not linked:
            continue
        # A link may learn the output's size only after an earlier input linked with no static size:
        # that input has no zero flags for the axis, so it counts as not zero (conservative).
        za = np.ones(ctx.size[key_a], dtype=bool)
        for v in linked:
            zv = ctx.zero(v, a)
            za &= zv if zv.shape == za.shape else False
        ctx.set_zero(y, a, za)


def _split_op(ctx: ChannelGraph, node: Node) -> None:
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


def _space_depth(ctx: ChannelGraph, node: Node) -> None:
    """Each channel of the shallow side owns ``blocksize**2`` channels of the deep side.

    DCR (ONNX's default, and SpaceToDepth's only order) puts the deep channel at ``k * C + c``, CRD at
    ``c * b**2 + k``. Removing a shallow channel together with its block keeps both orders intact,
    so the deep and shallow channel axes are linked block-wise; the spatial axes are pinned.
    """
    x, y = node.input(0), node.outputs[0]
    ctx.link(x, 0, y, 0)
    b = int(node.attr("blocksize", 0) or 0)
    mode = node.attr("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    deep, shallow = (x, y) if node.op == "DepthToSpace" else (y, x)
    reason = f"{node.op} moves channels into space"
    for v in (x, y):
        for a in range(2, rank(v) or 0):
            ctx.pin(v, a, reason)
    ks, kd = ctx.slot(shallow, 1), ctx.slot(deep, 1)
    if (
        b < 1
        or mode not in ("DCR", "CRD")
        or ks is None
        or kd is None
        or ctx.size[kd] != ctx.size[ks] * b * b
    ):
        ctx.pin(x, 1, reason)
        ctx.pin(y, 1, reason)
        return
    c = ctx.size[ks]
    per_channel = np.arange(c)
    blocks = [(k * c + per_channel) if mode == "DCR" else (per_channel * b * b + k) for k in range(b * b)]
    for idx in blocks:
        ctx.link_index(deep, 1, idx, shallow, 1, per_channel)
    if deep is x:
        zd = ctx.zero(deep, 1)
        ctx.set_zero(y, 1, np.logical_and.reduce([zd[idx] for idx in blocks]))
    else:
        zs = ctx.zero(shallow, 1)
        z = np.zeros(c * b * b, dtype=bool)
        for idx in blocks:
            z[idx] = zs
        ctx.set_zero(y, 1, z)


def _shape(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    r = rank(x)
    if x is None or r is None:
        return
    for a in range(r):
        ctx.touch(x, a)
    start = int(node.attr("start", 0))
    end = node.attr("end")
    start = start + r if start < 0 else start
    end = r if end is None else (int(end) + r if int(end) < 0 else int(end))
    ctx.set_entries(node.outputs[0], [Entry.dim(x, a) for a in range(max(start, 0), min(end, r))])


def _size(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    r = rank(x)
    if x is None or r is None:
        return
    refs = tuple((x.name, a) for a in range(r))
    n = x.numel
    for a in range(r):
        ctx.touch(x, a)
    ctx.set_entries(node.outputs[0], [Entry("expr", n, refs=refs)], scalar=True)
    for a in range(r):
        ctx.pin(x, a, "its size is read by Size")


def _constant_of_shape(ctx: ChannelGraph, node: Node) -> None:
    y = node.outputs[0]
    shape_operand(ctx, node, 0, y)
    value = node.attr("value")
    is_zero = value is None or float(np.asarray(value).reshape(-1)[0]) == 0.0
    if y.shape is not None:
        for a in range(len(y.shape)):
            ctx.set_zero(y, a, is_zero)
            if ctx.slot(y, a) is not None and ctx.slot(y, a) not in ctx.pins:
                ctx.touch(y, a)


def _nothing(ctx: ChannelGraph, node: Node) -> None:
    """Constants and shape-only ops: nothing flows through channels."""


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


# -- output shapes (see graphcore/infer.py) --------------------------------------------------------------


def _transpose_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    x = node.input(0)
    if x is None or x.shape is None:
        return None
    perm = node.attr("perm") or list(range(len(x.shape)))[::-1]
    return tuple(x.shape[p] for p in perm)


def _unsqueeze_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    x, axes = node.input(0), const_list(node.input(1))
    if x is None or x.shape is None or axes is None:
        return None
    shape = list(x.shape)
    r = len(shape) + len(axes)
    for a in sorted(a % r for a in axes):
        shape.insert(a, 1)
    return tuple(shape)


def _squeeze_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    x, axes = node.input(0), const_list(node.input(1))
    if x is None or x.shape is None:
        return None
    r = len(x.shape)
    drop = {a % r for a in axes} if axes is not None else {a for a, d in enumerate(x.shape) if d == 1}
    return tuple(d for a, d in enumerate(x.shape) if a not in drop)


def _reshape_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """The rank, from the tracked target (its sizes are refined by the rule itself)."""
    x = node.input(0)
    entries = ctx.get_entries(node.input(1))
    if x is None or x.shape is None or entries is None:
        return None
    return tuple(None for _ in entries)


# -- shape arithmetic (see graphcore/fold.py) ------------------------------------------------------------


def _reshape_1d(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    if ins and ins[0] is not None and (node.outputs[0].rank or 0) <= 1:
        ctx.handled(0)
        return list(ins[0])
    return None


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


def _constant_of_shape_fold(
    ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]
) -> list[Entry] | None:
    shape = ins[0] if ins else None
    if shape is None or len(shape) != 1:
        return None
    n = shape[0].value
    if n is None or n > 64:
        return None
    value = node.attr("value")
    fill = int(np.asarray(value).reshape(-1)[0]) if value is not None else 0
    if value is not None and np.asarray(value).dtype.kind not in "iub":
        return None
    return [Entry.lit(fill) for _ in range(n)]


def _range_fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    if len(ins) < 3:
        return None
    bounds: list[int] = []
    refs: list[tuple[str, int]] = []
    for e in ins:
        if e is None or len(e) != 1 or e[0].value is None:
            return None
        bounds.append(e[0].value)
        refs.extend(e[0].sources())
    start, limit, delta = bounds[0], bounds[1], bounds[2]
    if not delta or abs((limit - start) // delta) > 64:
        return None
    return [Entry("expr", v, refs=tuple(refs)) for v in range(start, limit, delta)]


# -- literal evaluation (see graphcore/fold.py) ------------------------------------------------------------


def _ints(a: np.ndarray | None) -> list[int] | None:
    return None if a is None else [int(x) for x in a.reshape(-1)]


def _concat_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    parts = [a for a in xs if a is not None]
    if len(parts) != len(xs):
        return None
    return np.concatenate(parts, axis=int(node.attr("axis", 0)))


def _reshape_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    x = xs[0]
    shape = _ints(xs[1] if len(xs) > 1 else None)
    if x is None or shape is None:
        return None
    if not node.attr("allowzero", 0):
        shape = [x.shape[k] if d == 0 and k < x.ndim else d for k, d in enumerate(shape)]
    return x.reshape(shape)


def _transpose_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    x = xs[0]
    perm = node.attr("perm")
    return None if x is None else np.transpose(x, None if perm is None else [int(p) for p in perm])


def _flatten_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    x = xs[0]
    if x is None:
        return None
    axis = int(node.attr("axis", 1)) % max(x.ndim, 1) if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _squeeze_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    x, axes = xs[0], _ints(xs[1] if len(xs) > 1 else None)
    return None if x is None else np.squeeze(x, axis=None if axes is None else tuple(axes))


def _unsqueeze_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    x, axes = xs[0], _ints(xs[1] if len(xs) > 1 else None)
    if x is None or axes is None:
        return None
    out = x
    for a in sorted(a % (x.ndim + len(axes)) for a in axes):
        out = np.expand_dims(out, a)
    return out


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


_AXES = (LegacyAttr("axes", 1, 13),)

register_op("Reshape", _reshape, shape=_reshape_shape, fold=_reshape_1d, literal=_reshape_literal)
register_op("Flatten", _reshape, fold=_reshape_1d, literal=_flatten_literal)
register_op("Transpose", _transpose, shape=_transpose_shape, literal=_transpose_literal)
register_op(
    "Squeeze",
    _squeeze_like,
    shape=_squeeze_shape,
    fold=_reshape_1d,
    literal=_squeeze_literal,
    legacy_attrs=_AXES,
)
register_op(
    "Unsqueeze",
    _squeeze_like,
    shape=_unsqueeze_shape,
    fold=_reshape_1d,
    literal=_unsqueeze_literal,
    legacy_attrs=_AXES,
)
register_op(
    "Concat",
    _concat,
    kind=lambda n: "joint" if len(n.inputs) > 1 else "accessory",
    fold=_concat_fold,
    literal=_concat_literal,
)
register_op("Split", _split_op, shrink=_shrink_split, legacy_attrs=(LegacyAttr("split", 1, 13),))
register_op(
    "Slice",
    _slice,
    shrink=_shrink_slice,
    fold=_slice_fold,
    literal=_slice_literal,
    legacy_attrs=(LegacyAttr("starts", 1, 10), LegacyAttr("ends", 2, 10), LegacyAttr("axes", 3, 10)),
)
register_op("Pad", _pad, legacy_attrs=(LegacyAttr("pads", 1, 11), LegacyAttr("value", 2, 11, dtype=None)))
register_op("Resize", _resize)
register_op("Upsample", _resize)
register_op("Expand", _expand)
register_op("Tile", _tile)
register_op("DepthToSpace", _space_depth)
register_op("SpaceToDepth", _space_depth)
register_op("Shape", _shape, kind="shape")
register_op("Size", _size, kind="shape")
register_op("ConstantOfShape", _constant_of_shape, kind="shape", fold=_constant_of_shape_fold)
register_op("Constant", _nothing, kind="shape")
register_op("Range", _nothing, kind="shape", fold=_range_fold)
register_op("NonZero", _nothing, kind="shape")
register_op("EyeLike", _nothing, kind="shape")

__all__ = ["factorize", "identity", "regroup", "shape_operand", "slice_params", "slice_range"]
