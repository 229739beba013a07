"""A lean install for ONNX users, as a newcomer gets it: ``python -m build`` makes the wheel, pip installs
it WITHOUT extras into a fresh venv (so no torch), and the installed ``zigraph`` analyzes, prunes, erases
and verifies an ONNX file, while the torch-only features say in one line what to install (exit 2).

Slow (a venv and pip's download of numpy/scipy/onnx/onnxruntime: a minute or two), so marked ``slow``
and ``install``; README's test command selects it by name (``-m "not slow or install"``), so CI runs it.
The same check without a venv, fast, is tests/test_cli_output.py (torch blocked in-process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from tests.test_onnx_patterns import residual

pytestmark = [pytest.mark.slow, pytest.mark.install]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("graphcore", "frontends", "optimizers", "construct", "fuzz", "zigraph")
TIMINGS: dict[str, float] = {}


def _env() -> dict[str, str]:
    """The environment without this checkout on the path: the venv must find only what pip installed."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "NO_COLOR", "FORCE_COLOR")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(argv: list[str], cwd: Path, what: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    TIMINGS[what] = TIMINGS.get(what, 0.0) + time.perf_counter() - t0
    return done


def _source_copy(dest: Path) -> Path:
    """The checkout without its caches and venvs, so that building writes nothing into the user's tree."""
    skip = shutil.ignore_patterns(
        ".git", ".venv", ".ci-venv", "venv", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache",
        ".ruff_cache", ".mypy_cache", ".hypothesis", "*.onnx", "*.onnx.data", "out",
    )  # fmt: skip
    shutil.copytree(ROOT, dest, ignore=skip)
    return dest


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory) -> Iterator[Path]:
    """A fresh venv with the wheel that ``python -m build`` made, installed without extras."""
    tmp = tmp_path_factory.mktemp("install")
    src = _source_copy(tmp / "src")
    dist = tmp / "dist"
    built = _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)], tmp, "build")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    import zigraph

    wheels = list(dist.glob(f"zigraph-{zigraph.__version__}-*.whl"))  # one version, zigraph.__version__
    assert len(wheels) == 1, list(dist.iterdir())
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp, "venv")
    assert made.returncode == 0, made.stderr
    pip = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0])], tmp, "pip install"
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    yield venv
    # what each step took (shown with -s): the fresh venv is most of this file's time
    sys.__stderr__.write(
        "\ninstall timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMINGS.items()) + "\n"
    )


def test_the_wheel_installs_without_torch_and_ships_its_type_hints(lean_venv, tmp_path):
    py = str(lean_venv / "bin" / "python")
    code = (
        "import importlib.util, json, os\n"
        "print(json.dumps({\n"
        "  'torch': importlib.util.find_spec('torch') is not None,\n"
        "  'tqdm': importlib.util.find_spec('tqdm') is not None,\n"
        # found without importing them: optimizers and fuzz need torch, which this venv lacks
        f"  'typed': [p for p in {PACKAGES!r} if os.path.isfile(os.path.join(\n"
        "            importlib.util.find_spec(p).submodule_search_locations[0], 'py.typed'))],\n"
        "  'where': importlib.util.find_spec('zigraph').origin,\n"
        "}))"
    )
    done = _run([py, "-c", code], tmp_path, "smoke")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["torch"] is False and facts["tqdm"] is False
    assert facts["typed"] == list(PACKAGES)
    assert str(lean_venv) in facts["where"]  # the installed copy, not this checkout


def test_the_lean_install_analyzes_prunes_erases_and_verifies_onnx(lean_venv, tmp_path):
    model = tmp_path / "residual.onnx"
    onnx.save(residual().model(), str(model))
    zigraph = str(lean_venv / "bin" / "zigraph")
    py = str(lean_venv / "bin" / "python")
    version = _run([zigraph, "--version"], tmp_path, "commands")
    assert version.returncode == 0 and version.stdout.startswith("zigraph "), version.stderr
    as_module = _run([py, "-m", "zigraph", "--version"], tmp_path, "commands")
    assert as_module.stdout == version.stdout
    analyze = _run([zigraph, "analyze", str(model), "--json", "a.json"], tmp_path, "commands")
    assert analyze.returncode == 0 and "node groups" in analyze.stdout, analyze.stderr
    argv = [zigraph, "prune", str(model), "--sparsity", "0.5", "-o", "small.onnx", "--report", "r.json"]
    prune = _run(argv, tmp_path, "commands")
    assert prune.returncode == 0 and "PASSED" in prune.stdout, prune.stderr
    verify = _run([zigraph, "verify", str(model), "small.onnx", "--zero", "r.json"], tmp_path, "commands")
    assert verify.returncode == 0 and "PASSED" in verify.stdout, verify.stderr
    # the check can fail: nothing zeroed, the small model is not the original
    report = json.loads((tmp_path / "r.json").read_text())
    (tmp_path / "none.json").write_text(json.dumps({**report, "removed": []}))
    differs = _run([zigraph, "verify", str(model), "small.onnx", "--zero", "none.json"], tmp_path, "commands")
    assert differs.returncode == 1 and "FAILED" in differs.stdout, differs.stderr
    erase = _run([zigraph, "erase", str(model), "--sparsity", "1", "-o", "erased.onnx"], tmp_path, "commands")
    assert erase.returncode == 0 and "PASSED" in erase.stdout, erase.stderr
    code = f"import zigraph; print(zigraph.analyze(zigraph.load({str(model)!r})).report().num_groups)"
    api = _run([py, "-c", code], tmp_path, "commands")
    assert api.returncode == 0 and int(api.stdout) >= 1, api.stderr


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["demo"], "demo"),
        (["analyze", "mypkg.nets:resnet", "--input-shape", "1,3,8,8"], "torch"),
    ],
)
def test_a_torch_feature_in_the_lean_install_is_one_line_and_exit_2(lean_venv, tmp_path, argv, extra):
    done = _run([str(lean_venv / "bin" / "zigraph"), *argv], tmp_path, "commands")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "needs torch" in lines[0] and f"pip install 'zigraph[{extra}]'" in lines[0]
