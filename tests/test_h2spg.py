"""H2SPG (ALGORITHMS.md §5): warm-up scores, the hierarchical search, hybrid training, validity throughout.

The analysis here is built by hand for a residual MLP whose structures and validity rule are known in
closed form: blocks ``x + f_i(x)`` (erasable, an identity skip keeps the graph connected), a last
block ``shortcut(x) + last(x)`` whose two branches are each erasable but not both (erasing both cuts
the graph), and a stem and head that are not erasable. The last tests run on the real erase analysis
(``graphcore.analyze(..., mode="erase")``) of a small residual CNN with a conv-shortcut block.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import optimizers
from graphcore.groups import NodeGroup, PruneAnalysis
from optimizers import H2SPG
from optimizers.partition import saliency_scores
from optimizers.synthetic import linear_chain_analysis

WIDTH = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny layers: thread start-up dominates, and on a loaded machine many threads are 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def branch(width: int = WIDTH) -> nn.Sequential:
    """A branch whose output is exactly 0 once its parameters are: Linear, tanh (0 -> 0), Linear."""
    return nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))


class ResidualMLP(nn.Module):
    """stem -> ``blocks`` identity-skip residual blocks -> shortcut(x) + last(x) -> head."""

    def __init__(self, blocks: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Linear(4, WIDTH)
        self.blocks = nn.ModuleList(branch() for _ in range(blocks))
        self.shortcut = nn.Linear(WIDTH, WIDTH)
        self.last = branch()
        self.head = nn.Linear(WIDTH, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.stem(x))
        for block in self.blocks:
            x = x + block(x)
        x = self.shortcut(x) + self.last(x)
        return self.head(x)


class HandErase(PruneAnalysis):
    """A PruneAnalysis with ``mode="erase"`` and the validity rule of an explicit joint graph.

    ``edges`` are ``(src, dst, structure or None)`` between joints; a network is valid when ``"out"``
    is reachable from ``"in"`` over edges whose structure is not erased.
    """

    edges: list[tuple[str, str, int | None]]

    def valid(self, erased: Iterable[int]) -> bool:
        gone = set(erased)
        seen, stack = {"in"}, ["in"]
        while stack:
            v = stack.pop()
            for src, dst, s in self.edges:
                if src == v and dst not in seen and (s is None or s not in gone):
                    seen.add(dst)
                    stack.append(dst)
        return "out" in seen

    def select(self, order: Sequence[int], k: int) -> list[int]:
        accepted: list[int] = []
        for s in order:
            if len(accepted) >= k:
                break
            if self.groups[s].prunable and self.valid([*accepted, s]):
                accepted.append(s)
        return accepted

    def erased_by(self, chosen: Iterable[int]) -> set[int]:
        return {int(c) for c in chosen if self.groups[int(c)].prunable}  # nothing nests here


def hand_analysis(model: ResidualMLP) -> HandErase:
    """The erase analysis of ``model``: one structure per block, shortcut, last branch, stem and head."""
    nb = len(model.blocks)
    prefixes = [f"blocks.{i}" for i in range(nb)] + ["shortcut", "last", "stem", "head"]
    erasable = [True] * (nb + 2) + [False, False]
    named = dict(model.named_parameters())
    groups, param_axes = [], {}
    for sid, (prefix, ok) in enumerate(zip(prefixes, erasable)):
        names = [n for n in named if n.startswith(prefix + ".")]
        for n in names:
            param_axes[(n, 0)] = np.full(named[n].shape[0], sid, dtype=np.int64)
        groups.append(
            NodeGroup(
                sid,
                np.array([sid]),
                [(n, 0) for n in names],
                prunable=ok,
                reason=None if ok else "its removal disconnects the network",
                min_keep=0,
                nodes=[prefix],
            )
        )
    analysis = HandErase(
        graph=None,  # hand-built: no traced graph behind it
        groups=groups,
        zig_group=np.arange(len(groups)),
        param_axes=param_axes,
        trainable={n: True for n in named},
        param_shapes={n: tuple(p.shape) for n, p in named.items()},
        mode="erase",
    )
    joints = [f"j{i}" for i in range(nb + 2)]
    edges: list[tuple[str, str, int | None]] = [("in", "j0", nb + 2)]
    for i in range(nb):
        edges += [(joints[i], joints[i + 1], None), (joints[i], joints[i + 1], i)]
    edges += [(joints[nb], joints[nb + 1], nb), (joints[nb], joints[nb + 1], nb + 1)]
    edges += [(joints[nb + 1], "out", nb + 3)]
    analysis.edges = edges
    return analysis


def batches(seed: int, steps: int, batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 2, generator=gen)
    out = []
    for _ in range(steps):
        x = torch.randn(batch, 4, generator=gen)
        out.append((x, torch.tanh(x @ w)))
    return out


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def train(model: nn.Module, opt: torch.optim.Optimizer, data, check=None) -> list[float]:
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if check is not None:
            check()
    return losses


def zero_structures(model: nn.Module, analysis: PruneAnalysis) -> set[int]:
    """Read from the parameters: every structure all of whose tensors are exactly zero."""
    return {int(z) for z in optimizers.removed_zigs(model, analysis)}


def make(blocks: int = 3, seed: int = 0, **hp) -> tuple[ResidualMLP, HandErase, H2SPG]:
    model = ResidualMLP(blocks, seed)
    analysis = hand_analysis(model)
    defaults = dict(lr=0.05, momentum=0.9, start_pruning_steps=10, pruning_steps=20, pruning_periods=2)
    return model, analysis, H2SPG(model, analysis, **(defaults | hp))


# ------------------------------------------------------------------------------------------ basics
def test_registered_and_exported() -> None:
    assert optimizers.get("h2spg") is H2SPG
    assert optimizers.get("H2SPG") is H2SPG
    assert "h2spg" in optimizers.available()


def test_hand_analysis_rule() -> None:
    model = ResidualMLP(3)
    a = hand_analysis(model)
    assert a.valid([0, 1, 2, 3]) and a.valid([4]) and not a.valid([3, 4])
    assert a.select([3, 4, 0], 3) == [3, 0]
    # zeroing a structure's tensors makes its output exactly zero: the premise of the whole method
    with torch.no_grad():
        for p in model.last.parameters():
            p.zero_()
    x = torch.randn(5, WIDTH)
    assert torch.equal(model.last(x), torch.zeros(5, WIDTH))


# ---------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("sparsity,expected_k", [(0.4, 2), (0.6, 3), (1.0, 4)])
def test_exactly_k_selected_and_zero_at_window_end(sparsity: float, expected_k: int) -> None:
    # 5 erasable structures (3 blocks, shortcut, last); K = round(s·5), at most 4 together validly
    model, analysis, opt = make(target_group_sparsity=sparsity)
    seen_zero: list[set[int]] = []

    def check() -> None:
        zero = zero_structures(model, analysis)
        assert analysis.valid(zero), f"step {opt.steps_done}: invalid zero set {zero}"
        if not opt.searched:
            assert zero == set()
        else:
            assert zero <= set(opt.selected or [])
            assert zero == set(opt.zero_zig_ids().tolist())
        seen_zero.append(zero)

    train(model, opt, batches(0, 10 + 20 + 15), check)
    assert opt.selected is not None and len(opt.selected) == expected_k
    assert len(set(opt.selected)) == expected_k and not {5, 6} & set(opt.selected)  # stem, head
    assert seen_zero[10 + 20 - 1] == set(opt.selected)  # exactly G_r at the end of the window
    assert all(z == set(opt.selected) for z in seen_zero[10 + 20 - 1 :])  # and stays so
    assert any(len(z) < expected_k for z in seen_zero[10:29])  # reached gradually, not all at step 1
    report = opt.sparsity_report()
    assert report.zero == sorted(opt.selected) and report.valid and report.searched
    assert (report.note is None) == (expected_k == round(sparsity * 5 + 1e-9))


def test_request_beyond_what_stays_valid_erases_the_most_and_says_so() -> None:
    model, analysis, opt = make(target_structures=5)  # all five together would cut the graph
    train(model, opt, batches(1, 35))
    report = opt.sparsity_report()
    assert report.requested == 5 and len(report.selected) == 4
    assert len({3, 4} & set(report.selected)) == 1
    assert set(report.zero) == set(report.selected) and analysis.valid(report.zero)
    assert report.note is not None and "4 of the 5" in report.note


def test_search_walks_scores_most_redundant_first(monkeypatch: pytest.MonkeyPatch) -> None:
    model, analysis, opt = make(start_pruning_steps=6, target_structures=3)
    calls: list[tuple[list[int], int]] = []
    select = analysis.select

    def spy(order: Sequence[int], k: int) -> list[int]:
        calls.append((list(order), k))
        return select(order, k)

    monkeypatch.setattr(analysis, "select", spy)
    train(model, opt, batches(2, 7))
    assert len(calls) == 1  # the search runs once, at the first step after warm-up
    order, k = calls[0]
    scores = opt.scores.tolist()
    assert k == 3 and sorted(order) == [0, 1, 2, 3, 4]  # every erasable structure, nothing else
    assert [scores[s] for s in order] == sorted((scores[s] for s in order), reverse=True)
    assert opt.selected == select(order, 3)
    train(model, opt, batches(3, 30))
    assert len(calls) == 1


def test_search_skips_a_structure_that_would_cut_the_graph() -> None:
    # The last block's two branches rank as most redundant; K = 2 would take both and cut every
    # input-output path. The search keeps the first, skips the second and takes the next one.
    model, analysis, opt = make(start_pruning_steps=3, target_structures=2)
    train(model, opt, batches(2, 3))
    with torch.no_grad():  # the warm-up average, set so the ranking is known: 4, 3, 1, 0, 2
        opt._ema[:5] = torch.tensor([3.0, 4.0, 2.0, 9.0, 10.0], dtype=opt._ema.dtype)
    train(model, opt, batches(3, 25))
    assert torch.argsort(opt.scores, descending=True)[:3].tolist() == [4, 3, 1]
    assert not analysis.valid([4, 3])  # the plain top-K (DHSPG's choice) would be invalid
    assert opt.selected == [4, 1]
    assert zero_structures(model, analysis) == {4, 1} and analysis.valid([4, 1])


# ------------------------------------------------------------------------------------------ scores
def test_scores_are_the_ema_of_per_step_saliency() -> None:
    model, analysis, opt = make(start_pruning_steps=3, saliency_momentum=0.8)
    data = batches(3, 2)
    expected = torch.zeros(analysis.num_zigs + 1, dtype=torch.float64)
    for x, y in data:
        opt.zero_grad()
        loss_of(model, x, y).backward()
        # x2, <x, D>, ||D||² per structure with D = the SGD momentum direction (buffer·0.9 + grad)
        x2, xd, d2 = (torch.zeros(analysis.num_zigs + 1, dtype=torch.float64) for _ in range(3))
        named = dict(model.named_parameters())
        for (name, _), owner in analysis.param_axes.items():
            p = named[name]
            buf = opt.state[p].get("momentum_buffer")
            d = p.grad if buf is None else 0.9 * buf + p.grad
            sid = int(owner[0])
            x2[sid] += float((p.detach().double() ** 2).sum())
            xd[sid] += float((p.detach().double() * d.double()).sum())
            d2[sid] += float((d.double() ** 2).sum())
        live = opt.prunable.cpu() & (x2 > 0)
        step = saliency_scores(x2, xd, d2, opt.layout.zig_numel.double().cpu(), live)
        expected = 0.8 * expected + 0.2 * torch.where(live, step, torch.zeros_like(step))
        opt.step()
    np.testing.assert_allclose(opt.scores[:5].double().numpy(), expected[:5].numpy(), rtol=1e-4)
    assert torch.isinf(opt.scores[5:]).all()  # stem and head are not erasable


# ------------------------------------------------------------------------------- training behaviour
def test_loss_decreases_and_only_selected_structures_vanish() -> None:
    model, analysis, opt = make(target_group_sparsity=0.4, start_pruning_steps=40, pruning_steps=60)
    losses = train(model, opt, batches(4, 200))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])
    assert zero_structures(model, analysis) == set(opt.selected or [])
    assert all(bool(p.abs().sum() > 0) for n, p in model.named_parameters() if n.startswith(("stem", "head")))


def test_adam_variant_reaches_the_target() -> None:
    model, analysis, opt = make(variant="adam", lr=1e-2, momentum=0.0, target_group_sparsity=0.6)
    train(model, opt, batches(5, 35))
    assert zero_structures(model, analysis) == set(opt.selected or []) and len(opt.selected or []) == 3


@given(k=st.integers(0, 5), seed=st.integers(0, 3), periods=st.integers(1, 4))
def test_any_target_ends_valid_and_exact(k: int, seed: int, periods: int) -> None:
    model, analysis, opt = make(
        seed=seed, target_structures=k, pruning_steps=8, start_pruning_steps=2, pruning_periods=periods
    )

    def check() -> None:
        assert analysis.valid(zero_structures(model, analysis))

    train(model, opt, batches(seed, 12), check)
    assert zero_structures(model, analysis) == set(opt.selected or [])
    assert len(opt.selected or []) == min(k, 4)


def test_zero_checkpoint_structures_lead_the_search_and_invalid_ones_are_released() -> None:
    model = ResidualMLP(3)
    with torch.no_grad():  # a checkpoint where both branches of the last block are zero: invalid
        for p in [*model.shortcut.parameters(), *model.last.parameters(), *model.blocks[1].parameters()]:
            p.zero_()
    analysis = hand_analysis(model)
    opt = H2SPG(model, analysis, lr=0.05, start_pruning_steps=2, pruning_steps=6, target_structures=3)
    assert set(opt.zero_zig_ids().tolist()) == {1, 3}  # ids in order: 1 and 3 stay held, 4 released
    assert analysis.valid(opt.zero_zig_ids().tolist())
    train(model, opt, batches(6, 10))
    assert opt.selected is not None and opt.selected[:2] == [1, 3]
    assert zero_structures(model, analysis) == set(opt.selected)


# ------------------------------------------------------------------------ determinism, state dicts
def test_two_runs_are_identical() -> None:
    runs = []
    for _ in range(2):
        model, _, opt = make(seed=7)
        train(model, opt, batches(7, 35))
        runs.append((opt.selected, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


@pytest.mark.parametrize("cut", [5, 12, 18, 33])  # warm-up, first window step, inside window, after
def test_state_dict_round_trip_continues_identically(cut: int) -> None:
    data = batches(8, 40)
    model, _, opt = make(seed=8, start_pruning_steps=11)
    train(model, opt, data[:cut])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train(model, opt, data[cut:])

    model2, _, opt2 = make(seed=99, start_pruning_steps=11)  # other weights, overwritten by the load
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    train(model2, opt2, data[cut:])
    assert opt2.selected == opt.selected
    assert torch.equal(opt2.scores, opt.scores)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- bad arguments
def test_rejects_a_pruning_analysis() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(ValueError, match="erase analysis"):
        H2SPG(model, linear_chain_analysis(model, ["0", "2"]))


def test_rejects_structures_that_cannot_vanish() -> None:
    model = ResidualMLP(2)
    analysis = hand_analysis(model)
    analysis.groups[1].min_keep = 1
    with pytest.raises(ValueError, match="min_keep"):
        H2SPG(model, analysis)


@pytest.mark.parametrize(
    "hp,match",
    [
        ({"saliency_momentum": 1.0}, "saliency_momentum"),
        ({"saliency_momentum": -0.1}, "saliency_momentum"),
        ({"target_structures": -1}, "target_structures"),
        ({"target_structures": 1.5}, "target_structures"),
        ({"target_group_sparsity": 1.5}, "target_group_sparsity"),
        ({"tolerance_group_sparsity": 0.1}, "tolerance_group_sparsity"),
        ({"group_divisible": 2}, "group_divisible"),
        ({"epsilon": 1.0}, "epsilon"),
        ({"pruning_steps": 0}, "pruning_steps"),
        ({"variant": "rmsprop"}, "variant"),
        ({"lmbda": -1.0}, "lmbda"),
    ],
)
def test_rejects_bad_hyperparameters(hp: dict, match: str) -> None:
    model = ResidualMLP(2)
    with pytest.raises(ValueError, match=match):
        H2SPG(model, hand_analysis(model), **hp)


# ------------------------------------------------------------------ the real erase analysis of a CNN
class Block(nn.Module):
    """A residual block; with ``stride`` or a width change its shortcut is a 1x1 conv (itself erasable)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(skip + self.body(x))


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(Block(8, 8), Block(8, 8), Block(8, 16, 2), Block(16, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def cnn_analysis():
    """The erase analysis of ResidualCNN (the same for every seed: it depends on the graph only)."""
    import frontends
    import graphcore

    model = ResidualCNN().eval()
    return graphcore.analyze(frontends.load(model, (torch.randn(2, 1, 8, 8),)), mode="erase")


def image_batches(seed: int, steps: int, batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Images whose class is the brightest of three regions: learnable by a few conv layers."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(batch, 1, 8, 8, generator=gen)
        regions = torch.stack(
            [x[:, 0, :4].mean((1, 2)), x[:, 0, 4:, :4].mean((1, 2)), x[:, 0, 4:, 4:].mean((1, 2))]
        )
        out.append((x, regions.argmax(0)))
    return out


def train_cnn(model: nn.Module, opt: H2SPG, data, check) -> list[float]:
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        check()
    return losses


def test_real_erase_analysis_cnn_erases_exactly_the_selection(cnn_analysis) -> None:
    analysis = cnn_analysis
    erasable = [s.id for s in analysis.structures if s.erasable]
    joints = {s.id: tuple(s.joints) for s in analysis.structures}
    pair = [s for s in erasable if joints[s] == joints[erasable[2]]]  # the conv-shortcut block's branches
    assert len(erasable) == 5 and len(pair) == 2 and not analysis.valid(pair)
    torch.manual_seed(0)
    model = ResidualCNN()
    opt = H2SPG(
        model,
        analysis,
        lr=0.05,
        momentum=0.9,
        target_group_sparsity=0.6,
        start_pruning_steps=15,
        pruning_steps=30,
        pruning_periods=3,
    )
    history: list[set[int]] = []

    def check() -> None:
        zero = zero_structures(model, analysis)
        assert analysis.valid(zero), analysis.why_invalid(zero)
        assert zero <= set(opt.selected or [])
        history.append(zero)

    losses = train_cnn(model, opt, image_batches(0, 80), check)
    assert opt.selected is not None and len(opt.selected) == 3 and set(opt.selected) <= set(erasable)
    assert history[15 + 30 - 1] == set(opt.selected) == history[-1]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_real_erase_analysis_search_skips_the_cutting_branch(cnn_analysis) -> None:
    analysis = cnn_analysis
    erasable = [s.id for s in analysis.structures if s.erasable]
    shortcut, body = [s.id for s in analysis.structures if s.erasable and "add_2" in s.joints]
    torch.manual_seed(1)
    model = ResidualCNN()
    opt = H2SPG(model, analysis, lr=0.05, start_pruning_steps=2, pruning_steps=10, target_structures=2)
    train_cnn(model, opt, image_batches(1, 2), lambda: None)
    with torch.no_grad():  # rank the two branches of the conv-shortcut block first
        for rank, sid in enumerate([shortcut, body, *[s for s in erasable if s not in (shortcut, body)]]):
            opt._ema[sid] = 10.0 - rank
    train_cnn(model, opt, image_batches(2, 12), lambda: None)
    nxt = next(s for s in erasable if s not in (shortcut, body))
    assert opt.selected == [shortcut, nxt]
    assert zero_structures(model, analysis) == {shortcut, nxt}


def test_foreach_plain_steps_give_the_same_numbers() -> None:
    results = []
    for foreach in (False, True):
        model, _, opt = make(seed=9, foreach=foreach)
        train(model, opt, batches(9, 40))  # the last steps are plain: the foreach path when asked
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*results))


# ---------------------------------------------------------------------------------------------- DDP
DDP_HP = dict(lr=0.05, momentum=0.9, target_structures=3, start_pruning_steps=4, pruning_steps=12)


def _ddp_train(model: nn.Module, module: ResidualMLP, rank: int, world: int) -> H2SPG:
    opt = H2SPG(model, hand_analysis(module), **DDP_HP)
    share = 32 // world
    for x, y in batches(10, 20):
        opt.zero_grad()
        loss_of(model, x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]).backward()
        opt.step()
    return opt


