"""What a set of zero ZIGs leaves of a model: parameters and FLOPs kept, and the removal count a
target in those units asks for.

Why: users decide in parameters or FLOPs kept, not in a fraction of ZIGs (a ZIG of a 3x3 conv with
512 inputs weighs a thousand times a ZIG of a 16-channel stem). Removing a ZIG shrinks every axis it
owns, so a parameter keeps ``prod over owned axes of kept/size`` of its scalars — exact, overlaps
included (a weight whose rows and columns are both pruned loses the union, counted once). FLOPs are
attributed as the analysis does: each node's cost (op table ``cost`` hook) to the weights it reads,
scaled by the same product — exact for convolutions and matrix products, whose cost is linear in
each channel axis of their weight; nodes that read no weight count as kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from graphcore.analysis import node_flops
from graphcore.groups import PruneAnalysis

__all__ = ["KeptModel", "count_for_target", "removal_order"]


@dataclass(frozen=True)
class _Param:
    numel: int
    flops: int
    owners: tuple[np.ndarray, ...]  # per owned axis; -1 mapped to the sentinel num_zigs


class KeptModel:
    """Parameters and FLOPs kept by a model of ``analysis`` when a set of ZIGs is removed."""

    def __init__(self, analysis: PruneAnalysis) -> None:
        self.num_zigs = analysis.num_zigs
        graph = analysis.graph
        values = graph.values if graph is not None else {}
        flops_of: dict[str, int] = {}
        if graph is not None:
            for node in graph.nodes:
                f = node_flops(node)
                if f:
                    for v in node.inputs:
                        if v is not None and v.is_param and v.rank and v.rank >= 2:
                            flops_of[v.name] = flops_of.get(v.name, 0) + f
        axes: dict[str, dict[int, np.ndarray]] = {}
        for (name, axis), owner in analysis.param_axes.items():
            if not analysis.trainable.get(name):
                continue
            v = values.get(name)
            stored = v.alias_of if v is not None and v.alias_of is not None else name
            own = np.asarray(owner, dtype=np.int64)
            axes.setdefault(stored, {}).setdefault(axis, np.where(own >= 0, own, self.num_zigs))
        self.params: list[_Param] = []
        for name, per_axis in axes.items():
            shape = analysis.param_shapes.get(name, ())
            numel = math.prod(shape) if shape else 1
            owners = tuple(per_axis[a] for a in sorted(per_axis))
            self.params.append(_Param(numel, flops_of.get(name, 0), owners))
        shapes = analysis.param_shapes
        fallback = sum(math.prod(s) for n, s in shapes.items() if analysis.trainable.get(n))
        self.params_total = int(analysis.params_total or fallback)
        self.flops_total = int(analysis.flops_total)

    def kept(self, removed: np.ndarray) -> tuple[float, float]:
        """(parameters kept, FLOPs kept) as fractions of the model's, for ``removed`` (bool per ZIG)."""
        gone = np.zeros(self.num_zigs + 1, dtype=bool)
        gone[: removed.shape[0]] = removed[: self.num_zigs + 1]
        gone[self.num_zigs] = False
        params_out = flops_out = 0.0
        for p in self.params:
            frac = 1.0
            for own in p.owners:
                frac *= 1.0 - gone[own].sum() / max(own.size, 1)
            params_out += p.numel * (1.0 - frac)
            flops_out += p.flops * (1.0 - frac)
        params = 1.0 - params_out / self.params_total if self.params_total else 1.0
        flops = 1.0 - flops_out / self.flops_total if self.flops_total else 1.0
        return params, flops


def removal_order(score: np.ndarray, eligible: np.ndarray, group: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """ZIG ids in the order a growing budget takes them: highest ``score`` first, ties by id, at most
    ``cap[g]`` of node group g (the rule of ``select_with_caps``, so every prefix is what it picks)."""
    from graphcore.select import rank_within_groups

    ids = np.nonzero(eligible)[0]
    if ids.size == 0:
        return ids
    pri = -score[ids]
    ids = ids[rank_within_groups(group[ids], pri) < cap[group[ids]]]
    return ids[np.lexsort((ids, -score[ids]))]


def count_for_target(model: KeptModel, order: np.ndarray, unit: str, target: float) -> int:
    """The smallest k such that removing ``order[:k]`` keeps at most ``target`` of the model's
    ``unit`` ("params" or "flops"); ``len(order)`` when even all of them keep more. Kept is monotone
    in k, so a bisection finds it: k - 1 ZIGs keep more than the target (exact within one ZIG)."""
    which = 0 if unit == "params" else 1
    mask = np.zeros(model.num_zigs + 1, dtype=bool)

    def kept(k: int) -> float:
        mask[:] = False
        mask[order[:k]] = True
        return model.kept(mask)[which]

    lo, hi = 0, int(order.size)
    if kept(hi) > target:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if kept(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo
