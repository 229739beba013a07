"""HSPG, the Half-Space Stochastic Projected Gradient of OTOv1 — a baseline (ALGORITHMS.md §4.6).

One global λ for every prunable ZIG and no important/redundant split: the first
``start_pruning_steps`` steps are plain first-order steps, after that every non-zero prunable ZIG
steps along ``−D_g − λ x_g/||x_g||`` and is projected to zero when its trial point leaves the
half-space ``<x̂_g, x_g> ≥ ε||x_g||²``; zero groups then stay zero. Sparsity is steered only
through λ and ε; with ``target_group_sparsity`` set, projection stops at that many zero ZIGs (for
comparisons at equal K).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graphcore.groups import PruneAnalysis
from optimizers.base import GroupOptimizer, GroupStats, Need, safe_norm
from optimizers.registry import register

__all__ = ["HSPG"]


@register("hspg")
class HSPG(GroupOptimizer):
    """Half-space projected gradient with one global group-lasso weight ``lmbda``."""

    def __init__(
        self,
        model: nn.Module,
        analysis: PruneAnalysis,
        *,
        lmbda: float = 1e-3,
        epsilon: float = 0.0,
        start_pruning_steps: int = 0,
        target_group_sparsity: float | None = None,
        **kwargs: Any,
    ) -> None:
        if lmbda < 0 or not 0.0 <= epsilon < 1.0 or start_pruning_steps < 0:
            raise ValueError("need lmbda >= 0, 0 <= epsilon < 1 and start_pruning_steps >= 0")
        super().__init__(
            model,
            analysis,
            lmbda=lmbda,
            epsilon=epsilon,
            start_pruning_steps=int(start_pruning_steps),
            target_group_sparsity=target_group_sparsity,
            **kwargs,
        )

    def _budget(self, group: dict) -> int | None:
        sparsity = group["target_group_sparsity"]
        return None if sparsity is None else self.target_count(sparsity) - self.num_zero()

    def keeps_zero(self, group: dict) -> bool:
        return bool(group["fixed_zero_groups"]) or self.steps_done > group["start_pruning_steps"]

    def need(self, group: dict) -> Need:
        budget = self._budget(group)
        if self.steps_done <= group["start_pruning_steps"] or (budget is not None and budget <= 0):
            return Need()
        return Need(pre=True)

    def update(self, stats: GroupStats, group: dict) -> None:
        active = self.prunable & ~self._zero
        coef = torch.where(active, group["lmbda"] / safe_norm(stats.x2), torch.zeros_like(stats.x2))
        hat_dot = self.penalized_step(stats, group, coef)
        self.half_space_zero(hat_dot, stats.x2, active, group["epsilon"], self._budget(group))
