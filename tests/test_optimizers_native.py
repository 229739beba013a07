"""The fused CPU kernels (optimizers/fused_step.c) against the eager path they replace.

The kernels do a statistics step in two reads of each parameter; the eager path, which
tests/test_optimizers_reference.py checks against a dense reference, does the same arithmetic in
many torch operations. Here the kernels are checked directly against float64 torch math for every
layout and option they take (rows, columns or both, trailing runs of 1, 3 and 9, momentum with and
without dampening and weight decay, the plain step with held zero ZIGs, one and two threads), and
then whole optimizers are run twice from the same start, ``native=True`` and ``native=False``, over
warm-up, pruning window and after: same zero groups, same parameters up to float32 rounding.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import frontends
import graphcore
from optimizers import DHSPG, H2SPG, HSPG, fused, native

pytestmark = pytest.mark.skipif(
    native.kernels() is None and shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="no C compiler: the fused kernels cannot be built here (the eager path is used)",
)


def test_kernels_build_where_a_compiler_exists() -> None:
    # A broken source or build must fail here, not silently fall back to the eager path.
    assert native.kernels() is not None, native.status()
    assert "in use" in native.status()


def _owners(n: int, zigs: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, zigs, (n,), generator=gen)


def _owned(
    case: tuple, zigs: int, gen: torch.Generator
) -> tuple[torch.Tensor | None, torch.Tensor | None, fused.View]:
    """Random row and column owners of a test case's parameter, and its kernel view."""
    n0, n1, b, own_rows, own_cols = case
    rows = _owners(n0, zigs, gen) if own_rows else None
    cols = _owners(n1, zigs, gen) if own_cols else None
    return rows, cols, _view(n0, n1, b, rows, cols)


def _broadcast(
    per_zig: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None, op: str, n0: int, n1: int
) -> torch.Tensor:
    """A per-ZIG quantity combined (``op``: "sum" or "prod") over each entry's owners, ``[n0, n1, 1]``."""
    out = torch.full((n0, n1, 1), 0.0 if op == "sum" else 1.0, dtype=torch.float64)
    for owners, shape in ((rows, (n0, 1, 1)), (cols, (1, n1, 1))):
        if owners is not None:
            v = per_zig[owners].double().view(shape)
            out = out + v if op == "sum" else out * v
    return out


def _close_sum(got: torch.Tensor, terms: torch.Tensor, dims: tuple[int, ...]) -> None:
    """``got`` equals the float64 sum of ``terms`` over ``dims`` within float32 summation error
    (relative to the sum of magnitudes: sums that cancel are exact only to that)."""
    err = (got.double() - terms.sum(dims)).abs()
    assert bool((err <= 2e-6 * terms.abs().sum(dims) + 1e-9).all()), float(err.max())


def _view(n0: int, n1: int, b: int, rows: torch.Tensor | None, cols: torch.Tensor | None) -> fused.View:
    """The kernel view with the per-index vector laid out as the layout does: rows, then columns."""
    row_at = 0 if rows is not None else None
    col_at = (n0 if rows is not None else 0) if cols is not None else None
    return fused.View(n0, n1, b, row_at, col_at, False)


def _length(view: fused.View) -> int:
    return (view.n0 if view.row_at is not None else 0) + (view.n1 if view.col_at is not None else 0)


