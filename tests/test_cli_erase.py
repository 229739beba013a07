"""``zigraph erase`` and ``zigraph analyze --mode erase``: exact, always valid, honest about limits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("graphcore.erase")

from tests.onnx_builder import G
from tests.test_cli import _bad_models
from tests.test_onnx_patterns import _head
from zigraph.cli import main


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def stacked(blocks: int = 4, c: int = 4) -> onnx.ModelProto:
    """``x = relu(x + conv(relu(conv(x))))`` ``blocks`` times: every branch is an erasable structure."""
    g = G()
    x = g.op("Relu", [g.conv(g.input("x", [1, 2, 6, 6]), 2, c, name="stem")])
    for i in range(blocks):
        branch = g.conv(g.op("Relu", [g.conv(x, c, c, name=f"b{i}a")]), c, c, name=f"b{i}b")
        x = g.op("Relu", [g.op("Add", [x, branch])])
    _head(g, x, c)
    return g.model()


def nested(c: int = 4) -> onnx.ModelProto:
    """An outer residual block whose branch holds an inner residual block: the inner branch nests."""
    g = G()
    x = g.op("Relu", [g.conv(g.input("x", [1, 2, 6, 6]), 2, c, name="stem")])
    y = g.op("Relu", [g.conv(x, c, c, name="outer_a")])
    inner = g.conv(g.op("Relu", [g.conv(y, c, c, name="inner_a")]), c, c, name="inner_b")
    z = g.conv(g.op("Add", [y, inner]), c, c, name="outer_b")
    _head(g, g.op("Relu", [g.op("Add", [x, z])]), c)
    return g.model()


def parallel(c: int = 4) -> onnx.ModelProto:
    """Two candidate ops summed, no identity path: one of them may go, never both."""
    g = G()
    x = g.op("Relu", [g.conv(g.input("x", [1, 2, 6, 6]), 2, c, name="stem")])
    s = g.op("Add", [g.conv(x, c, c, name="cand_a"), g.conv(x, c, c, k=1, name="cand_b")])
    _head(g, g.op("Relu", [s]), c)
    return g.model()


def chain(c: int = 4) -> onnx.ModelProto:
    g = G()
    x = g.op("Relu", [g.conv(g.input("x", [1, 2, 6, 6]), 2, c, name="c1")])
    _head(g, g.op("Relu", [g.conv(x, c, c, name="c2")]), c)
    return g.model()


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _convs(path: Path) -> int:
    return sum(1 for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")


def test_erase_removes_half_the_blocks_exactly_and_verifies_independently(tmp_path, capsys):
    full = _save(stacked(), tmp_path / "stacked.onnx")
    small, rep = tmp_path / "small.onnx", tmp_path / "rep.json"
    code, out, err = run(["erase", full, "--sparsity", "0.5", "-o", small, "--report", rep], capsys)
    assert code == 0, err
    assert "erased     2 of 4 erasable structures" in out and "PASSED" in out
    assert _convs(small) == _convs(full) - 4  # two branches of two convs each are physically gone
    report = json.loads(rep.read_text())
    assert report["mode"] == "erase"
    result = report["result"]
    assert len(result["structures_erased"]) == 2 and result["note"] is None
    assert result["params_after"] < result["params_before"] and result["flops_after"] < result["flops_before"]
    erased_params = {r["param"] for r in report["removed"]}
    assert erased_params and all(re.match(r"b\d[ab]\.", p) for p in erased_params)
    # The independent check: zero the removed slices in the original, compare in onnxruntime.
    code, out, err = run(["verify", full, small, "--zero", rep], capsys)
    assert code == 0 and "PASSED" in out, err
    # ...and it can fail: with nothing zeroed the erased model differs from the full one.
    report["removed"] = []
    rep.write_text(json.dumps(report))
    code, out, _ = run(["verify", full, small, "--zero", rep], capsys)
    assert code == 1 and "FAILED" in out


def test_the_smallest_norm_structures_go_first(tmp_path, capsys):
    model = stacked()
    for t in model.graph.initializer:  # blocks 1 and 3 get tiny weights: they are the ones to erase
        if t.name.startswith(("b1", "b3")):
            arr = onnx.numpy_helper.to_array(t) * 1e-3
            t.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), t.name))
    full = _save(model, tmp_path / "m.onnx")
    rep = tmp_path / "r.json"
    code, _, err = run(
        ["erase", full, "--sparsity", "0.5", "-o", tmp_path / "s.onnx", "--report", rep], capsys
    )
    assert code == 0, err
    gone = {r["param"].split(".")[0] for r in json.loads(rep.read_text())["removed"]}
    assert gone == {"b1a", "b1b", "b3a", "b3b"}


@pytest.mark.parametrize("sparsity", ["0.9", "1.0"])
def test_a_sparsity_no_valid_selection_reaches_erases_the_most_and_says_so(sparsity, tmp_path, capsys):
    full = _save(parallel(), tmp_path / "p.onnx")
    small, rep = tmp_path / "s.onnx", tmp_path / "r.json"
    code, out, err = run(["erase", full, "--sparsity", sparsity, "-o", small, "--report", rep], capsys)
    assert code == 0, err
    assert "note" in out and "most that keeps the network valid" in out
    result = json.loads(rep.read_text())["result"]
    assert result["structures_requested"] == 2 and len(result["structures_erased"]) == 1
    assert "most that keeps the network valid" in result["note"]
    assert _convs(small) == _convs(full) - 1


def test_a_plain_chain_has_nothing_to_erase_and_writes_nothing(tmp_path, capsys):
    full = _save(chain(), tmp_path / "chain.onnx")
    out_file = tmp_path / "out.onnx"
    code, _out, err = run(
        ["erase", full, "--sparsity", "0.5", "-o", out_file, "--report", tmp_path / "r.json"], capsys
    )
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nothing to erase" in lines[0] and "no output written" in lines[0]
    assert not out_file.exists() and not (tmp_path / "r.json").exists()
    assert not list(tmp_path.glob(".zigraph-*"))


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "text", "invalid_graph", "cycle"])
def test_bad_input_gets_exit_2_and_one_line(kind, tmp_path, capsys):
    path = _bad_models(tmp_path)[kind]
    out_file = tmp_path / "out.onnx"
    code, _, err = run(["erase", path, "--sparsity", "0.5", "-o", out_file], capsys)
    assert code == 2, (kind, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("zigraph: error:") and "Traceback" not in err
    assert not out_file.exists()


@pytest.mark.parametrize(
    "argv", [["--sparsity", "1.5"], ["--sparsity", "half"], ["--sparsity", "0.5", "-o", "x.txt"]]
)
def test_usage_errors_are_exit_2(argv, tmp_path, capsys):
    full = _save(stacked(), tmp_path / "m.onnx")
    if "-o" not in argv:
        argv = [*argv, "-o", tmp_path / "s.onnx"]
    code, _, err = run(["erase", full, *argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_erase_refuses_to_overwrite_its_input(tmp_path, capsys):
    full = _save(stacked(), tmp_path / "m.onnx")
    code, _, err = run(["erase", full, "--sparsity", "0.5", "-o", full], capsys)
    assert code == 2 and "overwrite" in err


def test_an_erased_model_that_does_not_verify_is_not_written(tmp_path, capsys, monkeypatch):
    import construct
    from construct.verify import VerifyReport

    def failing(*args, **kwargs):
        return VerifyReport(passed=False, samples=1, rtol=1e-4, max_abs=1.0, max_rel=1.0, outputs=[])

    monkeypatch.setattr(construct, "verify", failing)
    full = _save(stacked(), tmp_path / "m.onnx")
    out = tmp_path / "s.onnx"
    code, stdout, _ = run(["erase", full, "--sparsity", "0.5", "-o", out], capsys)
    assert code == 1 and "not written" in stdout and "FAILED" in stdout
    assert not out.exists() and not list(tmp_path.glob(".zigraph-*"))


def test_a_failure_inside_zigraph_is_exit_3_naming_model_and_stage(tmp_path, capsys, monkeypatch):
    import construct

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(construct, "erase_onnx", broken)
    full = _save(stacked(), tmp_path / "m.onnx")
    out = tmp_path / "s.onnx"
    code, _, err = run(["erase", full, "--sparsity", "0.5", "-o", out], capsys)
    assert code == 3, err
    assert "internal error" in err and str(full) in err and "constructing" in err and "boom" in err
    assert not out.exists()


def test_no_verify_writes_without_checking(tmp_path, capsys):
    full = _save(stacked(), tmp_path / "m.onnx")
    code, out, err = run(
        ["erase", full, "--sparsity", "0.5", "-o", tmp_path / "s.onnx", "--no-verify"], capsys
    )
    assert code == 0 and "verified   no" in out, err
    assert _convs(tmp_path / "s.onnx") == _convs(full) - 4


def test_erase_a_torch_factory(tmp_path, capsys):
    small, rep = tmp_path / "small.onnx", tmp_path / "rep.json"
    argv = ["erase", "tests.factories:residual_stack", "--input-shape", "1,3,8,8", "--sparsity", "0.5",
            "-o", small, "--report", rep]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "erased     2 of 4 erasable structures" in out and "PASSED" in out
    report = json.loads(rep.read_text())
    gone = {r["param"] for r in report["removed"]}
    assert gone and all(p.startswith("blocks.") for p in gone)
    assert report["result"]["params_after"] < report["result"]["params_before"]
    assert _convs(small) == 1 + 2 * 2  # stem + the two blocks left


def test_analyze_erase_shows_the_tree_and_writes_json_and_dot(tmp_path, capsys):
    full = _save(nested(), tmp_path / "nested.onnx")
    js, dot = tmp_path / "r.json", tmp_path / "g.dot"
    code, out, err = run(["analyze", full, "--mode", "erase", "--json", js, "--dot", dot], capsys)
    assert code == 0, err
    assert "removal structures" in out and "erasable" in out
    report = json.loads(js.read_text())
    assert report["mode"] == "erase"
    by_id = {g["id"]: g for g in report["groups"]}
    inner = next(g for g in report["groups"] if any(p["name"].startswith("inner_a") for p in g["params"]))
    assert inner["prunable"] and inner["parent"] is not None
    outer = by_id[inner["parent"]]
    assert any(p["name"].startswith("outer_b") for p in outer["params"])
    # the tree: the inner branch is drawn under its parent, with its operators
    lines = out.splitlines()
    row_outer = next(i for i, ln in enumerate(lines) if re.match(rf"^\s*{outer['id']}\s", ln))
    row_inner = next(i for i, ln in enumerate(lines) if re.search(rf"[└├]─ {inner['id']}\s", ln))
    assert row_inner > row_outer and "Conv" in lines[row_inner]
    text = dot.read_text()
    assert (
        text.startswith("digraph") and f"cluster_s{outer['id']}" in text and f"cluster_s{inner['id']}" in text
    )
    # nesting: the inner cluster opens inside the outer one
    assert text.index(f"cluster_s{outer['id']}") < text.index(f"cluster_s{inner['id']}")


def test_analyze_erase_on_a_chain_says_there_is_nothing(tmp_path, capsys):
    full = _save(chain(), tmp_path / "chain.onnx")
    code, out, err = run(["analyze", full, "--mode", "erase"], capsys)
    assert code == 0, err
    assert re.search(r"0 erasable", out)


def test_analyze_erase_a_torch_factory(capsys):
    code, out, err = run(
        ["analyze", "tests.factories:residual_stack", "--input-shape", "1,3,8,8", "--mode", "erase"], capsys
    )
    assert code == 0, err
    assert "4 erasable" in out


README_BLOCKS = re.findall(
    r"```python\n(.*?)```", (Path(__file__).resolve().parents[1] / "README.md").read_text(), flags=re.S
)


def test_readme_erase_onnx_example(tmp_path, monkeypatch):
    block = next(b for b in README_BLOCKS if "erase_onnx" in b)
    monkeypatch.chdir(tmp_path)
    onnx.save(stacked(), "model.onnx")
    exec(block, {})
    assert _convs(tmp_path / "small.onnx") == _convs(tmp_path / "model.onnx") - 4


def test_readme_erase_torch_example(tmp_path, monkeypatch):
    import functools

    import torch

    import zigraph
    from tests.factories import ResidualStack

    block = next(b for b in README_BLOCKS if '"h2spg"' in b)
    monkeypatch.chdir(tmp_path)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(6)]
    # As in tests/test_readme.py: the schedule is shortened to the loader, everything else as written.
    optimizer_class = zigraph.get_optimizer
    monkeypatch.setattr(
        zigraph,
        "get_optimizer",
        lambda name: functools.partial(optimizer_class(name), start_pruning_steps=1, pruning_steps=4),
    )
    env = {"MyResNet": ResidualStack, "loader": loader}
    exec(block, env)
    assert (tmp_path / "small.onnx").exists()
    assert sum(p.numel() for p in env["small"].parameters()) < sum(
        p.numel() for p in env["model"].parameters()
    )


def test_erasing_a_branch_keeps_a_weight_it_shares_with_the_trunk(tmp_path, capsys):
    from tests.factories import shared_residual

    rep = tmp_path / "r.json"
    argv = ["erase", "tests.factories:shared_residual", "--input-shape", "1,3,8,8", "--sparsity", "0.9",
            "-o", tmp_path / "s.onnx", "--report", rep]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0 and "PASSED" in out, err
    report = json.loads(rep.read_text())
    assert {r["param"] for r in report["removed"]} == {"own.weight", "own.bias"}
    own = sum(p.numel() for p in shared_residual().own.parameters())
    assert report["result"]["params_after"] == report["result"]["params_before"] - own


def test_a_sparsity_that_rounds_to_no_structure_says_so(tmp_path, capsys):
    full = _save(stacked(), tmp_path / "m.onnx")
    code, out, err = run(["erase", full, "--sparsity", "0.1", "-o", tmp_path / "s.onnx"], capsys)
    assert code == 0 and "rounds to none" in out and "PASSED" in out, err
    assert _convs(tmp_path / "s.onnx") == _convs(full)


def concat_skip(c: int = 4) -> onnx.ModelProto:
    """Two branches concatenated with their input along channels, mixed by a convolution."""
    g = G()
    x = g.op("Relu", [g.conv(g.input("x", [1, 2, 6, 6]), 2, c, name="stem")])
    a = g.op("Relu", [g.conv(x, c, c, name="br_a")])
    b = g.op("Relu", [g.conv(x, c, c, name="br_b")])
    _head(g, g.op("Relu", [g.conv(g.op("Concat", [x, a, b], axis=1), 3 * c, c, name="mix")]), c)
    return g.model()


def test_erasing_concat_branches_cuts_their_channels_from_the_consumer(tmp_path, capsys):
    full = _save(concat_skip(), tmp_path / "cat.onnx")
    small, rep = tmp_path / "s.onnx", tmp_path / "r.json"
    code, out, err = run(["erase", full, "--sparsity", "0.9", "-o", small, "--report", rep], capsys)
    assert code == 0 and "PASSED" in out, err
    dims = {t.name: list(t.dims) for t in onnx.load(str(small)).graph.initializer}
    assert dims["mix.weight"] == [4, 4, 3, 3] and "br_a.weight" not in dims
    removed = {(r["param"], r["axis"]): r["indices"] for r in json.loads(rep.read_text())["removed"]}
    assert removed[("mix.weight", 1)] == list(range(4, 12))
    code, out, err = run(["verify", full, small, "--zero", rep], capsys)
    assert code == 0 and "PASSED" in out, err


def test_a_crash_in_the_analysis_is_exit_3_not_bad_input(tmp_path, capsys, monkeypatch):
    import graphcore

    def broken(*args, **kwargs):
        raise KeyError("lost node")

    monkeypatch.setattr(graphcore, "analyze", broken)
    full = _save(stacked(), tmp_path / "m.onnx")
    code, _, err = run(["erase", full, "--sparsity", "0.5", "-o", tmp_path / "s.onnx"], capsys)
    assert code == 3 and "analysing" in err and str(full) in err, err


@pytest.mark.parametrize("verify", [True, False])
def test_an_erased_model_that_does_not_load_is_internal(verify, tmp_path, capsys, monkeypatch):
    """Our written model is read back to verify it (or, with --no-verify, to count its FLOPs): when it
    does not load, that is zigraph's bug (exit 3) naming the input, never the staged or output file."""
    import construct

    real = construct.erase_onnx

    def broken(*args, **kwargs):
        small = real(*args, **kwargs)
        small.graph.node[-1].input[0] = "nowhere"
        return small

    monkeypatch.setattr(construct, "erase_onnx", broken)
    full = _save(stacked(), tmp_path / "m.onnx")
    out = tmp_path / "s.onnx"
    argv = ["erase", full, "--sparsity", "0.5", "-o", out] + ([] if verify else ["--no-verify"])
    code, _, err = run(argv, capsys)
    assert code == 3, err
    assert "internal error while" in err and str(full) in err and "does not load" in err, err
    assert ("verifying" if verify else "measuring") in err and "zigraph-staged" not in err, err
