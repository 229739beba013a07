"""Small attention blocks for the head-dimension tests, written in torch and with onnx.helper.

Each has hidden width 8·heads or so, a few heads and a short sequence, so the hand-computed ZIGs stay
readable: ZIG j of a query/key group holds row ``h·d + j`` of every query head h and of every key head.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.onnx_builder import G

SEQ = 5


def rotate_half(x: torch.Tensor, d: int) -> torch.Tensor:
    """Hugging Face's rotate_half: cat(-x2, x1) with x1, x2 the two halves of the head dimension ``d``
    (a Python int here: a half computed from a traced ``x.shape[-1]`` is a runtime size computation,
    which pins the head dimensions)."""
    h = d // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    """q, k, v projections (or one packed projection), heads by view/transpose, optional rotary
    embedding from an ``inv_freq`` buffer, grouped-query attention by ``repeat_kv``, ``repeat_interleave``
    or SDPA's ``enable_gqa``, SDPA with its default scale (or a hand-written softmax), output projection."""

    def __init__(
        self,
        hidden: int = 12,
        heads: int = 2,
        kv_heads: int | None = None,
        head_dim: int = 4,
        rotary: bool = False,
        packed: bool = False,
        gqa: str = "repeat",
        manual: bool = False,
    ) -> None:
        super().__init__()
        self.h, self.kv, self.d = heads, kv_heads or heads, head_dim
        self.rotary, self.packed, self.gqa, self.manual = rotary, packed, gqa, manual
        q_out, kv_out = self.h * head_dim, self.kv * head_dim
        self.inp = nn.Linear(hidden, hidden)
        if packed:
            self.c_attn = nn.Linear(hidden, q_out + 2 * kv_out)
        else:
            self.q = nn.Linear(hidden, q_out)
            self.k = nn.Linear(hidden, kv_out)
            self.v = nn.Linear(hidden, kv_out)
        self.o = nn.Linear(q_out, hidden)
        inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, n, self.d).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        x = self.inp(x)
        if self.packed:
            q, k, v = self.c_attn(x).split([self.h * self.d, self.kv * self.d, self.kv * self.d], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = self._heads(q, self.h), self._heads(k, self.kv), self._heads(v, self.kv)
        if self.rotary:
            pos = torch.arange(s, dtype=torch.float32)
            freqs = pos[:, None] * self.inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos(), emb.sin()
            q = q * cos + rotate_half(q, self.d) * sin
            k = k * cos + rotate_half(k, self.d) * sin
        rep = self.h // self.kv
        if rep > 1 and self.gqa == "repeat":
            k = k[:, :, None].expand(b, self.kv, rep, s, self.d).reshape(b, self.h, s, self.d)
            v = v[:, :, None].expand(b, self.kv, rep, s, self.d).reshape(b, self.h, s, self.d)
        if rep > 1 and self.gqa == "interleave":
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if self.manual:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
            a = torch.matmul(torch.softmax(scores, dim=-1), v)
        else:
            a = F.scaled_dot_product_attention(q, k, v, enable_gqa=rep > 1 and self.gqa == "sdpa")
        return self.o(a.transpose(1, 2).reshape(b, s, self.h * self.d))


# -- the same blocks with onnx.helper ---------------------------------------------------------------------


def onnx_attention(
    hidden: int = 12,
    heads: int = 2,
    kv_heads: int | None = None,
    head_dim: int = 4,
    rotary: bool = False,
    packed: bool = False,
    scale_from_shape: bool = False,
    seed: int = 0,
):
    """ONNX attention: MatMul projections with [in, out] weights (q.w, k.w, v.w or a packed qkv.w), Reshape
    into heads, Transpose, rotary with constant cos/sin tables (Slice, Neg, Concat), repeat_kv as
    Unsqueeze/Expand/Reshape, scores scaled by a constant (or by 1/sqrt of the head size read with
    Shape, as some exporters write it), Softmax, merge, output MatMul."""
    g = G(seed)
    kv = kv_heads or heads
    d = head_dim
    x = g.input("x", [1, SEQ, hidden])
    x = g.op("Add", [g.op("MatMul", [x, g.w("inp.w", (hidden, hidden))]), g.w("inp.b", (hidden,))])
    widths = [heads * d, kv * d, kv * d]
    if packed:
        qkv = g.op(
            "Add", [g.op("MatMul", [x, g.w("qkv.w", (hidden, sum(widths)))]), g.w("qkv.b", (sum(widths),))]
        )
        q, k, v = g.op("Split", [qkv, g.const("qkv.sizes", widths)], n_out=3, axis=2)
    else:
        q, k, v = (
            g.op("Add", [g.op("MatMul", [x, g.w(f"{t}.w", (hidden, w))]), g.w(f"{t}.b", (w,))])
            for t, w in zip("qkv", widths)
        )

    def heads_of(t: str, n: int, tag: str) -> str:
        r = g.op("Reshape", [t, g.const(f"{tag}.shape", [1, SEQ, n, d])])
        return g.op("Transpose", [r], perm=[0, 2, 1, 3])

    q, k, v = heads_of(q, heads, "q"), heads_of(k, kv, "k"), heads_of(v, kv, "v")
    if rotary:
        inv = 1.0 / (10000 ** (np.arange(0, d, 2, dtype=np.float32) / d))
        freqs = np.arange(SEQ, dtype=np.float32)[:, None] * inv[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos = g.const("rope.cos", np.cos(emb), np.float32)
        sin = g.const("rope.sin", np.sin(emb), np.float32)

        def rope(t: str, tag: str) -> str:
            lo = g.op(
                "Slice",
                [t, g.const(f"{tag}.s0", [0]), g.const(f"{tag}.e0", [d // 2]), g.const(f"{tag}.a0", [3])],
            )
            hi = g.op(
                "Slice",
                [t, g.const(f"{tag}.s1", [d // 2]), g.const(f"{tag}.e1", [d]), g.const(f"{tag}.a1", [3])],
            )
            rot = g.op("Concat", [g.op("Neg", [hi]), lo], axis=3)
            return g.op("Add", [g.op("Mul", [t, cos]), g.op("Mul", [rot, sin])])

        q, k = rope(q, "rq"), rope(k, "rk")
    rep = heads // kv
    if rep > 1:

        def repeat(t: str, tag: str) -> str:
            u = g.op("Unsqueeze", [t, g.const(f"{tag}.ax", [2])])
            e = g.op("Expand", [u, g.const(f"{tag}.rep", [1, kv, rep, SEQ, d])])
            return g.op("Reshape", [e, g.const(f"{tag}.shape", [1, heads, SEQ, d])])

        k, v = repeat(k, "rpk"), repeat(v, "rpv")
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, kt])
    if scale_from_shape:
        size = g.op("Gather", [g.op("Shape", [q]), g.const("last", -1)], axis=0)
        root = g.op("Sqrt", [g.op("Cast", [size], to=1)])
        scaled = g.op("Div", [scores, root])
    else:
        scaled = g.op("Mul", [scores, g.const("scale", np.float32(1.0 / math.sqrt(d)), np.float32)])
    probs = g.op("Softmax", [scaled], axis=-1)
    a = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [a, g.const("merge.shape", [1, SEQ, heads * d])])
    out = g.op("Add", [g.op("MatMul", [merged, g.w("o.w", (heads * d, hidden))]), g.w("o.b", (hidden,))])
    g.nodes[-1].output[0] = "y"
    g.output("y")
    del out
    return g.model()
