"""Runtime-friendly widths: the default selection keeps widths the kernels like, from the op table.

A CNN (convolutions declare 8) and transformer-shaped graphs (matrix products declare 16; a head ZIG
spans its head dimension, so head counts need no rounding) are pruned by the default selection; the
kept widths are the declared multiples, ``multiple=1`` turns the rounding off, and the pruned models
still verify against the zeroed original (and differ from the unzeroed one: the check can fail).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import frontends
import graphcore
from graphcore.errors import ZigraphError
from graphcore.ops import register_rule, rules
from graphcore.ops.head_dims import whole_heads
from graphcore.select import select_zigs
from graphcore.widths import channel_multiples, group_multiples, parse_multiple
from tests.helpers import analyze, group_of
from tests.onnx_builder import G
from zigraph.pipeline import LoadedModel, prune


def cnn() -> G:
    """Conv widths 40 and 24 (prunable), one of 12 (too small to keep an aligned width while pruned)."""
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    a = g.op("Relu", [g.conv(x, 3, 40, name="c1")])
    b = g.op("Relu", [g.conv(a, 40, 24, name="c2")])
    c = g.op("Relu", [g.conv(b, 24, 12, name="c3")])
    p = g.op("Flatten", [g.op("GlobalAveragePool", [g.conv(c, 12, 16, name="c4")])])
    g.gemm(p, 16, 3, "fc")
    g.nodes[-1].output[0] = "y"
    g.output("y")
    return g


def mlp() -> G:
    """A transformer's MLP block: tokens x hidden 24 -> 80 -> 24, with a residual."""
    g = G()
    x = g.input("x", [1, 6, 24])
    h = g.op("Add", [g.op("MatMul", [x, g.w("up", (24, 80))]), g.w("up_b", (80,))])
    o = g.op("MatMul", [g.op("Relu", [h]), g.w("down", (80, 24))])
    g.op("Add", [x, o])
    g.nodes[-1].output[0] = "y"
    g.output("y")
    return g


def kept(a, chosen: np.ndarray, group) -> int:
    return group.size - int(np.isin(group.zig_ids, chosen).sum())


def _skewed_scores(a) -> np.ndarray:
    """Scores that make the plain selection leave a ragged width in every group."""
    return np.random.default_rng(1).random(a.num_zigs)


def test_cnn_default_keeps_multiples_of_eight_and_one_turns_it_off():
    a = analyze(cnn().model())
    c1, c2, c3 = (group_of(a, f"{n}.weight", 0) for n in ("c1", "c2", "c3"))
    assert [int(m) for m in channel_multiples(a)[[c1.id, c2.id, c3.id]]] == [8, 8, 8]
    assert [int(m) for m in group_multiples(a)[[c1.id, c2.id, c3.id]]] == [8, 8, 1]
    scores = _skewed_scores(a)
    plain = select_zigs(a, 0.45, scores, multiple=1)
    auto = select_zigs(a, 0.45, scores)
    assert any(kept(a, plain, g) % 8 for g in (c1, c2)), "the test needs a ragged plain selection"
    for g in (c1, c2):
        assert kept(a, auto, g) % 8 == 0 and kept(a, auto, g) < g.size
    assert kept(a, auto, c3) == kept(a, plain, c3) < c3.size  # too small: pruned as asked
    assert set(auto) <= set(plain)  # rounding only gives back removals


def test_the_multiple_comes_from_the_op_table():
    conv = rules()[("", "Conv")]
    register_rule(dataclasses.replace(conv, width_multiple=4), replace=True)
    try:
        a = analyze(cnn().model())
        c1 = group_of(a, "c1.weight", 0)
        assert group_multiples(a)[c1.id] == 4
        assert kept(a, select_zigs(a, 0.45, _skewed_scores(a)), c1) % 4 == 0
    finally:
        register_rule(conv, replace=True)
    a = analyze(cnn().model())
    assert group_multiples(a)[group_of(a, "c1.weight", 0).id] == 8


def test_explicit_multiple_overrides_every_group():
    a = analyze(cnn().model())
    scores = _skewed_scores(a)
    chosen = select_zigs(a, 0.45, scores, multiple=4)
    for g in a.prunable_groups:
        assert kept(a, chosen, g) % 4 == 0 or kept(a, chosen, g) == g.size
    assert parse_multiple("auto") is None and parse_multiple("8") == 8 and parse_multiple(None) is None
    for bad in ("0", "-8", "eight"):
        with pytest.raises(ZigraphError):
            parse_multiple(bad)


