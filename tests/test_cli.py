"""The command line: summaries, reports, exit codes, and bad input that never gives a traceback."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.test_onnx_patterns import concat, residual, unknown_op
from zigraph.cli import main


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return _save(residual().model(), tmp_path / "residual.onnx")


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_analyze_prints_summary_and_writes_json_and_dot(model_path, tmp_path, capsys):
    js, dot = tmp_path / "r.json", tmp_path / "g.dot"
    code, out, err = run(["analyze", model_path, "--json", js, "--dot", dot], capsys)
    assert code == 0, err
    assert "prunable" in out and "node groups" in out
    report = json.loads(js.read_text())
    assert report["schema_version"] == "1.0" and report["mode"] == "prune"
    assert report["num_prunable_groups"] == 2
    for key in ("model", "num_nodes", "vertex_kinds", "unknown_ops", "params_total", "flops_total", "groups"):
        assert key in report
    g0 = report["groups"][0]
    assert set(g0) >= {"id", "size", "params", "prunable", "reason", "num_params", "flops", "parent"}
    assert dot.read_text().startswith("digraph")


def test_analyze_reports_unknown_ops(tmp_path, capsys):
    path = _save(unknown_op().model({"custom": 1}), tmp_path / "u.onnx")
    code, out, _ = run(["analyze", path], capsys)
    assert code == 0 and "custom::Foo" in out


def test_prune_then_verify_roundtrip(model_path, tmp_path, capsys):
    before = hashlib.sha256(model_path.read_bytes()).hexdigest()
    small, rep = tmp_path / "small.onnx", tmp_path / "rep.json"
    code, out, err = run(["prune", model_path, "--sparsity", "0.5", "-o", small, "--report", rep], capsys)
    assert code == 0, err
    assert "PASSED" in out
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == before
    report = json.loads(rep.read_text())
    assert report["removed"] and {"param", "axis", "indices"} <= set(report["removed"][0])
    assert report["result"]["verification"]["passed"]
    code, out, err = run(["verify", model_path, small, "--zero", rep], capsys)
    assert code == 0 and "PASSED" in out, err


def test_verify_fails_with_exit_1_when_nothing_was_zeroed(model_path, tmp_path, capsys):
    small, rep = tmp_path / "small.onnx", tmp_path / "rep.json"
    assert run(["prune", model_path, "--sparsity", "0.5", "-o", small, "--report", rep], capsys)[0] == 0
    data = json.loads(rep.read_text())
    data["removed"] = []
    rep.write_text(json.dumps(data))
    code, out, _ = run(["verify", model_path, small, "--zero", rep], capsys)
    assert code == 1 and "FAILED" in out


def test_random_criterion_and_seed_are_reproducible(tmp_path, capsys):
    path = _save(concat().model(), tmp_path / "c.onnx")
    reps = []
    for i in range(2):
        rep = tmp_path / f"r{i}.json"
        argv = ["prune", path, "--sparsity", "0.4", "--criterion", "random", "--seed", "7", "-o",
                tmp_path / f"s{i}.onnx", "--report", rep]  # fmt: skip
        assert run(argv, capsys)[0] == 0
        reps.append(json.loads(rep.read_text())["removed"])
    assert reps[0] == reps[1]


def _bad_models(tmp: Path) -> dict[str, Path]:
    good = residual().model()
    out = {}
    out["missing"] = tmp / "nope.onnx"
    (tmp / "empty.onnx").write_bytes(b"")
    out["empty"] = tmp / "empty.onnx"
    data = good.SerializeToString()
    (tmp / "trunc.onnx").write_bytes(data[: len(data) // 3])
    out["truncated"] = tmp / "trunc.onnx"
    (tmp / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    out["random"] = tmp / "random.onnx"
    (tmp / "text.onnx").write_text("this is not a model\n")
    out["text"] = tmp / "text.onnx"
    bad_graph = onnx.ModelProto()
    bad_graph.CopyFrom(good)
    bad_graph.graph.node[0].input[0] = "does_not_exist"
    out["invalid_graph"] = _save(bad_graph, tmp / "invalid.onnx")
    old = onnx.ModelProto()
    old.CopyFrom(good)
    old.opset_import[0].version = 3
    out["old_opset"] = _save(old, tmp / "old.onnx")
    new = onnx.ModelProto()
    new.CopyFrom(good)
    new.opset_import[0].version = 999
    out["future_opset"] = _save(new, tmp / "future.onnx")
    ext = onnx.ModelProto()
    ext.CopyFrom(good)
    t = ext.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../etc/passwd")
    out["external_outside"] = _save(ext, tmp / "ext.onnx")
    cyc = helper.make_graph(
        [
            helper.make_node("Relu", ["b"], ["a"], name="r1"),
            helper.make_node("Relu", ["a"], ["b"], name="r2"),
        ],
        "cycle",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])],
    )
    out["cycle"] = _save(
        helper.make_model(cyc, opset_imports=[helper.make_opsetid("", 18)]), tmp / "cyc.onnx"
    )
    return out


@pytest.mark.parametrize(
    "kind",
    ["missing", "empty", "truncated", "random", "text", "invalid_graph", "old_opset", "future_opset",
     "external_outside", "cycle"],
)  # fmt: skip
@pytest.mark.parametrize("command", ["analyze", "prune"])
def test_bad_input_gets_exit_2_and_one_line(kind, command, tmp_path, capsys):
    path = _bad_models(tmp_path)[kind]
    out_file = tmp_path / "out.onnx"
    argv = ["analyze", path] if command == "analyze" else ["prune", path, "--sparsity", "0.5", "-o", out_file]
    code, out, err = run(argv, capsys)
    assert code == 2, (kind, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("zigraph: error:"), err
    assert "Traceback" not in err
    assert not out_file.exists()


def test_usage_errors_are_one_line(capsys, model_path):
    code, _, err = run(["prune", model_path, "--sparsity", "1.5", "-o", "x.onnx"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run(["frobnicate"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_prune_refuses_to_overwrite_its_input(model_path, capsys):
    code, _, err = run(["prune", model_path, "--sparsity", "0.5", "-o", model_path], capsys)
    assert code == 2 and "overwrite" in err


def test_console_script_runs_as_module(model_path):
    res = subprocess.run([sys.executable, "-m", "zigraph", "analyze", str(model_path)], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_external_data_is_analyzed_without_reading_weights(tmp_path, capsys):
    model = residual().model()
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)  # fmt: skip
    (folder / "weights.bin").write_bytes(b"\0" * 8)  # garbage: analysis must not read it
    code, _out, err = run(["analyze", folder / "m.onnx"], capsys)
    assert code == 0, err


def test_external_data_model_prunes_exactly(tmp_path, capsys):
    model = residual().model()
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)  # fmt: skip
    code, out, err = run(["prune", folder / "m.onnx", "--sparsity", "0.5", "-o", tmp_path / "s.onnx"], capsys)
    assert code == 0 and "PASSED" in out, err
    small = onnx.load(str(tmp_path / "s.onnx"))
    assert numpy_helper.to_array(small.graph.initializer[0]).size > 0


def test_prune_with_width_multiple(model_path, tmp_path, capsys):
    rep = tmp_path / "r.json"
    argv = [
        "prune",
        model_path,
        "--sparsity",
        "0.5",
        "--multiple",
        "4",
        "-o",
        tmp_path / "s.onnx",
        "--report",
        rep,
    ]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert json.loads(rep.read_text())["result"]["multiple"] == 4


def test_a_model_that_does_not_verify_is_not_written(model_path, tmp_path, capsys, monkeypatch):
    import construct
    from construct.verify import VerifyReport

    def failing(*args, **kwargs):
        return VerifyReport(passed=False, samples=1, rtol=1e-4, max_abs=1.0, max_rel=1.0, outputs=[])

    monkeypatch.setattr(construct, "verify", failing)
    out = tmp_path / "s.onnx"
    code, stdout, _ = run(["prune", model_path, "--sparsity", "0.5", "-o", out], capsys)
    assert code == 1 and "not written" in stdout
    assert not out.exists() and not list(tmp_path.glob(".zigraph-*"))


def _corrupting(monkeypatch, corrupt) -> None:
    """construct.prune_onnx builds the small model, then ``corrupt`` breaks it (an engine bug)."""
    import construct

    real = construct.prune_onnx

    def broken(*args, **kwargs):
        small, plan = real(*args, **kwargs)
        corrupt(small)
        return small, plan

    monkeypatch.setattr(construct, "prune_onnx", broken)


def _assert_internal(code: int, err: str, model: Path, stage: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 3, err
    assert len(lines) == 1 and lines[0].startswith("zigraph: internal error while"), err
    assert stage in err and str(model) in err and "bug in zigraph" in err, err
    assert "zigraph-staged" not in err, err  # our staged file is never named as if it were the input


def test_an_invalid_written_model_is_internal_and_names_the_input(model_path, tmp_path, capsys, monkeypatch):
    """A model zigraph wrote that onnx cannot load was reported as the staged file's bad input (exit 2)."""

    def dangling(small: onnx.ModelProto) -> None:
        small.graph.node[-1].input[0] = "nowhere"

    _corrupting(monkeypatch, dangling)
    out = tmp_path / "s.onnx"
    code, _, err = run(["prune", model_path, "--sparsity", "0.5", "-o", out], capsys)
    _assert_internal(code, err, model_path, "verifying")
    assert "does not load" in err
    assert not out.exists() and not list(tmp_path.glob(".zigraph-*"))


