"""onnxruntime's contrib operators (domain ``com.microsoft``): what its transformer optimizer writes.

``onnxruntime.transformers.optimizer`` fuses a transformer's subgraphs into these ops: attention
(``Attention``, ``MultiHeadAttention``, ``GroupQueryAttention``), normalizations with a residual add
folded in (``SkipLayerNormalization`` ...), activations with a bias folded in (``BiasGelu``,
``FastGelu``), convolutions and matrix products with an epilogue (``FusedConv``, ``FusedMatMul``) and
4-bit weights (``MatMulNBits``). The layouts below follow onnxruntime's ContribOperators.md.

What is prunable:

- Attention heads. An attention op carrying ``num_heads`` computes every head on its own block of
  ``head_size`` channels of Q, K and V, with the same scale; a whole head can go, with its Q, K and V
  columns and its block of the output, and the shrink hook rewrites ``num_heads`` (and
  ``qkv_hidden_sizes``, ``kv_num_heads``). A head is zero in the zeroed model when its V columns are:
  softmax(anything) times zero values is zero. Every layout or option whose head structure is not
  declared here pins the heads with a reason naming the op.
- Output channels of ``FusedConv`` (Conv's declaration), ``FusedGemm`` (Gemm's), ``FusedMatMul`` and
  ``TransposeMatMul`` (a MatMul) and ``MatMulNBits`` (rows of its packed weight with their scales and
  zero points).
- Channels through the elementwise ops, whose f(0) is declared and checked against onnxruntime.

Not declared (so every axis they touch is pinned as an unknown op): ops onnxruntime runs only on GPU
(``BiasAdd``, ``BiasSplitGelu``, ``GroupNorm``, ``SkipGroupNorm``), whose declarations no CPU run could
check.

What is pinned: the hidden axis of every normalization (it takes statistics over it; hidden-size pruning
is issue 13), and of ``EmbedLayerNormalization``. Their other axes pass through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node, Value
from graphcore.ops.common import all_zero, any_zero, broadcast, data_zero, identity, rank
from graphcore.ops.normalize import _affine_zero_when, _layernorm
from graphcore.ops.registry import ShrinkView, ZeroWhen, register_op, rules
from graphcore.ops.shape import conv_shape, same_shape

__all__ = ["MS_DOMAIN"]

MS_DOMAIN = "com.microsoft"


def _pin_node(ctx: ChannelGraph, node: Node, reason: str) -> None:
    for v in [*node.inputs, *node.outputs]:
        ctx.pin_all(v, reason)


def _int(d: Dim) -> int | None:
    return d if isinstance(d, int) else None


def _present(node: Node, i: int) -> Value | None:
    """Optional output ``i`` when the model reads it (an unused one has no shape and no consumers)."""
    return node.outputs[i] if i < len(node.outputs) else None


# -- attention ---------------------------------------------------------------------------------------------
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
    total = _int(w.shape[1]) if w.shape is not None and len(w.shape) == 2 else None
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
        _pin_node(
            ctx, node, "Attention with a layout or shapes not declared (a packed weight of rank 2 expected)"
        )
        return
    hq, hk, hv = sizes
    if (
        any(s % n for s in sizes)
        or _int(_shape(w)[1]) != hq + hk + hv
        or _int(_shape(y)[2]) not in (hv, None)
    ):
        _pin_node(ctx, node, "Attention whose qkv_hidden_sizes do not split into num_heads heads")
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
        if rank(v) != axis + 1 or _int(_shape(v)[axis]) != hq + hk + hv:
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
    _link_head_axis(ctx, _present(node, 1), 2, y, n, block)
    if int(node.attr("do_rotary", 0)):
        _blocked_heads(ctx, y, "Attention with do_rotary: its heads' rotary layout is not declared")


def _shape(v: Value) -> tuple[Dim, ...]:
    assert v.shape is not None
    return v.shape


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
    s = _int(y.shape[1]) or 1
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
        _pin_node(ctx, node, "MultiHeadAttention in a packed or (B, N, L, H) layout: not declared")
        return
    d, dk, dv = _int(_shape(q)[2]), _int(_shape(k)[2]), _int(_shape(v)[2])
    if d is None or dk != d or dv is None or d % n or dv % n or _int(_shape(y)[2]) not in (dv, None):
        _pin_node(ctx, node, "MultiHeadAttention whose widths do not split into num_heads heads")
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
        if rank(bias) != 1 or _int(_shape(bias)[0]) != 2 * d + dv:
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
        _pin_node(ctx, node, "MultiHeadAttention with cache_indirection (beam search): not declared")
    for i in (1, 2, 3):
        _link_head_axis(ctx, _present(node, i), 1, y, n, block)


def _core_cost(node: Node) -> int:
    """Scores and weighted values of an attention op on projected q, k, v: 2 * S * T * (Dq + Dv)
    (symbolic sequence lengths count as 1; the projections are the MatMuls before it)."""
    q, k, v = node.input(0), node.input(1), node.input(2)
    if q is None or k is None or v is None or rank(q) != 3 or rank(k) != 3 or rank(v) != 3:
        return 0
    s, t = _int(_shape(q)[1]) or 1, _int(_shape(k)[1]) or 1
    dq, dv = _int(_shape(q)[2]) or 0, _int(_shape(v)[2]) or 0
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
        _pin_node(ctx, node, "GroupQueryAttention with packed QKV or unknown head counts: not declared")
        return
    if not rank(q) == rank(k) == rank(v) == rank(y) == 3:
        _pin_node(ctx, node, "GroupQueryAttention with shapes not declared")
        return
    d, dk, dv = _int(_shape(q)[2]), _int(_shape(k)[2]), _int(_shape(v)[2])
    if d is None or d % n or dk != dv or dk != d // n * m or _int(_shape(y)[2]) not in (d, None):
        _pin_node(ctx, node, "GroupQueryAttention whose widths do not split into its heads")
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
        _link_head_axis(ctx, _present(node, i), 1, y, m, group)
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
    quantized = int(node.attr("kv_cache_bit_width", 0)) or _present(node, 3) is not None
    if extra or quantized:
        _pin_node(
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
        _pin_node(ctx, node, "RotaryEmbedding in a layout not declared")
        return
    identity(ctx, x, y, zero_preserving=False)
    if r == 4:
        ctx.pin(x, 3, "RotaryEmbedding rotates pairs within a head")
        ctx.pin(y, 3, "RotaryEmbedding rotates pairs within a head")
        ctx.set_zero(y, 1, ctx.zero(x, 1))
        return
    n, d = int(node.attr("num_heads", 0)), _int(_shape(x)[2])
    cos = node.input(2)
    if n > 0 and d is not None and d % n == 0:
        h = d // n
    elif n == 0 and int(node.attr("rotary_embedding_dim", 0)) == 0 and rank(cos) == 2:
        half = _int(_shape(cos)[1]) if cos is not None else None
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


# -- normalizations: statistics over the hidden axis, which is pinned ------------------------------------

_HIDDEN = "normalizes over the hidden axis (pruning the hidden size is issue 13)"


def _skip_layernorm(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::SkipLayerNormalization(input, skip, gamma, beta, bias) and
    SkipSimplifiedLayerNormalization(input, skip, gamma, bias): LayerNorm / RMSNorm of input + skip +
    bias over the last axis -> output, mean, inv_std_var (B, S, 1), input_skip_bias_sum."""
    x, skip = node.input(0), node.input(1)
    y = node.outputs[0]
    r = rank(x)
    if x is None or r is None or r < 2:
        _pin_node(ctx, node, f"{node.op} with unknown shapes")
        return
    hidden = r - 1
    reason = f"{node.op} {_HIDDEN}"
    params = [node.input(i) for i in range(2, len(node.inputs))]
    for out in (y, _present(node, 3)):
        if out is None:
            continue
        if out.shape is None:
            out.shape = x.shape
        for a in range(r):  # a zero row of input is not a zero row of LN(input + skip): no zeros
            ctx.link(x, a, out, a)
        ctx.pin(out, hidden, reason)
    ctx.pin(x, hidden, reason)
    if skip is not None and skip.shape is not None:
        shift = r - len(skip.shape)
        for a in range(len(skip.shape)):
            if shift < 0 or skip.shape[a] != _shape(x)[a + shift]:
                ctx.pin(skip, a, f"{node.op}: skip broadcast over this axis")
            else:
                ctx.link(skip, a, x, a + shift)
    for p in params:
        if p is not None and rank(p) == 1:
            ctx.link(p, 0, x, hidden)
        else:
            ctx.pin_all(p, reason)
    for i in (1, 2):
        stat = _present(node, i)
        if stat is None or stat.shape is None or len(stat.shape) != r:
            ctx.pin_all(stat, f"{node.op} statistics of an undeclared shape")
            continue
        for a in range(hidden):
            ctx.link(x, a, stat, a)
        ctx.pin(stat, hidden, reason)


