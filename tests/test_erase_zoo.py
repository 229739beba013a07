"""Erasing well-known residual families and transformers at 50 % of their structures, from ONNX and torch.

Half the erasable structures (the ones with the smallest weights, through the one selection rule, so the
set is valid) are erased; the small model must equal the original with ``plan.removed`` zeroed at
<= 1e-4 relative error and hold fewer nodes and parameters. CI runs the subset of ``tests/zoo.py``;
``ZIGRAPH_ZOO=all`` runs every family.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import construct
import frontends
import graphcore
from construct.erase_torch import zeroed_by_slices
from construct.onnx_construct import zig_norms
from graphcore.erase import EraseAnalysis
from tests import zoo

FAMILIES = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny",
    "bert", "gpt2", "llama",
]  # fmt: skip
FAST = {"resnet18", "mobilenet_v3_small", "bert", "llama"}


def _cases() -> list:
    return [
        pytest.param(m, marks=() if m in FAST and m in zoo.zoo_selection([m]) else pytest.mark.slow)
        for m in FAMILIES
    ]


def _half(a: EraseAnalysis, norms: np.ndarray) -> list[int]:
    """Half of the erasable structures, smallest root-mean-square weights first, kept valid."""
    sizes = [sum(math.prod(a.param_shapes[p]) for p in s.params) for s in a.structures]
    numel = np.maximum(np.array(sizes, dtype=np.float64), 1.0)
    rms = norms[: len(a.structures)] / np.sqrt(numel)
    erasable = [s.id for s in a.structures if s.erasable]
    order = sorted(erasable, key=lambda i: (rms[i], i))
    k = round(0.5 * len(erasable))
    chosen = a.select(order, k)
    assert len(chosen) >= 1
    return chosen


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("erase_zoo")


@pytest.mark.parametrize("name", _cases())
def test_erase_half_from_onnx(name: str, folder: Path) -> None:
    path = zoo.export(name, folder, dynamo=True)
    a = graphcore.analyze(frontends.load(str(path)), mode="erase")
    chosen = _half(a, zig_norms(a))
    plan = a.plan(chosen)
    small = construct.erase_onnx(str(path), a, chosen)
    onnx.checker.check_model(small)
    full = onnx.load(str(path))
    assert len(small.graph.node) < len(full.graph.node)
    assert _params(small) < _params(full)
    rep = construct.verify(str(path), small, plan.removed, samples=2)
    assert rep.passed and rep.max_rel <= 1e-4, rep


@pytest.mark.parametrize("name", _cases())
def test_erase_half_from_torch(name: str) -> None:
    if name in zoo.HF:
        model = zoo.hf_model(name)
        x = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(0))
    else:
        model = zoo.torchvision_model(name)
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    a = graphcore.analyze(frontends.load(model, (x,)), mode="erase")
    named = dict(model.named_parameters())
    norms = np.array(
        [
            float(np.sqrt(sum(float(named[p].detach().double().pow(2).sum()) for p in s.params)))
            for s in a.structures
        ]
    )
    chosen = _half(a, norms)
    plan = a.plan(chosen)
    small = construct.to_torch(model, a, chosen)
    reference = zeroed_by_slices(model, plan.removed)
    with torch.no_grad():
        want, got = reference(x), small(x)
    scale = float(want.abs().max())
    assert float((want - got).abs().max()) <= 1e-4 * scale
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in small.parameters())
    assert after < before
    assert sum(p.numel() for p in model.parameters()) == before, "the user's model is untouched"
