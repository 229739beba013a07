"""Shared checks: find a group by a parameter axis, prune a random subset and prove it exact."""

from __future__ import annotations

import numpy as np
import onnx

import construct
import frontends
import graphcore
from construct.onnx_construct import zero_slices
from construct.verify import compare_models
from frontends.onnx_schemas import hide_ort_only_ops
from graphcore.groups import NodeGroup, PruneAnalysis


def analyze(model: onnx.ModelProto) -> PruneAnalysis:
    return graphcore.analyze(frontends.load(model))


def group_of(analysis: PruneAnalysis, param: str, axis: int) -> NodeGroup:
    hits = [g for g in analysis.groups if (param, axis) in g.params]
    assert hits, f"no group holds {param} axis {axis}; groups: {[g.params for g in analysis.groups]}"
    assert len(hits) == 1, f"{param} axis {axis} is in several groups"
    return hits[0]


def params_of(group: NodeGroup) -> set[tuple[str, int]]:
    return set(group.params)


def random_removal(
    analysis: PruneAnalysis, rng: np.random.Generator, fraction: float | None = None
) -> np.ndarray:
    """A random subset of prunable ZIGs that leaves every group at least ``min_keep`` channels.

    Every prunable group that can lose a channel loses at least one: a removal of nothing would prove
    nothing.
    """
    chosen: list[int] = []
    for g in analysis.groups:
        cap = g.size - g.min_keep
        if not g.prunable or cap < 1:
            continue
        k = int(rng.integers(1, cap + 1)) if fraction is None else max(1, round(fraction * cap))
        chosen.extend(rng.choice(g.zig_ids, size=k, replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def assert_exact(analysis: PruneAnalysis, removed: np.ndarray, rtol: float = 1e-5, samples: int = 2):
    small, plan = construct.prune_onnx(analysis, removed)
    checked = onnx.ModelProto()
    checked.CopyFrom(small)
    hide_ort_only_ops(checked)  # ops onnxruntime declares in the ONNX domain: unknown to onnx.checker
    onnx.checker.check_model(checked, full_check=True)
    g = analysis.graph
    zeroed = zero_slices(g.meta["model"], g.meta.get("base_dir"), plan.removed)
    rep = compare_models(zeroed, small, samples=samples, rtol=rtol)
    assert rep.passed, rep
    return small, plan, rep
