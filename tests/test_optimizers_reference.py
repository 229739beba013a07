"""The batched DHSPG / H2SPG steps against a straightforward reference, step for step.

The optimizers compute per-ZIG statistics, penalties and the half-space test with batched kernels
over a precomputed layout (row and column sums, pair matrices, cross terms, a statistics pass that
also steps unpenalized parameters). The reference here does the same math of ALGORITHMS.md §4 the
obvious way: a dense owner-count matrix per parameter (entry e counts once per owner axis, as the
layout does), per-ZIG sums as matrix products, one update per entry. A wrong kernel — a row sum
over the wrong axis, a cross term missed, a keep mask ignored, a parameter stepped twice or not at
all — makes the trajectories part. The model has 3x3 and 1x1 convolutions owned by rows and
columns, a residual add (ZIGs spanning several weights), BatchNorm vectors and a linear head, in
float64 so that the comparison is tight and no projection decision sits on a rounding.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import frontends
import graphcore
from optimizers import DHSPG, H2SPG
from optimizers.dhspg import select_lambda
from optimizers.partition import saliency_scores
from optimizers.selection import select_with_caps


class ResNetLet(nn.Module):
    """Stem, one residual block (3x3, 3x3, add), a 1x1 widening conv, pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.wide = nn.Conv2d(8, 12, 1)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(y)))
        x = torch.relu(self.wide(x))
        return self.head(x.mean((2, 3)))


def setup(mode: str = "prune") -> tuple[nn.Module, graphcore.PruneAnalysis]:
    torch.manual_seed(0)
    model = ResNetLet()
    analysis = graphcore.analyze(frontends.load(model, (torch.randn(1, 3, 8, 8),)), mode=mode)
    return model.double(), analysis


def owner_counts(
    model: nn.Module, analysis: graphcore.PruneAnalysis, zigs: np.ndarray
) -> dict[str, torch.Tensor]:
    """Per parameter: ``[num_zigs + 1, numel]`` counts of how often each ZIG owns each entry.

    Only axes holding a slice of a ZIG in ``zigs`` count (the optimizers' layout leaves the others out).
    """
    named = dict(model.named_parameters())
    out = {n: torch.zeros(analysis.num_zigs + 1, p.numel(), dtype=torch.float64) for n, p in named.items()}
    for (name, axis), owner in analysis.param_axes.items():
        if name not in named:
            continue
        own = np.asarray(owner, dtype=np.int64)
        if not zigs[own[own >= 0]].any():
            continue
        shape = named[name].shape
        index = torch.arange(named[name].numel()).view(shape)
        along = index.movedim(axis, 0).reshape(shape[axis], -1)
        for j, z in enumerate(own):
            if z >= 0:
                out[name][z, along[j]] += 1.0
    return out


class Reference:
    """DHSPG's window step (SGD with momentum, no weight decay), written out per entry."""

    def __init__(self, opt: DHSPG, counts: dict[str, torch.Tensor]) -> None:
        self.opt, self.counts = opt, counts
        self.bufs: dict[str, torch.Tensor] = {}

    def sums(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.counts[n] @ (a[n] * b[n]).reshape(-1) for n in a)  # type: ignore[return-value]

    def step(
        self, xs: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], redundant: torch.Tensor, goal: int
    ) -> dict[str, torch.Tensor]:
        """The parameters after one window step from ``xs`` with gradients ``grads``."""
        opt, group = self.opt, self.opt.param_groups[0]
        lr, mu, eps = group["lr"], group["momentum"], group["epsilon"]
        for n, g in grads.items():
            self.bufs[n] = g.clone() if n not in self.bufs else self.bufs[n] * mu + g
        ds = self.bufs
        x2, xd, d2 = self.sums(xs, xs), self.sums(xs, ds), self.sums(ds, ds)
        zero = (x2 == 0) & opt.prunable  # what is exactly zero is held at zero
        self.saliency = saliency_scores(x2, xd, d2, opt.layout.zig_numel, opt.prunable)
        active = redundant & ~zero
        lam = select_lambda(x2, xd, d2, group["lmbda"], group["lmbda_amplify"], group["hat_lmbda_coeff"])
        lam = torch.where(active, lam, torch.zeros_like(lam))
        coef = lam / torch.where(x2 > 0, x2, torch.ones_like(x2)).sqrt()
        hat = {}
        for n, x in xs.items():
            c = (self.counts[n].T @ coef).view(x.shape)  # summed over the entry's owners
            keep = ((self.counts[n].T @ zero.double()) == 0).double().view(x.shape)
            hat[n] = (1 - lr * c) * x - lr * ds[n] * keep
        hat_dot = self.sums(hat, xs)
        candidates = active & (hat_dot < eps * x2)
        ratio = hat_dot / torch.where(x2 > 0, x2, torch.ones_like(x2))
        used = torch.bincount(opt.zig_group[zero], minlength=opt.group_cap.numel())
        chosen = select_with_caps(
            candidates, ratio, opt.zig_group, opt.group_cap - used, goal - int(zero.sum())
        )
        for n, x in hat.items():
            x[(self.counts[n].T @ chosen.double()).view(x.shape) > 0] = 0.0
        self.zero, self.lam = zero | chosen, lam
        return hat


