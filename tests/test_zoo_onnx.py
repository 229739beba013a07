"""Real architectures exported to ONNX: analysis finds what reasoning predicts, pruning stays exact.

CI runs a bounded subset (tests/zoo.py: CI_SUBSET); ZIGRAPH_ZOO=all runs every model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphcore.ops.head_dims import whole_heads
from tests.zoo import HF, TORCHVISION, export, zoo_selection

pytest.importorskip("torchvision")
pytest.importorskip("transformers")

MODELS = TORCHVISION + HF


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


def _params(model) -> int:
    return int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer))


def _case(name: str, dynamo: bool):
    marks = [] if name in zoo_selection(MODELS) and dynamo else [pytest.mark.slow]
    return pytest.param(name, dynamo, id=f"{name}-{'dynamo' if dynamo else 'torchscript'}", marks=marks)


CASES = [_case(m, True) for m in MODELS] + [_case(m, False) for m in MODELS if m != "maxvit_t"]


@pytest.mark.parametrize(("name", "dynamo"), CASES)
def test_prune_half_is_exact_and_smaller(name, dynamo, zoo_dir, tmp_path):
    import onnx

    import construct
    import frontends
    import graphcore
    from zigraph.pipeline import LoadedModel, prune_model

    path = export(name, zoo_dir, dynamo=dynamo)
    graph = frontends.load(str(path))
    analysis = graphcore.analyze(graph)
    assert analysis.prunable_groups, f"{name}: no prunable group"
    out = tmp_path / "small.onnx"
    report = prune_model(LoadedModel(graph, source=str(path)), 0.5, out, samples=2)
    ver = report["result"]["verification"]
    assert ver["passed"] and ver["max_rel"] <= 1e-4, ver
    small = onnx.load(str(out))
    onnx.checker.check_model(small, full_check=True)
    kept = _params(small) / _params(onnx.load(str(path)))
    assert kept <= 0.9, f"{name}: kept {kept:.2f} of the parameters"
    # Not vacuous: the small model differs from the original when nothing is zeroed.
    loose = construct.verify(str(path), str(out), [], samples=1)
    assert loose.max_rel > 1e-3, f"{name}: pruning changed nothing measurable"


def _groups(name: str, zoo_dir: Path):
    import frontends
    import graphcore

    a = graphcore.analyze(frontends.load(str(export(name, zoo_dir))))
    pr = a.prunable_groups
    return a, len(pr), int(sum(g.size for g in pr))


def test_resnet18_groups_follow_the_residual_stages(zoo_dir):
    # 8 BasicBlocks each own one internal group; each of the 4 stages ties its residual stream
    # (layer1's stream also holds the stem conv, which has no downsample in between).
    _a, n_groups, n_zigs = _groups("resnet18", zoo_dir)
    assert n_groups == 8 + 4
    assert n_zigs == 2 * (64 + 128 + 256 + 512) + (64 + 128 + 256 + 512)


@pytest.mark.slow
def test_resnet50_groups_follow_the_residual_stages(zoo_dir):
    # 16 Bottlenecks × 2 internal groups, 4 residual streams, and the stem (ends at a downsample).
    _a, n_groups, n_zigs = _groups("resnet50", zoo_dir)
    assert n_groups == 32 + 4 + 1
    internal = 2 * (3 * 64 + 4 * 128 + 6 * 256 + 3 * 512)
    assert n_zigs == internal + (256 + 512 + 1024 + 2048) + 64


@pytest.mark.parametrize(("name", "heads", "kv_heads", "ffn", "layers"), [
    ("bert", 4, 4, 128, 2), ("gpt2", 4, 4, 256, 2), ("llama", 4, 2, 128, 2),
])  # fmt: skip
def test_transformers_prune_heads_and_mlp_not_the_residual_stream(
    name, heads, kv_heads, ffn, layers, zoo_dir
):
    a, n_groups, n_zigs = _groups(name, zoo_dir)
    # Per layer: query/key head dimensions (LLaMA: rotary pairs), value/output head dimensions and one
    # MLP group; the hidden size stays: these bare models return the hidden states, a graph output
    # (the LM-head models of tests/test_hidden_size.py prune it). Head size 16.
    assert n_groups == 3 * layers
    assert n_zigs == layers * ((8 if name == "llama" else 16) + 16 + ffn)
    with whole_heads():
        _, n_groups, n_zigs = _groups(name, zoo_dir)
    # Whole heads: one group of heads (a KV head with the query heads that share it) per layer.
    assert n_groups == 2 * layers
    assert n_zigs == layers * (kv_heads + ffn)
    embedding = next(g for g in a.groups if any(n.endswith(("word_embeddings.weight", "wte.weight",
                                                                "embed_tokens.weight")) and ax == 1
                                                     for n, ax in g.params))  # fmt: skip
    assert not embedding.prunable
