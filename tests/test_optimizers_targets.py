"""Targets in the user's units and an honest schedule: what a new user of DHSPG meets.

The digits CNN of ``zigraph demo`` is trained as a user would (a few epochs, the schedule given in
epochs or as a fraction of the run, the target in parameters or FLOPs kept); the constructed model
is counted, not the optimizer's own bookkeeping: it must keep at most the target and not more than
one ZIG below it. A run shorter than its pruning window must say so, with numbers, in
``progress()`` and in ``construct.to_torch``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import construct
import frontends
import graphcore
import optimizers
from optimizers.budget import KeptModel
from optimizers.dhspg import resolve_schedule
from optimizers.progress import TargetNotReachedWarning
from zigraph.demo import DemoNet, _digits, _train

EPOCHS = 4
STEPS_PER_EPOCH = 22  # 1347 training images in batches of 64


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, graphcore.PruneAnalysis, tuple]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = _digits()
    model = DemoNet()
    analysis = graphcore.analyze(frontends.load(model, (data[0][:1],)))
    return model, analysis, data


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _one_zig_params(analysis: graphcore.PruneAnalysis) -> int:
    """The most parameters removing one more ZIG can take away (its slices, counted in full)."""
    km = KeptModel(analysis)
    per = np.zeros(analysis.num_zigs + 1)
    for p in km.params:
        for own in p.owners:
            np.add.at(per, own, p.numel / own.size)
    return int(per[:-1].max())


def test_schedule_in_epochs_and_fractions() -> None:
    assert resolve_schedule(None, None) == (0, 1000)
    in_epochs = resolve_schedule(None, None, steps_per_epoch=22, start_pruning_epochs=1, pruning_epochs=3)
    assert in_epochs == (22, 66)
    assert resolve_schedule(None, None, total_steps=200) == (20, 100)
    assert resolve_schedule(0.25, 0.5, total_steps=200) == (50, 100)
    assert resolve_schedule(10, 50, total_steps=200) == (10, 50)
    with pytest.raises(ValueError, match="after the run's total_steps=100"):
        resolve_schedule(0, 1000, total_steps=100)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        resolve_schedule(None, None, pruning_epochs=3)
    with pytest.raises(ValueError, match="total_steps"):
        resolve_schedule(None, 0.5)
    with pytest.raises(ValueError, match="not both"):
        resolve_schedule(None, 10, steps_per_epoch=5, pruning_epochs=1)


@pytest.mark.parametrize("unit,target", [("params", 0.3), ("flops", 0.5)])
def test_kept_target_reached_within_one_zig(setup, unit: str, target: float) -> None:
    model0, analysis, data = setup
    model = copy.deepcopy(model0)
    opt = optimizers.get("dhspg")(
        model,
        analysis,
        lr=0.05,
        momentum=0.9,
        epsilon=0.9,
        steps_per_epoch=STEPS_PER_EPOCH,
        start_pruning_epochs=1,
        pruning_epochs=2,
        **{f"target_{unit}_kept": target},
    )
    _train(model, opt, data, EPOCHS, "targets", quiet=True)
    progress = opt.progress()
    assert progress.reached and progress.note is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", TargetNotReachedWarning)
        small = construct.to_torch(model, analysis)
    if unit == "params":
        kept = _count(small) / _count(model)
        assert kept == pytest.approx(progress.params_kept, abs=1e-9)  # the prediction is the count
        assert kept <= target < kept + _one_zig_params(analysis) / _count(model)
    else:
        flops = graphcore.analyze(frontends.load(small, (data[0][:1],))).flops_total / analysis.flops_total
        assert flops == pytest.approx(progress.flops_kept, abs=1e-9)
        assert flops <= target
        # one ZIG fewer would keep more than the target: the count is the shortest that reaches it
        assert progress.zero_zigs == progress.target_zigs
    with torch.no_grad():  # and the small model is the trained one
        x = data[2][:64]
        torch.testing.assert_close(small.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_short_run_says_the_target_was_not_reached(setup) -> None:
    model0, analysis, data = setup
    model = copy.deepcopy(model0)
    opt = optimizers.get("dhspg")(model, analysis, lr=0.05, momentum=0.9, target_group_sparsity=0.7)
    _train(model, opt, data, 2, "short", quiet=True)  # 44 steps; the default window is 1000
    progress = opt.progress()
    assert not progress.reached
    assert progress.steps_done == 2 * STEPS_PER_EPOCH and progress.window_end == 1000
    assert progress.note is not None and "runs from step 1 to 1000" in progress.note
    assert progress.params_kept < 1.0 or progress.zero_zigs < (progress.target_zigs or 0)
    with pytest.warns(TargetNotReachedWarning, match=r"did not reach its target .*ZIGs are zero, keeping"):
        construct.to_torch(model, analysis)


def test_total_steps_fits_the_window_in_the_run(setup) -> None:
    model0, analysis, data = setup
    model = copy.deepcopy(model0)
    steps = 2 * STEPS_PER_EPOCH
    opt = optimizers.get("dhspg")(
        model, analysis, lr=0.05, momentum=0.9, target_group_sparsity=0.5, total_steps=steps, epsilon=0.9
    )
    _train(model, opt, data, 2, "total", quiet=True)
    progress = opt.progress()
    assert progress.reached and progress.window_end <= steps
    assert progress.zero_zigs == progress.target_zigs == opt.target_count(0.5)
