"""Choosing ZIGs under per-node-group and global budgets, vectorized.

Every optimizer that zeroes groups must respect two limits: a node group keeps at least ``min_keep``
of its ZIGs (construct cannot remove a whole channel space), and a target sparsity caps the total.
When more ZIGs qualify than the limits allow, the ones with the lowest ``priority`` go first, ties
broken by ZIG id, so the choice is the same on every DDP rank.
"""

from __future__ import annotations

import torch

__all__ = ["rank_within_groups", "select_with_caps"]


def rank_within_groups(group: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """Rank (0 = first) of each element among those with the same ``group``, by ascending priority."""
    n = group.numel()
    if n == 0:
        return group.new_zeros(0)
    by_priority = torch.sort(priority, stable=True).indices
    order = by_priority[torch.sort(group[by_priority], stable=True).indices]
    sorted_group = group[order]
    counts = torch.bincount(sorted_group)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=group.device) - starts[sorted_group]
    return rank


def select_with_caps(
    candidates: torch.Tensor,
    priority: torch.Tensor,
    group: torch.Tensor,
    room: torch.Tensor,
    budget: int | None = None,
) -> torch.Tensor:
    """The subset of ``candidates`` (bool) to take: at most ``room[g]`` per group, ``budget`` in all."""
    ids = torch.nonzero(candidates).flatten()
    out = torch.zeros_like(candidates)
    if ids.numel() == 0 or (budget is not None and budget <= 0):
        return out
    pri = priority[ids]
    rank = rank_within_groups(group[ids], pri)
    keep = rank < room[group[ids]]
    ids, pri = ids[keep], pri[keep]
    if budget is not None and ids.numel() > budget:
        ids = ids[torch.sort(pri, stable=True).indices[:budget]]
    out[ids] = True
    return out
