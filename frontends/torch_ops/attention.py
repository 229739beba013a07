"""Attention handlers: scaled dot-product attention and ``nn.MultiheadAttention``, written out as
MatMul, Mul, Softmax and MatMul so that heads and head dimensions become ordinary channel spaces.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from frontends.torch_lower import Builder, Unsupported, on_function, on_method, on_module, static_size
from frontends.torch_ops.common import module_of, norm_axis, shape_of, tensor_input
from frontends.torch_ops.stems import emit_linear
from graphcore.ir import Value

__all__ = ["emit_sdpa"]


def emit_sdpa(
    b: Builder,
    n: fx.Node,
    q: Value,
    k: Value,
    v: Value,
    mask: Value | None,
    is_causal: bool,
    scale: float | None,
    y: Value,
    probs: Value | None = None,
    gqa: bool = False,
) -> Value:
    """softmax(q·kᵀ·scale + mask)·v as MatMul, Mul, Softmax, MatMul; the scale is a constant.

    ``gqa`` (SDPA's ``enable_gqa``): key and value heads are repeated over their query groups first, as
    Hugging Face's ``repeat_kv`` writes it (Unsqueeze, Expand, Reshape), so a head dimension of a key
    head is one channel with the same dimension of the query heads that share it."""
    qs, ks, vs = shape_of(q), shape_of(k), shape_of(v)
    if len(qs) < 2 or len(ks) != len(qs) or len(vs) != len(qs):
        raise Unsupported("attention ranks")
    r = len(qs)
    if gqa and r >= 3 and ks[-3] != qs[-3]:
        k, v = (_repeat_kv(b, n, t, qs[-3], tag) for t, tag in ((k, "k"), (v, "v")))
        ks, vs = shape_of(k), shape_of(v)
    e = qs[-1]
    big = tuple(max(a, c) for a, c in zip(qs[:-2], ks[:-2]))
    kt = b.tmp(n, "k_t", (*ks[:-2], ks[-1], ks[-2]), k.dtype)
    b.emit(n, "Transpose", [k], [kt], perm=[*range(r - 2), r - 1, r - 2])
    sshape = (*big, qs[-2], ks[-2])
    scores = b.tmp(n, "scores", sshape, q.dtype)
    b.emit(n, "MatMul", [q, kt], [scores])
    scaled = b.tmp(n, "scaled", sshape, q.dtype)
    sc = scale if scale is not None else 1.0 / math.sqrt(e)
    b.emit(n, "Mul", [scores, b.const(n, sc, "scale", np.float32)], [scaled])
    cur = scaled
    if is_causal:
        causal = np.triu(np.full((qs[-2], ks[-2]), -np.inf, dtype=np.float32), 1)
        masked = b.tmp(n, "causal", sshape, q.dtype)
        b.emit(n, "Add", [cur, b.const(n, causal, "causal_mask")], [masked])
        cur = masked
    if mask is not None:
        masked = b.tmp(n, "masked", sshape, q.dtype)
        if mask.dtype == "bool":
            b.emit(n, "Where", [mask, cur, b.const(n, -np.inf, "neg_inf", np.float32)], [masked])
        else:
            b.emit(n, "Add", [cur, mask], [masked])
        cur = masked
    p = probs or b.tmp(n, "probs", sshape, q.dtype)
    b.emit(n, "Softmax", [cur], [p], axis=r - 1)
    b.emit(n, "MatMul", [p, v], [y])
    if scale is None:
        b.fixup("sdpa_scale", n, q=q.name, axis=r - 1, head_dim=e)
    return y


def _repeat_kv(b: Builder, n: fx.Node, t: Value, heads: int, tag: str) -> Value:
    """[..., Hkv, S, D] -> [..., heads, S, D], each key/value head repeated over its query group."""
    s = shape_of(t)
    r = len(s)
    if not isinstance(s[-3], int) or s[-3] <= 0 or heads % s[-3]:
        raise Unsupported("grouped-query attention with head counts that do not divide")
    rep = heads // s[-3]
    wide = b.tmp(n, f"{tag}_kv1", (*s[:-2], 1, *s[-2:]), t.dtype)
    b.emit(n, "Unsqueeze", [t, b.axes(n, [r - 2])], [wide])
    reps = [1] * (r + 1)
    reps[r - 2] = rep
    big = b.tmp(n, f"{tag}_kvx", (*s[:-2], rep, *s[-2:]), t.dtype)
    b.emit(n, "Expand", [wide, b.const(n, reps, f"{tag}_kv_reps", np.int64)], [big])
    out = b.tmp(n, f"{tag}_kv", (*s[:-3], heads, *s[-2:]), t.dtype)
    target = [*s[:-3], heads, s[-2], -1]
    b.emit(n, "Reshape", [big, b.const(n, target, f"{tag}_kv_shape", np.int64)], [out])
    return out


@on_method("repeat_interleave")
@on_function(torch.repeat_interleave)
def _repeat_interleave(b: Builder, n: fx.Node) -> Value:
    """``x.repeat_interleave(r, dim)`` with an integer ``r``: each index of ``dim`` repeated r times in a
    row — grouped-query attention's key/value heads over their query groups. Lowered as Unsqueeze,
    Expand, Reshape (as Hugging Face's ``repeat_kv``), so index i of the result is index i // r of x."""
    x = tensor_input(b, n)
    reps, dim = b.arg(n, 1, "repeats"), b.arg(n, 2, "dim", None)
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1 or not isinstance(dim, int):
        raise Unsupported("repeat_interleave with tensor repeats or no dim")
    s = shape_of(x)
    r = len(s)
    d = norm_axis(dim, r)
    if not all(isinstance(v, int) for v in s):
        raise Unsupported("repeat_interleave of a symbolic shape")
    y = b.out(n)
    wide = b.tmp(n, "ri1", (*s[: d + 1], 1, *s[d + 1 :]), x.dtype)
    b.emit(n, "Unsqueeze", [x, b.axes(n, [d + 1])], [wide])
    ones = [1] * (r + 1)
    ones[d + 1] = reps
    big = b.tmp(n, "rix", (*s[: d + 1], reps, *s[d + 1 :]), x.dtype)
    b.emit(n, "Expand", [wide, b.const(n, ones, "ri_reps", np.int64)], [big])
    target = [*s[:d], s[d] * reps, *s[d + 1 :]]
    target[-1 if d != r - 1 else 0] = -1
    b.emit(n, "Reshape", [big, b.const(n, target, "ri_shape", np.int64)], [y])
    return y


@on_function(F.scaled_dot_product_attention)
def _sdpa_fn(b: Builder, n: fx.Node) -> Value:
    q, k, v = b.arg(n, 0, "query"), b.arg(n, 1, "key"), b.arg(n, 2, "value")
    mask = b.arg(n, 3, "attn_mask", None)
    if b.arg(n, 4, "dropout_p", 0.0) not in (0, 0.0):
        raise Unsupported("attention dropout")
    if not all(isinstance(t, Value) for t in (q, k, v)) or (mask is not None and not isinstance(mask, Value)):
        raise Unsupported("attention operands")
    scale = b.arg(n, 6, "scale", None)
    if scale is not None and not isinstance(scale, float | int):
        raise Unsupported("traced scale")
    gqa = bool(b.arg(n, 7, "enable_gqa", False))
    return emit_sdpa(b, n, q, k, v, mask, bool(b.arg(n, 5, "is_causal", False)), scale, b.out(n), gqa=gqa)


@on_module(nn.MultiheadAttention)
def _mha(b: Builder, n: fx.Node) -> Any:
    """nn.MultiheadAttention as projections, head reshapes and SDPA so that heads become channels."""
    mod = module_of(b, n, nn.MultiheadAttention)
    q, k, v = b.arg(n, 0, "query"), b.arg(n, 1, "key"), b.arg(n, 2, "value")
    kpm = b.arg(n, 3, "key_padding_mask", None)
    need_weights = b.arg(n, 4, "need_weights", True)
    mask = b.arg(n, 5, "attn_mask", None)
    average = b.arg(n, 6, "average_attn_weights", True)
    causal = b.arg(n, 7, "is_causal", False)
    if not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn or kpm is not None:
        raise Unsupported("MultiheadAttention variant")
    if causal or (mask is not None and (not isinstance(mask, Value) or mask.rank != 2)):
        raise Unsupported("MultiheadAttention mask")
    if not all(isinstance(t, Value) and t.rank == 3 for t in (q, k, v)):
        raise Unsupported("unbatched MultiheadAttention")
    res = b.make(n.name, b.meta.get(n))
    if not isinstance(res, tuple) or not isinstance(res[0], Value):
        raise Unsupported("MultiheadAttention result")
    h, e = mod.num_heads, mod.embed_dim
    d = e // h
    bf = bool(mod.batch_first)
    w = b.module_param(n, mod, "in_proj_weight")
    bias = b.module_param(n, mod, "in_proj_bias")
    ow = b.tensor_value(f"{n.target}.out_proj.weight", mod.out_proj.weight)
    ob = (
        b.tensor_value(f"{n.target}.out_proj.bias", mod.out_proj.bias)
        if mod.out_proj.bias is not None
        else None
    )
    assert w is not None

    def proj(x: Value, wv: Value, bv: Value | None, tag: str) -> Value:
        xs = shape_of(x)
        yv = b.tmp(n, tag, (*xs[:-1], static_size(wv, 0)), x.dtype)
        return emit_linear(b, n, x, wv, bv, yv)

    if q is k and k is v:
        qkv = proj(q, w, bias, "qkv")
        s = shape_of(qkv)
        parts = [b.tmp(n, t, (*s[:-1], e), q.dtype) for t in ("q", "k", "v")]
        b.emit(n, "Split", [qkv, b.const(n, [e, e, e], "qkv_sizes", np.int64)], parts, axis=2)
    else:
        ws = [b.tmp(n, f"w{t}", (e, e), w.dtype) for t in "qkv"]
        b.emit(n, "Split", [w, b.const(n, [e, e, e], "w_sizes", np.int64)], ws, axis=0)
        bs: list[Value | None] = [None, None, None]
        if bias is not None:
            bias_parts = [b.tmp(n, f"b{t}", (e,), bias.dtype) for t in "qkv"]
            b.emit(n, "Split", [bias, b.const(n, [e, e, e], "b_sizes", np.int64)], bias_parts, axis=0)
            bs = list(bias_parts)
        parts = [proj(x, wv, bv, t) for x, wv, bv, t in zip((q, k, v), ws, bs, "qkv")]
    heads = []
    for t, p in zip("qkv", parts):
        s = shape_of(p)
        split = b.tmp(n, f"{t}_split", (*s[:-1], h, d), p.dtype)
        b.emit(n, "Reshape", [p, b.const(n, [*s[:-1], h, d], f"{t}_shape", np.int64)], [split])
        # [B, L, H, D] (batch_first) or [L, B, H, D] -> [B, H, L, D]
        perm = [0, 2, 1, 3] if bf else [1, 2, 0, 3]
        ss = shape_of(split)
        hs = b.tmp(n, f"{t}_heads", tuple(ss[i] for i in perm), p.dtype)
        b.emit(n, "Transpose", [split], [hs], perm=perm)
        heads.append(hs)
    qh, kh, vh = heads
    qs, ks = shape_of(qh), shape_of(kh)
    att = b.tmp(n, "att", (qs[0], h, qs[2], d), q.dtype)
    probs = b.tmp(n, "probs", (qs[0], h, qs[2], ks[2]), q.dtype)
    emit_sdpa(b, n, qh, kh, vh, mask, False, 1.0 / math.sqrt(d), att, probs)
    perm = [0, 2, 1, 3] if bf else [2, 0, 1, 3]
    back = b.tmp(n, "att_t", tuple(shape_of(att)[i] for i in perm), q.dtype)
    b.emit(n, "Transpose", [att], [back], perm=perm)
    bs_ = shape_of(back)
    merged = b.tmp(n, "merged", (*bs_[:2], h * d), q.dtype)
    b.emit(n, "Reshape", [back, b.const(n, [*bs_[:2], h * d], "merge_shape", np.int64)], [merged])
    emit_linear(b, n, merged, ow, ob, res[0])
    if need_weights and len(res) > 1 and isinstance(res[1], Value):
        if average:
            b.emit(n, "ReduceMean", [probs, b.axes(n, [1])], [res[1]], keepdims=0)
        else:
            b.emit(n, "Identity", [probs], [res[1]])
    b.fixup("mha", n, heads=(qh.name, 1, h), qk_dims=(qh.name, 3, d), v_dims=(vh.name, 3, d), num_heads=h,
            head_dim=d)  # fmt: skip
    return res
