"""One-shot selection: the requested fraction, never an empty group, optional width multiples."""

import numpy as np
import pytest

from graphcore.errors import ZigraphError
from graphcore.select import select_zigs
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
