"""onnxruntime's attention ops (``com.microsoft``): heads are removable where the op carries ``num_heads``.

See ``graphcore/ops/contrib.py`` for the family. The output's hidden axis (batch, sequence, num_heads *
v_head_size) is the channel space; blocks of v_head_size are tied (a head goes whole), and every Q, K
and V element of head n is linked to block n. A head is zero in the zeroed model when its V columns are:
softmax(anything) times zero values is zero. The shrink hooks rewrite ``num_heads`` (and
``qkv_hidden_sizes``, ``kv_num_heads``); a layout or option not declared pins the heads with a reason
naming the op.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node, Value
from graphcore.ops.common import data_zero, identity, rank
from graphcore.ops.contrib import MS_DOMAIN, pin_node, present, shape_of, static
from graphcore.ops.registry import ShrinkView, register_op
from graphcore.ops.shape import same_shape

__all__: list[str] = []


#
# Channel picture: the output's hidden axis (batch, sequence, num_heads * v_head_size) is the channel
# space; blocks of v_head_size are tied (a head goes whole), and every Q, K and V element of head n is
# linked to block n. Per-head tensors (past and present caches, attention biases, (B, N, ...) layouts)
# link their head axis to the first element of each block.


def _head_starts(n: int, block: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * block


def _link_hidden_to_heads(
    ctx: ChannelGraph, v: Value | None, axis: int, offset: int, width: int, y: Value, n: int, out_block: int
) -> None:
    """Elements ``offset .. offset + width`` of ``v``'s axis are n heads of ``width // n``: link each to
    the first output element of its head (the output's blocks are tied)."""
    if v is None:
        return
    src = offset + np.arange(width, dtype=np.int64)
    dst = (np.arange(width, dtype=np.int64) // (width // n)) * out_block
    ctx.link_index(v, axis, src, y, 2, dst)


def _link_head_axis(ctx: ChannelGraph, v: Value | None, axis: int, y: Value, n: int, out_block: int) -> None:
    """A per-head tensor (a cache, an attention bias): its head axis follows the heads; a size-1 head
    axis is broadcast over them and stays; the others (batch, sequence, head size) are pinned."""
    if v is None or v.shape is None:
        return
    for a in range(len(v.shape)):
        if a == axis and v.shape[a] == n:
            ctx.link_index(v, a, np.arange(n), y, 2, _head_starts(n, out_block))
        else:
            ctx.pin(v, a, "a per-head tensor's other axes keep their size")


def _zero_heads(ctx: ChannelGraph, y: Value, zero_v: np.ndarray, block: int) -> None:
    """A head is zero when all its V elements are (whole heads only, as they go whole)."""
    if zero_v.size == 0 or zero_v.size % block:
        return
    per_head = zero_v.reshape(-1, block).all(axis=1)
    ctx.set_zero(y, 2, np.repeat(per_head, block))


def _blocked_heads(ctx: ChannelGraph, y: Value, reason: str) -> None:
    ctx.pin(y, 2, reason)


def _qkv_sizes(node: Node, w: Value) -> tuple[int, int, int] | None:
    """Attention's Q, K and V widths: ``qkv_hidden_sizes``, or a third each of the packed weight."""
    sizes = node.attr("qkv_hidden_sizes")
    if sizes:
        got = [int(s) for s in sizes]
        return (got[0], got[1], got[2]) if len(got) == 3 else None
    total = static(w.shape[1]) if w.shape is not None and len(w.shape) == 2 else None
    if total is None or total % 3:
        return None
    return (total // 3,) * 3


def _attention(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::Attention(input (B, S, D_in), weights (D_in, Dq + Dk + Dv), bias, mask_index, past
    (2, B, N, P, H), attention_bias (B, N, S, T), past_sequence_length) -> output (B, S, Dv), present."""
    x, w, b = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    n = int(node.attr("num_heads", 0))
    sizes = _qkv_sizes(node, w) if w is not None else None
    if x is None or w is None or rank(x) != 3 or rank(w) != 2 or rank(y) != 3 or sizes is None or n <= 0:
        pin_node(
            ctx, node, "Attention with a layout or shapes not declared (a packed weight of rank 2 expected)"
        )
        return
    hq, hk, hv = sizes
    if (
        any(s % n for s in sizes)
        or static(shape_of(w)[1]) != hq + hk + hv
        or static(shape_of(y)[2]) not in (hv, None)
    ):
        pin_node(ctx, node, "Attention whose qkv_hidden_sizes do not split into num_heads heads")
        return
    block = hv // n
    ctx.link(x, 0, y, 0)
    ctx.link(x, 1, y, 1)
    ctx.link(x, 2, w, 0)
    ctx.require_zero([(x, 2), (w, 0)], "Attention sums over its input's hidden axis")
    ctx.tie_blocks(y, 2, block)
    for v in (w, b):
        axis = 1 if v is w else 0
        if v is None:
            continue
        if rank(v) != axis + 1 or static(shape_of(v)[axis]) != hq + hk + hv:
            _blocked_heads(ctx, y, "Attention bias of an undeclared shape")
            ctx.pin_all(v, "Attention bias of an undeclared shape")
            continue
        _link_hidden_to_heads(ctx, v, axis, 0, hq, y, n, block)
        _link_hidden_to_heads(ctx, v, axis, hq, hk, y, n, block)
        ctx.link_index(v, axis, hq + hk + np.arange(hv), y, 2, np.arange(hv))
    zero_v = ctx.zero(w, 1)[hq + hk :].copy()
    if b is not None and ctx.slot(b, 0) is not None:
        zero_v &= ctx.zero(b, 0)[hq + hk :]
    _zero_heads(ctx, y, zero_v, block)
    ctx.pin_all(node.input(3), "Attention mask_index: batch and sequence positions")
    _link_head_axis(ctx, node.input(4), 2, y, n, block)
    _link_head_axis(ctx, node.input(5), 1, y, n, block)
    ctx.pin_all(node.input(6), "Attention past_sequence_length")
    _link_head_axis(ctx, present(node, 1), 2, y, n, block)
    if int(node.attr("do_rotary", 0)):
        _blocked_heads(ctx, y, "Attention with do_rotary: its heads' rotary layout is not declared")


def _attention_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    x, w = node.input(0), node.input(1)
    if x is None or w is None or x.shape is None or rank(x) != 3 or w.shape is None or rank(w) != 2:
        return None
    sizes = _qkv_sizes(node, w)
    return None if sizes is None else (x.shape[0], x.shape[1], sizes[2])


def _heads_kept(node: Node, plan: ShrinkView, attr: str = "num_heads") -> int | None:
    """How many of the node's ``attr`` heads survive: output 0's hidden axis shrinks by whole heads."""
    y = node.outputs[0]
    if y.shape is None or len(y.shape) < 3:
        return None
    old, new = y.shape[2], plan.new_shape(y)[2]
    n = int(node.attr(attr, 0))
    if not isinstance(old, int) or not isinstance(new, int) or old == new or n <= 0:
        return None
    return n * new // old


def _shrink_attention(node: Node, plan: ShrinkView) -> dict[str, Any]:
    kept = _heads_kept(node, plan)
    if kept is None:
        return {}
    n = int(node.attr("num_heads"))
    attrs: dict[str, Any] = {"num_heads": kept}
    sizes = node.attr("qkv_hidden_sizes")
    if sizes:
        attrs["qkv_hidden_sizes"] = [int(s) // n * kept for s in sizes]
    return {"attrs": attrs}


def _attention_cost(node: Node) -> int:
    """The QKV projection plus scores and weighted values (sequence lengths count as 1)."""
    w, y = node.input(1), node.outputs[0]
    if w is None or w.static_shape is None or y.shape is None:
        return 0
    d_in, d_qkv = w.static_shape
    s = static(y.shape[1]) or 1
    return 2 * s * d_in * d_qkv + 2 * s * s * d_qkv


def _mha(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::MultiHeadAttention(query (B, S, D), key (B, L, D), value (B, L, Dv), bias
    (D + D + Dv), key_padding_mask, attention_bias (B, N, S, T), past_key (B, N, P, H), past_value, ...)
    -> output (B, S, Dv), present_key, present_value, qk (B, N, S, T). Only the unpacked 3-D form is
    declared: packed QKV (B, S, N, 3, H) and key/value already in (B, N, L, H) pin the node."""
    q, k, v = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    n = int(node.attr("num_heads", 0))
    if q is None or k is None or v is None or n <= 0 or not rank(q) == rank(k) == rank(v) == rank(y) == 3:
        pin_node(ctx, node, "MultiHeadAttention in a packed or (B, N, L, H) layout: not declared")
        return
    d, dk, dv = static(shape_of(q)[2]), static(shape_of(k)[2]), static(shape_of(v)[2])
    if d is None or dk != d or dv is None or d % n or dv % n or static(shape_of(y)[2]) not in (dv, None):
        pin_node(ctx, node, "MultiHeadAttention whose widths do not split into num_heads heads")
        return
    block = dv // n
    ctx.link(q, 0, y, 0)
    ctx.link(q, 1, y, 1)
    ctx.link(k, 0, y, 0)
    ctx.link(v, 0, y, 0)
    ctx.link(k, 1, v, 1)
    ctx.tie_blocks(y, 2, block)
    _link_hidden_to_heads(ctx, q, 2, 0, d, y, n, block)
    _link_hidden_to_heads(ctx, k, 2, 0, d, y, n, block)
    ctx.link(v, 2, y, 2)
    zero_v = ctx.zero(v, 2).copy()
    bias = node.input(3)
    if bias is not None:
        if rank(bias) != 1 or static(shape_of(bias)[0]) != 2 * d + dv:
            ctx.pin_all(bias, "MultiHeadAttention bias of an undeclared shape")
            _blocked_heads(ctx, y, "MultiHeadAttention bias of an undeclared shape")
        else:
            _link_hidden_to_heads(ctx, bias, 0, 0, d, y, n, block)
            _link_hidden_to_heads(ctx, bias, 0, d, d, y, n, block)
            ctx.link_index(bias, 0, 2 * d + np.arange(dv), y, 2, np.arange(dv))
            zb = ctx.zero(bias, 0)
            if zb.size:
                zero_v &= zb[2 * d :]
    _zero_heads(ctx, y, zero_v, block)
    ctx.pin_all(node.input(4), "MultiHeadAttention key_padding_mask: batch and key positions")
    _link_head_axis(ctx, node.input(5), 1, y, n, block)
    _link_head_axis(ctx, node.input(6), 1, y, n, block)
    _link_head_axis(ctx, node.input(7), 1, y, n, block)
    ctx.pin_all(node.input(8), "MultiHeadAttention past_sequence_length")
    if node.input(9) is not None:
        pin_node(ctx, node, "MultiHeadAttention with cache_indirection (beam search): not declared")
    for i in (1, 2, 3):
        _link_head_axis(ctx, present(node, i), 1, y, n, block)


def _core_cost(node: Node) -> int:
    """Scores and weighted values of an attention op on projected q, k, v: 2 * S * T * (Dq + Dv)
    (symbolic sequence lengths count as 1; the projections are the MatMuls before it)."""
    q, k, v = node.input(0), node.input(1), node.input(2)
    if q is None or k is None or v is None or rank(q) != 3 or rank(k) != 3 or rank(v) != 3:
        return 0
    s, t = static(shape_of(q)[1]) or 1, static(shape_of(k)[1]) or 1
    dq, dv = static(shape_of(q)[2]) or 0, static(shape_of(v)[2]) or 0
    return 2 * s * t * (dq + dv)


def _mha_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    q, v = node.input(0), node.input(2)
    if q is None or v is None or q.shape is None or v.shape is None or rank(q) != 3 or rank(v) != 3:
        return None
    return (q.shape[0], q.shape[1], v.shape[2])


_GQA_HANDLED = 11  # query .. attention_bias; head_sink, quantized caches, q/k norms are not declared


def _gqa(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::GroupQueryAttention(query (B, S, N * H), key (B, S, M * H), value (B, S, M * H),
    past_key (B, M, P, H), past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache,
    position_ids, attention_bias (B, N, S, T)) -> output (B, S, N * H), present_key, present_value.

    Query heads n * G .. n * G + G - 1 (G = N / M) share KV head n: the removable unit is a KV head with
    its G query heads, and the shrink hook rewrites both ``num_heads`` and ``kv_num_heads``. Rotary
    embedding (``do_rotary``) rotates every head alike, by position and by index within the head.
    """
    q, k, v = node.input(0), node.input(1), node.input(2)
    y = node.outputs[0]
    n, m = int(node.attr("num_heads", 0)), int(node.attr("kv_num_heads", 0))
    if q is None or k is None or v is None or n <= 0 or m <= 0 or n % m:
        pin_node(ctx, node, "GroupQueryAttention with packed QKV or unknown head counts: not declared")
        return
    if not rank(q) == rank(k) == rank(v) == rank(y) == 3:
        pin_node(ctx, node, "GroupQueryAttention with shapes not declared")
        return
    d, dk, dv = static(shape_of(q)[2]), static(shape_of(k)[2]), static(shape_of(v)[2])
    if d is None or d % n or dk != dv or dk != d // n * m or static(shape_of(y)[2]) not in (d, None):
        pin_node(ctx, node, "GroupQueryAttention whose widths do not split into its heads")
        return
    h = d // n
    group = n // m * h  # output elements per KV head
    ctx.link(q, 0, y, 0)
    ctx.link(q, 1, y, 1)
    ctx.link(k, 0, y, 0)
    ctx.link(v, 0, y, 0)
    ctx.link(k, 1, v, 1)
    ctx.link(q, 1, k, 1)
    ctx.tie_blocks(y, 2, group)
    ctx.link(q, 2, y, 2)
    kv_dst = (np.arange(dk) // h) * group
    ctx.link_index(k, 2, np.arange(dk), y, 2, kv_dst)
    ctx.link_index(v, 2, np.arange(dk), y, 2, kv_dst)
    zv = ctx.zero(v, 2)
    if zv.size == dk:
        per_kv = zv.reshape(m, h).all(axis=1)
        ctx.set_zero(y, 2, np.repeat(per_kv, group))
    for i in (3, 4):
        _link_head_axis(ctx, node.input(i), 1, y, m, group)
    for i in (1, 2):
        _link_head_axis(ctx, present(node, i), 1, y, m, group)
    for i in (5, 6, 7, 8, 9):  # seqlens, total length, rotary caches (shared by all heads), positions
        reason = "GroupQueryAttention: sequence bookkeeping and rotary tables keep their size"
        ctx.pin_all(node.input(i), reason)
    bias = node.input(10)
    if bias is not None:
        if bias.shape is not None and len(bias.shape) == 4 and bias.shape[1] not in (1, n):
            ctx.pin_all(bias, "GroupQueryAttention attention_bias of an undeclared shape")
        # attention_bias (B or 1, N or 1, S, T): N query heads, G to a removable unit
        elif bias.shape is not None and len(bias.shape) == 4 and bias.shape[1] == n:
            ctx.link_index(bias, 1, np.arange(n), y, 2, np.arange(n) * h)
            for a in (0, 2, 3):
                ctx.pin(bias, a, "a per-head tensor's other axes keep their size")
        else:
            ctx.pin_all(bias, "GroupQueryAttention attention_bias of an undeclared shape")
    extra = [i for i in range(_GQA_HANDLED, len(node.inputs)) if node.input(i) is not None]
    quantized = int(node.attr("kv_cache_bit_width", 0)) or present(node, 3) is not None
    if extra or quantized:
        pin_node(
            ctx,
            node,
            "GroupQueryAttention with head sinks, quantized caches, q/k norms or qk output: not declared",
        )


def _shrink_gqa(node: Node, plan: ShrinkView) -> dict[str, Any]:
    kept = _heads_kept(node, plan)
    kept_kv = _heads_kept(node, plan, "kv_num_heads")
    return {} if kept is None or kept_kv is None else {"attrs": {"num_heads": kept, "kv_num_heads": kept_kv}}


def _shrink_heads(node: Node, plan: ShrinkView) -> dict[str, Any]:
    kept = _heads_kept(node, plan)
    return {} if kept is None else {"attrs": {"num_heads": kept}}


def _shrink_rotary(node: Node, plan: ShrinkView) -> dict[str, Any]:
    """(B, S, N * H): as attention; (B, N, S, H): the head axis is axis 1, and a ``num_heads`` given
    must follow it."""
    y = node.outputs[0]
    n = int(node.attr("num_heads", 0))
    if y.shape is None or len(y.shape) != 4:
        return _shrink_heads(node, plan) if n > 0 else {}
    new = plan.new_shape(y)[1]
    return {"attrs": {"num_heads": int(new)}} if n > 0 and isinstance(new, int) and new != n else {}


def _rotary(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::RotaryEmbedding(input (B, S, N * H) or (B, N, S, H), position_ids, cos_cache,
    sin_cache): rotates pairs within each head by position; every head alike. Whole heads pass through
    (the shrink hook rewrites ``num_heads``); the index within a head is pinned."""
    x, y = node.input(0), node.outputs[0]
    r = rank(x)
    for i in (1, 2, 3):
        ctx.pin_all(node.input(i), "RotaryEmbedding: position ids and rotary tables keep their size")
    if x is None or r not in (3, 4) or int(node.attr("is_packed_batching", 0)):
        pin_node(ctx, node, "RotaryEmbedding in a layout not declared")
        return
    identity(ctx, x, y, zero_preserving=False)
    if r == 4:
        ctx.pin(x, 3, "RotaryEmbedding rotates pairs within a head")
        ctx.pin(y, 3, "RotaryEmbedding rotates pairs within a head")
        ctx.set_zero(y, 1, ctx.zero(x, 1))
        return
    n, d = int(node.attr("num_heads", 0)), static(shape_of(x)[2])
    cos = node.input(2)
    if n > 0 and d is not None and d % n == 0:
        h = d // n
    elif n == 0 and int(node.attr("rotary_embedding_dim", 0)) == 0 and rank(cos) == 2:
        half = static(shape_of(cos)[1]) if cos is not None else None
        h = 2 * half if half else 0
    else:
        h = 0
    if not h or d is None or d % h:
        ctx.pin(y, 2, "RotaryEmbedding whose head size is not known")
        return
    ctx.tie_blocks(y, 2, h)
    z = ctx.zero(x, 2)
    if z.size == d:
        ctx.set_zero(y, 2, np.repeat(z.reshape(-1, h).all(axis=1), h))


register_op(
    "Attention",
    _attention,
    kind="stem",
    domain=MS_DOMAIN,
    shape=_attention_shape,
    shrink=_shrink_attention,
    cost=_attention_cost,
)
register_op(
    "MultiHeadAttention",
    _mha,
    kind="joint",
    domain=MS_DOMAIN,
    shape=_mha_shape,
    shrink=_shrink_heads,
    cost=_core_cost,
)
register_op(
    "GroupQueryAttention",
    _gqa,
    kind="joint",
    domain=MS_DOMAIN,
    shape=same_shape,
    shrink=_shrink_gqa,
    cost=_core_cost,
)
register_op(
    "RotaryEmbedding",
    _rotary,
    domain=MS_DOMAIN,
    shape=same_shape,
    shrink=_shrink_rotary,
    zero_when=data_zero(0),
)