def test_mlp_width_is_rounded_to_sixteen():
    a = analyze(mlp().model())
    up = group_of(a, "up", 1)
    assert group_multiples(a)[up.id] == 16
    scores = _skewed_scores(a)
    assert kept(a, select_zigs(a, 0.5, scores, multiple=1), up) % 16
    assert kept(a, select_zigs(a, 0.5, scores), up) % 16 == 0


def _run(path, feed) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.mark.parametrize("build", [cnn, mlp])
def test_default_pruned_models_verify_and_differ_from_the_original(build, tmp_path):
    model = build().model()
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    out = tmp_path / "small.onnx"
    report = prune(LoadedModel(frontends.load(str(src)), source=str(src)), 0.5, out)
    assert report.result is not None and report.result.multiple is None
    assert report.result.verification is not None and report.result.verification.passed
    assert report.result.params_after < report.result.params_before
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    assert not np.allclose(_run(src, feed), _run(out, feed), rtol=1e-3, atol=1e-4)


def _bert(folder: Path) -> Path:
    pytest.importorskip("transformers")
    from tests.zoo import export

    return export("bert", folder, dynamo=False)


@pytest.mark.parametrize(("groups", "expect"), [(8, 1), (16, 2)])
def test_a_zig_of_several_channels_counts_as_that_many(groups, expect):
    """A grouped convolution's ZIG is a whole conv group: 64 channels in 8 groups are 8-wide ZIGs
    (aligned already), in 16 groups 4-wide ones (two make a multiple of 8)."""
    g = G()
    x = g.input("x", [1, 3, 6, 6])
    a = g.op("Relu", [g.conv(x, 3, 64, name="c1")])
    b = g.op("Relu", [g.conv(a, 64, 64, group=groups, name="gconv")])
    p = g.op("Flatten", [g.op("GlobalAveragePool", [g.conv(b, 64, 16, name="c3")])])
    g.gemm(p, 16, 3, "fc")
    g.nodes[-1].output[0] = "y"
    g.output("y")
    a = analyze(g.model())
    grp = group_of(a, "c1.weight", 0)
    assert grp.size == groups and group_multiples(a)[grp.id] == expect
    chosen = select_zigs(a, 0.4, _skewed_scores(a))
    assert kept(a, chosen, grp) < grp.size and (kept(a, chosen, grp) * (64 // groups)) % 8 == 0


@pytest.mark.slow
def test_transformer_heads_need_no_rounding_mlp_does(tmp_path):
    path = _bert(tmp_path)
    with whole_heads():
        a = graphcore.analyze(frontends.load(str(path)))
    heads = [g for g in a.prunable_groups if g.size == 4]  # 4 heads of 16 channels each
    assert heads and all(group_multiples(a)[g.id] == 1 for g in heads)  # 16-wide ZIGs are aligned already
    a = graphcore.analyze(frontends.load(str(path)))
    multiples = group_multiples(a)
    dims = [g for g in a.prunable_groups if g.size == 16]  # head dimension j of the 4 heads: 4 channels
    mlps = [g for g in a.prunable_groups if g.size == 128]
    assert dims and mlps
    assert all(multiples[g.id] == 4 for g in dims)  # 4 ZIGs of 4 channels make the 16 MatMul likes
    assert all(multiples[g.id] == 16 for g in mlps)
    out = tmp_path / "small.onnx"
    report = prune(LoadedModel(frontends.load(str(path)), source=str(path)), 0.5, out)
    res = report.result
    assert res is not None and res.verification is not None and res.verification.passed
    small = graphcore.analyze(frontends.load(str(out)))
    widths = sorted({g.size for g in small.groups if g.prunable})
    assert widths and all(w % 4 == 0 for w in widths if w < 16), widths  # head dimensions
    assert all(w % 16 == 0 for w in widths if w > 16), widths  # MLP widths


def test_cli_multiple_auto_is_the_default_and_one_is_recorded(tmp_path, capsys):
    from zigraph.cli import main

    src = tmp_path / "m.onnx"
    onnx.save(cnn().model(), src)
    base = ["prune", str(src), "--sparsity", "0.5"]
    for extra, expect in (([], None), (["--multiple", "1"], 1)):
        rep = tmp_path / "r.json"
        assert main([*base, "-o", str(tmp_path / "s.onnx"), "--report", str(rep), *extra]) == 0
        assert json.loads(rep.read_text())["result"]["multiple"] == expect
    assert main([*base, "-o", str(tmp_path / "t.onnx"), "--multiple", "x"]) == 2
    assert "--multiple" in capsys.readouterr().err
