"""Does a pruned model actually run faster? onnxruntime latency of full vs 50%-pruned exports.

Fewer parameters only matter if the runtime gets faster, so this bench times what a user deploys: the
dynamo ONNX export of ResNet-50 and MobileNetV2 (random weights, tests/zoo.py) against the model that
``zigraph.pipeline.prune_model`` makes from it at sparsity 0.5 (the same job as ``zigraph prune``; the
result is verified in onnxruntime before it is timed). Both sessions get identical options (CPU provider,
all graph optimizations, sequential execution), once with one intra-op thread and once with
onnxruntime's default thread count. After a warm-up, full and pruned runs alternate so that a busy
machine slows both alike, and the median of N runs is reported as pruned / full (expect ≤ 0.6 for
ResNet-50).

A second pruned model keeps, in every group, a multiple of ``--multiple`` channels (8 by default: the
plain selection minus the highest-scoring removals that would leave a ragged count). onnxruntime runs
convolutions in its blocked NCHWc layout only when channel counts fit the block, so a model pruned to
counts like 15, 41 or 67 can lose that layout and run no faster despite a quarter of the FLOPs; this row
shows what rounding buys. It is a bench-local variant of the selection, verified like the other.

Run: ``python bench/ort_latency.py [--runs N] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("resnet50", "mobilenet_v2")
TARGET = {"resnet50": 0.6}


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zigraph" / "bench"


def session(path: Path, threads: int) -> Any:
    """One CPU session; ``threads=0`` keeps onnxruntime's default intra-op thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_pair(full: Path, small: Path, threads: int, runs: int, warmup: int) -> tuple[float, float]:
    """Median milliseconds of the full and the small model, runs alternating between the two."""
    a, b = session(full, threads), session(small, threads)
    inp = a.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(warmup):
        a.run(None, feed)
        b.run(None, feed)
    ta, tb = [], []
    for _ in range(runs):
        t = time.perf_counter()
        a.run(None, feed)
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b.run(None, feed)
        tb.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ta), 1e3 * statistics.median(tb)


def prune(path: Path, out: Path, sparsity: float) -> dict[str, Any]:
    """The one-shot job of ``zigraph prune`` (verified); returns its result section."""
    import frontends
    import graphcore
    from zigraph.pipeline import LoadedModel, prune_model

    graph = frontends.load(str(path))
    flops = graphcore.analyze(graph).flops_total
    report = prune_model(LoadedModel(graph, source=str(path)), sparsity, out, samples=2)
    res = report["result"]
    res["flops_kept"] = graphcore.analyze(frontends.load(str(out))).flops_total / max(flops, 1)
    return res


def prune_rounded(path: Path, out: Path, sparsity: float, multiple: int) -> dict[str, Any]:
    """The same selection as ``prune``, with kept channel counts rounded up to ``multiple``; verified."""
    import construct
    import frontends
    import graphcore
    from graphcore.select import relative_scores, select_zigs

    graph = frontends.load(str(path))
    analysis = graphcore.analyze(graph)
    scores = relative_scores(analysis, construct.zig_norms(analysis))
    chosen = select_zigs(analysis, sparsity, scores, multiple=multiple)
    small, plan = construct.prune_onnx(analysis, chosen)
    construct.save_onnx(small, out)
    ver = construct.verify(str(path), str(out), plan.removed, samples=2)
    before = sum(int(np.prod(t.dims, dtype=np.int64)) for t in graph.meta["model"].graph.initializer)
    after = sum(int(np.prod(t.dims, dtype=np.int64)) for t in small.graph.initializer)
    flops = graphcore.analyze(frontends.load(str(out))).flops_total / max(analysis.flops_total, 1)
    return {
        "params_before": before,
        "params_after": after,
        "flops_kept": flops,
        "verification": ver.model_dump(),
    }


def bench(
    models: tuple[str, ...], cache: Path, sparsity: float, runs: int, warmup: int, multiple: int
) -> list[dict]:
    from tests.zoo import export

    rows = []
    with tempfile.TemporaryDirectory(prefix="zigraph-ort-") as tmp:
        for name in models:
            full = export(name, cache, dynamo=True)
            variants = [("prune_model", lambda out, f=full: prune(f, out, sparsity))]
            if multiple > 1:
                variants.append(
                    (f"×{multiple}", lambda out, f=full: prune_rounded(f, out, sparsity, multiple))
                )
            for variant, make in variants:
                small = Path(tmp) / f"{name}.{len(rows)}.small.onnx"
                res = make(small)
                row: dict[str, Any] = {
                    "model": name,
                    "variant": variant,
                    "params_kept": res["params_after"] / res["params_before"],
                    "flops_kept": res["flops_kept"],
                    "verified": bool(res["verification"]["passed"]),
                    "max_rel": res["verification"]["max_rel"],
                }
                for label, threads in (("1 thread", 1), ("default", 0)):
                    f, s = time_pair(full, small, threads, runs, warmup)
                    row[label] = {"full_ms": f, "pruned_ms": s, "ratio": s / f}
                rows.append(row)
                print(f"  {name} ({variant}): done", flush=True)
    return rows


def print_rows(rows: list[dict], sparsity: float, runs: int) -> list[str]:
    import onnxruntime as ort

    print(
        f"onnxruntime {ort.__version__} CPU latency, batch 1, median of {runs} runs, "
        f"pruned at sparsity {sparsity}"
    )
    print(
        f"{'model':<14}{'selection':<13}{'params':>7}{'FLOPs':>7}{'threads':>10}{'full ms':>9}"
        f"{'pruned ms':>11}{'ratio':>7}  verified"
    )
    verdict = []
    for r in rows:
        for label in ("1 thread", "default"):
            t = r[label]
            print(
                f"{r['model']:<14}{r['variant']:<13}{r['params_kept']:7.2f}{r['flops_kept']:7.2f}{label:>10}"
                f"{t['full_ms']:9.2f}{t['pruned_ms']:11.2f}{t['ratio']:7.2f}  "
                f"{'yes' if r['verified'] else 'NO'} ({r['max_rel']:.1e})"
            )
        if r["model"] in TARGET and r["variant"] == "prune_model":
            worst = max(r[label]["ratio"] for label in ("1 thread", "default"))
            ok = worst <= TARGET[r["model"]]
            verdict.append(
                f"{r['model']}: latency ratio at most {worst:.2f} "
                f"(expect ≤ {TARGET[r['model']]}): {'MET' if ok else 'NOT MET'}"
            )
    print("params / FLOPs: fraction kept; ratio: pruned / full latency.")
    print("\n".join(verdict))
    return verdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--multiple", type=int, default=8, help="channel multiple of the rounded variant (1: off)")
    p.add_argument("--quick", action="store_true", help="10 runs after 3 warm-up runs")
    p.add_argument("--cache", default=str(default_cache()), help="where the ONNX exports are kept")
    p.add_argument("--json", help="write every number here")
    args = p.parse_args(argv)
    runs, warmup = (10, 3) if args.quick else (args.runs, args.warmup)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = bench(tuple(args.models.split(",")), cache, args.sparsity, runs, warmup, args.multiple)
    verdict = print_rows(rows, args.sparsity, runs)
    if args.json:
        import onnxruntime as ort

        env = {
            "onnxruntime": ort.__version__,
            "cpus": os.cpu_count(),
            "runs": runs,
            "sparsity": args.sparsity,
            "multiple": args.multiple,
        }
        Path(args.json).write_text(json.dumps({"rows": rows, "verdict": verdict, "env": env}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
