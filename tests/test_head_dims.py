"""Attention head dimensions as channels: hand-computed ZIGs, exact pruning in torch and onnxruntime.

The design (graphcore/ops/head_dims.py): head dimension j of *every* head is one ZIG, so each head keeps
the same number of dimensions (a rectangular reshape) by construction. Query/key dimensions form one
group (the scores sum over them: removal is exact where q or k is zero there), value/output dimensions
another. Under grouped-query attention, key head g's dimension j is in the ZIG of dimension j of every
query head, so the head counts and the query groups never change. Rotary embeddings tie j with
j + d/2 and slice their cos/sin tables (or the ``inv_freq`` buffer they come from). Whole heads stay
available with ``whole_heads()``: then a key/value head goes with its whole query group.

Hand-computed rows below: a projection's output row for head h, dimension j is ``h·d + j``.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch

import construct
import graphcore
from construct.torch_construct import to_torch
from construct.torch_export import to_onnx
from construct.torch_verify import verify_torch, zeroed_copy
from frontends.torch_frontend import load_torch
from graphcore.groups import PruneAnalysis
from graphcore.ops.head_dims import whole_heads
from tests.attention_models import Attention, onnx_attention
from tests.helpers import analyze, assert_exact, random_removal

Zig = frozenset[tuple[str, int, tuple[int, ...]]]


def _zigs(a: PruneAnalysis, param: str, axis: int) -> set[Zig]:
    """Every ZIG of the group that holds ``param``'s ``axis``, as (param, axis, indices) slices."""
    (g,) = [g for g in a.groups if (param, axis) in g.params]
    assert g.prunable, g.reason
    return {frozenset((s.param, s.axis, tuple(s.indices)) for s in a.zig_slices(int(z))) for z in g.zig_ids}


