"""Digits, side by side in one run: DHSPG's single training run vs Torch-Pruning's magnitude pruning.

The peer prunes the dense network (trained for the same epochs) with ``MagnitudePruner`` to the same
parameter count as DHSPG's constructed model, once without and once with a second fine-tuning run of
the same length. DHSPG's one run should match or beat the peer's two.

Torch-Pruning is not a zigraph dependency: unpack it for this bench only, e.g.
``pip download torch-pruning --no-deps -d /tmp/tp && python -m zipfile -e /tmp/tp/*.whl /tmp/tp_site``
then ``PYTHONPATH=/tmp/tp_site python bench/digits_vs_torch_pruning.py``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _tp_prune(
    dense: torch.nn.Module, example: torch.Tensor, target_params: int, avoid_concat: bool = False
) -> torch.nn.Module:
    """Magnitude-prune a copy of ``dense`` to about ``target_params`` (bisection on the ratio).

    ``avoid_concat`` leaves the two Concat branches (and the Linear after Flatten) alone: on this
    network Torch-Pruning 1.6 mis-maps Concat → MaxPool → Flatten → Linear and returns a model that
    cannot run, so this is the best configuration of the peer that works.
    """
    import torch_pruning as tp

    lo, hi, best = 0.0, 0.99, None
    for _ in range(14):
        ratio = (lo + hi) / 2
        m = copy.deepcopy(dense).eval()
        ignored = [m.head[-1]]
        if avoid_concat:
            ignored += [m.branch_a[0], m.branch_b[0], m.head[1]]
        pruner = tp.pruner.MagnitudePruner(
            m, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
            ignored_layers=ignored, global_pruning=False,
        )  # fmt: skip
        pruner.step()
        with torch.no_grad():
            m(example)  # raises when the peer produced an inconsistent model
        n = _params(m)
        if best is None or abs(n - target_params) < abs(_params(best) - target_params):
            best = m
        if n > target_params:
            lo = ratio
        else:
            hi = ratio
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    import construct
    import frontends
    import graphcore
    import optimizers
    from zigraph.demo import DemoNet, _accuracy, _digits, _train

    torch.manual_seed(0)
    data = _digits()
    xte, yte = data[2], data[3]
    example = data[0][:1]
    steps_per_epoch = (len(data[0]) + 63) // 64
    e = args.epochs
    init = DemoNet()

    t0 = time.perf_counter()
    model = copy.deepcopy(init)
    analysis = graphcore.analyze(frontends.load(model, (example,)))
    opt = optimizers.get("dhspg")(
        model, analysis, lr=0.05, momentum=0.9, target_group_sparsity=0.7,
        start_pruning_steps=steps_per_epoch * max(1, e // 6), pruning_steps=steps_per_epoch * max(1, e // 2),
        pruning_periods=max(1, e // 6), epsilon=0.9,
    )  # fmt: skip
    _train(model, opt, data, e, "DHSPG", True)
    small = construct.to_torch(model, analysis)
    t_dhspg = time.perf_counter() - t0

    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        print(
            "torch_pruning is not importable: set PYTHONPATH to an unpacked torch-pruning (see the docstring)"
        )
        print(f"DHSPG: {100 * _accuracy(small, xte, yte):.1f}% at {_params(small)} parameters")
        return

    t0 = time.perf_counter()
    dense = copy.deepcopy(init)
    _train(dense, torch.optim.SGD(dense.parameters(), lr=0.05, momentum=0.9), data, e, "dense", True)
    note = ""
    try:
        pruned = _tp_prune(dense, example, _params(small))
    except RuntimeError as exc:
        note = f"Torch-Pruning's pruned DemoNet does not run ({str(exc).splitlines()[0]}); retried without "
        note += "pruning the Concat branches"
        pruned = _tp_prune(dense, example, _params(small), avoid_concat=True)
    acc_once = _accuracy(pruned, xte, yte)
    t_once = time.perf_counter() - t0
    _train(pruned, torch.optim.SGD(pruned.parameters(), lr=0.05, momentum=0.9), data, e, "fine-tune", True)
    acc_twice = _accuracy(pruned, xte, yte)
    t_twice = time.perf_counter() - t0

    dense_params = _params(init)
    rows = [
        ("DHSPG, one run (zigraph)", _accuracy(small, xte, yte), _params(small), t_dhspg),
        ("Torch-Pruning, no fine-tune", acc_once, _params(pruned), t_once),
        ("Torch-Pruning + fine-tune", acc_twice, _params(pruned), t_twice),
    ]
    print(f"digits, {e} epochs per run; dense network {dense_params} parameters\n")
    print(f"{'':<30}{'accuracy':>9}{'params':>9}{'kept':>8}{'train s':>9}")
    for name, acc, n, t in rows:
        print(f"{name:<30}{100 * acc:>8.1f}%{n:>9}{100 * n / dense_params:>7.1f}%{t:>9.1f}")
    print(f"\nDHSPG one run vs the peer's two runs: {100 * (rows[0][1] - rows[2][1]):+.1f} accuracy points")
    if note:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
