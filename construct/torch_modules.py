"""Modules construct puts in place of a leaf module whose shape torch cannot express after pruning.

``nn.MultiheadAttention`` ties its inner width to ``embed_dim`` (``num_heads × head_dim = embed_dim``),
so a model that loses heads needs a module where the two differ. ``PrunedMultiheadAttention`` keeps the
call signature, the result tuple and the parameter names (``in_proj_weight``, ``in_proj_bias``,
``out_proj.weight``, ``out_proj.bias``), so state dicts and FX call sites stay valid. Pruning head
dimensions leaves queries/keys and values with different head sizes (``head_dim``, ``v_head_dim``); the
softmax scale stays the original ``1/sqrt(head_dim)`` (``scale``), whatever survives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrunedMultiheadAttention"]


class PrunedMultiheadAttention(nn.Module):
    """Multi-head attention with ``num_heads × head_dim`` decoupled from the input/output widths."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        out_dim: int | None = None,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        v_head_dim: int | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.v_head_dim = v_head_dim if v_head_dim is not None else head_dim
        self.scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
        self.out_dim = out_dim if out_dim is not None else embed_dim
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = dropout
        inner, v_inner = num_heads * head_dim, num_heads * self.v_head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(2 * inner + v_inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(2 * inner + v_inner)) if bias else None
        self.out_proj = nn.Linear(v_inner, self.out_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)

    @classmethod
    def from_module(
        cls,
        mod: nn.MultiheadAttention,
        num_heads: int,
        head_dim: int,
        v_head_dim: int | None = None,
        scale: float | None = None,
    ) -> PrunedMultiheadAttention:
        """Wrap the (already sliced) tensors of an ``nn.MultiheadAttention``."""
        w = mod.in_proj_weight
        new = cls(
            embed_dim=int(w.shape[1]),
            num_heads=num_heads,
            head_dim=head_dim,
            out_dim=int(mod.out_proj.weight.shape[0]),
            bias=mod.in_proj_bias is not None,
            batch_first=bool(mod.batch_first),
            dropout=float(mod.dropout),
            v_head_dim=v_head_dim,
            scale=scale,
        )
        new.in_proj_weight = w
        new.in_proj_bias = mod.in_proj_bias
        new.out_proj = mod.out_proj
        new.out_proj.in_features = int(mod.out_proj.weight.shape[1])
        new.out_proj.out_features = int(mod.out_proj.weight.shape[0])
        new.train(mod.training)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        sizes = [self.num_heads * self.head_dim] * 2 + [self.num_heads * self.v_head_dim]
        w_q, w_k, w_v = self.in_proj_weight.split(sizes, dim=0)
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.split(sizes, dim=0)
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q = self._heads(F.linear(query, w_q, b_q), self.head_dim)
        k = self._heads(F.linear(key, w_k, b_k), self.head_dim)
        v = self._heads(F.linear(value, w_v, b_v), self.v_head_dim)
        mask = self._additive_mask(attn_mask, key_padding_mask, q)
        if is_causal and mask is None:
            length, source = q.shape[-2], k.shape[-2]
            causal = torch.ones(length, source, dtype=torch.bool, device=q.device).triu(1)
            mask = torch.zeros(length, source, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill(causal, float("-inf"))
        scale = self.scale
        p_drop = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = torch.matmul(q, k.transpose(-2, -1)) * scale
            if mask is not None:
                scores = scores + mask
            probs = torch.softmax(scores, dim=-1)
            weights = probs.mean(dim=1) if average_attn_weights else probs
            out = torch.matmul(F.dropout(probs, p_drop, self.training), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop, scale=scale)
        out = out.transpose(1, 2).flatten(2)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _heads(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, dim)).transpose(1, 2)

    @staticmethod
    def _additive_mask(
        attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, q: torch.Tensor
    ) -> torch.Tensor | None:
        """nn.MultiheadAttention's masks (bool True = may not attend) as one additive float mask."""
        mask = None
        if attn_mask is not None:
            mask = attn_mask
            if mask.dtype == torch.bool:
                mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill(mask, float("-inf"))
        if key_padding_mask is not None:
            kpm = key_padding_mask
            if kpm.dtype == torch.bool:
                kpm = torch.zeros_like(kpm, dtype=q.dtype).masked_fill(kpm, float("-inf"))
            kpm = kpm[:, None, None, :]
            mask = kpm if mask is None else mask + kpm
        return mask