def _rows(heads: int, d: int, j: int, base: int = 0, pair: bool = False) -> tuple[int, ...]:
    """Row h·d + j of every head (and h·d + j + d/2 with a rotary pair), offset by ``base``."""
    dims = [j, j + d // 2] if pair else [j]
    return tuple(sorted(base + h * d + k for h in range(heads) for k in dims))


def _expected(names: dict[str, tuple[str, int]], heads: int, kv: int, d: int, rotary: bool = False):
    """Q/K and V/O ZIGs: ``names`` maps q, qb, k, kb, v, vb, o (and tables) to (param, axis)."""
    n = d // 2 if rotary else d
    qk, vo = set(), set()
    for j in range(n):
        z = {
            (*names[t], _rows(heads if t[0] == "q" else kv, d, j, pair=rotary))
            for t in ("q", "qb", "k", "kb")
        }
        for t in ("cos", "sin"):
            if t in names:
                z.add((*names[t], (j, j + d // 2)))
        if "inv_freq" in names:
            z.add((*names["inv_freq"], (j,)))
        qk.add(frozenset(z))
    for j in range(d):
        vo.add(
            frozenset(
                {
                    (*names["v"], _rows(kv, d, j)),
                    (*names["vb"], _rows(kv, d, j)),
                    (*names["o"], _rows(heads, d, j)),
                }
            )
        )
    return qk, vo


TORCH_NAMES = {"q": ("q.weight", 0), "qb": ("q.bias", 0), "k": ("k.weight", 0), "kb": ("k.bias", 0),
               "v": ("v.weight", 0), "vb": ("v.bias", 0), "o": ("o.weight", 1)}  # fmt: skip
ONNX_NAMES = {"q": ("q.w", 1), "qb": ("q.b", 0), "k": ("k.w", 1), "kb": ("k.b", 0),
              "v": ("v.w", 1), "vb": ("v.b", 0), "o": ("o.w", 0)}  # fmt: skip

CASES = {
    # name: (constructor kwargs, heads, kv heads, head dim, rotary)
    "mha": ({}, 2, 2, 4, False),
    "rotary": ({"rotary": True, "head_dim": 8}, 2, 2, 8, True),
    "gqa": ({"heads": 8, "kv_heads": 2}, 8, 2, 4, False),
    "gqa_sdpa": ({"heads": 8, "kv_heads": 2, "gqa": "sdpa"}, 8, 2, 4, False),
    "gqa_interleave": ({"heads": 8, "kv_heads": 2, "gqa": "interleave", "manual": True}, 8, 2, 4, False),
    "manual_scale": ({"manual": True}, 2, 2, 4, False),
}
X = torch.randn(1, 5, 12, generator=torch.Generator().manual_seed(1))


def _torch_model(kwargs: dict) -> Attention:
    torch.manual_seed(0)
    return Attention(**kwargs).eval()


def _prune_torch(model: torch.nn.Module, a: PruneAnalysis, tmp_path=None) -> None:
    """Half of every prunable group removed: exact in torch (and, with ``tmp_path``, in onnxruntime
    after exporting the small module); the unzeroed original differs."""
    removed = random_removal(a, np.random.default_rng(0), fraction=0.5)
    zeroed = zeroed_copy(model, a, removed)
    small = to_torch(zeroed, a)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert verify_torch(zeroed, small, X).max_rel <= 1e-4
    assert verify_torch(model, small, X).max_rel > 1e-3  # the check can fail
    if tmp_path is not None:
        rep = to_onnx(small, (X,), tmp_path / "small.onnx", reference=zeroed, samples=2)
        assert rep is not None and rep.passed and rep.max_rel <= 1e-4, rep


@pytest.mark.parametrize("case", list(CASES))
def test_torch_head_dims_are_hand_computed_zigs_and_prune_exactly(case):
    """Torch (the slow test below also exports each small module and checks it in onnxruntime)."""
    kwargs, heads, kv, d, rotary = CASES[case]
    model = _torch_model(kwargs)
    a = graphcore.analyze(load_torch(model, (X,)))
    names = dict(TORCH_NAMES)
    if rotary:
        names["inv_freq"] = ("inv_freq", 0)
    qk, vo = _expected(names, heads, kv, d, rotary)
    assert _zigs(a, "q.weight", 0) == qk
    assert _zigs(a, "v.weight", 0) == vo
    _prune_torch(model, a)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_torch_pruned_head_dims_export_to_onnxruntime(case, tmp_path):
    model = _torch_model(CASES[case][0])
    _prune_torch(model, graphcore.analyze(load_torch(model, (X,))), tmp_path)


def _assert_packed_head_dims(a: PruneAnalysis, w: tuple[str, int], b: str, o: tuple[str, int]) -> None:
    """Two heads of 4 in one packed projection (its ``w`` axis and bias ``b``: queries 0..7, keys 8..15,
    values 16..23): query/key ZIG j is row j of every query and key head, value/output ZIG j row j of
    every value head with the output projection's ``o`` axis; all prunable."""
    h, d = 2, 4
    qk = {frozenset({(*w, _rows(h, d, j) + _rows(h, d, j, 8)), (b, 0, _rows(h, d, j) + _rows(h, d, j, 8))})
          for j in range(d)}  # fmt: skip
    vo = {frozenset({(*w, _rows(h, d, j, 16)), (b, 0, _rows(h, d, j, 16)), (*o, _rows(h, d, j))})
          for j in range(d)}  # fmt: skip
    groups = [g for g in a.groups if w in g.params]
    got = {
        frozenset((s.param, s.axis, tuple(s.indices)) for s in a.zig_slices(int(z)))
        for g in groups
        for z in g.zig_ids
    }
    assert got == qk | vo and all(g.prunable for g in groups)


def test_torch_packed_qkv_maps_head_dims_through_the_split():
    model = _torch_model({"packed": True})
    a = graphcore.analyze(load_torch(model, (X,)))
    _assert_packed_head_dims(a, ("c_attn.weight", 0), "c_attn.bias", ("o.weight", 1))
    _prune_torch(model, a)


@pytest.mark.parametrize("case", ["gqa", "gqa_interleave"])
def test_gqa_whole_heads_take_a_key_head_with_its_query_group(case):
    """``whole_heads()`` (the example in docs/head_dims.md): a key/value head and the four query heads
    that read it are one ZIG; removing one is exact."""
    model = _torch_model(CASES[case][0])
    with whole_heads():
        a = graphcore.analyze(load_torch(model, (X,)))
    span = lambda lo, n: tuple(range(lo, lo + n))  # noqa: E731
    want = {frozenset({("q.weight", 0, span(16 * g, 16)), ("q.bias", 0, span(16 * g, 16)),
                       ("k.weight", 0, span(4 * g, 4)), ("k.bias", 0, span(4 * g, 4)),
                       ("v.weight", 0, span(4 * g, 4)), ("v.bias", 0, span(4 * g, 4)),
                       ("o.weight", 1, span(16 * g, 16))}) for g in range(2)}  # fmt: skip
    assert _zigs(a, "q.weight", 0) == want
    _prune_torch(model, a)


ONNX_CASES = {
    "mha": ({}, 2, 2, 4, False),
    "rotary": ({"rotary": True, "head_dim": 8}, 2, 2, 8, True),
    "gqa": ({"heads": 8, "kv_heads": 2}, 8, 2, 4, False),
}


def _prune_onnx(a: PruneAnalysis) -> None:
    removed = random_removal(a, np.random.default_rng(0), fraction=0.5)
    small, _plan, _ = assert_exact(a, removed, rtol=1e-4)
    before = sum(int(np.prod(t.dims)) for t in a.graph.meta["model"].graph.initializer)
    assert sum(int(np.prod(t.dims)) for t in small.graph.initializer) < before
    loose = construct.compare_models(a.graph.meta["model"], small, samples=1)
    assert loose.max_rel > 1e-3  # the unzeroed original differs: the check can fail


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_onnx_head_dims_are_hand_computed_zigs_and_prune_exactly(case):
    kwargs, heads, kv, d, rotary = ONNX_CASES[case]
    a = analyze(onnx_attention(**kwargs))
    names = dict(ONNX_NAMES)
    if rotary:
        # The tables are read by a query Mul and a key Mul: each read is its own (alias) parameter.
        names |= {"cos": ("rope.cos", 1), "sin": ("rope.sin", 1)}
    qk, vo = _expected(names, heads, kv, d, rotary)
    got = _zigs(a, "q.w", 1)
    if rotary:
        # Strip the per-use aliases of the tables (``rope.cos@Mul_n``) after checking they follow.
        for z in got:
            cos = {s for s in z if s[0].startswith("rope.cos")}
            assert len(cos) == 2 and len({s[2] for s in cos}) == 1
        got = {frozenset(s for s in z if "@" not in s[0]) for z in got}
    assert got == qk
    assert _zigs(a, "v.w", 1) == vo
    _prune_onnx(a)


def test_onnx_packed_qkv_maps_head_dims_through_the_split():
    a = analyze(onnx_attention(packed=True))
    _assert_packed_head_dims(a, ("qkv.w", 1), "qkv.b", ("o.w", 0))
    _prune_onnx(a)


def test_onnx_scale_read_from_the_head_size_pins_query_key_dims():
    """1/sqrt(size of q's last axis) computed at run time would change with the head size: the query/key
    dimensions stay (with that reason); value/output dimensions still prune exactly."""
    a = analyze(onnx_attention(scale_from_shape=True))
    (qk,) = [g for g in a.groups if ("q.w", 1) in g.params]
    assert not qk.prunable and "Sqrt" in (qk.reason or "")
    assert len(_zigs(a, "v.w", 1)) == 4
    _prune_onnx(a)


# -- tiny Hugging Face models, from torch and from ONNX ------------------------------------------------


def _hf(name: str) -> torch.nn.Module:
    from construct.torch_verify import randomize_
    from tests.test_torch_hf import _model

    torch.manual_seed(0)
    return randomize_(_model(name)).eval()


HF_DIMS = {  # head dim 8 in every tiny config; LLaMA's rotary pairs halve its query/key ZIGs
    "bert": (8, 8),
    "gpt2": (8, 8),
    "llama": (4, 8),
}


@pytest.mark.parametrize(("name", "ort"), [
    pytest.param("bert", True, marks=pytest.mark.slow), pytest.param("gpt2", True, marks=pytest.mark.slow),
    pytest.param("llama", True, marks=pytest.mark.slow), ("llama", False),
])  # fmt: skip
def test_hf_from_torch_prunes_head_dims_exactly(name, ort, tmp_path):
    """Torch; ``ort``: the small module is also exported and checked in onnxruntime (slow)."""
    pytest.importorskip("transformers")
    from zigraph.prune_check import prune_check

    warnings.simplefilter("ignore")
    model = _hf(name)
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    onnx_path = str(tmp_path / "s.onnx") if ort else None
    # multiple=1: the kept fraction below measures head dims, not the default width rounding
    r = prune_check(model, (ids,), sparsity=0.5, criterion="random", onnx_path=onnx_path, multiple=1)
    sizes = {g.size for g in r.analysis.prunable_groups}
    assert set(HF_DIMS[name]) <= sizes, sizes
    assert r.torch_rel <= 1e-4, r
    assert not ort or (r.ort_rel is not None and r.ort_rel <= 1e-4), r
    assert r.kept < 0.62, r
    assert verify_torch(model, r.small, (ids,)).max_rel > 1e-3  # the unzeroed original differs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_hf_from_onnx_prunes_head_dims_exactly(name, tmp_path):
    pytest.importorskip("transformers")
    import frontends
    from tests.zoo import export
    from zigraph.pipeline import LoadedModel, prune_model

    path = export(name, tmp_path, dynamo=True)
    graph = frontends.load(str(path))
    a = graphcore.analyze(graph)
    sizes = {g.size for g in a.prunable_groups}
    assert {16 if name != "llama" else 8, 16} <= sizes, sizes  # head dim 16 in the zoo configs
    out = tmp_path / "small.onnx"
    # multiple=1: the kept fraction below measures head dims, not the default width rounding
    report = prune_model(LoadedModel(graph, source=str(path)), 0.5, out, samples=2, multiple=1)
    ver = report["result"]["verification"]
    assert ver["passed"] and ver["max_rel"] <= 1e-4, ver
    params = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert params(onnx.load(str(out))) / params(onnx.load(str(path))) < 0.6
    assert construct.verify(str(path), str(out), [], samples=1).max_rel > 1e-3