def batches(model: nn.Module, steps: int, seed: int = 0):
    """Set fresh gradients ``steps`` times; yields the parameters and gradients before each step."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=gen)
        model.zero_grad()
        out = model(x)
        nn.functional.mse_loss(out, torch.tanh(out.detach() @ target) + 0.3).backward()
        named = list(model.named_parameters())
        yield {n: p.detach().clone() for n, p in named}, {n: p.grad.detach().clone() for n, p in named}


@pytest.mark.parametrize(("epsilon", "sparsity"), [(0.0, 0.5), (0.9, 0.5), (0.9, 0.1)])
def test_dhspg_window_steps_match_the_reference(epsilon: float, sparsity: float) -> None:
    model, analysis = setup()
    hp = dict(lr=0.1, momentum=0.9, epsilon=epsilon, target_group_sparsity=sparsity, lmbda=0.5)
    opt = DHSPG(model, analysis, start_pruning_steps=0, pruning_steps=1000, **hp)
    counts = owner_counts(model, analysis, opt.prunable.numpy())
    ref = Reference(opt, counts)
    for xs, grads in batches(model, 8):
        if opt.steps_done == 3 and sparsity < 0.5:
            xs = zero_outside(model, opt, counts)
        opt.step()  # the first step partitions; G_R and K are fixed from then on
        assert opt.redundant is not None
        want = ref.step(xs, grads, opt.redundant, opt.goal)
        if opt.steps_done == 1:
            torch.testing.assert_close(opt.saliency, ref.saliency)
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), want[n], rtol=1e-10, atol=1e-12, msg=n)
        assert torch.equal(opt._zero & opt.prunable, ref.zero)
        torch.testing.assert_close(opt.last_lambda, ref.lam)
    assert 0 < int(opt.redundant.sum()) < int(opt.prunable.sum())
    if sparsity < 0.5:  # few candidates: some parameters stepped in the statistics pass
        assert not all(opt.layout.touched(opt.redundant))
    if epsilon and sparsity == 0.5:  # the half-space projection fired and zeroed whole ZIGs
        assert 0 < opt.num_zero() <= opt.goal


def zero_outside(model: nn.Module, opt: DHSPG, counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Zero, by hand, an important ZIG all of whose slices lie on parameters no candidate touches.

    Those parameters step in the statistics pass, before the step finds the ZIG zero; it must still
    end the step exactly zero and be held there, as a keep mask would have done. Returns the new
    parameters."""
    assert opt.redundant is not None
    named = dict(model.named_parameters())
    name_of = {id(p): n for n, p in named.items()}
    stepped = {
        name_of[id(opt.layout.sources[i])] for i, t in enumerate(opt.layout.touched(opt.redundant)) if not t
    }
    important = (opt.prunable & ~opt.redundant).nonzero().flatten().tolist()
    for z in important:
        holders = {n for n, c in counts.items() if bool(c[z].any())}
        if holders and holders <= stepped:
            break
    else:
        raise AssertionError("no important ZIG lives only on parameters that step in the statistics pass")
    with torch.no_grad():
        for n in holders:
            named[n].view(-1)[counts[n][z] > 0] = 0.0
    return {n: p.detach().clone() for n, p in named.items()}


def test_h2spg_warm_up_is_the_plain_step_and_scores_match_the_reference() -> None:
    """Warm-up steps every parameter in the statistics pass: torch's SGD (up to the last bit: the
    statistics pass fuses the momentum update), scores as §5.2."""
    model, analysis = setup("erase")
    twin = copy.deepcopy(model)
    opt = H2SPG(model, analysis, lr=0.1, momentum=0.9, start_pruning_steps=5, pruning_steps=10)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    ref = Reference(opt, owner_counts(model, analysis, opt.prunable.numpy()))
    ema = torch.zeros_like(opt._ema)
    for xs, grads in batches(model, 4):
        for p, q in zip(model.parameters(), twin.parameters()):
            q.grad = p.grad.clone()
        opt.step()
        sgd.step()
        ds = {n: g.clone() if n not in ref.bufs else ref.bufs[n] * 0.9 + g for n, g in grads.items()}
        ref.bufs = ds
        x2, xd, d2 = ref.sums(xs, xs), ref.sums(xs, ds), ref.sums(ds, ds)
        live = opt.prunable & (x2 > 0)
        score = saliency_scores(x2, xd, d2, opt.layout.zig_numel, live)
        ema = 0.9 * ema + 0.1 * torch.where(live, score, torch.zeros_like(score))
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(opt._ema, ema)
    assert int(opt.prunable.sum()) >= 1 and not opt.searched
