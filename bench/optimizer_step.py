"""Step time of DHSPG vs ``torch.optim.SGD(momentum=0.9)`` on ResNet-50's parameters.

The analysis is synthetic (no frontend involved), built from the module structure of torchvision's
ResNet-50 so that it has the size and overlap of a real one:

* every Conv2d output channel is one ZIG: the conv weight's row, the following BatchNorm's weight and
  bias entries, and — inside a bottleneck, where the next conv obviously consumes it
  (conv1 → conv2, conv2 → conv3) — the next conv weight's column. So entries of conv2/conv3 weights
  belong to two ZIGs (overlapping groups), as in a real analysis;
* each conv's channels form one prunable node group; the fc layer's 1000 output rows (+ bias) form
  a group that is not prunable (a graph output), so it is part of the statistics but never zeroed.

Gradients are fixed random tensors, so only the optimizer's own work is timed. DHSPG is timed in
its three phases (warm-up, pruning window with penalties and half-space projection every step, and
after the target is reached) and over a whole schedule weighted like a real run; SGD and DHSPG
steps are interleaved in rounds and the median of the per-round times is reported, which keeps the
ratio stable on a busy machine. Run: ``python bench/optimizer_step.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphcore.groups import NodeGroup, PruneAnalysis
from optimizers import DHSPG


def resnet_analysis(model: nn.Module) -> PruneAnalysis:
    """One ZIG per conv output channel (row + BN entries + the next in-block conv's column)."""
    modules = dict(model.named_modules())
    param_axes: dict[tuple[str, int], np.ndarray] = {}
    groups: list[NodeGroup] = []
    zig_group: list[np.ndarray] = []
    first = 0

    def add_group(rows: list[tuple[str, int]], width: int, prunable: bool) -> None:
        nonlocal first
        ids = np.arange(first, first + width, dtype=np.int64)
        for key in rows:
            param_axes[key] = ids
        groups.append(NodeGroup(id=len(groups), zig_ids=ids, params=rows, prunable=prunable))
        zig_group.append(np.full(width, len(groups) - 1, dtype=np.int64))
        first += width

    for name, mod in modules.items():
        if not isinstance(mod, nn.Conv2d):
            continue
        prefix, _, leaf = name.rpartition(".")
        join = (prefix + ".") if prefix else ""
        bn = join + ("bn" + leaf[4:] if leaf.startswith("conv") else "1")  # convK -> bnK, downsample.0 -> .1
        rows = [(f"{name}.weight", 0)]
        if isinstance(modules.get(bn), nn.BatchNorm2d):
            rows += [(f"{bn}.weight", 0), (f"{bn}.bias", 0)]
        nxt = {"conv1": "conv2", "conv2": "conv3"}.get(leaf) if prefix.startswith("layer") else None
        if nxt is not None:
            rows.append((f"{join}{nxt}.weight", 1))
        add_group(rows, mod.out_channels, prunable=True)
    fc = modules["fc"]
    add_group([("fc.weight", 0), ("fc.bias", 0)], fc.out_features, prunable=False)
    named = dict(model.named_parameters())
    return PruneAnalysis(
        graph=None,
        groups=groups,
        zig_group=np.concatenate(zig_group),
        param_axes=param_axes,
        trainable={n: True for n in named},
        param_shapes={n: tuple(p.shape) for n, p in named.items()},
    )


def _timed(opt: torch.optim.Optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and phase")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 by default: stable ratios on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        m = torchvision.models.resnet50()
        for p in m.parameters():
            p.grad = torch.randn_like(p) * 1e-2
        return m

    m_sgd, m_dh = fresh(), fresh()
    analysis = resnet_analysis(m_dh)
    prunable = sum(g.size for g in analysis.groups if g.prunable)
    sgd = torch.optim.SGD(m_sgd.parameters(), lr=0.1, momentum=0.9)
    warm = 10**9  # phase "warm-up": never partitions
    dh_warm = DHSPG(m_dh, analysis, lr=0.1, momentum=0.9, target_group_sparsity=0.5, start_pruning_steps=warm)
    m_win = fresh()
    dh_win = DHSPG(
        m_win,
        analysis,
        lr=0.1,
        momentum=0.9,
        target_group_sparsity=0.5,
        start_pruning_steps=0,
        pruning_steps=10**9,
        epsilon=0.0,
    )
    m_post = fresh()
    dh_post = DHSPG(
        m_post,
        analysis,
        lr=0.1,
        momentum=0.9,
        target_group_sparsity=0.5,
        start_pruning_steps=0,
        pruning_steps=1,
    )
    for opt in (sgd, dh_warm, dh_win, dh_post):  # first steps allocate buffers / partition / prune
        _timed(opt, 2)
    times: dict[str, list[float]] = {k: [] for k in ("sgd", "warm-up", "window", "after")}
    for _ in range(args.rounds):
        times["sgd"].append(_timed(sgd, args.steps))
        times["warm-up"].append(_timed(dh_warm, args.steps))
        times["window"].append(_timed(dh_win, args.steps))
        times["after"].append(_timed(dh_post, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    n_params = sum(p.numel() for p in m_dh.parameters())
    print(
        f"ResNet-50: {n_params / 1e6:.1f} M parameters, {analysis.num_zigs} ZIGs "
        f"({prunable} prunable), torch threads {torch.get_num_threads()}"
    )
    print(f"after-phase check: {dh_post.num_zero()} zero ZIGs (goal {dh_post.goal})")
    print(f"{'optimizer / phase':<34}{'ms/step':>10}{'ratio vs SGD':>14}")
    print(f"{'torch.optim.SGD(momentum=0.9)':<34}{med['sgd'] * 1e3:>10.1f}{1.0:>14.2f}")
    for key, label in (
        ("warm-up", "DHSPG warm-up (t <= T_w)"),
        ("window", "DHSPG pruning window"),
        ("after", "DHSPG after target reached"),
    ):
        print(f"{label:<34}{med[key] * 1e3:>10.1f}{med[key] / med['sgd']:>14.2f}")
    # a schedule shaped like the authors' CIFAR runs: 10% warm-up, 10% window, 80% after
    sched = 0.1 * med["warm-up"] + 0.1 * med["window"] + 0.8 * med["after"]
    print(f"{'DHSPG whole schedule (10/10/80 %)':<34}{sched * 1e3:>10.1f}{sched / med['sgd']:>14.2f}")
    print(
        f"ratio (target <= 1.5): window {med['window'] / med['sgd']:.2f}, schedule {sched / med['sgd']:.2f}"
    )


if __name__ == "__main__":
    main()
