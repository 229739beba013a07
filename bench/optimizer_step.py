"""Step time of DHSPG and H2SPG vs ``torch.optim.SGD(momentum=0.9)`` on ResNet-50's parameters.

The analyses are the public API's: ``graphcore.analyze(frontends.load(model, example))`` (torch path,
prune mode for DHSPG, erase mode for H2SPG) of torchvision's ResNet-50. Gradients are fixed random
tensors, so only the optimizer's own work is timed. Each optimizer is timed in every phase of its
schedule — warm-up (H2SPG scores structures there), the pruning window (penalties and half-space
projection every step), and after the target is reached — on its own copy of the model. SGD and
every phase are interleaved in rounds (one round: a few steps of each, in turn, after a warm-up
of all) and the median of the per-round times is reported, which keeps the ratio stable on a busy
machine; on CPU the time is the process's CPU time (what other processes do to the wall clock does
not count). Target: every phase ≤ 1.5× SGD; why the pruning window is above it: docs/optimizers.md,
Measurements.

Run: ``python bench/optimizer_step.py [--rounds N] [--threads T] [--device cpu|cuda] [--json F]
[--doc]``; ``--doc`` rewrites the section between ``<!-- optimizer-step:start -->`` and
``<!-- optimizer-step:end -->`` of docs/benchmarks.md (scripts/bench_figures.py keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # doc_blocks

import frontends  # noqa: E402
import graphcore  # noqa: E402
from optimizers import DHSPG, H2SPG  # noqa: E402
from optimizers.native import status as native_status  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- optimizer-step:start -->", "<!-- optimizer-step:end -->"
TARGET = 1.5
NEVER = 10**9
EAGER = "(eager, for reference)"


def _fresh(device: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet50().to(device)
    gen = torch.Generator().manual_seed(1)
    for p in m.parameters():
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
    return m


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(opt: torch.optim.Optimizer, steps: int, device: str) -> float:
    """Seconds per step: CPU time of this process on CPU (robust to other processes on a shared
    machine; with one torch thread it is the step's own work), wall time with syncs on CUDA."""
    clock = time.process_time if device == "cpu" else time.perf_counter
    _sync(device)
    start = clock()
    for _ in range(steps):
        opt.step()
    _sync(device)
    return (clock() - start) / steps


def build(device: str, foreach: bool | None) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
    """SGD and one optimizer per (optimizer, phase), each on its own copy of ResNet-50."""
    example = (torch.randn(1, 3, 224, 224),)
    probe = _fresh("cpu")
    t0 = time.perf_counter()
    prune = graphcore.analyze(frontends.load(probe, example))
    t1 = time.perf_counter()
    erase = graphcore.analyze(frontends.load(probe, example), mode="erase")
    t2 = time.perf_counter()
    hp = dict(lr=0.1, momentum=0.9, foreach=foreach)
    # window phase: the window never ends and projection (ε = 0) rarely fires on random gradients,
    # so every step pays for statistics, λ, the penalized step and the half-space test
    phases: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
        "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, foreach=foreach),
        "dhspg warm-up": lambda m: DHSPG(m, prune, start_pruning_steps=NEVER, **hp),
        "dhspg window": lambda m: DHSPG(m, prune, start_pruning_steps=0, pruning_steps=NEVER, **hp),
        "dhspg after": lambda m: DHSPG(m, prune, start_pruning_steps=0, pruning_steps=1, **hp),
        "h2spg warm-up": lambda m: H2SPG(m, erase, start_pruning_steps=NEVER, **hp),
        "h2spg window": lambda m: H2SPG(m, erase, start_pruning_steps=0, pruning_steps=NEVER, **hp),
        "h2spg after": lambda m: H2SPG(m, erase, start_pruning_steps=0, pruning_steps=1, **hp),
        # the same windows without the fused CPU kernels (optimizers/native.py): the eager path
        f"dhspg window {EAGER}": lambda m: DHSPG(
            m, prune, start_pruning_steps=0, pruning_steps=NEVER, native=False, **hp
        ),
        f"h2spg window {EAGER}": lambda m: H2SPG(
            m, erase, start_pruning_steps=0, pruning_steps=NEVER, native=False, **hp
        ),
    }
    opts = {name: make(_fresh(device)) for name, make in phases.items()}
    info = {
        "params_m": sum(p.numel() for p in probe.parameters()) / 1e6,
        "zigs": prune.num_zigs,
        "prunable": int(prune.prunable_zig_ids().size),
        "structures": erase.num_zigs,
        "analysis_s": t1 - t0,
        "erase_analysis_s": t2 - t1,
    }
    return opts, info


