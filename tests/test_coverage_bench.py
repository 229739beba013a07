"""bench/coverage.py's table writer and failure cells: fast, no model is built."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _coverage():
    spec = importlib.util.spec_from_file_location("coverage_bench", ROOT / "bench" / "coverage.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ROWS = [
    {"family": "llama", "engine": "e@1", "params": 54400, "prunable_zigs": 132, "analyze": True, "onnx": True,
     "onnx_rel": 0.0, "onnx_kept": 0.55, "torch": True, "torch_rel": 2e-7, "kept": 0.547, "hf": True,
     "hf_rel": 0.0, "hf_kept": 0.6, "max_rel": 2e-7, "analyze_s": 4.0, "onnx_s": 3.0, "torch_s": 2.0,
     "hf_s": 5.0},
    {"family": "swin", "engine": "e@1", "params": 9000, "analyze": True, "onnx": False,
     "onnx_why": "ZigraphError: the export failed", "torch": True, "torch_rel": 0.0, "kept": 0.7,
     "hf": False, "hf_why": "ZigraphError: no config expresses the pruned shapes", "max_rel": 0.0},
    {"family": "resnet18", "engine": "e@1", "analyze": False, "analyze_why": "ModelLoadError: cannot trace"},
]  # fmt: skip


def test_tables_mark_each_column_and_give_every_reason(tmp_path):
    cov = _coverage()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{cov.START}\nold table\n{cov.END}\n\nafter\n", encoding="utf-8")
    doc = tmp_path / "docs" / "coverage.md"
    cov.write(ROWS, readme=readme, doc=doc)
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text and text.startswith("# x\n\nbefore") and text.endswith("after\n")
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[1] == "| llama | ✓ | ✓ | ✓ | ✓ | 54.7% | 2.0e-07 |"
    assert lines[2] == "| swin | ✓ | ✗ | ✓ | ✗ | 70.0% | 0.0e+00 |"
    assert lines[3] == "| resnet18 | ✗ | — | — | — | — | — |"
    full = doc.read_text(encoding="utf-8")
    assert "e@1" in full and "54,400" in full
    assert "**swin**, onnx: ZigraphError: the export failed" in full
    assert "**swin**, hf: ZigraphError: no config expresses" in full
    assert "**resnet18**, analyze: ModelLoadError: cannot trace" in full
    assert "**llama**" not in full.split("Why each")[1]


def test_a_failing_column_is_a_cross_with_its_reason_not_a_crash():
    cov = _coverage()
    row: dict = {}

    def boom() -> dict:
        raise RuntimeError("the op is unknown\nsecond line")

    cov._cell(row, "torch", boom)
    assert row["torch"] is False and row["torch_why"] == "RuntimeError: the op is unknown"
    cov._cell(row, "onnx", lambda: {"onnx_ok": False, "onnx_rel": 0.5})
    assert row["onnx"] is False and row["onnx_rel"] == 0.5
    cov._cell(row, "hf", lambda: {"hf_rel": 0.0})
    assert row["hf"] is True


def test_unknown_family_is_a_usage_error(capsys):
    import pytest

    cov = _coverage()
    with pytest.raises(SystemExit) as exc:
        cov.main(["--families", "nope", "--no-write"])
    assert exc.value.code == 2 and "unknown families" in capsys.readouterr().err