def _extra_outputs_used(node: Node) -> bool:
    """Does the model read one of outputs 1.. (an unnamed optional output is a placeholder without a
    shape or consumers)?"""
    return any(v.consumers or v.shape is not None for v in node.outputs[1:])


def _skip_norm_zero(gamma: int, beta: int | None) -> ZeroWhen:
    """Output 0 is zero when gamma (and beta) are; the other outputs are input + skip + bias and its
    statistics (1 / sqrt(var + eps) is never zero): while the model reads one, never zero."""
    affine = _affine_zero_when(gamma, beta, epsilon=1e-12)

    def zero_when(node: Node, zero: Sequence[bool]) -> bool:
        return bool(affine(node, zero)) and not _extra_outputs_used(node)

    return zero_when


def _embed_layernorm(ctx: ChannelGraph, node: Node) -> None:
    """com.microsoft::EmbedLayerNormalization(input_ids (B, S), segment_ids, word_embedding (V, D),
    position_embedding (P, D), segment_embedding, gamma, beta, mask, position_ids) -> output (B, S, D),
    mask_index (B), embedding_sum (B, S, D). The hidden axis D is normalized over: pinned; the tables'
    rows are indexed: pinned."""
    ids = node.input(0)
    y = node.outputs[0]
    reason = f"EmbedLayerNormalization {_HIDDEN}"
    if ids is None or rank(ids) != 2:
        _pin_node(ctx, node, "EmbedLayerNormalization with unknown shapes")
        return
    ctx.link(node.input(1), 0, ids, 0)
    ctx.link(node.input(1), 1, ids, 1)
    for out in (y, _present(node, 2)):
        if out is None or rank(out) != 3:
            ctx.pin_all(out, "EmbedLayerNormalization output of an undeclared shape")
            continue
        ctx.link(ids, 0, out, 0)
        ctx.link(ids, 1, out, 1)
        ctx.pin(out, 2, reason)
        ctx.link(out, 2, y, 2)
    for i in (2, 3, 4):
        table = node.input(i)
        if table is not None and rank(table) == 2:
            ctx.pin(table, 0, "EmbedLayerNormalization: indexed by ids")
            ctx.link(table, 1, y, 2)
        else:
            ctx.pin_all(table, "EmbedLayerNormalization table of an undeclared shape")
    for i in (5, 6):
        if rank(node.input(i)) == 1:
            ctx.link(node.input(i), 0, y, 2)
        else:
            ctx.pin_all(node.input(i), reason)
    ctx.pin_all(node.input(7), "EmbedLayerNormalization mask: batch and sequence positions")
    ctx.pin_all(node.input(8), "EmbedLayerNormalization position_ids: sequence positions")
    mask_index = _present(node, 1)
    if mask_index is not None and rank(mask_index) == 1:
        ctx.link(ids, 0, mask_index, 0)
    else:
        ctx.pin_all(mask_index, "EmbedLayerNormalization mask_index of an undeclared shape")