def test_a_written_model_onnxruntime_cannot_run_is_internal(model_path, tmp_path, capsys, monkeypatch):
    def unknown_op(small: onnx.ModelProto) -> None:
        small.graph.node[-1].domain = "zigraph.test"
        small.opset_import.append(helper.make_opsetid("zigraph.test", 1))

    _corrupting(monkeypatch, unknown_op)
    out = tmp_path / "s.onnx"
    code, _, err = run(["prune", model_path, "--sparsity", "0.5", "-o", out], capsys)
    _assert_internal(code, err, model_path, "verifying")
    assert "cannot load the pruned model" in err and not out.exists()


def test_the_same_small_model_handed_in_by_the_user_is_bad_input(model_path, tmp_path, capsys):
    small, rep = tmp_path / "small.onnx", tmp_path / "rep.json"
    code, _, err = run(["prune", model_path, "--sparsity", "0.5", "-o", small, "--report", rep], capsys)
    assert code == 0, err
    broken = onnx.load(str(small))
    broken.graph.node[-1].domain = "zigraph.test"
    broken.opset_import.append(helper.make_opsetid("zigraph.test", 1))
    onnx.save(broken, str(small))
    code, _, err = run(["verify", model_path, small, "--zero", rep], capsys)
    assert code == 2 and err.startswith("zigraph: error:") and "cannot load" in err, err


@pytest.mark.parametrize("command", ["analyze", "prune"])
def test_an_exception_inside_the_analysis_is_internal(command, model_path, tmp_path, capsys, monkeypatch):
    import graphcore

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(graphcore, "analyze", broken)
    argv = [command, model_path]
    if command == "prune":
        argv += ["--sparsity", "0.5", "-o", tmp_path / "s.onnx"]
    code, _, err = run(argv, capsys)
    _assert_internal(code, err, model_path, "analysing")
    assert "KeyError" in err and "boom" in err


def test_an_analysis_error_is_still_the_users(tmp_path, capsys, monkeypatch):
    import graphcore
    from graphcore.errors import AnalysisError

    def refusing(*args, **kwargs):
        raise AnalysisError("this graph cannot be analysed")

    monkeypatch.setattr(graphcore, "analyze", refusing)
    path = _save(residual().model(), tmp_path / "r.onnx")
    code, _, err = run(["analyze", path], capsys)
    assert code == 2 and err.startswith("zigraph: error: this graph cannot be analysed"), err
