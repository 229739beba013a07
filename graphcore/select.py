"""One-shot choice of ZIGs to remove: a global ranking that never empties a group."""

from __future__ import annotations

import numpy as np

from graphcore.errors import ZigraphError
from graphcore.groups import PruneAnalysis

__all__ = ["CRITERIA", "select_zigs"]

CRITERIA = ("l2", "random")


def select_zigs(
    analysis: PruneAnalysis,
    sparsity: float,
    scores: np.ndarray | None = None,
    criterion: str = "l2",
    seed: int | None = 0,
    multiple: int = 1,
) -> np.ndarray:
    """Remove ``round(sparsity × #prunable ZIGs)`` ZIGs, lowest score first, keeping every group alive.

    ``scores`` has one entry per ZIG (for ``l2``: the ZIG's norm relative to its group's mean norm, so
    layers of different scale compete fairly). ``random`` ignores scores and draws with ``seed``.
    ``multiple`` > 1 keeps a multiple of that many channels in every pruned group (hardware kernels
    run ragged widths slowly): the highest-ranked removals of a group are given back.
    """
    if multiple < 1:
        raise ZigraphError(f"multiple must be >= 1, got {multiple}")
    if not 0.0 <= sparsity < 1.0:
        raise ZigraphError(f"sparsity must be in [0, 1), got {sparsity}")
    if criterion not in CRITERIA:
        raise ZigraphError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    cand = analysis.prunable_zig_ids()
    target = round(sparsity * cand.size)
    if target == 0 or cand.size == 0:
        return np.zeros(0, dtype=np.int64)
    if criterion == "random" or scores is None:
        rng = np.random.default_rng(seed)
        order = cand[rng.permutation(cand.size)]
    else:
        order = cand[np.argsort(scores[cand], kind="stable")]
    budget = {g.id: g.size - g.min_keep for g in analysis.groups if g.prunable}
    chosen: list[int] = []
    zg = analysis.zig_group
    for z in order.tolist():
        gid = int(zg[z])
        if budget[gid] > 0:
            budget[gid] -= 1
            chosen.append(z)
            if len(chosen) == target:
                break
    if multiple > 1:
        chosen = _round_kept(analysis, chosen, multiple)
    return np.array(sorted(chosen), dtype=np.int64)


def _round_kept(analysis: PruneAnalysis, chosen: list[int], multiple: int) -> list[int]:
    """``chosen`` is in removal order; drop each group's last picks until its kept count is a multiple."""
    per_group: dict[int, list[int]] = {}
    for z in chosen:
        per_group.setdefault(int(analysis.zig_group[z]), []).append(z)
    out: list[int] = []
    for gid, zs in per_group.items():
        size = analysis.groups[gid].size
        extra = (-(size - len(zs))) % multiple
        out.extend(zs[: len(zs) - extra] if extra <= len(zs) else [])
    return out


def relative_scores(analysis: PruneAnalysis, norms: np.ndarray) -> np.ndarray:
    """Each ZIG's norm divided by the mean norm of its group."""
    out = np.zeros_like(norms, dtype=np.float64)
    for g in analysis.groups:
        n = norms[g.zig_ids]
        mean = float(n.mean()) if n.size else 0.0
        out[g.zig_ids] = n / mean if mean > 0 else n
    return out
