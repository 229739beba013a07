"""Operators with weights that create a new channel space: convolutions, Gemm/MatMul/Einsum, embeddings."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Dim, Node, Value
from graphcore.ops.common import any_zero, combine_zeros, data_zero, rank, stem_zero
from graphcore.ops.registry import ShrinkView, register_op
from graphcore.ops.shape import broadcast_dims, conv_shape


def _has_weight(node: Node) -> bool:
    return any(v is not None and (v.is_param or v.const is not None) for v in node.inputs[:2])


def _stem_or_joint(node: Node) -> str:
    return "stem" if _has_weight(node) else "joint"


def _conv(ctx: ChannelGraph, node: Node) -> None:
    x, w, b = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    if x is None or w is None or x.shape is None or w.shape is None or y.shape is None:
        for v in (x, w, b, y):
            ctx.pin_all(v, "Conv with unknown shapes")
        return
    if not len(x.shape) == len(w.shape) == len(y.shape) or len(x.shape) < 2:
        for v in (x, w, b, y):
            ctx.pin_all(v, "Conv with shapes of different ranks")
        return
    g = int(node.attr("group", 1))
    ctx.link(x, 0, y, 0)
    ctx.link(w, 0, y, 1)
    flags = [ctx.zero(w, 0)]
    if b is not None:
        ctx.link(b, 0, y, 1)
        flags.append(ctx.zero(b, 0))
    ctx.set_zero(y, 1, combine_zeros(flags, every=True))
    for a in range(2, len(w.shape)):
        ctx.fix(w, a, "Conv kernel axis")
    if g == 1:
        ctx.link(x, 1, w, 1)
        ctx.require_zero([(x, 1), (w, 1)], "Conv sums over its input channels")
    elif _tie_group_blocks(ctx, x, y, g, x.shape[1], w.shape[0], "Conv"):
        ctx.fix(w, 1, "grouped Conv: the per-group input width is fixed")


def _tie_group_blocks(ctx: ChannelGraph, x: Value, y: Value, g: int, cin: Dim, cout: Dim, op: str) -> bool:
    """A group of a convolution only sees its own block of input channels: removing whole blocks (input
    block k with output block k) keeps every other group's result unchanged. Where the channel counts
    are unknown or do not split into ``g`` groups, both channel axes are pinned instead (False)."""
    if not (isinstance(cin, int) and isinstance(cout, int) and cin % g == 0 and cout % g == 0):
        ctx.pin(x, 1, f"grouped {op} with unknown channel counts")
        ctx.pin(y, 1, f"grouped {op} with unknown channel counts")
        return False
    bi, bo = cin // g, cout // g
    ctx.tie_blocks(x, 1, bi)
    ctx.tie_blocks(y, 1, bo)
    ctx.link_index(x, 1, np.arange(g) * bi, y, 1, np.arange(g) * bo)
    return True


def _conv_transpose(ctx: ChannelGraph, node: Node) -> None:
    x, w, b = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    if x is None or w is None or x.shape is None or w.shape is None or y.shape is None:
        for v in (x, w, b, y):
            ctx.pin_all(v, "ConvTranspose with unknown shapes")
        return
    g = int(node.attr("group", 1))
    ctx.link(x, 0, y, 0)
    ctx.link(x, 1, w, 0)
    for a in range(2, len(w.shape)):
        ctx.fix(w, a, "ConvTranspose kernel axis")
    if g == 1:
        ctx.link(w, 1, y, 1)
        flags = [ctx.zero(w, 1)]
        if b is not None:
            ctx.link(b, 0, y, 1)
            flags.append(ctx.zero(b, 0))
        ctx.set_zero(y, 1, combine_zeros(flags, every=True))
        ctx.require_zero([(x, 1), (w, 0)], "ConvTranspose sums over its input channels")
    elif _tie_group_blocks(ctx, x, y, g, x.shape[1], y.shape[1], "ConvTranspose"):
        ctx.fix(w, 1, "grouped ConvTranspose: the per-group output width is fixed")
        if b is not None:
            ctx.link(b, 0, y, 1)


def contraction(
    ctx: ChannelGraph,
    operands: list[tuple[Value, str]],
    out: Value,
    out_labels: str,
    what: str,
) -> None:
    """Einsum semantics: equal labels are the same channel; labels missing from the output are summed.

    The output slice at index i of label l is zero when any operand holding l is zero there; a summed
    index can be removed exactly only where some operand is zero (``require_zero``).
    """
    by_label: dict[str, list[tuple[Value, int]]] = {}
    for v, labels in operands:
        for ax, lab in enumerate(labels):
            by_label.setdefault(lab, []).append((v, ax))
    out_pos = {lab: ax for ax, lab in enumerate(out_labels)}
    for lab, slots in by_label.items():
        real = [(v, ax) for v, ax in slots if v.shape is not None and v.shape[ax] != 1]
        if lab in out_pos:
            oax = out_pos[lab]
            key = ctx.slot(out, oax)
            zs = []
            for v, ax in slots:
                if (v, ax) in real or (out.shape is not None and out.shape[oax] == 1):
                    if ctx.link(v, ax, out, oax):
                        zs.append(ctx.zero(v, ax))
                else:
                    ctx.pin(v, ax, "broadcast axis")
            if key is not None:
                ctx.set_zero(out, oax, combine_zeros(zs, every=False))
        else:
            for (v, ax), (w, bx) in itertools.pairwise(real):
                ctx.link(v, ax, w, bx)
            for v, ax in slots:
                if (v, ax) not in real:
                    ctx.pin(v, ax, "broadcast axis")
            if real:
                ctx.require_zero(real, f"{what} sums over this axis")


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _matmul(ctx: ChannelGraph, node: Node) -> None:
    a, b = node.input(0), node.input(1)
    y = node.outputs[0]
    ra, rb, ry = rank(a), rank(b), rank(y)
    if a is None or b is None or ra is None or rb is None or ry is None:
        for v in (a, b, y):
            ctx.pin_all(v, "MatMul with unknown shapes")
        return
    batch = max(ra if ra >= 2 else 0, rb if rb >= 2 else 0) - 2
    batch = max(batch, 0)
    blabels = _LETTERS[:batch]
    la_full = blabels[batch - (ra - 2) :] + "MK" if ra >= 2 else "K"
    lb_full = blabels[batch - (rb - 2) :] + "KN" if rb >= 2 else "K"
    out = blabels + ("M" if ra >= 2 else "") + ("N" if rb >= 2 else "")
    if len(out) != ry:
        for v in (a, b, y):
            ctx.pin_all(v, "MatMul rank mismatch")
        return
    contraction(ctx, [(a, la_full), (b, lb_full)], y, out, "MatMul")


def _gemm(ctx: ChannelGraph, node: Node) -> None:
    a, b, c = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    if a is None or b is None or a.shape is None or b.shape is None or y.shape is None:
        for v in (a, b, c, y):
            ctx.pin_all(v, "Gemm with unknown shapes")
        return
    la = "KM" if node.attr("transA", 0) else "MK"
    lb = "NK" if node.attr("transB", 0) else "KN"
    contraction(ctx, [(a, la), (b, lb)], y, "MN", "Gemm")
    if c is not None and c.shape is not None:
        zs = [ctx.zero(y, 0).copy(), ctx.zero(y, 1).copy()]
        shift = 2 - len(c.shape)
        for ax in range(2):
            cx = ax - shift
            if cx < 0:
                zs[ax][:] = False
                continue
            if c.shape[cx] == y.shape[ax]:
                ctx.link(c, cx, y, ax)
                zs[ax] &= ctx.zero(c, cx)
            else:
                ctx.pin(c, cx, "broadcast axis")
                zs[ax][:] = False
        ctx.set_zero(y, 0, zs[0])
        ctx.set_zero(y, 1, zs[1])


def _einsum(ctx: ChannelGraph, node: Node) -> None:
    eq = str(node.attr("equation", "")).replace(" ", "")
    y = node.outputs[0]
    ins = [v for v in node.inputs if v is not None]
    try:
        lhs, rhs = eq.split("->") if "->" in eq else (eq, None)
        terms = lhs.split(",")
        ranks = [v.rank for v in ins]
        if len(terms) != len(ins) or None in ranks:
            raise ValueError
        n_ell = 0
        for t, r in zip(terms, ranks):
            if "..." in t and r is not None:
                n_ell = max(n_ell, r - (len(t) - 3))
        ell = "".join(ch for ch in "0123456789"[:n_ell])
        expanded = []
        for t, r in zip(terms, ranks):
            if "..." in t and r is not None:
                k = r - (len(t) - 3)
                t = t.replace("...", ell[n_ell - k :])
            if len(t) != r:
                raise ValueError
            expanded.append(t)
        if rhs is None:
            counts: dict[str, int] = {}
            for t in expanded:
                for ch in t:
                    counts[ch] = counts.get(ch, 0) + 1
            rhs = ell + "".join(sorted(ch for ch, c in counts.items() if c == 1 and ch not in ell))
        else:
            rhs = rhs.replace("...", ell)
        if y.shape is not None and len(rhs) != len(y.shape):
            raise ValueError
    except ValueError:
        for v in [*ins, y]:
            ctx.pin_all(v, f"Einsum equation {eq!r} not understood")
        return
    contraction(ctx, list(zip(ins, expanded)), y, rhs, "Einsum")


def _gather(ctx: ChannelGraph, node: Node) -> None:
    data, idx = node.input(0), node.input(1)
    y = node.outputs[0]
    rd, ri = rank(data), rank(idx)
    if data is None or idx is None or rd is None or ri is None or rank(y) is None:
        for v in (data, idx, y):
            ctx.pin_all(v, "Gather with unknown shapes")
        return
    axis = int(node.attr("axis", 0))
    axis = axis + rd if axis < 0 else axis
    ctx.pin(data, axis, "indexed by Gather")
    for ax in range(rd):
        if ax == axis:
            continue
        oax = ax if ax < axis else ax + ri - 1
        if ctx.link(data, ax, y, oax):
            ctx.set_zero(y, oax, ctx.zero(data, ax))
    for ax in range(ri):
        ctx.link(idx, ax, y, axis + ax)


def _embedding_or_index(node: Node) -> str:
    """Gather from a weight is an embedding (a stem); from an activation it only indexes."""
    data = node.input(0)
    return "stem" if data is not None and data.is_param else "accessory"


def _shrink_groups(node: Node, plan: ShrinkView) -> dict[str, Any]:
    """Whole groups were removed: the group count falls with the output channels."""
    g = int(node.attr("group", 1))
    y = node.outputs[0]
    if g == 1 or y.shape is None:
        return {}
    old, new = y.shape[1], plan.new_shape(y)[1]
    if old == new or not isinstance(old, int) or not isinstance(new, int):
        return {}
    return {"attrs": {"group": g * new // old}}


# -- output shapes, shape arithmetic, literals and cost ------------------------------------------------


def _gather_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    x, idx = node.input(0), node.input(1)
    if x is None or x.shape is None or idx is None or idx.shape is None:
        return None
    axis = int(node.attr("axis", 0)) % len(x.shape)
    return (*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :])


def _matmul_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    x, w = node.input(0), node.input(1)
    if x is None or x.shape is None or w is None or w.shape is None:
        return None
    a, b = x.shape, w.shape
    if len(a) < 2 or len(b) < 2:
        return None
    batch = broadcast_dims([a[:-2], b[:-2]]) if len(a) > 2 or len(b) > 2 else ()
    return (*batch, a[-2], b[-1])


def gemm_shape(ctx: ChannelGraph, node: Node, b_index: int = 1) -> tuple[Dim, ...] | None:
    """(M, N) of op(A) @ op(B), B read from operand ``b_index`` (QGemm's is 3): ONNX's inference leaves
    it unknown after an op it does not know."""
    a, b = node.input(0), node.input(b_index)
    if a is None or b is None or a.shape is None or b.shape is None or len(a.shape) != 2 or len(b.shape) != 2:
        return None
    m = a.shape[1] if node.attr("transA", 0) else a.shape[0]
    n = b.shape[0] if node.attr("transB", 0) else b.shape[1]
    return (m, n)


def _gather_fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    data = ins[0] if ins else None
    idx = node.input(1)
    if data is None or idx is None or int(node.attr("axis", 0)) != 0 or idx.const is None:
        return None
    n = len(data)
    picks = np.asarray(idx.const).reshape(-1)
    try:
        out = [data[int(i) + n if int(i) < 0 else int(i)] for i in picks]
    except IndexError:
        return None
    ctx.handled(0)
    ctx.handled(1)
    return out


def _gather_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    x, idx = xs[0], xs[1] if len(xs) > 1 else None
    if x is None or idx is None:
        return None
    return np.take(x, idx.astype(np.int64), axis=int(node.attr("axis", 0)))


def _batch1_numel(v: Value | None) -> int | None:
    """Elements of ``v`` with symbolic dims (batch, sequence) counted as 1."""
    if v is None or v.shape is None:
        return None
    return math.prod([d if isinstance(d, int) else 1 for d in v.shape])


def _conv_cost(node: Node) -> int:
    w = node.input(1)
    if w is None or w.static_shape is None:
        return 0
    return 2 * (_batch1_numel(node.outputs[0]) or 0) * math.prod(w.static_shape[1:])


def _conv_transpose_cost(node: Node) -> int:
    w = node.input(1)
    if w is None or w.static_shape is None:
        return 0
    x = _batch1_numel(node.input(0))
    return 0 if x is None else 2 * x * math.prod(w.static_shape[1:])


def _inner_dim(node: Node) -> int | None:
    a = node.input(0)
    if a is None or not a.shape or not isinstance(a.shape[-1], int):
        return None
    return a.shape[-1]


def _matmul_cost(node: Node) -> int:
    k = _inner_dim(node)
    return 0 if k is None else 2 * (_batch1_numel(node.outputs[0]) or 0) * k


def _gemm_cost(node: Node) -> int:
    k = _inner_dim(node)
    a = node.input(0)
    if k is None or a is None or a.shape is None:
        return 0
    if node.attr("transA", 0):
        k = int(cast(int, a.shape[0]))
    return 2 * (_batch1_numel(node.outputs[0]) or 0) * k


def _einsum_cost(node: Node) -> int:
    """Output size times the geometric mean of the contracted sizes (the equation is not read)."""
    if _inner_dim(node) is None:
        return 0
    a, b = _batch1_numel(node.input(0)), _batch1_numel(node.input(1))
    y = max(_batch1_numel(node.outputs[0]) or 0, 1)
    if a is None or b is None:
        return 0
    return 2 * y * max(1, round((a * b / y) ** 0.5))


# zero_when: a weighted sum is zero when its input or its weight is (and the bias, if any); a product of
# operands (MatMul, Einsum) when one of them is; an embedding when its table is.
# contraction: which weight axis sums the input's channels (whole convolutions only: a grouped one
# mixes within groups, and cutting channels would change the groups).
def _contracts(axis: int) -> Callable[[Node], tuple[int, int] | None]:
    def contraction(node: Node) -> tuple[int, int] | None:
        return (1, axis) if int(node.attr("group", 1)) == 1 else None

    return contraction


def _gemm_contraction(node: Node) -> tuple[int, int] | None:
    if int(node.attr("transA", 0)):
        return None
    return (1, 1 if int(node.attr("transB", 0)) else 0)


def _matmul_contraction(node: Node) -> tuple[int, int] | None:
    w = node.input(1)
    return (1, 0) if w is not None and w.rank == 2 else None


# Kept widths the kernels run fastest at a multiple of (``OpRule.width_multiple``, read by the default
# selection through graphcore/widths.py). onnxruntime's CPU convolutions use the blocked NCHWc layout only
# when a layer's channel counts are multiples of the block (8 with AVX2, 16 with AVX-512); a ragged layer
# gets layout reorders around it and runs unblocked (measured: MobileNetV2 pruned to ragged widths ran 40
# of 52 convolutions out of NCHWc, at 0.84 of the full model's latency; at multiples of 8, at 0.35; see
# bench/ort_latency.py). GEMM kernels pack operands in panels of 16 columns (MLAS) and fp16 tensor cores
# want multiples of 8, so matrix products declare 16 (on the AVX2 CPU measured, ragged GEMM widths cost
# nothing visible: the declaration is cheap insurance for other kernels).
CONV_WIDTH_MULTIPLE = 8
GEMM_WIDTH_MULTIPLE = 16

register_op(
    "Conv",
    _conv,
    kind="stem",
    shape=conv_shape,
    shrink=_shrink_groups,
    cost=_conv_cost,
    zero_when=stem_zero(weight=1, bias=2),
    contraction=_contracts(1),
    width_multiple=CONV_WIDTH_MULTIPLE,
)
register_op(
    "ConvTranspose",
    _conv_transpose,
    kind="stem",
    shrink=_shrink_groups,
    cost=_conv_transpose_cost,
    zero_when=stem_zero(weight=1, bias=2),
    contraction=_contracts(0),
    width_multiple=CONV_WIDTH_MULTIPLE,
)
register_op(
    "MatMul",
    _matmul,
    kind=_stem_or_joint,
    shape=_matmul_shape,
    cost=_matmul_cost,
    zero_when=any_zero,
    contraction=_matmul_contraction,
    width_multiple=GEMM_WIDTH_MULTIPLE,
)
register_op(
    "Gemm",
    _gemm,
    shape=gemm_shape,
    kind="stem",
    cost=_gemm_cost,
    zero_when=stem_zero(weight=1, bias=2),
    contraction=_gemm_contraction,
    width_multiple=GEMM_WIDTH_MULTIPLE,
)
register_op(
    "Einsum",
    _einsum,
    kind=_stem_or_joint,
    cost=_einsum_cost,
    zero_when=any_zero,
    width_multiple=GEMM_WIDTH_MULTIPLE,
)
register_op(
    "Gather",
    _gather,
    kind=_embedding_or_index,
    shape=_gather_shape,
    fold=_gather_fold,
    literal=_gather_literal,
    zero_when=data_zero(0),
)
