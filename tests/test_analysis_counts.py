"""The report's parameter counts against a scalar-by-scalar recount.

``PruneAnalysis.params_prunable`` is computed per distinct owner array in one vectorized pass, and a
stored weight read several times (aliases) intersects its reads' masks; this recounts it the slow way,
marking every covered scalar of every stored tensor, on graphs with and without shared weights.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import frontends
import graphcore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from analysis_speed import synthetic_model

from tests.test_onnx_sources import _shared_bias_model


def _recount(a: graphcore.PruneAnalysis) -> tuple[int, int]:
    """(params_total, params_prunable) by marking each stored scalar a prunable ZIG covers."""
    prunable = np.zeros(a.num_zigs + 1, dtype=bool)
    for g in a.groups:
        if g.prunable:
            prunable[g.zig_ids] = True
    covered: dict[str, np.ndarray] = {}
    for (name, axis), owner in a.param_axes.items():
        if not a.trainable.get(name):
            continue
        v = a.graph.values[name]
        stored = v.alias_of or name
        shape = a.param_shapes[stored]
        mask = covered.setdefault(stored, np.zeros(shape, dtype=bool))
        along = prunable[owner]  # owner -1 reads the sentinel: not covered
        view = [1] * len(shape)
        view[axis] = len(along)
        mask |= along.reshape(view)
    total = sum(
        math.prod(v.static_shape or ())
        for v in a.graph.values.values()
        if v.is_param and v.trainable and v.alias_of is None
    )
    return total, sum(int(m.sum()) for m in covered.values())


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: synthetic_model(200, "conv"), id="conv"),
        pytest.param(lambda: synthetic_model(100, "mlp"), id="mlp"),
        pytest.param(_shared_bias_model, id="shared-bias"),
    ],
)
def test_params_counts_match_a_scalar_recount(model):
    a = graphcore.analyze(frontends.load(model()))
    total, prunable = _recount(a)
    assert a.params_total == total
    assert a.params_prunable == prunable
    assert 0 < prunable <= total


def test_a_scalar_counts_when_any_read_of_its_weight_covers_it():
    """Two reads of one stored bias, only one of them in a prunable group: every scalar is still
    covered (by that read); with neither, none is. The counts must intersect the reads, not add them."""
    a = graphcore.analyze(frontends.load(_shared_bias_model()))
    readers = [g for g in a.groups if any(p.startswith("b1") for p, _ in g.params)]
    assert len(readers) == 2 and all(g.prunable for g in readers)
    before = a.params_prunable
    readers[0].prunable = False
    assert a.params_prunable == _recount(a)[1]
    readers[1].prunable = False
    assert a.params_prunable == _recount(a)[1] < before