def _embed_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    ids, table = node.input(0), node.input(2)
    if ids is None or table is None or ids.shape is None or table.shape is None or rank(table) != 2:
        return None
    return (*ids.shape, table.shape[1])


# -- elementwise: f(0) declared, checked against onnxruntime in tests/test_onnx_contrib.py ----------------


def _biased(ctx: ChannelGraph, node: Node) -> None:
    """Gelu(x + bias) (FastGelu: its tanh approximation; bias optional), f(0) = 0. The bias broadcasts
    over the last axis; a channel is zero where all operands are."""
    broadcast(ctx, node.inputs, node.outputs[0], "all")


def _unary_zero(ctx: ChannelGraph, node: Node) -> None:
    """Gelu, QuickGelu (x * sigmoid(alpha * x)): elementwise with f(0) = 0."""
    identity(ctx, node.input(0), node.outputs[0], zero_preserving=True)


# -- stems ---------------------------------------------------------------------------------------------


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
            for a in range(len(_shape(z))):
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
        _pin_node(ctx, node, f"{node.op} with transBatch or shapes of rank < 2: not declared")
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
    (the shrink hook rewrites attribute ``N``). The K axis is packed into blocks of bits: pinned.
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
        or _int(_shape(b)[0]) != n_out
        or n_out <= 0
        or _int(_shape(y)[-1]) != n_out
    ):
        _pin_node(ctx, node, "MatMulNBits with shapes that do not match its N")
        return
    assert a is not None and b is not None and scales is not None and r is not None
    k_blocks = _int(_shape(b)[1])
    bits = int(node.attr("bits", 4))
    per_row = _per_row(scales, n_out)
    if k_blocks is None or per_row != k_blocks:
        _pin_node(ctx, node, "MatMulNBits scales of an undeclared shape")
        return
    for ax in range(r - 1):
        if ctx.link(a, ax, y, ax):
            ctx.set_zero(y, ax, ctx.zero(a, ax))
    reason = "MatMulNBits packs its K axis into blocks of bits: not prunable"
    ctx.pin(a, r - 1, reason)
    for ax in (1, 2):
        ctx.fix(b, ax, reason)
    ctx.link(b, 0, y, r - 1)
    _link_rows(ctx, scales, n_out, k_blocks, y, r - 1, reason)
    zero = _rows_zero(ctx, scales, n_out)
    if zp is not None:
        zp_row = k_blocks if zp.dtype == scales.dtype else (k_blocks * bits + 7) // 8
        if _per_row(zp, n_out) != zp_row:
            _pin_node(ctx, node, "MatMulNBits zero_points of an undeclared shape")
            return
        _link_rows(ctx, zp, n_out, zp_row, y, r - 1, reason)
    ctx.pin_all(g_idx, "MatMulNBits g_idx: indexed by K")
    if bias is not None:
        if rank(bias) == 1 and _int(_shape(bias)[0]) == n_out:
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


