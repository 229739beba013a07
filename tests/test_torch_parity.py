"""Parity: a model loaded from torch and its ONNX export give the same node groups.

Parameters are matched by name and shape (the dynamo exporter keeps FQNs as initializer names; with
``optimize=True`` BatchNorm is folded into the convolution, so only the names both sides have are
compared). The prunable groups must be identical (the same parameter axes, the same number of
channels) and the parameter axes that cannot be pruned must be the same set.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import onnx
import pytest
import torch

import graphcore
from frontends.onnx_frontend import load_onnx
from frontends.torch_frontend import load_torch
from graphcore.ops.head_dims import whole_heads
from tests.test_torch_patterns import _build
from tests.test_torch_zoo import build


def _export(model, x, path, optimize: bool) -> None:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), dynamo=True, optimize=optimize).save(str(path))


def _signature(analysis, common: set[str]):
    prunable, pinned = set(), set()
    for g in analysis.groups:
        params = tuple(sorted(p for p in g.params if p[0] in common))
        if not params:
            continue
        if g.prunable:
            prunable.add((params, g.size))
        else:
            pinned.update(params)
    return prunable, pinned


def _check(model, x, tmp_path, optimize: bool) -> None:
    path = tmp_path / "model.onnx"
    _export(model, x, path, optimize)
    # Whole heads: head-dimension granularity may differ by frontend (nn.MultiheadAttention keeps
    # query/key apart from value/output; its ONNX export's packed [B, S, 3, H, d] reshape ties them into
    # one coarser group, docs/head_dims.md); both are exact, the whole-head groups must agree.
    with whole_heads():
        from_torch = graphcore.analyze(load_torch(model, x))
        from_onnx = graphcore.analyze(load_onnx(str(path)))
    shapes = {t.name: tuple(t.dims) for t in onnx.load(str(path)).graph.initializer}
    common = {k for k, s in from_torch.param_shapes.items() if shapes.get(k) == tuple(s)}
    assert len(common) >= 4, common
    pt, nt = _signature(from_torch, common)
    po, no = _signature(from_onnx, common)
    assert pt, "no prunable group to compare"
    assert pt == po, (sorted(pt ^ po))[:4]
    assert nt == no, sorted(nt ^ no)[:8]


@pytest.mark.parametrize(
    ("name", "optimize"),
    [("residual", False), ("flatten_linear", True), ("squeeze_excite", True), ("channels_last", True)],
)
def test_patterns_match_their_onnx_export(name, optimize, tmp_path):
    model, x = _build(name)
    _check(model.eval(), x, tmp_path, optimize)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("tiny_vit", 32),
        ("resnet18", 64),
        pytest.param("mobilenet_v3_small", 64, marks=pytest.mark.slow),
        pytest.param("squeezenet1_0", 64, marks=pytest.mark.slow),
        pytest.param("shufflenet_v2_x0_5", 64, marks=pytest.mark.slow),
    ],
)
def test_zoo_matches_its_onnx_export(name, size, tmp_path):
    _check(build(name), torch.randn(1, 3, size, size), tmp_path, optimize=True)