def _ddp_worker(rank: int, world: int, out: str) -> None:
    module = ResidualMLP(3, seed=10)
    opt = _ddp_train(nn.parallel.DistributedDataParallel(module), module, rank, world)
    result = {"params": [p.detach().clone() for p in module.parameters()], "selected": opt.selected}
    torch.save(result, f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_decide_alike_and_like_one_process(tmp_path) -> None:
    from tests.gloo import spawn_gloo

    spawn_gloo(_ddp_worker, tmp_path)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["selected"] == r1["selected"] and len(r0["selected"]) == 3
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))
    single = ResidualMLP(3, seed=10)
    opt = _ddp_train(single, single, 0, 1)
    assert opt.selected == r0["selected"]
    for a, b in zip(single.parameters(), r0["params"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------- nested structures, real analysis
class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = branch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class Outer(nn.Module):
    """``x + b(inner(tanh(a(x))))``: erasing ``b`` erases the whole block, ``a`` and the inner one too."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(WIDTH, WIDTH)
        self.inner = Inner()
        self.b = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.inner(torch.tanh(self.a(x))))


class NestedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, WIDTH)
        self.outer = nn.Sequential(Outer(), Outer())
        self.head = nn.Linear(WIDTH, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.outer(torch.tanh(self.stem(x))))


def test_nested_blocks_erase_validly_and_exactly() -> None:
    import frontends
    import graphcore

    torch.manual_seed(11)
    model = NestedNet()
    analysis = graphcore.analyze(frontends.load(model, (torch.randn(2, 4),)), mode="erase")
    by_param = {p: s for s in analysis.structures for p in s.params}
    blocks = [by_param[f"outer.{i}.b.weight"] for i in range(2)]
    assert all(s.erasable and s.children for s in blocks)  # the outer blocks nest the inner ones
    opt = H2SPG(
        model,
        analysis,
        lr=0.05,
        momentum=0.9,
        target_group_sparsity=1.0,
        start_pruning_steps=5,
        pruning_steps=15,
        pruning_periods=3,
    )

    def check() -> None:
        zero = zero_structures(model, analysis)
        assert analysis.valid(zero) and zero <= set(opt.selected or [])

    train(model, opt, batches(11, 25), check)
    erasable = {s.id for s in analysis.structures if s.erasable}
    # the outer blocks are selected; the inner ones go with them and count toward the target
    assert set(opt.selected or []) == {s.id for s in blocks} == zero_structures(model, analysis)
    assert analysis.erased_by(opt.selected or []) == erasable
    assert opt.sparsity_report().note is None
    # an erased block is gone for real: the network computes exactly what it computes without it
    x = torch.randn(16, 4)
    shallow = copy.deepcopy(model)
    shallow.outer = nn.Sequential(nn.Identity(), nn.Identity())
    assert torch.equal(model(x), shallow(x))


def test_trained_cnn_constructs_to_a_smaller_equal_module(cnn_analysis) -> None:
    import construct

    analysis = cnn_analysis
    torch.manual_seed(3)
    model = ResidualCNN()
    opt = H2SPG(
        model, analysis, lr=0.05, momentum=0.9, target_structures=3, start_pruning_steps=5, pruning_steps=10
    )
    train_cnn(model, opt, image_batches(3, 18), lambda: None)
    model.eval()
    small = construct.to_torch(model, analysis)  # erased structures found from the exact zeros
    full_params = sum(p.numel() for p in model.parameters())
    gone = sum(
        model.get_parameter(p).numel() for s in opt.selected or [] for p in analysis.structures[s].params
    )
    assert len(opt.selected or []) == 3 and gone > 0
    assert sum(p.numel() for p in small.parameters()) == full_params - gone
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-6)
