"""The optimizer base: ZIG layout math, first-order variants, zeroing, state dicts, removed_zigs.

Small models with hand-built analyses; every per-ZIG quantity is checked against a brute-force loop
over ZIGs, every first-order update against torch.optim.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import optimizers
from graphcore.groups import NodeGroup, PruneAnalysis
from optimizers.base import GroupOptimizer, Need
from optimizers.layout import Scratch, ZigLayout
from optimizers.selection import rank_within_groups, select_with_caps
from optimizers.synthetic import linear_chain_analysis


def mlp(seed: int = 0, hidden: tuple[int, ...] = (6, 5)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 4
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 3))
    return nn.Sequential(*layers)


def mlp_analysis(model: nn.Sequential, min_keep: int = 1) -> PruneAnalysis:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear_chain_analysis(model, names, min_keep=min_keep)


class ConvNet(nn.Module):
    """conv1 (3x3) -> bn -> conv2 (3x3) -> conv3 (1x1) -> fc: rows and columns owned, plus unowned bits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.conv3 = nn.Conv2d(5, 3, 1)
        self.fc = nn.Linear(3 * 4, 2)
        self.extra = nn.Parameter(torch.randn(7))  # no ZIG touches it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 2), 1)) + self.extra.sum()


def conv_analysis(model: ConvNet) -> PruneAnalysis:
    """ZIGs 0-3: conv1 channels; 4-8: conv2 channels; 9-11: conv3 channels (fc columns in blocks of 4).

    conv2.weight and conv3.weight are owned along rows and columns (overlap); conv3's channel 2 is
    owned by nobody (-1) to exercise the dummy slot; BN running stats are buffers (ignored).
    """
    c1, c2, c3 = np.arange(0, 4), np.arange(4, 9), np.arange(9, 12)
    c3_rows = np.array([9, 10, -1])
    fc_cols = np.repeat(c3_rows, 4)
    param_axes = {
        ("conv1.weight", 0): c1,
        ("bn.weight", 0): c1,
        ("bn.bias", 0): c1,
        ("bn.running_mean", 0): c1,
        ("conv2.weight", 1): c1,
        ("conv2.weight", 0): c2,
        ("conv2.bias", 0): c2,
        ("conv3.weight", 1): c2,
        ("conv3.weight", 0): c3_rows,
        ("conv3.bias", 0): c3_rows,
        ("fc.weight", 1): fc_cols,
    }
    groups = [
        NodeGroup(0, c1, [], prunable=True),
        NodeGroup(1, c2, [], prunable=True, min_keep=2),
        NodeGroup(2, c3, [], prunable=False, reason="test"),
    ]
    zig_group = np.concatenate([np.full(4, 0), np.full(5, 1), np.full(3, 2)])
    named = dict(model.named_parameters())
    return PruneAnalysis(
        None,
        groups,
        zig_group,
        param_axes,
        {n: True for n in named},
        {n: tuple(p.shape) for n, p in named.items()},
    )


def brute_entries(model: nn.Module, analysis: PruneAnalysis) -> dict[int, list[tuple[str, tuple]]]:
    """Every (param, index) entry of every ZIG, by walking the slices one index at a time."""
    named = dict(model.named_parameters())
    out: dict[int, list[tuple[str, tuple]]] = {z: [] for z in range(analysis.num_zigs)}
    for (name, axis), owner in analysis.param_axes.items():
        if name not in named:
            continue
        shape = named[name].shape
        for idx in np.ndindex(*shape):
            z = int(owner[idx[axis]])
            if z >= 0:
                out[z].append((name, idx))
    return out


# ---------------------------------------------------------------------------------------------- layout
def test_layout_norms_dots_and_cross_terms_match_brute_force() -> None:
    torch.manual_seed(1)
    model = ConvNet()
    analysis = conv_analysis(model)
    layout = ZigLayout(analysis, dict(model.named_parameters()))
    named = {n: p.detach() for n, p in model.named_parameters()}
    others = [torch.randn_like(p) for p in layout.params]
    other_of = {
        name: others[i] for i, p in enumerate(layout.params) for name, q in model.named_parameters() if q is p
    }
    with torch.no_grad():
        sq = layout.sq_norms().numpy()[:-1]
        scratch = Scratch()
        parts = [
            v
            for s in layout.slots
            for v in layout.reduce(s, layout.params[s.param], others[s.param], scratch)
        ]
        dots = layout.segment_sum(parts).numpy()[:-1]
    entries = brute_entries(model, analysis)
    want = [sum(float(named[n][i]) ** 2 for n, i in entries[z]) for z in range(analysis.num_zigs)]
    np.testing.assert_allclose(sq, want, rtol=1e-5)
    want = [sum(float(named[n][i] * other_of[n][i]) for n, i in entries[z]) for z in range(analysis.num_zigs)]
    np.testing.assert_allclose(dots, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layout.zig_numel.numpy()[:-1], [len(entries[z]) for z in range(12)])
    # cross terms: per ZIG g, sum over its entries of x_e^2 * (coef of e's *other* owners)
    coef = torch.rand(analysis.num_zigs + 1, dtype=torch.float32)
    coef[-1] = 0
    with torch.no_grad():
        flat = layout.zeros_flat()
        for s in layout.slots:
            if len(s.axes) > 1:
                layout.put_flat(flat, s, layout.cross(s, coef, layout.params[s.param], scratch))
        cross = layout.segment_sum([flat]).numpy()[:-1]
    owners_of: dict[tuple[str, tuple], list[int]] = {}
    for z, ents in entries.items():
        for e in ents:
            owners_of.setdefault(e, []).append(z)
    want = []
    for z in range(analysis.num_zigs):
        total = 0.0
        for name, idx in entries[z]:
            others_coef = sum(float(coef[o]) for o in owners_of[(name, idx)]) - float(coef[z])
            total += float(named[name][idx]) ** 2 * others_coef
        want.append(total)
    np.testing.assert_allclose(cross, want, rtol=1e-5, atol=1e-6)