def _sweep1(
    view: fused.View,
    x: torch.Tensor,
    g: torch.Tensor,
    operands: tuple[torch.Tensor | None, float, float, float],
    step: tuple[float, float, torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One parameter through the whole-model kernel: D and the x², x·D, D² sums of each owned axis
    (rows first), read out of the per-index vector where the kernel wrote them."""
    kernels = native.kernels()
    assert kernels is not None
    buf, momentum, damp1, wd = operands
    lr, decay, keep = step if step is not None else (0.0, 1.0, None)
    out = torch.zeros((3, _length(view)))
    batch = fused.Batch([view])
    batch.sweep1(kernels, [0], [(x, g, buf)], (momentum, damp1, wd), [step is not None], lr, decay, keep, out)
    axes = [(at, n) for at, n in ((view.row_at, view.n0), (view.col_at, view.n1)) if at is not None]
    xx, xd, dd = ([out[q, at : at + n] for at, n in axes] for q in range(3))
    return (g if buf is None else buf), xx, xd, dd


def _sweep2(
    view: fused.View,
    x: torch.Tensor,
    d: torch.Tensor | None,
    coef: torch.Tensor,
    keep: torch.Tensor | None,
    lr: float,
    decay: float,
) -> list[torch.Tensor] | None:
    """One parameter's penalized step through the whole-model kernel: its cross terms (rows, then
    columns) when both axes are owned, else None (and nothing written)."""
    kernels = native.kernels()
    assert kernels is not None
    cross = torch.zeros(_length(view))
    fused.Batch([view]).sweep2(kernels, [0], [(x, d)], [False], lr, decay, coef, keep, cross)
    if view.row_at is None or view.col_at is None:
        assert not cross.any()
        return None
    return [cross[view.row_at : view.row_at + view.n0], cross[view.col_at : view.col_at + view.n1]]


def _at_index(per_zig: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None) -> torch.Tensor:
    """``ZigLayout.at_index`` of one parameter: the per-ZIG values read at its row and column owners."""
    return torch.cat([per_zig[o] for o in (rows, cols) if o is not None])


CASES = [
    # (n0, n1, b, rows owned, cols owned)
    (16, 12, 9, True, True),
    (7, 5, 1, True, True),
    (5, 33, 3, True, True),
    (9, 1, 40, True, False),  # rows only: [O, I*k*k] owned by output channels
    (6, 10, 1, False, True),  # columns only: a classifier's input features
    (4, 6, 9, False, True),
    (512, 64, 9, True, True),  # large enough to be split over threads (PARALLEL_MIN in fused_step.c)
    (300, 1024, 1, False, True),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opts", [(0.9, 0.0, 0.0), (0.9, 0.1, 1e-3), (0.0, 0.0, 0.0)])
@pytest.mark.parametrize("step", [False, True])
def test_sweep1_matches_torch(case: tuple, threads: int, opts: tuple, step: bool) -> None:
    n0, n1, b, own_rows, own_cols = case
    momentum, dampening, wd = opts
    if momentum == 0 and wd:
        pytest.skip("without momentum the kernels take D = g only")
    gen = torch.Generator().manual_seed(n0 * 100 + n1 * 10 + b)
    x = torch.randn(n0, n1, b, generator=gen)
    g = torch.randn(n0, n1, b, generator=gen)
    buf = torch.randn(n0, n1, b, generator=gen) if momentum else None
    zigs = 5
    rows_owner, cols_owner, view = _owned(case, zigs, gen)
    keep = torch.ones(zigs + 1)
    keep[2] = 0.0  # ZIG 2 is held at zero
    x0, g0 = x.double().clone(), g.double()
    d_ref = g0 + wd * x0
    if buf is not None:
        d_ref = momentum * buf.double() + (1 - dampening) * d_ref
    x_new, buf_new = x.clone(), None if buf is None else buf.clone()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ops = (buf_new, momentum, 1 - dampening, wd)
        held_at = _at_index(keep, rows_owner, cols_owner)
        d, xx, xd, dd = _sweep1(view, x_new, g, ops, (0.1, 0.99, held_at) if step else None)
    finally:
        torch.set_num_threads(old)
    assert torch.allclose(d.double(), d_ref, rtol=1e-5, atol=1e-6)
    for got, prod in zip((xx, xd, dd), (x0 * x0, x0 * d_ref, d_ref * d_ref)):
        dims = ([(1, 2)] if own_rows else []) + ([(0, 2)] if own_cols else [])
        assert len(got) == len(dims)
        for a, dim in zip(got, dims):
            assert a.dtype == torch.float32
            _close_sum(a, prod, dim)
    if step:
        k = _broadcast(keep, rows_owner, cols_owner, "prod", n0, n1)
        want_x = 0.99 * x0 - 0.1 * d_ref * k
        assert torch.allclose(x_new.double(), want_x, rtol=1e-5, atol=1e-6)
        held = k.expand_as(want_x) == 0
        if held.any():
            assert torch.equal(x_new[held], (x * 0.99)[held])  # held entries: decay only, no step
    else:
        assert torch.equal(x_new, x)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_d", [True, False])
@pytest.mark.parametrize("held", [True, False])
def test_sweep2_matches_torch(case: tuple, threads: int, with_d: bool, held: bool) -> None:
    n0, n1, b, own_rows, own_cols = case
    gen = torch.Generator().manual_seed(7 + n0 + n1 + b)
    x = torch.randn(n0, n1, b, generator=gen)
    d = torch.randn(n0, n1, b, generator=gen) if with_d else None
    zigs = 6
    rows_owner, cols_owner, view = _owned(case, zigs, gen)
    coef = torch.rand(zigs + 1, generator=gen)
    keep = torch.ones(zigs + 1)
    if held:
        keep[1] = 0.0
    x0 = x.double().clone()
    cr = coef[rows_owner].double() if rows_owner is not None else torch.zeros(n0, dtype=torch.float64)
    cc = coef[cols_owner].double() if cols_owner is not None else torch.zeros(n1, dtype=torch.float64)
    c = _broadcast(coef, rows_owner, cols_owner, "sum", n0, n1)
    k = _broadcast(keep, rows_owner, cols_owner, "prod", n0, n1)
    lr, decay = 0.05, 0.999
    want = (decay - lr * c) * x0
    if d is not None:
        want = want - lr * d.double() * k
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        c_at, k_at = _at_index(coef, rows_owner, cols_owner), _at_index(keep, rows_owner, cols_owner)
        cross = _sweep2(view, x, d, c_at, k_at if held else None, lr, decay)
    finally:
        torch.set_num_threads(old)
    assert torch.allclose(x.double(), want, rtol=1e-5, atol=1e-6)
    if own_rows and own_cols:
        assert cross is not None
        sq = x0 * x0
        _close_sum(cross[0], sq * cc.view(1, n1, 1), (1, 2))
        _close_sum(cross[1], sq * cr.view(n0, 1, 1), (0, 2))
    else:
        assert cross is None


class Net(nn.Module):
    """3x3 and 1x1 convolutions owned by rows and columns, a residual add, BatchNorm, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.wide = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.conv1(x))
        x = torch.relu(x + self.bn2(self.conv2(y)))
        x = torch.relu(self.wide(x)).mean((2, 3))
        return self.head(torch.relu(self.fc(x)))


