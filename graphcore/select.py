"""Choosing ZIGs to remove: one rule for every caller, one-shot selection and optimizers alike.

The rule (``select_with_caps``): among the candidate ZIGs, take at most ``room[g]`` from each node
group and at most ``budget`` in all, lowest ``priority`` first, ties broken by ZIG id. Optimizers call
it every step with their own priorities (through ``optimizers.selection``, which converts tensors);
``select_zigs`` is the one-shot choice of the ``zigraph prune`` command built on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphcore.errors import ZigraphError
from graphcore.groups import PruneAnalysis
from graphcore.widths import group_multiples

__all__ = [
    "CRITERIA",
    "rank_within_groups",
    "relative_scores",
    "select_with_caps",
    "select_zigs",
    "zig_norms",
]

CRITERIA = ("l2", "random")


def rank_within_groups(group: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each element among those with the same ``group``, by ascending priority.

    Ties keep index order (both sorts are stable), so the ranking is a pure function of its inputs:
    the same on every DDP rank. O(n log n).
    """
    n = group.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    by_priority = np.argsort(priority, kind="stable")
    order = by_priority[np.argsort(group[by_priority], kind="stable")]
    sorted_group = group[order]
    counts = np.bincount(sorted_group)
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64) - starts[sorted_group]
    return rank


def select_with_caps(
    candidates: np.ndarray,
    priority: np.ndarray,
    group: np.ndarray,
    room: np.ndarray,
    budget: int | None = None,
) -> np.ndarray:
    """The subset of ``candidates`` (bool per ZIG) to take: at most ``room[g]`` per group, ``budget``
    in all, lowest ``priority`` first, ties by ZIG id. Returns a bool mask like ``candidates``."""
    ids = np.nonzero(candidates)[0]
    out = np.zeros(candidates.shape[0], dtype=bool)
    if ids.size == 0 or (budget is not None and budget <= 0):
        return out
    pri = priority[ids]
    rank = rank_within_groups(group[ids], pri)
    keep = rank < room[group[ids]]
    ids, pri = ids[keep], pri[keep]
    if budget is not None and ids.size > budget:
        ids = ids[np.argsort(pri, kind="stable")[:budget]]
    out[ids] = True
    return out


def select_zigs(
    analysis: PruneAnalysis,
    sparsity: float,
    scores: np.ndarray | None = None,
    criterion: str = "l2",
    seed: int | None = 0,
    multiple: int | None = None,
) -> np.ndarray:
    """Remove ``round(sparsity × #prunable ZIGs)`` ZIGs, lowest score first, keeping every group alive,
    then round each group's kept width to a multiple its kernels run fast at.

    ``scores`` has one entry per ZIG (for ``l2``: the ZIG's norm relative to its group's mean norm, so
    layers of different scale compete fairly). ``random`` ignores scores and draws with ``seed``.
    Rounding gives back a group's highest-ranked removals until its kept width is a multiple (or it
    keeps everything), so the result removes at most the requested fraction, short of it by less than
    one multiple per group. ``multiple=None`` (the default) takes each group's multiple from the op
    table (``graphcore.widths.group_multiples``: 8 channels for convolutions, 16 for matrix products);
    an integer N > 1 imposes N channels on every group instead, and 1 turns rounding off. A ZIG that
    spans several channels (an attention head) counts as that many.
    """
    if multiple is not None and multiple < 1:
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
    # The removal order as a priority (its position), so ties cannot reorder it.
    position = np.full(analysis.num_zigs, np.iinfo(np.int64).max, dtype=np.int64)
    position[order] = np.arange(order.size, dtype=np.int64)
    candidates = np.zeros(analysis.num_zigs, dtype=bool)
    candidates[cand] = True
    room = np.zeros(len(analysis.groups), dtype=np.int64)
    for g in analysis.prunable_groups:
        room[g.id] = g.size - g.min_keep
    chosen = np.nonzero(select_with_caps(candidates, position, analysis.zig_group, room, target))[0]
    if multiple != 1:
        chosen = _round_kept(analysis, chosen, position, group_multiples(analysis, multiple))
    return chosen.astype(np.int64)


def _round_kept(
    analysis: PruneAnalysis, chosen: np.ndarray, position: np.ndarray, multiple: np.ndarray
) -> np.ndarray:
    """Per group, give back the last removals (by ``position``) until its kept count is a multiple
    of that group's entry in ``multiple``."""
    group = analysis.zig_group[chosen]
    rank = rank_within_groups(group, position[chosen])
    taken = np.bincount(group, minlength=len(analysis.groups))
    size = np.array([g.size for g in analysis.groups], dtype=np.int64)
    extra = (-(size - taken)) % multiple
    # A group that cannot reach a multiple by giving back removals keeps all its channels.
    allowed = np.where(extra <= taken, taken - extra, 0)
    return chosen[rank < allowed[group]]


def zig_norms(analysis: PruneAnalysis, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """L2 norm of every ZIG over all its slices of trainable parameters (the ``l2`` criterion).

    ``arrays`` maps parameter names to their values, from any framework: the ONNX lowering reads the
    initializers (``construct.zig_norms``), the torch one shares the module's tensors
    (``construct.torch_zeros.trainable_arrays``). Parameters missing from it, frozen ones and arrays
    whose axis does not match the analysis add nothing.
    """
    sq = np.zeros(analysis.num_zigs, dtype=np.float64)
    for (name, axis), owner in analysis.param_axes.items():
        found = arrays.get(name)
        if found is None or not analysis.trainable.get(name):
            continue
        arr = np.asarray(found)
        if arr.ndim <= axis or arr.shape[axis] != owner.shape[0]:
            continue
        per = _squares_along(arr, axis)
        hit = owner >= 0
        np.add.at(sq, owner[hit], per[hit])
    return np.sqrt(sq)


def _squares_along(arr: np.ndarray, axis: int) -> np.ndarray:
    """Sum of squares of ``arr`` for each index of ``axis``, accumulated in float64 chunk by chunk:
    no float64 copy of the tensor (a memory-mapped weight of a model past 2 GB is read once)."""
    letters = "abcdefghijklmnopqrstuvwxyz"[: arr.ndim]
    spec = f"{letters},{letters}->{letters[axis]}"
    return np.einsum(spec, arr, arr, dtype=np.float64, casting="safe")


def relative_scores(analysis: PruneAnalysis, norms: np.ndarray) -> np.ndarray:
    """Each ZIG's norm divided by the mean norm of its group."""
    out = np.zeros_like(norms, dtype=np.float64)
    for g in analysis.groups:
        n = norms[g.zig_ids]
        mean = float(n.mean()) if n.size else 0.0
        out[g.zig_ids] = n / mean if mean > 0 else n
    return out
