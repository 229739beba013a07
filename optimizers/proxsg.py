"""ProxSG: proximal stochastic gradient for group lasso — a baseline (ALGORITHMS.md §4.6).

``z = x − lr·D``, then group soft-thresholding ``z_g ← max(0, 1 − lr·λ/||z_g||)·z_g`` on every
prunable ZIG. Zeros appear only when ``||z_g|| ≤ lr·λ``, a small region, which is why proximal methods
give little group sparsity on deep networks. Where ZIGs overlap (an entry owned by a row ZIG and a
column ZIG) the shrink factors of its owners are multiplied — the two proximal maps applied in
turn; exact for non-overlapping groups. ``target_group_sparsity``, when set, caps the number of zero
ZIGs (surplus ZIGs the threshold would zero keep their unshrunk value), holds zero ZIGs at zero
and stops the penalty once reached.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphcore.groups import PruneAnalysis
from optimizers.base import GroupOptimizer, GroupStats, Need, safe_norm
from optimizers.registry import register
from optimizers.selection import select_with_caps

__all__ = ["ProxSG"]


@register("proxsg")
class ProxSG(GroupOptimizer):
    """Proximal SGD on ``f + λ Σ_g ||x_g||``; zero groups may revive unless held (see module doc)."""

    def __init__(
        self,
        model: nn.Module,
        analysis: PruneAnalysis,
        *,
        lmbda: float = 1e-3,
        target_group_sparsity: float | None = None,
        fixed_zero_groups: bool = False,
        **kwargs: Any,
    ) -> None:
        if lmbda < 0:
            raise ValueError("lmbda must be non-negative")
        super().__init__(
            model,
            analysis,
            lmbda=lmbda,
            target_group_sparsity=target_group_sparsity,
            fixed_zero_groups=fixed_zero_groups,
            **kwargs,
        )

    def _budget(self, group: dict) -> int | None:
        sparsity = group["target_group_sparsity"]
        return None if sparsity is None else self.target_count(sparsity) - self.num_zero()

    def keeps_zero(self, group: dict) -> bool:
        return bool(group["fixed_zero_groups"]) or group["target_group_sparsity"] is not None

    def need(self, group: dict) -> Need:
        budget = self._budget(group)
        return Need() if budget is not None and budget <= 0 else Need(post=True)

    def update(self, stats: GroupStats, group: dict) -> None:
        layout = self.layout
        budget = self._budget(group)
        if budget is not None and budget <= 0:
            return
        active = self.prunable & ~self._zero
        factor = (1.0 - group["lr"] * group["lmbda"] / safe_norm(stats.x2)).clamp_min(0.0)
        factor = torch.where(active, factor, torch.ones_like(factor))
        zeroed = factor == 0
        mean_sq = stats.x2 / layout.zig_numel.clamp_min(1)
        chosen = select_with_caps(zeroed, mean_sq, self.zig_group, self.room(), budget)
        factor = torch.where(zeroed & ~chosen, torch.ones_like(factor), factor)
        touched = layout.touched(factor != 1)
        for slot in layout.slots:
            if touched[slot.param]:
                p = layout.params[slot.param]
                p.mul_(layout.broadcast_prod(factor, slot).to(p.dtype))
        self.zero_zigs(chosen)
