"""One-shot selection: the requested fraction, never an empty group, optional width multiples."""

import numpy as np
import pytest

from graphcore.errors import ZigraphError
from graphcore.select import rank_within_groups, select_with_caps, select_zigs, zig_norms
from tests.helpers import analyze
from tests.test_onnx_patterns import concat, residual


def test_fraction_and_groups_kept_alive():
    a = analyze(residual().model())
    n = a.prunable_zig_ids().size
    chosen = select_zigs(a, 0.9, criterion="random", seed=3)
    assert len(chosen) == round(0.9 * n) or all(
        (a.zig_group[chosen] == g.id).sum() == g.size - g.min_keep for g in a.prunable_groups
    )
    for g in a.prunable_groups:
        assert (a.zig_group[chosen] == g.id).sum() <= g.size - g.min_keep


def test_lowest_scores_go_first():
    a = analyze(concat().model())
    scores = np.arange(a.num_zigs, dtype=float)[::-1].copy()
    chosen = select_zigs(a, 0.25, scores=scores)
    cand = a.prunable_zig_ids()
    worst = cand[np.argsort(scores[cand])][: len(chosen)]
    assert set(chosen) == set(worst)


def test_multiple_keeps_widths_divisible():
    a = analyze(residual().model())
    chosen = select_zigs(a, 0.5, criterion="random", seed=0, multiple=4)
    for g in a.prunable_groups:
        kept = g.size - int((a.zig_group[chosen] == g.id).sum())
        assert kept % 4 == 0 or kept == g.size


def test_bad_arguments():
    a = analyze(residual().model())
    with pytest.raises(ZigraphError):
        select_zigs(a, 1.0)
    with pytest.raises(ZigraphError):
        select_zigs(a, 0.5, criterion="magic")
    with pytest.raises(ZigraphError):
        select_zigs(a, 0.5, multiple=0)


def test_select_with_caps_room_budget_priority_and_ties_by_id():
    group = np.array([0, 0, 0, 1, 1, 2, 1])
    priority = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 0.0, 4.0])
    assert rank_within_groups(group, priority).tolist() == [2, 0, 1, 2, 0, 0, 1]  # 4 before 6: a tie
    cand = np.array([True, True, True, True, True, False, True])
    room = np.array([2, 1, 5])
    assert np.nonzero(select_with_caps(cand, priority, group, room))[0].tolist() == [1, 2, 4]
    assert np.nonzero(select_with_caps(cand, priority, group, room, budget=2))[0].tolist() == [1, 2]
    assert not select_with_caps(cand, priority, group, room, budget=0).any()


def _greedy(a, sparsity, order, multiple):
    """The specification, one ZIG at a time: walk ``order``, take a ZIG while its group has room, stop
    at the target; then give back each group's last picks until its kept count is a multiple."""
    target = round(sparsity * a.prunable_zig_ids().size)
    room = {g.id: g.size - g.min_keep for g in a.prunable_groups}
    taken: list[int] = []
    for z in order:
        if len(taken) == target:
            break
        g = int(a.zig_group[z])
        if room[g] > 0:
            room[g] -= 1
            taken.append(int(z))
    out = []
    for g in a.prunable_groups:
        mine = [z for z in taken if a.zig_group[z] == g.id]
        extra = (-(g.size - len(mine))) % multiple
        out += mine[: len(mine) - extra] if extra <= len(mine) else []
    return sorted(out)


@pytest.mark.parametrize("make", [residual, concat])
def test_select_zigs_is_the_greedy_walk(make):
    a = analyze(make().model())
    cand = a.prunable_zig_ids()
    for seed in range(8):
        scores = np.random.default_rng(seed).integers(0, 3, a.num_zigs).astype(float)  # many ties
        for sparsity, multiple in [(0.3, 1), (0.5, 2), (0.8, 4)]:
            order = cand[np.argsort(scores[cand], kind="stable")]
            got = select_zigs(a, sparsity, scores=scores, multiple=multiple)
            assert got.tolist() == _greedy(a, sparsity, order, multiple)
            drawn = cand[np.random.default_rng(seed).permutation(cand.size)]
            got = select_zigs(a, sparsity, criterion="random", seed=seed, multiple=multiple)
            assert got.tolist() == _greedy(a, sparsity, drawn, multiple)


def test_zig_norms_sum_every_trainable_slice():
    a = analyze(concat().model())
    rng = np.random.default_rng(0)
    arrays = {name: rng.standard_normal(shape) for name, shape in a.param_shapes.items()}
    norms = zig_norms(a, arrays)
    for z in range(a.num_zigs):
        sq = sum(
            float((np.take(arrays[s.param], list(s.indices), axis=s.axis) ** 2).sum())
            for s in a.zig_slices(z)
            if a.trainable[s.param]
        )
        assert norms[z] == pytest.approx(sq**0.5, rel=1e-12)
    assert zig_norms(a, {}).tolist() == [0.0] * a.num_zigs
