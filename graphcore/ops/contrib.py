"""onnxruntime's contrib operators (domain ``com.microsoft``): what its transformer optimizer writes.

``onnxruntime.transformers.optimizer`` fuses a transformer's subgraphs into these ops: attention
(``Attention``, ``MultiHeadAttention``, ``GroupQueryAttention``), normalizations with a residual add
folded in (``SkipLayerNormalization`` ...), activations with a bias folded in (``BiasGelu``,
``FastGelu``), convolutions and matrix products with an epilogue (``FusedConv``, ``FusedMatMul``) and
4-bit weights (``MatMulNBits``). The layouts follow onnxruntime's ContribOperators.md. This module holds
the normalizations, the activations and the helpers; ``contrib_attention.py`` the attention ops and
``contrib_stems.py`` the fused stems.

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

The hidden axis of the normalizations shrinks with the original count kept by construct (see
``graphcore/ops/normalize.py: hidden_norm``); that of ``EmbedLayerNormalization`` stays pinned.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node, Value
from graphcore.ops.common import all_zero, broadcast, data_zero, identity, rank
from graphcore.ops.normalize import _affine_zero_when, hidden_norm, norm_renorm
from graphcore.ops.registry import ZeroWhen, register_op
from graphcore.ops.shape import same_shape

__all__ = ["MS_DOMAIN", "pin_node", "present", "shape_of", "static"]

MS_DOMAIN = "com.microsoft"


def pin_node(ctx: ChannelGraph, node: Node, reason: str) -> None:
    """Block every axis the node touches, with ``reason`` (a layout or option not declared)."""
    for v in [*node.inputs, *node.outputs]:
        ctx.pin_all(v, reason)


def static(d: Dim) -> int | None:
    """A dimension's size when it is known, else None."""
    return d if isinstance(d, int) else None


def present(node: Node, i: int) -> Value | None:
    """Output ``i`` if the node lists it (an unnamed optional output is a placeholder without a shape or
    consumers, which the rules' shape checks skip)."""
    return node.outputs[i] if i < len(node.outputs) else None


def shape_of(v: Value) -> tuple[Dim, ...]:
    """The shape of a value the rule has already found ranked."""
    assert v.shape is not None
    return v.shape


# -- normalizations: statistics over the hidden axis ------------------------------------------------------
#
# SkipLayerNormalization(input, skip, gamma, beta, bias) and SkipSimplifiedLayerNormalization(input, skip,
# gamma, bias) normalize input + skip + bias over the last axis -> output, mean, inv_std_var (B, S, 1),
# input_skip_bias_sum; SimplifiedLayerNormalization(X, scale) is RMSNorm -> Y, inv_std_var. The hidden
# axis shrinks as for LayerNormalization (graphcore/ops/normalize.py ``hidden_norm``): construct keeps the
# original count. EmbedLayerNormalization's hidden axis stays pinned: construct does not rewrite it.

_HIDDEN = "normalizes over the hidden axis, and construct has no rewrite keeping its count"


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
        pin_node(ctx, node, "EmbedLayerNormalization with unknown shapes")
        return
    ctx.link(node.input(1), 0, ids, 0)
    ctx.link(node.input(1), 1, ids, 1)
    for out in (y, present(node, 2)):
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
    mask_index = present(node, 1)
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


# -- the declarations --------------------------------------------------------------------------------------

# LayerNorm(input + skip + bias) * gamma + beta, epsilon 1e-12; RMSNorm without beta.
register_op(
    "SkipLayerNormalization",
    hidden_norm,
    domain=MS_DOMAIN,
    shape=same_shape,
    zero_when=_skip_norm_zero(2, 3),
    renorm=norm_renorm(
        "layernorm",
        summed=(0, 1, 4),
        scale=2,
        bias=3,
        stats=(1, 2),
        sum_output=3,
        epsilon=1e-12,
        last_axis_only=True,
    ),
)
register_op(
    "SkipSimplifiedLayerNormalization",
    hidden_norm,
    domain=MS_DOMAIN,
    shape=same_shape,
    zero_when=_skip_norm_zero(2, None),
    renorm=norm_renorm(
        "rmsnorm", summed=(0, 1, 3), scale=2, stats=(1, 2), sum_output=3, epsilon=1e-12, last_axis_only=True
    ),
)
# onnxruntime declares SimplifiedLayerNormalization (RMSNorm: X, scale; axis, epsilon) in the ONNX
# domain, where its transformer optimizer writes it.
register_op(
    "SimplifiedLayerNormalization",
    hidden_norm,
    shape=same_shape,
    zero_when=_affine_zero_when(1, None),
    renorm=norm_renorm("rmsnorm", stats=(1,)),
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