def test_layout_rejects_mismatched_analysis() -> None:
    model = mlp()
    analysis = mlp_analysis(mlp(hidden=(7, 5)))
    with pytest.raises(ValueError, match="another model"):
        ZigLayout(analysis, dict(model.named_parameters()))


def test_optimizer_rejects_another_models_analysis() -> None:
    model = mlp()
    analysis = mlp_analysis(model)
    analysis.param_axes[("encoder.0.weight", 0)] = np.arange(3)
    with pytest.raises(ValueError, match=r"does not have.*encoder\.0\.weight"):
        GroupOptimizer(model, analysis)


def test_select_with_caps_respects_room_budget_and_priority() -> None:
    group = torch.tensor([0, 0, 0, 1, 1, 2])
    priority = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0, 0.0])
    assert rank_within_groups(group, priority).tolist() == [2, 0, 1, 1, 0, 0]
    cand = torch.tensor([True, True, True, True, True, False])
    room = torch.tensor([2, 1, 5])
    assert select_with_caps(cand, priority, group, room).nonzero().flatten().tolist() == [1, 2, 4]
    assert select_with_caps(cand, priority, group, room, budget=2).nonzero().flatten().tolist() == [1, 2]


# ---------------------------------------------------------------------------------------------- first order
def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        y = torch.randn(8, 3, generator=gen)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "hp",
    [
        dict(momentum=0.0),
        dict(momentum=0.9),
        dict(momentum=0.9, dampening=0.3, weight_decay=1e-2),
        dict(momentum=0.8, nesterov=True, weight_decay=1e-3),
    ],
)
def test_sgd_variant_equals_torch_sgd(hp: dict, foreach: bool) -> None:
    ours, ref = mlp(3), mlp(3)
    opt = GroupOptimizer(ours, mlp_analysis(ours), lr=0.05, variant="sgd", foreach=foreach, **hp)
    _train(ours, opt, 6)
    _train(ref, torch.optim.SGD(ref.parameters(), lr=0.05, **hp), 6)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)  # same kernels in the same order: bit-identical


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("variant,torch_cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_variants_equal_torch(variant: str, torch_cls: type, foreach: bool) -> None:
    ours, ref = mlp(4), mlp(4)
    opt = GroupOptimizer(
        ours,
        mlp_analysis(ours),
        lr=1e-2,
        variant=variant,
        weight_decay=0.05,
        betas=(0.8, 0.99),
        eps=1e-6,
        foreach=foreach,
    )
    _train(ours, opt, 8)
    _train(ref, torch_cls(ref.parameters(), lr=1e-2, weight_decay=0.05, betas=(0.8, 0.99), eps=1e-6), 8)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_first_sgd_momentum_step_by_hand() -> None:
    """x=1, g=0.5 (+wd 0.1·x) -> buf = 0.6; x ← 1 − 0.1·0.6; then buf = 0.9·0.6 + g'."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    analysis = _single_param_analysis(model)
    opt = GroupOptimizer(model, analysis, lr=0.1, momentum=0.9, weight_decay=0.1)
    model.weight.grad = torch.full((1, 1), 0.5)
    opt.step()
    assert model.weight.item() == pytest.approx(1 - 0.1 * 0.6)
    model.weight.grad = torch.full((1, 1), 0.2)
    opt.step()
    w1 = 1 - 0.06
    buf = 0.9 * 0.6 + (0.2 + 0.1 * w1)
    assert model.weight.item() == pytest.approx(w1 - 0.1 * buf)


def _single_param_analysis(model: nn.Linear) -> PruneAnalysis:
    owner = np.arange(model.out_features)
    return PruneAnalysis(
        None,
        [NodeGroup(0, owner, [("weight", 0)], prunable=True)],
        np.zeros(model.out_features, dtype=np.int64),
        {("weight", 0): owner},
        {"weight": True},
        {"weight": tuple(model.weight.shape)},
    )


# ---------------------------------------------------------------------------------------------- zeroing
class ZeroSome(GroupOptimizer):
    """A minimal subclass: zeroes the ZIGs listed in ``zap`` at step ``at``, plain steps otherwise."""

    def __init__(self, model: nn.Module, analysis: PruneAnalysis, **hp) -> None:
        self.zap = hp.pop("zap")
        self.at = hp.pop("at", 1)
        super().__init__(model, analysis, **hp)

    def need(self, group: dict) -> Need:
        return Need(pre=True) if self.steps_done == self.at else Need()

    def update(self, stats, group: dict) -> None:
        self.penalized_step(stats, group, torch.zeros_like(stats.x2))
        mask = torch.zeros_like(self.prunable)
        mask[self.zap] = True
        self.zero_zigs(mask & self.prunable)


class ClaimsNothing(GroupOptimizer):
    """Says no ZIG is penalized (every parameter steps in the statistics pass), then penalizes one."""

    def need(self, group: dict) -> Need:
        return Need(pre=True, active=torch.zeros_like(self.prunable))

    def update(self, stats, group: dict) -> None:
        coef = torch.zeros_like(stats.x2)
        coef[1] = 0.5
        self.penalized_step(stats, group, coef)


def test_a_penalty_outside_need_active_is_refused() -> None:
    """A parameter that stepped in the statistics pass cannot take a penalty too (it would step twice)."""
    model = ConvNet()
    opt = ClaimsNothing(model, conv_analysis(model), lr=0.05)
    model(torch.randn(3, 2, 5, 5)).pow(2).mean().backward()
    with pytest.raises(RuntimeError, match=r"Need\.active"):
        opt.step()


def test_zero_groups_stay_exactly_zero_and_removed_zigs_reads_them_back() -> None:
    model = ConvNet()
    analysis = conv_analysis(model)
    opt = ZeroSome(model, analysis, lr=0.05, momentum=0.9, zap=[1, 5, 10], at=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(3, 2, 5, 5, generator=gen)).pow(2).mean().backward()
        opt.step()
    # ZIG 10 belongs to the unprunable group: never zeroed; 1 and 5 are, and stay zero
    assert opt.zero_zig_ids().tolist() == [1, 5]
    assert optimizers.removed_zigs(model, analysis).tolist() == [1, 5]
    assert torch.all(model.conv1.weight[1] == 0) and torch.all(model.conv2.weight[:, 1] == 0)
    assert torch.all(model.conv2.weight[1] == 0) and torch.all(model.conv3.weight[:, 1] == 0)
    assert model.bn.weight[1] == 0 and model.conv2.bias[1] == 0
    assert torch.any(model.conv2.weight[0] != 0)


def test_removed_zigs_keeps_min_keep_and_ignores_unprunable() -> None:
    model = ConvNet()
    analysis = conv_analysis(model)
    with torch.no_grad():
        for z in range(4, 9):  # every channel of conv2 (min_keep=2) is zero
            model.conv2.weight[z - 4].zero_()
            model.conv2.bias[z - 4] = 0
            model.conv3.weight[:, z - 4].zero_()
        model.conv3.weight[0].zero_()  # ZIG 9 (unprunable group) zero
        model.conv3.bias[0] = 0
        model.fc.weight[:, 0:4].zero_()
    assert optimizers.removed_zigs(model, analysis).tolist() == [4, 5, 6]
    assert optimizers.removed_zigs(model, analysis, prunable_only=False).tolist() == [4, 5, 6, 7, 8, 9]


def test_frozen_parameters_are_left_alone_and_their_zigs_not_prunable() -> None:
    model = mlp(5)
    model[2].weight.requires_grad_(False)  # columns of hidden-1 ZIGs, rows of hidden-2 ZIGs
    analysis = mlp_analysis(model)
    before = model[2].weight.detach().clone()
    opt = GroupOptimizer(model, analysis, lr=0.1, momentum=0.9)
    _train(model, opt, 3)
    assert torch.equal(model[2].weight, before)
    assert not bool(opt.prunable[:-1].any())  # every ZIG touches the frozen weight
    assert all(p is not model[2].weight for p in opt.param_groups[0]["params"])


def test_state_dict_round_trip_resumes_identically() -> None:
    model = ConvNet()
    analysis = conv_analysis(model)
    opt = ZeroSome(model, analysis, lr=0.05, momentum=0.9, nesterov=True, zap=[2], at=2)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(3, 2, 5, 5, generator=gen) for _ in range(8)]

    def run(m: nn.Module, o: torch.optim.Optimizer, xs: list[torch.Tensor]) -> None:
        for x in xs:
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()

    run(model, opt, batches[:3])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run(model, opt, batches[3:])
    fresh = ConvNet()
    fresh.load_state_dict(saved_model)
    opt2 = ZeroSome(fresh, analysis, lr=0.05, momentum=0.9, nesterov=True, zap=[2], at=2)
    opt2.load_state_dict(saved_opt)
    assert opt2.steps_done == 3 and opt2.zero_zig_ids().tolist() == [2]
    run(fresh, opt2, batches[3:])
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
