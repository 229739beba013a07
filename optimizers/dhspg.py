"""DHSPG, the Dual Half-Space Projected Gradient of OTOv2/OTOv3 (ALGORITHMS.md §4).

Schedule, in optimizer steps t = 1, 2, ...:

* ``t ≤ start_pruning_steps`` (T_w): plain first-order steps (warm-up).
* ``t = T_w + 1``: partition once — the ``floor(min(s + τ, 0.999)·N)`` prunable ZIGs with the
  largest saliency score become the redundant candidates G_R (§4.3), never more than
  ``size − min_keep`` of one node group.
* ``T_w < t ≤ T_w + pruning_steps`` (the pruning window), while fewer than K ZIGs are zero: the
  important ZIGs take the plain step; each non-zero candidate takes the step along
  ``−D_g − λ_g x_g/||x_g||`` with λ_g from the dual half-space interval (§4.4), then half-space
  projection zeroes those whose trial point left the half-space ``<x̂_g, x_g> ≥ ε||x_g||²`` (§4.5).
* Guarantee (ours; the paper stops only "once the target is reached"): the window is split into
  ``pruning_periods`` equal periods; at the end of period p at least ``floor(K·p/P)`` ZIGs must be
  zero, and if projection has not got there, the non-zero candidates with the smallest mean
  square are projected to zero. So exactly K ZIGs (K = floor(s·N), within ``min_keep``) are zero
  after step ``T_w + pruning_steps`` — never more: projection is capped at K.
* Afterwards: plain steps, zero groups stay zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from graphcore.groups import PruneAnalysis
from optimizers.base import GroupOptimizer, GroupStats, Need, safe_norm
from optimizers.partition import choose_redundant, saliency_scores
from optimizers.registry import register
from optimizers.selection import select_with_caps

__all__ = ["DHSPG", "select_lambda"]

# variant -> (lmbda, lmbda_amplify, hat_lmbda_coeff, weight_decay), ALGORITHMS.md §4.4
VARIANT_DEFAULTS: dict[str, tuple[float, float, float, float]] = {
    "sgd": (1e-3, 2.0, 10.0, 0.0),
    "adam": (1e-2, 20.0, 1e3, 0.0),
    "adamw": (1e-2, 20.0, 1e3, 1e-2),
}


def select_lambda(
    x2: torch.Tensor, xd: torch.Tensor, d2: torch.Tensor, lmbda: float, amplify: float, hat_coeff: float
) -> torch.Tensor:
    """Group-specific λ_g (ALGORITHMS.md §4.4), vectorized over ZIGs.

    Where ``<x_g, D_g> < 0`` the plain step would grow the group, so λ_g must exceed
    ``L = −<x,D>/||x||`` to shrink it while staying below ``U = −||D||²||x||/<x,D>`` to remain a
    descent direction: ``λ_g = clip(a·L, λ, ĉ·λ)``, replaced by ``(L+U)/2`` when it reaches U.
    Elsewhere ``λ_g = λ``.
    """
    xn = x2.clamp_min(0).sqrt()
    grows = xd < 0
    safe_xd = torch.where(grows, xd, -torch.ones_like(xd))
    lower = -safe_xd / xn.clamp_min(torch.finfo(xn.dtype).tiny)
    upper = -d2 * xn / safe_xd
    lam = (amplify * lower).clamp(min=lmbda, max=hat_coeff * lmbda)
    lam = torch.where(lam >= upper, 0.5 * (lower + upper), lam)
    return torch.where(grows, lam, torch.full_like(lam, lmbda))


@register("dhspg")
class DHSPG(GroupOptimizer):
    """Dual Half-Space Projected Gradient: reaches ``target_group_sparsity`` by the end of its window.

    Hyperparameters (names as in the authors' code; defaults of ``lmbda``, ``lmbda_amplify``,
    ``hat_lmbda_coeff`` and ``weight_decay`` depend on ``variant``, ALGORITHMS.md §4.4):
    ``target_group_sparsity`` s, ``tolerance_group_sparsity`` τ (0.05), ``start_pruning_steps`` T_w
    (0), ``pruning_steps`` (1000) and ``pruning_periods`` (1) for the window, ``epsilon`` ε of the
    half-space projection (0.0; the authors' tutorials use 0.9-0.95), ``group_divisible`` q (1), and
    the first-order ones of :class:`GroupOptimizer`.
    """

    def __init__(
        self,
        model: nn.Module,
        analysis: PruneAnalysis,
        *,
        lr: float = 0.1,
        variant: str = "sgd",
        target_group_sparsity: float = 0.5,
        tolerance_group_sparsity: float = 0.05,
        start_pruning_steps: int = 0,
        pruning_steps: int = 1000,
        pruning_periods: int = 1,
        lmbda: float | None = None,
        lmbda_amplify: float | None = None,
        hat_lmbda_coeff: float | None = None,
        epsilon: float = 0.0,
        group_divisible: int = 1,
        weight_decay: float | None = None,
        **kwargs: Any,
    ) -> None:
        if variant not in VARIANT_DEFAULTS:
            raise ValueError(f"variant must be one of {tuple(VARIANT_DEFAULTS)}, got {variant!r}")
        lam0, amp0, hat0, wd0 = VARIANT_DEFAULTS[variant]
        lmbda = lam0 if lmbda is None else lmbda
        lmbda_amplify = amp0 if lmbda_amplify is None else lmbda_amplify
        hat_lmbda_coeff = hat0 if hat_lmbda_coeff is None else hat_lmbda_coeff
        weight_decay = wd0 if weight_decay is None else weight_decay
        if not 0.0 <= target_group_sparsity <= 1.0 or tolerance_group_sparsity < 0:
            raise ValueError("target_group_sparsity must be in [0, 1] and the tolerance non-negative")
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
        if lmbda < 0 or lmbda_amplify <= 0 or hat_lmbda_coeff < 1:
            raise ValueError("need lmbda >= 0, lmbda_amplify > 0 and hat_lmbda_coeff >= 1")
        if start_pruning_steps < 0 or pruning_steps < 1 or not 1 <= pruning_periods <= pruning_steps:
            raise ValueError("need start_pruning_steps >= 0 and 1 <= pruning_periods <= pruning_steps")
        if group_divisible < 1:
            raise ValueError("group_divisible must be >= 1")
        super().__init__(
            model,
            analysis,
            lr=lr,
            variant=variant,
            weight_decay=weight_decay,
            target_group_sparsity=target_group_sparsity,
            tolerance_group_sparsity=tolerance_group_sparsity,
            start_pruning_steps=int(start_pruning_steps),
            pruning_steps=int(pruning_steps),
            pruning_periods=int(pruning_periods),
            lmbda=lmbda,
            lmbda_amplify=lmbda_amplify,
            hat_lmbda_coeff=hat_lmbda_coeff,
            epsilon=epsilon,
            group_divisible=int(group_divisible),
            **kwargs,
        )
        self.redundant: torch.Tensor | None = None  # G_R, set once at the partition step
        self.saliency: torch.Tensor | None = None  # the scores the partition ranked by
        self.goal = 0  # K, the number of zero ZIGs the schedule ends with (set at the partition)
        self.last_lambda: torch.Tensor | None = None

    @property
    def partitioned(self) -> bool:
        return self.redundant is not None

    def keeps_zero(self, group: dict) -> bool:
        # §4.2: once projection has started, every zero group stays zero whatever fixed_zero_groups says
        return bool(group["fixed_zero_groups"]) or self.partitioned

    def _window_step(self, group: dict) -> int:
        """1-based index of the current step inside the pruning window (≤ 0 before it)."""
        return self.steps_done - group["start_pruning_steps"]

    def need(self, group: dict) -> Need:
        j = self._window_step(group)
        if not self.partitioned:
            return Need(pre=True, d2=True) if j >= 1 else Need()
        if j <= group["pruning_steps"] and self.num_zero() < self.goal:
            return Need(pre=True, d2=True)
        return Need()

    def update(self, stats: GroupStats, group: dict) -> None:
        xd, d2 = stats.xd, stats.d2
        if xd is None or d2 is None:
            raise RuntimeError("DHSPG updates from the statistics of Need(pre=True, d2=True)")
        redundant = self.redundant if self.redundant is not None else self._partition(stats.x2, xd, d2, group)
        j = self._window_step(group)
        if j > group["pruning_steps"] or self.num_zero() >= self.goal:
            self.penalized_step(stats, group, torch.zeros_like(stats.x2))  # the plain step
            return
        active = redundant & ~self._zero
        lam = select_lambda(
            stats.x2, xd, d2, group["lmbda"], group["lmbda_amplify"], group["hat_lmbda_coeff"]
        )
        lam = torch.where(active, lam, torch.zeros_like(lam))
        hat_dot = self.penalized_step(stats, group, lam / safe_norm(stats.x2))
        self.half_space_zero(hat_dot, stats.x2, active, group["epsilon"], self.goal - self.num_zero())
        periods, steps = group["pruning_periods"], group["pruning_steps"]
        short = self.goal * (j * periods // steps) // periods - self.num_zero()
        if short > 0:  # end of a period behind schedule: project the smallest candidates
            left = redundant & ~self._zero
            mean_sq = stats.x2 / self.layout.zig_numel.clamp_min(1)
            self.zero_zigs(select_with_caps(left, mean_sq, self.zig_group, self.room(), short))
        self.last_lambda = lam

    def _partition(self, x2: torch.Tensor, xd: torch.Tensor, d2: torch.Tensor, group: dict) -> torch.Tensor:
        """Split prunable ZIGs into important and redundant once (§4.3) and fix the goal K.

        Returns the redundant set G_R (also kept as ``self.redundant``)."""
        target = self.target_count(group["target_group_sparsity"])
        share = min(group["target_group_sparsity"] + group["tolerance_group_sparsity"], 0.999)
        count = max(math.floor(share * self.num_prunable + 1e-9), target)
        self.saliency = saliency_scores(x2, xd, d2, self.layout.zig_numel, self.prunable)
        redundant = self.redundant = choose_redundant(
            self.saliency,
            self.prunable,
            self.zig_group,
            self.group_cap,
            self.group_size,
            count,
            group["group_divisible"],
        )
        reachable = int((redundant | (self._zero & self.prunable)).sum())
        self.goal = min(target, reachable)
        return redundant

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra["redundant"] = None if self.redundant is None else self.redundant.cpu()
        extra["goal"] = self.goal
        return extra

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        super()._load_extra_state(extra)
        red = extra.get("redundant")
        self.redundant = None if red is None else red.to(self.layout.device)
        self.goal = int(extra.get("goal", 0))
