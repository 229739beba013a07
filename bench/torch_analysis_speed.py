"""Load + analyze from torch, side by side with Torch-Pruning's dependency graph, in one run.

For ResNet-50, ViT-B/16 and DenseNet-121 (torchvision, random weights, one 1×3×224×224 input) this
times ``frontends.torch_frontend.load_torch`` + ``graphcore.analyze`` against
``torch_pruning.DependencyGraph().build_dependency(model, example_inputs)`` — both start from a built
``nn.Module`` and end with the channel dependencies of every layer. The two are interleaved round by
round after one untimed warm-up each, and medians are printed, so that a busy machine slows both alike.
Both clocks start from the built module and include the trace; ours ends with the report. The peer runs
with torch's default thread pool and with one thread, and is credited with the faster median: its
trace is a real forward pass, and on a busy machine the pool's threads wait on each other
(``bench/analysis_speed.peer_time`` says why and how that once inflated a published ratio 20x). The
ratio is theirs / ours: the target is ≥ 2; *cpu ratio* compares process CPU time (what other load on
the machine inflates least), *best ratio* the fastest round of each side. Our time is also split into
its phases: tracing (``frontends.torch_trace.symbolic_trace``: torch.fx's tracer; the traced
``GraphModule`` is made only when construct first needs it, see ``TorchMeta.gm``), shape propagation
(the graph run once on meta tensors, most results read from ``frontends.torch_shapes``), IR build,
analysis.

Torch-Pruning is not a dependency of zigraph; install it only for the bench::

    pip download torch-pruning --no-deps -d /tmp/tp && python -m zipfile -e /tmp/tp/*.whl /tmp/tp_site
    PYTHONPATH=/tmp/tp_site python bench/torch_analysis_speed.py

Without it the peer column is skipped with a message. ``--rounds N`` (default 5), ``--models a,b``,
``--json PATH`` writes every number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODELS = ("resnet50", "vit_b_16", "densenet121")
TARGET_RATIO = 2.0


@contextlib.contextmanager
def phase_timers() -> Iterator[dict[str, float]]:
    """Accumulate the time spent in each phase by wrapping the functions where our code looks them up."""
    import frontends.torch_frontend as fe
    import frontends.torch_lower as lower
    import frontends.torch_trace as tr
    import graphcore

    acc = {"trace": 0.0, "shapes": 0.0, "ir": 0.0}
    patches = [
        (tr, "symbolic_trace", "trace"),
        (tr, "_record_meta", "shapes"),
        (lower.Builder, "build", "ir"),
    ]
    saved = []
    for owner, attr, key in patches:
        orig = getattr(owner, attr)
        saved.append((owner, attr, orig))

        def wrapped(*a: Any, __orig: Callable = orig, __key: str = key, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return __orig(*a, **k)
            finally:
                acc[__key] += time.perf_counter() - t

        setattr(owner, attr, wrapped)
    try:
        yield acc
    finally:
        for owner, attr, orig in saved:
            setattr(owner, attr, orig)
    del fe, graphcore


def ours(model: Any, x: Any) -> tuple[float, dict[str, float], int]:
    import graphcore
    from frontends.torch_frontend import load_torch

    with phase_timers() as acc:
        c0 = time.process_time()
        t0 = time.perf_counter()
        graph = load_torch(model, x)
        t1 = time.perf_counter()
        analysis = graphcore.analyze(graph)
        t2 = time.perf_counter()
        analysis.report()
        t3 = time.perf_counter()
        c3 = time.process_time()
    phases = dict(acc)
    phases["cpu"] = c3 - c0
    phases["analyze"] = t2 - t1
    phases["load"] = t1 - t0
    phases["report"] = t3 - t2
    return t3 - t0, phases, len(analysis.groups)


def theirs(model: Any, x: Any, threads: int) -> tuple[float, float]:
    from analysis_speed import time_peer

    return time_peer(model, x, threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--cache", help=argparse.SUPPRESS)  # scripts/bench_figures.py passes it to every bench
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
    warnings.simplefilter("ignore")
    import torch
    import torchvision

    torch.set_grad_enabled(True)
    try:
        import torch_pruning as tp
    except ImportError:
        tp = None
        print("torch_pruning is not importable: the peer column is skipped (see the docstring to install it)")
    from analysis_speed import peer_time

    results: dict[str, Any] = {}
    threads = sorted({torch.get_num_threads(), 1}, reverse=True)
    head = f"{'model':<14}{'ours ms':>10}{'TP ms':>10}{'thr':>4}{'agree':>6}{'ratio':>8}{'cpu':>7}{'best':>7}"
    print(f"{head}   phases (ms): trace / shapes / IR / analyze")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        ours(model, x)  # warm-up: imports, first-call caches
        if tp is not None:
            try:
                for n in threads:
                    theirs(model, x, n)
            except Exception as exc:  # a model the peer cannot build a graph of is no comparison
                print(f"{name:<14}Torch-Pruning fails ({type(exc).__name__}: {str(exc)[:60]}): skipped")
                continue
        mine: list[float] = []
        peer: dict[int, list[tuple[float, float]]] = {n: [] for n in threads}
        phases: list[dict[str, float]] = []
        groups = 0
        for _ in range(args.rounds):
            t, ph, groups = ours(model, x)
            mine.append(t)
            phases.append(ph)
            if tp is not None:
                for n in threads:
                    peer[n].append(theirs(model, x, n))
        m = statistics.median(mine)
        med = {k: statistics.median(ph[k] for ph in phases) for k in phases[0]}
        row: dict[str, Any] = {"ours_s": mine, "ours": m, "phases_median_s": med, "groups": groups}
        row["ours_cpu"] = med["cpu"]
        row["ours_min"] = min(mine)
        if tp is not None:
            row.update(peer_time(peer))
            row["ratio"] = row["peer"] / m
            row["ratio_cpu"] = row["peer_cpu"] / med["cpu"]
            row["ratio_min"] = row["peer_min"] / row["ours_min"]
        results[name] = row
        peer_txt = f"{1000 * row['peer']:>10.0f}{row['peer_threads']:>4}" if tp else f"{'-':>10}{'':>4}"
        agree = f"{'yes' if row.get('peer_agree') else 'NO':>6}" if tp else f"{'':>6}"
        ratio_txt = "".join(
            f"{row[k]:>{w}.1f}×" if k in row else f"{'-':>{w + 1}}"
            for k, w in (("ratio", 7), ("ratio_cpu", 6), ("ratio_min", 6))
        )
        ph_txt = " / ".join(f"{1000 * med[k]:.0f}" for k in ("trace", "shapes", "ir", "analyze"))
        print(f"{name:<14}{1000 * m:>10.0f}{peer_txt}{agree}{ratio_txt}   {ph_txt}", flush=True)
    ratios = [r["ratio"] for r in results.values() if "ratio" in r]
    if ratios:
        worst = min(ratios)
        verdict = "meets" if worst >= TARGET_RATIO else "misses"
        print(f"worst ratio TP/ours = {worst:.2f} ({verdict} the target ≥ {TARGET_RATIO})")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
