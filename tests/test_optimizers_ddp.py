"""DHSPG under DistributedDataParallel: two gloo processes on CPU decide exactly alike.

Each rank trains the DDP-wrapped model on its half of every global batch; DDP averages the
gradients, so both ranks see the gradient of the whole batch. The optimizer needs no communication
of its own: its decisions are deterministic functions of parameters and gradients. Both ranks must
end bit-identical, with the same zero groups as one process trained on the whole batches.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import optimizers
from optimizers.synthetic import linear_chain_analysis
from tests.gloo import spawn_gloo

STEPS = 24
GLOBAL_BATCH = 16
HP = dict(
    lr=0.05, momentum=0.9, target_group_sparsity=0.5, start_pruning_steps=4, pruning_steps=16, epsilon=0.9
)


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 2))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 2, generator=gen)
    xs = [torch.randn(GLOBAL_BATCH, 6, generator=gen) for _ in range(STEPS)]
    return [(x, torch.tanh(x @ w)) for x in xs]


def train(model: nn.Module, module: nn.Module, rank: int, world: int) -> torch.optim.Optimizer:
    analysis = linear_chain_analysis(module, ["0", "2", "4"])
    opt = optimizers.get("dhspg")(model, analysis, **HP)
    share = GLOBAL_BATCH // world
    for x, y in batches():
        xs, ys = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
        opt.zero_grad()
        nn.functional.mse_loss(model(xs), ys).backward()
        opt.step()
    return opt


def _worker(rank: int, world: int, out: str) -> None:
    module = make_model()
    ddp = nn.parallel.DistributedDataParallel(module)
    opt = train(ddp, module, rank, world)
    torch.save(
        {
            "params": [p.detach().clone() for p in module.parameters()],
            "zero": opt.zero_zig_ids().tolist(),
        },
        Path(out) / f"rank{rank}.pt",
    )


def test_ddp_two_ranks_match_each_other_and_one_process(tmp_path: Path) -> None:
    spawn_gloo(_worker, tmp_path)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0["zero"] == r1["zero"]
    assert len(r0["zero"]) == 11  # floor(0.5 · 22 prunable ZIGs)
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)
    single = make_model()
    opt = train(single, single, rank=0, world=1)
    assert opt.zero_zig_ids().tolist() == r0["zero"]
    for a, b in zip(single.parameters(), r0["params"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-5)
