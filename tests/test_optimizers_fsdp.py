"""DHSPG and H2SPG on parameters sharded by FSDP2 (``fully_shard``, DTensor): two gloo processes on CPU.

Each rank holds half the rows of every weight (uneven: 11 rows are 6 + 5; H2SPG on the residual MLP
of tests/test_h2spg.py, whose structures are whole tensors split across the ranks) and trains on its half of
every global batch; FSDP2 reduce-scatters the averaged gradients. The optimizer works on the local
rows and sums its per-ZIG statistics over the mesh, so both ranks take the same decisions. The
gathered parameters must match a single process trained on the whole batches step for step, with
the same zero ZIGs, and both ranks must agree exactly on the zero set at every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import optimizers
from optimizers.synthetic import linear_chain_analysis
from tests.gloo import spawn_gloo

pytest.importorskip("torch.distributed.fsdp")

STEPS = 16
GLOBAL_BATCH = 16
HP = dict(
    lr=0.05, momentum=0.9, target_group_sparsity=0.5, start_pruning_steps=3, pruning_steps=10, epsilon=0.9
)


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 11), nn.ReLU(), nn.Linear(11, 10), nn.ReLU(), nn.Linear(10, 2))


def case(name: str) -> tuple[nn.Module, Any, int]:
    """(model, analysis, input width) of each optimizer's run; the analysis is of the unsharded model."""
    if name == "dhspg":
        model = make_model()
        return model, linear_chain_analysis(model, ["0", "2", "4"]), 6
    from tests.test_h2spg import ResidualMLP, hand_analysis

    res = ResidualMLP(2)
    return res, hand_analysis(res), 4


def batches(width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(width, 2, generator=gen)
    xs = [torch.randn(GLOBAL_BATCH, width, generator=gen) for _ in range(STEPS)]
    return [(x, torch.tanh(x @ w)) for x in xs]


def full(p: torch.Tensor) -> torch.Tensor:
    gather = getattr(p, "full_tensor", None)
    return (gather() if callable(gather) else p).detach().clone()


def train(name: str, model: nn.Module, analysis: Any, width: int, rank: int, world: int) -> tuple[list, list]:
    """Per step: the zero ZIG ids and the full parameters."""
    opt = optimizers.get(name)(model, analysis, **HP)
    share = GLOBAL_BATCH // world
    zeros, params = [], []
    for x, y in batches(width):
        xs, ys = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
        opt.zero_grad()
        nn.functional.mse_loss(model(xs), ys).backward()
        opt.step()
        zeros.append(opt.zero_zig_ids().tolist())
        params.append([full(p) for p in model.parameters()])
    return zeros, params


def _worker(rank: int, world: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    runs = {}
    for name in ("dhspg", "h2spg"):
        model, analysis, width = case(name)
        if name == "dhspg":
            for i in (0, 2, 4):
                fully_shard(model[i], mesh=mesh)
        fully_shard(model, mesh=mesh)
        first = next(model.parameters())
        assert first.to_local().shape[0] < first.shape[0]  # really sharded
        runs[name] = train(name, model, analysis, width, rank, world)
    torch.save(runs, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow  # two spawned processes: about a minute on a busy 2-core machine
def test_fsdp2_two_ranks_match_one_process_step_for_step(tmp_path: Path) -> None:
    spawn_gloo(_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in ("dhspg", "h2spg"):
        assert r0[name][0] == r1[name][0], name
        model, analysis, width = case(name)
        zeros, params = train(name, model, analysis, width, rank=0, world=1)
        assert zeros[-1], f"{name}: nothing was zeroed, the test would not see a wrong decision"
        assert zeros == r0[name][0], name
        for step, (mine, theirs) in enumerate(zip(params, r0[name][1])):
            for a, b in zip(mine, theirs):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{name}, step {step + 1}")
    assert len(r0["dhspg"][0][-1]) == 10  # floor(0.5 · 21 prunable ZIGs): the window did its work
