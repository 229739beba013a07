"""Choosing ZIGs under per-node-group and global budgets: graphcore's rule, on tensors.

Every optimizer that zeroes groups must respect two limits: a node group keeps at least ``min_keep``
of its ZIGs (construct cannot remove a whole channel space), and a target sparsity caps the total.
When more ZIGs qualify than the limits allow, the ones with the lowest ``priority`` go first, ties
broken by ZIG id, so the choice is the same on every DDP rank. The rule itself lives once, in
``graphcore.select``; these wrappers move the tensors to numpy and the answer back to their device.
"""

from __future__ import annotations

import numpy as np
import torch

from graphcore import select

__all__ = ["rank_within_groups", "select_with_caps"]


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU numpy copy; bfloat16 (which numpy lacks) is widened to float32, exactly and in order."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()


def rank_within_groups(group: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """Rank (0 = first) of each element among those with the same ``group``, by ascending priority."""
    rank = select.rank_within_groups(_numpy(group), _numpy(priority))
    return torch.from_numpy(rank).to(device=group.device)


def select_with_caps(
    candidates: torch.Tensor,
    priority: torch.Tensor,
    group: torch.Tensor,
    room: torch.Tensor,
    budget: int | None = None,
) -> torch.Tensor:
    """The subset of ``candidates`` (bool) to take: at most ``room[g]`` per group, ``budget`` in all."""
    chosen = select.select_with_caps(
        _numpy(candidates),
        _numpy(priority),
        _numpy(group),
        _numpy(room),
        None if budget is None else int(budget),
    )
    return torch.from_numpy(chosen).to(device=candidates.device, dtype=candidates.dtype)