def _run(
    opt_cls: type, mode: str, native_on: bool | None, steps: int, **hp: object
) -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = Net()
    analysis = graphcore.analyze(frontends.load(model, (torch.randn(1, 3, 8, 8),)), mode=mode)
    opt = opt_cls(model, analysis, native=native_on, **hp)
    assert (opt._kernels is not None) == (native_on is not False)
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(8, 3, 8, 8, generator=gen)
    target = torch.randint(0, 5, (8,), generator=gen)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data), target).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize(
    "opt_cls, mode, hp",
    [
        (DHSPG, "prune", dict(lr=0.05, momentum=0.9, target_group_sparsity=0.5, start_pruning_steps=3,
                              pruning_steps=12, pruning_periods=3)),
        (DHSPG, "prune", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3, epsilon=0.5,
                              target_group_sparsity=0.4, start_pruning_steps=2, pruning_steps=10)),
        (DHSPG, "prune", dict(lr=0.05, target_group_sparsity=0.3, start_pruning_steps=0, pruning_steps=8)),
        (HSPG, "prune", dict(lr=0.05, momentum=0.9, lmbda=2.0, epsilon=0.9, start_pruning_steps=2)),
        (H2SPG, "erase", dict(lr=0.05, momentum=0.9, target_group_sparsity=0.5, start_pruning_steps=3,
                              pruning_steps=8)),
    ],
)  # fmt: skip
def test_optimizer_native_equals_eager(opt_cls: type, mode: str, hp: dict) -> None:
    fast, fast_opt = _run(opt_cls, mode, True, 20, **hp)
    slow, slow_opt = _run(opt_cls, mode, False, 20, **hp)
    assert list(fast_opt.zero_zig_ids()) == list(slow_opt.zero_zig_ids())
    assert len(fast_opt.zero_zig_ids()) > 0  # the run really pruned: decisions were compared
    for (name, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
        assert torch.equal(a == 0, b == 0), name  # zeroed slices are exactly zero in both


def test_fused_path_is_taken_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    real1, real2 = fused.Batch.sweep1, fused.Batch.sweep2

    def spy1(self: fused.Batch, k: object, members: list[int], *a: object) -> None:
        calls.append(("1", len(members)))
        real1(self, k, members, *a)  # type: ignore[arg-type]

    def spy2(self: fused.Batch, k: object, members: list[int], *a: object) -> None:
        calls.append(("2", len(members)))
        real2(self, k, members, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(fused.Batch, "sweep1", spy1)
    monkeypatch.setattr(fused.Batch, "sweep2", spy2)
    _run(DHSPG, "prune", False, 6, lr=0.05, momentum=0.9, start_pruning_steps=2, pruning_steps=50)
    assert not calls  # native=False: the eager path
    _, opt = _run(DHSPG, "prune", None, 6, lr=0.05, momentum=0.9, start_pruning_steps=2, pruning_steps=50)
    grouped = opt.num_grouped
    # the first window step creates no buffer (warm-up did): every ZIG-holding parameter is fused,
    # vectors (biases, BatchNorm) included, in one call per sweep
    assert ("1", grouped) in calls and ("2", grouped) in calls


def test_float64_and_switch_off_keep_the_eager_path() -> None:
    torch.manual_seed(0)
    model = Net().double()
    analysis = graphcore.analyze(frontends.load(Net(), (torch.randn(1, 3, 8, 8),)))
    assert DHSPG(model, analysis)._kernels is None  # float64: eager, no error
    with pytest.raises(ValueError, match="float32 parameters on the CPU"):
        DHSPG(copy.deepcopy(model), analysis, native=True)
    code = (
        "from optimizers import native, DHSPG; import torch, graphcore, frontends\n"
        "print(native.status())\n"
        "m = torch.nn.Linear(4, 3)\n"
        "a = graphcore.analyze(frontends.load(torch.nn.Sequential(m), (torch.randn(1, 4),)))\n"
        "try:\n    DHSPG(torch.nn.Sequential(m), a, native=True)\n"
        "except ValueError as e:\n    print('refused:', e)\n"
    )
    env = dict(os.environ, ZIGRAPH_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "turned off by ZIGRAPH_NATIVE" in out.stdout
    assert "refused: native=True, but the fused kernels cannot be used" in out.stdout


def test_a_failed_build_falls_back_to_the_eager_path(tmp_path: Path) -> None:
    code = (
        "from optimizers import native, DHSPG; import torch, graphcore, frontends\n"
        "m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))\n"
        "a = graphcore.analyze(frontends.load(m, (torch.randn(1, 4),)))\n"
        "opt = DHSPG(m, a, lr=0.1, momentum=0.9, start_pruning_steps=1, pruning_steps=3)\n"
        "for _ in range(5):\n"
        "    opt.zero_grad(); m(torch.randn(8, 4)).pow(2).sum().backward(); opt.step()\n"
        "print(native.status()); print('zero', opt.num_zero())\n"
    )
    env = dict(os.environ, CC="/bin/false", XDG_CACHE_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "eager steps only: could not build or load fused_step.c" in out.stdout
    assert "zero 1" in out.stdout  # the optimizer still pruned, on the eager path
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built left in the cache


def test_results_do_not_depend_on_the_thread_count() -> None:
    # The wide layer (above an even share of the model) is split by rows over the threads, the others
    # are handed whole to threads: either way every sum is added in one fixed order. Gradients are
    # fixed tensors, so only the optimizer runs with 1 or 2 threads.
    def run(threads: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        layers = [nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10)]
        model = nn.Sequential(*layers)
        analysis = graphcore.analyze(frontends.load(model, (torch.randn(1, 256),)))
        hp = dict(lr=0.05, momentum=0.9, start_pruning_steps=2, pruning_steps=6, native=True)
        opt = DHSPG(model, analysis, **hp)
        gen = torch.Generator().manual_seed(3)
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for _ in range(10):
                for p in model.parameters():
                    p.grad = torch.randn(p.shape, generator=gen) * 0.1
                opt.step()
        finally:
            torch.set_num_threads(old)
        assert opt.num_zero() > 0
        return [p.detach().clone() for p in model.parameters()]

    one, two = run(1), run(2)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("b", [1, 9])
def test_kernel_sums_do_not_depend_on_the_thread_count(b: int) -> None:
    outs = []
    for threads in (1, 2):
        gen = torch.Generator().manual_seed(5)
        n0, n1 = 1024, 600 // b
        x, g, buf = (torch.randn(n0, n1, b, generator=gen) for _ in range(3))
        view = fused.View(n0, n1, b, 0, n0, False)
        coef = torch.rand(n0 + n1, generator=gen)
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _, xx, xd, dd = _sweep1(view, x, g, (buf, 0.9, 1.0, 0.0))
            cross = _sweep2(view, x, buf, coef, None, 0.1, 1.0)
        finally:
            torch.set_num_threads(old)
        assert cross is not None
        outs.append([*xx, *xd, *dd, *cross, x, buf])
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_an_unusable_cache_folder_builds_into_a_temporary_one() -> None:
    """The kernels still load, and the private folder they were built in is not left behind."""
    code = (
        "from optimizers import native; k = native.kernels(); print(native.status());"
        "print('left behind' if k.path.parent.exists() else 'cleaned up')"
    )
    env = dict(os.environ, XDG_CACHE_HOME="/dev/null/cache")  # cannot be created
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fused CPU kernels in use" in out.stdout and "zigraph-kernels-" in out.stdout
    assert "cleaned up" in out.stdout