def measure(opts: dict[str, torch.optim.Optimizer], rounds: int, steps: int, device: str) -> dict[str, float]:
    """Median seconds per step of each optimizer over interleaved rounds (after two warm-up steps)."""
    for opt in opts.values():  # first steps allocate buffers, partition, prune
        _timed(opt, 2, device)
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            times[name].append(_timed(opt, steps, device))
    return {k: statistics.median(v) for k, v in times.items()}


def table(med: dict[str, float]) -> list[str]:
    sgd = med["sgd"]
    out = ["| optimizer / phase | ms/step | ratio vs SGD |", "|---|---|---|"]
    out.append(f"| `torch.optim.SGD(momentum=0.9)` | {sgd * 1e3:.1f} | 1.00 |")
    for k, v in med.items():
        if k != "sgd":
            ok = "" if v / sgd <= TARGET or k.endswith(EAGER) else " **(> 1.5)**"
            out.append(f"| {k} | {v * 1e3:.1f} | {v / sgd:.2f}{ok} |")
    return out


def write_doc(results: list[dict[str, Any]]) -> None:
    """Put the section between its markers in docs/benchmarks.md (appended the first time)."""
    from doc_blocks import replace_marked_block

    from graphcore.report import write_json_atomic

    lines = [
        "## Optimizer step time (`bench/optimizer_step.py`)",
        "",
        "Generated by `python bench/optimizer_step.py --doc`; do not edit by hand. One step of DHSPG and",
        "H2SPG in each phase of their schedules against `torch.optim.SGD(momentum=0.9)` on ResNet-50, with",
        "the analysis from `graphcore.analyze(frontends.load(model, example))` (torch path); fixed random",
        "gradients; medians of interleaved rounds; CPU time of the process on CPU, wall time on CUDA.",
        "Target: every phase ≤ 1.5× SGD. On CPU the statistics steps run on the fused kernels of",
        "`optimizers/fused_step.c` (two reads of each parameter per step); the *eager* rows are the same",
        "windows without them (`native=False`), measured in the same rounds: why they cost what they do,",
        "[optimizers.md](optimizers.md#measurements).",
        "",
    ]
    for r in results:
        i = r["info"]
        lines += [
            f"{r['device']}, {r['threads']} torch thread(s), foreach={r['foreach']}: {i['params_m']:.1f} M "
            f"parameters, {i['zigs']} ZIGs ({i['prunable']} prunable), {i['structures']} erase structures; "
            f"{r['rounds']} rounds of {r['steps']} steps; {r['machine']}, {r['date']}; "
            f"{r.get('kernels', 'fused kernels: not recorded').split(' (/')[0]}.",
            "",
            *table(r["median"]),
            "",
        ]
    body = "\n".join(lines).rstrip("\n")
    if not replace_marked_block(DOC, START, END, body):  # the first time: appended
        old = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        write_json_atomic(DOC, old.rstrip("\n") + f"\n\n{START}\n{body}\n{END}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="steps per round and phase")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable ratios)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--foreach", choices=("default", "on", "off"), default="default")
    p.add_argument("--quick", action="store_true", help="3 rounds of 2 steps")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--doc", action="store_true", help="write the section of docs/benchmarks.md")
    p.add_argument("--from-json", nargs="*", help="--doc from these JSON results (e.g. a GPU run) instead")
    args = p.parse_args(argv)
    if args.from_json:
        write_doc([json.loads(Path(f).read_text()) for f in args.from_json])
        return 0
    if args.quick:
        args.rounds, args.steps = 3, 2
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    foreach = {"default": None, "on": True, "off": False}[args.foreach]
    opts, info = build(args.device, foreach)
    med = measure(opts, args.rounds, args.steps, args.device)
    after = [o for k, o in opts.items() if k.endswith("after")]
    print(
        f"ResNet-50: {info['params_m']:.1f} M parameters, {info['zigs']} ZIGs ({info['prunable']} prunable), "
        f"{info['structures']} erase structures; {args.device}, {torch.get_num_threads()} thread(s)"
    )
    print("after-phase check: " + ", ".join(f"{o.num_zero()} zero (goal {o.goal})" for o in after))  # type: ignore[attr-defined]
    print("\n".join(table(med)))
    worst = max(v / med["sgd"] for k, v in med.items() if k != "sgd" and not k.endswith(EAGER))
    print(f"worst ratio {worst:.2f} (target <= {TARGET})")
    cpu = platform.processor() or platform.machine()
    if args.device == "cuda":
        cpu = torch.cuda.get_device_name()
    result = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "foreach": args.foreach,
        "rounds": args.rounds,
        "steps": args.steps,
        "info": info,
        "median": med,
        "worst": worst,
        "machine": f"{cpu}, load average {load:.1f} at the start",
        "kernels": native_status(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.doc:
        write_doc([result])
        print(f"wrote the section between {START} and {END} of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