def _link_rows(ctx: ChannelGraph, v: Value, n: int, per_row: int, y: Value, axis: int, reason: str) -> None:
    """Row r of ``v`` (its elements r * per_row .. when flat) belongs to output channel r."""
    if rank(v) == 2:
        ctx.link(v, 0, y, axis)
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
    new = plan.new_shape(y)[-1]
    return {"attrs": {"N": int(new)}} if isinstance(new, int) and new != y.shape[-1] else {}


def _nbits_cost(node: Node) -> int:
    y = node.outputs[0]
    k = int(node.attr("K", 0))
    if y.shape is None:
        return 0
    return 2 * math.prod(d if isinstance(d, int) else 1 for d in y.shape) * k


def _nbits_zero(node: Node, zero: Sequence[bool]) -> bool:
    weights = zero[0] or zero[2]
    return bool(weights) and (len(zero) <= 5 or zero[5])


# -- the declarations --------------------------------------------------------------------------------------

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
# LayerNorm(input + skip + bias) * gamma + beta, epsilon 1e-12; RMSNorm without beta.
register_op(
    "SkipLayerNormalization",
    _skip_layernorm,
    domain=MS_DOMAIN,
    shape=same_shape,
    zero_when=_skip_norm_zero(2, 3),
)
register_op(
    "SkipSimplifiedLayerNormalization",
    _skip_layernorm,
    domain=MS_DOMAIN,
    shape=same_shape,
    zero_when=_skip_norm_zero(2, None),
)
# onnxruntime declares SimplifiedLayerNormalization (RMSNorm: X, scale; axis, epsilon) in the ONNX
# domain, where its transformer optimizer writes it.
register_op(
    "SimplifiedLayerNormalization", _layernorm, shape=same_shape, zero_when=_affine_zero_when(1, None)
)
register_op(
    "EmbedLayerNormalization",
    _embed_layernorm,
    kind="stem",
    domain=MS_DOMAIN,
    shape=_embed_shape,
)
for _op in ("BiasGelu", "FastGelu"):
    register_op(_op, _biased, domain=MS_DOMAIN, at_zero="zero", shape=same_shape, zero_when=all_zero)
for _op in ("Gelu", "QuickGelu"):
    register_op(_op, _unary_zero, domain=MS_DOMAIN, at_zero="zero", shape=same_shape, zero_when=data_zero(0))
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
)
register_op(
    "FusedMatMul",
    _fused_matmul,
    kind=lambda node: rules()[("", "MatMul")].kind_of(node),
    domain=MS_DOMAIN,
    shape=_fused_matmul_shape,
    cost=_fused_matmul_cost,
    zero_when=any_zero,
    contraction=_fused_matmul_contraction,
)
# TransposeMatMul: the name FusedMatMul had before it gained transBatchA/B (same operands and meaning).
register_op(
    "TransposeMatMul",
    _fused_matmul,
    kind=lambda node: rules()[("", "MatMul")].kind_of(node),
    domain=MS_DOMAIN,
    shape=_fused_matmul_shape,
    cost=_fused_matmul_cost,
    zero_when=any_zero,
    contraction=_fused_matmul_contraction,
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
