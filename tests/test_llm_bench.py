"""bench/llm_dhspg.py: its corpus is deterministic, and one short DHSPG run builds a small module equal to
the trained model (whose removed groups are exact zeros). The full run's goals are a slow test."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("llm_dhspg", ROOT / "bench" / "llm_dhspg.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["llm_dhspg"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


def _files(tmp_path: Path, n: int = 10) -> Path:
    for i in range(n):
        (tmp_path / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i % 3}\n" * (20 + i))
    (tmp_path / "notes.txt").write_text("not python: left out")
    return tmp_path


def test_corpus_is_deterministic_split_by_file_and_seeded(tmp_path):
    root = _files(tmp_path)
    a, b = bench.load_corpus(root, seed=0), bench.load_corpus(root, seed=0)
    assert a.sha256 == b.sha256 and torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert set(a.train_files).isdisjoint(a.val_files) and len(a.train_files) + len(a.val_files) == 10
    assert len(a.val_files) == 1 and "notes.txt" not in a.train_files + a.val_files
    assert len(a.train) + len(a.val) == sum(p.stat().st_size + 1 for p in root.glob("*.py"))
    other = {bench.load_corpus(root, seed=s).val_files for s in range(1, 6)}
    assert other - {a.val_files}, "the seed must change which files are held out"


def test_the_stdlib_corpus_is_there_and_stable():
    a, b = bench.load_corpus(seed=0), bench.load_corpus(seed=0)
    assert a.sha256 == b.sha256 and len(a.train) > 1_000_000 and len(a.val) > 50_000
    assert "os.py" in a.train_files + a.val_files


def test_batches_repeat_for_a_seed_and_validation_windows_are_consecutive():
    data = torch.arange(1000, dtype=torch.int64).to(torch.uint8)
    x1, x2 = next(bench.batches(data, 4, 16, seed=3)), next(bench.batches(data, 4, 16, seed=3))
    assert torch.equal(x1, x2) and x1.shape == (4, 17)
    assert not torch.equal(x1, next(bench.batches(data, 4, 16, seed=4)))
    val = bench.val_batches(data, 2, 16, max_tokens=10_000)
    assert all(v.shape == (2, 17) for v in val) and len(val) == (999 // 16) // 2
    assert torch.equal(val[0][1, :], data[16:33].long())


TINY = bench.Settings(hidden=32, layers=1, heads=2, kv_heads=2, ffn=64, seq=16, batch=2, eval_batch=2,
                      steps=8, warmup=0.25, window=0.5, periods=2, sparsity=0.5, eval_tokens=128)  # fmt: skip


def test_a_short_run_builds_a_small_module_equal_to_the_trained_one(tmp_path):
    torch.set_num_threads(1)
    corpus = bench.load_corpus(_files(tmp_path), seed=0)
    r = bench.run(TINY, quiet=True, corpus=corpus)
    assert r.removed_zigs > 0 and r.pruned_params < r.dense_params
    assert r.equiv_rel <= 1e-4, r
    assert r.perturbed_rel > 1e-3, "the check must be able to fail"
    assert abs(r.pruned_ppl - r.dhspg_ppl) <= 1e-4 * r.dhspg_ppl
    assert sum(rem for _, rem, _ in r.kinds.values()) == r.removed_zigs
    assert r.uniform, "the default selection keeps the same count per layer for each kind"
    text = bench.report(r)
    assert "| dense (AdamW) |" in text and f"{r.pruned_params:,}" in text


def test_the_doc_has_its_block():
    text = bench.DOC.read_text(encoding="utf-8")
    assert bench.START in text and bench.END in text


@pytest.mark.slow
def test_full_run_meets_the_goals():
    """The issue's goals on the bench's default settings (about 10 minutes on one idle thread, 25 on the
    shared machine)."""
    torch.set_num_threads(1)
    r = bench.run(dataclasses.replace(bench.Settings()), quiet=True)
    assert r.equiv_rel <= 1e-4 and r.perturbed_rel > 1e-3 and r.uniform
    assert r.kept <= 0.5, bench.report(r)
    assert r.ppl_ratio <= 1.10, bench.report(r)


def test_doc_from_a_saved_run_rewrites_only_the_block(tmp_path, monkeypatch):
    doc = tmp_path / "llm.md"
    doc.write_text(f"intro\n{bench.START}\nold\n{bench.END}\ntail\n", encoding="utf-8")
    saved = tmp_path / "run.json"
    saved.write_text('{"report": "| model | new |"}', encoding="utf-8")
    monkeypatch.setattr(bench, "DOC", doc)
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    assert bench.main(["--doc-from", str(saved)]) == 0
    assert doc.read_text(encoding="utf-8") == f"intro\n{bench.START}\n| model | new |\n{bench.END}\ntail\n"
