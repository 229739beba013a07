"""The terminal side of the command line: --version, python -m zigraph, --json for scripts, --quiet,
colour only on a terminal, and the ONNX path working with torch absent (one line, exit 2, for the
features that need it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

from tests.test_onnx_patterns import residual
from zigraph.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "residual.onnx"
    onnx.save(residual().model(), str(path))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def _zigraph(*argv: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zigraph", *map(str, argv)], capture_output=True, text=True,
                          env=env or _env(), timeout=300)  # fmt: skip


def test_version_in_process_and_as_python_m_zigraph(capsys):
    import zigraph

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"zigraph {zigraph.__version__}"
    done = _zigraph("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"zigraph {zigraph.__version__}", done.stderr


def test_json_on_stdout_is_the_report_and_nothing_else(model_path, tmp_path, capsys):
    assert main(["analyze", str(model_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # the summary table is not mixed in
    assert report["mode"] == "prune" and report["num_prunable_groups"] >= 1
    small = tmp_path / "small.onnx"
    assert main(["prune", str(model_path), "--sparsity", "0.5", "-o", str(small), "--json", "-"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["removed"] and pruned["result"]["verification"]["passed"]
    rep = tmp_path / "r.json"
    rep.write_text(json.dumps(pruned))
    assert main(["verify", str(model_path), str(small), "--zero", str(rep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


def test_json_to_a_file_keeps_the_summary_and_names_the_file(model_path, tmp_path, capsys):
    js = tmp_path / "a.json"
    assert main(["analyze", str(model_path), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "node groups" in out and f"report: {js}" in out
    assert json.loads(js.read_text())["mode"] == "prune"


def test_quiet_prints_nothing_but_still_writes_and_exits_by_the_verdict(model_path, tmp_path, capsys):
    small, rep = tmp_path / "small.onnx", tmp_path / "r.json"
    argv = ["prune", model_path, "--sparsity", "0.5", "-o", small, "--report", rep, "-q"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == "" and small.exists() and rep.exists()
    # a failing verification under --quiet: still silent on stdout, exit 1
    data = json.loads(rep.read_text())
    data["removed"] = []
    rep.write_text(json.dumps(data))
    assert main(["verify", str(model_path), str(small), "--zero", str(rep), "--quiet"]) == 1
    assert capsys.readouterr().out == ""
    # the next command is not silenced by the last one's --quiet
    assert main(["analyze", str(model_path)]) == 0
    assert "node groups" in capsys.readouterr().out


def test_no_colour_off_a_terminal_and_with_no_color(model_path, capsys, monkeypatch):
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["analyze", str(model_path)]) == 0  # capsys's stdout is not a terminal
    piped = capsys.readouterr().out
    assert "\x1b[" not in piped and "node groups" in piped
    assert all(line == line.rstrip() for line in piped.splitlines())  # no table padding in files
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich's switch for "this is a terminal"
    assert main(["analyze", str(model_path)]) == 0
    assert "\x1b[33m" in capsys.readouterr().out  # the check can fail: a terminal gets colour ("no", yellow)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["analyze", str(model_path)]) == 0
    plain = capsys.readouterr().out
    assert "\x1b[33m" not in plain and "node groups" in plain


# -- the ONNX path without torch ---------------------------------------------------------------------

# Runs each command line of argv[1] (JSON) in one interpreter where torch cannot be imported, after
# importing every module of the ONNX path; prints the exit codes and outputs as JSON.
BLOCKED = textwrap.dedent("""
    import contextlib, importlib, io, json, sys
    for name in ("torch", "torchvision", "onnxscript", "sklearn"):
        sys.modules[name] = None  # any import of them now raises ImportError
    for module in ("graphcore", "frontends", "frontends.onnx_frontend", "construct", "construct.verify",
                   "construct.onnx_construct", "zigraph", "zigraph.cli", "zigraph.pipeline",
                   "zigraph.erase_pipeline", "zigraph.summary", "zigraph.console", "zigraph.extras"):
        importlib.import_module(module)
    from zigraph.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        results.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()})
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnxscript") and sys.modules[m])
    print(json.dumps({"results": results, "leaked": leaked}))
""")


def test_the_onnx_path_runs_with_torch_blocked_and_torch_features_say_what_to_install(model_path, tmp_path):
    small, rep, torch_out = tmp_path / "small.onnx", tmp_path / "r.json", tmp_path / "x.onnx"
    factory = ["tests.factories:residual_stack", "--input-shape", "1,3,8,8"]
    onnx_steps = [
        ["analyze", model_path],
        ["analyze", model_path, "--mode", "erase"],
        ["prune", model_path, "--sparsity", "0.5", "-o", small, "--report", rep],
        ["verify", model_path, small, "--zero", rep],
        ["erase", model_path, "--sparsity", "1", "-o", tmp_path / "erased.onnx"],
    ]
    torch_steps = {  # argv -> the extra the message must name
        ("demo", "--quick"): "demo",
        ("analyze", *factory): "torch",
        ("prune", *factory, "--sparsity", "0.5", "-o", torch_out): "torch",
    }
    argvs = [[str(a) for a in argv] for argv in [*onnx_steps, *torch_steps]]
    done = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(argvs)], capture_output=True,
                          text=True, env=_env(), timeout=600, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["leaked"] == []
    results = answer["results"]
    for r in results[: len(onnx_steps)]:
        assert r["code"] == 0, r
    assert "PASSED" in results[3]["out"] and small.exists()
    for r, extra in zip(results[len(onnx_steps) :], torch_steps.values(), strict=True):
        lines = r["err"].strip().splitlines()
        assert r["code"] == 2 and len(lines) == 1, r
        assert "needs torch" in lines[0] and f"pip install 'zigraph[{extra}]'" in lines[0], r
    assert not torch_out.exists()


def test_quiet_output_is_restored_after_the_block(capsys):
    from zigraph.console import quiet_output, show

    with quiet_output():
        show("hidden")
    show("shown")
    assert capsys.readouterr().out == "shown\n"


def test_demo_quiet_prints_nothing_and_the_exit_status_still_says_it_failed(monkeypatch, capsys):
    # Training and export are skipped (as in tests/test_demo.py); the unverified export must still fail.
    pytest.importorskip("sklearn")
    import construct
    from zigraph import demo

    monkeypatch.setattr(demo, "_train", lambda *args, **kwargs: None)
    monkeypatch.setattr(demo, "_onnx_stats", lambda *args, **kwargs: (0, 0.0))
    monkeypatch.setattr(construct, "to_onnx", lambda *args, **kwargs: None)
    assert demo.run_demo(quick=True, quiet=True) == 1
    assert capsys.readouterr().out == ""
    assert demo.run_demo(quick=True) == 1  # not quiet: the verdict is printed
    assert "FAILED" in capsys.readouterr().out
