"""Operators that move or regroup axes without computing: the places channels change address.

Concat, Split and Slice live in ``joins.py``; padding, resampling and tiling in ``resample.py``.

Reshape-like ops are matched axis group by axis group. When several axes merge into one (Flatten before a
Linear, heads merged back into the hidden size) the output index carries the *carrier* axis: channel c
owns a whole block of the merged axis. When one axis splits (hidden size into heads × head size) the
carrier is the outermost part: removing a head removes a whole block. The other parts are pinned, so
every removal keeps the tensor rectangular. Attention is the exception (``head_dims.py``): where the
inner part is a head dimension (it reaches a product of two activations), the inner part carries, so
dimension j of every head is one channel; ``head_dims.whole_heads()`` restores whole heads.
"""

from __future__ import annotations

import math

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Dim, Node, Value
from graphcore.ops.axis_groups import factorize
from graphcore.ops.common import const_ints, const_list, data_zero, identity, int_dim, known_shape, rank
from graphcore.ops.head_dims import feeds_head_product, from_head_product, head_dims_enabled
from graphcore.ops.registry import LegacyAttr, register_op
from graphcore.ops.shape import flatten_shape


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
    heads = [k for k, a in enumerate(ia) if sizes[k] > 1 and head_dims_enabled() and from_head_product(x, a)]
    if heads:
        c = heads[-1]  # attention's output merged back: head dimension j of every head is one channel
    else:
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
    heads = [k for k, b in enumerate(ib) if sizes[k] > 1 and head_dims_enabled() and feeds_head_product(y, b)]
    if heads:
        c = heads[-1]  # queries, keys or values split into heads: head dimension j of every head
    else:
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


# -- literal evaluation (see graphcore/fold.py) ------------------------------------------------------------


def _ints(a: np.ndarray | None) -> list[int] | None:
    return None if a is None else [int(x) for x in a.reshape(-1)]


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


_AXES = (LegacyAttr("axes", 1, 13),)
# Every op here moves the elements of operand 0 and computes none: zero exactly when it is (zero_when).
_MOVES = data_zero(0)
register_op(
    "Reshape", _reshape, shape=_reshape_shape, fold=_reshape_1d, literal=_reshape_literal, zero_when=_MOVES
)
register_op(
    "Flatten", _reshape, shape=flatten_shape, fold=_reshape_1d, literal=_flatten_literal, zero_when=_MOVES
)
register_op("Transpose", _transpose, shape=_transpose_shape, literal=_transpose_literal, zero_when=_MOVES)
register_op(
    "Squeeze",
    _squeeze_like,
    shape=_squeeze_shape,
    fold=_reshape_1d,
    literal=_squeeze_literal,
    legacy_attrs=_AXES,
    zero_when=_MOVES,
)
register_op(
    "Unsqueeze",
    _squeeze_like,
    shape=_unsqueeze_shape,
    fold=_reshape_1d,
    literal=_unsqueeze_literal,
    legacy_attrs=_AXES,
    zero_when=_MOVES,
)
register_op("DepthToSpace", _space_depth, zero_when=_MOVES)
register_op("SpaceToDepth", _space_depth, zero_when=_MOVES)

__all__ = ["factorize", "identity", "regroup", "shape_operand"]
