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

Targets and schedule in the user's units: ``target_params_kept`` / ``target_flops_kept`` replace the
ZIG fraction — G_R is then the shortest prefix of the saliency order (per-group caps respected) whose
removal keeps at most that share of the model's parameters / FLOPs (``optimizers.budget``; exact
within one ZIG), and K = |G_R|. The window can be given in epochs (``steps_per_epoch`` with
``start_pruning_epochs`` / ``pruning_epochs``) or as fractions of the run (``total_steps`` with
``start_pruning_steps`` / ``pruning_steps`` in [0, 1]; by default 10% warm-up and a window of half
the run). :meth:`DHSPG.progress` says how far the run is from its target.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import nn

from graphcore.groups import PruneAnalysis
from graphcore.uniform import uniform_kinds
from optimizers.base import GroupOptimizer, GroupStats, Need, safe_norm
from optimizers.budget import KeptModel, count_for_target, removal_order
from optimizers.partition import choose_redundant, saliency_scores
from optimizers.progress import SparsityProgress
from optimizers.registry import register
from optimizers.selection import select_with_caps

__all__ = ["DHSPG", "resolve_schedule", "select_lambda"]

DEFAULT_PRUNING_STEPS = 1000
# with total_steps and no window given: warm-up, then a window of half the run (the rest fine-tunes)
RUN_FRACTIONS = (0.1, 0.5)


def resolve_schedule(
    start_pruning_steps: float | None,
    pruning_steps: float | None,
    *,
    steps_per_epoch: int | None = None,
    start_pruning_epochs: float | None = None,
    pruning_epochs: float | None = None,
    total_steps: int | None = None,
) -> tuple[int, int]:
    """(T_w, window length) in optimizer steps from steps, epochs, or fractions of ``total_steps``.

    Epochs need ``steps_per_epoch``; a float in [0, 1] given as steps is a fraction of
    ``total_steps``; a schedule that ends after ``total_steps`` is an error (the run would stop
    before the target is reached).
    """
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if total_steps is not None and total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def steps(value: float | None, epochs: float | None, name: str, fraction: float, fallback: int) -> int:
        if epochs is not None:
            if value is not None:
                raise ValueError(f"give {name}_steps or {name}_epochs, not both")
            if steps_per_epoch is None:
                raise ValueError(f"{name}_epochs needs steps_per_epoch")
            if epochs < 0:
                raise ValueError(f"{name}_epochs must be >= 0, got {epochs}")
            return round(epochs * steps_per_epoch)
        if value is None:
            return fallback if total_steps is None else math.floor(fraction * total_steps)
        if isinstance(value, float) and not float(value).is_integer():
            if total_steps is None or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}_steps={value}: a fraction of the run needs total_steps= and [0, 1]")
            return math.floor(value * total_steps)
        if isinstance(value, float) and total_steps is not None and value in (0.0, 1.0):
            return math.floor(value * total_steps)
        return int(value)

    start = steps(start_pruning_steps, start_pruning_epochs, "start_pruning", RUN_FRACTIONS[0], 0)
    window = steps(pruning_steps, pruning_epochs, "pruning", RUN_FRACTIONS[1], DEFAULT_PRUNING_STEPS)
    if total_steps is not None and start + window > total_steps:
        raise ValueError(
            f"the pruning window ends at step {start + window}, after the run's total_steps={total_steps}: "
            "the target would not be reached"
        )
    return start, window


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
    the first-order ones of :class:`GroupOptimizer`. Instead of s: ``target_params_kept`` or
    ``target_flops_kept`` (share of the model's parameters / FLOPs left, reached within one ZIG).
    The window in epochs (``steps_per_epoch``, ``start_pruning_epochs``, ``pruning_epochs``) or as
    fractions of ``total_steps``: see :func:`resolve_schedule`.

    ``uniform`` makes G_R the same count in every layer for each kind of node group
    (``graphcore.uniform.group_kind``: the same parameters up to the layer index, the same size), which
    is what a Hugging Face config can hold (one ``intermediate_size``, one head count for all layers).
    ``True``: every kind; a collection of kinds: only those (the others are left whole); a mapping
    kind → step: only those, each count rounded down to a multiple of its step (``hidden_size`` a
    multiple of the head count; ``construct.to_hf.hf_kinds`` gives such a mapping). At the partition
    step DHSPG's own choice is made first; each kind then gets the mean count that choice gave its
    groups, scaled from the candidates (s + τ) to the goal (s), rounded half up and within every
    group's room, and each group's highest-saliency ZIGs are its candidates. K becomes the size of
    that set, so the window ends with exactly G_R zero.
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
        start_pruning_steps: float | None = None,
        pruning_steps: float | None = None,
        pruning_periods: int = 1,
        steps_per_epoch: int | None = None,
        start_pruning_epochs: float | None = None,
        pruning_epochs: float | None = None,
        total_steps: int | None = None,
        target_params_kept: float | None = None,
        target_flops_kept: float | None = None,
        lmbda: float | None = None,
        lmbda_amplify: float | None = None,
        hat_lmbda_coeff: float | None = None,
        epsilon: float = 0.0,
        group_divisible: int = 1,
        weight_decay: float | None = None,
        uniform: bool | Collection[tuple] | Mapping[tuple, int] = False,
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
        start_pruning_steps, pruning_steps = resolve_schedule(
            start_pruning_steps,
            pruning_steps,
            steps_per_epoch=steps_per_epoch,
            start_pruning_epochs=start_pruning_epochs,
            pruning_epochs=pruning_epochs,
            total_steps=total_steps,
        )
        kept_targets = {"params": target_params_kept, "flops": target_flops_kept}
        given = {k: v for k, v in kept_targets.items() if v is not None}
        if len(given) > 1:
            raise ValueError("give target_params_kept or target_flops_kept, not both")
        if any(not 0.0 <= v <= 1.0 for v in given.values()):
            raise ValueError(f"a kept target is a fraction in [0, 1], got {given}")
        if start_pruning_steps < 0 or pruning_steps < 1 or not 1 <= pruning_periods <= pruning_steps:
            raise ValueError("need start_pruning_steps >= 0 and 1 <= pruning_periods <= pruning_steps")
        if group_divisible < 1:
            raise ValueError("group_divisible must be >= 1")
        kinds = self._uniform_kinds(analysis, uniform)
        if kinds is not None and given:
            raise ValueError("uniform selects by ZIG counts: give target_group_sparsity, not a kept target")
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
            target_params_kept=target_params_kept,
            target_flops_kept=target_flops_kept,
            uniform=kinds is not None,
            **kwargs,
        )
        #: per uniform kind: (its node group ids, step); None when the selection is not uniform
        self.uniform_kinds = kinds
        self._kept_model: KeptModel | None = None
        if given:
            self._kept_model = KeptModel(analysis)
            if "flops" in given and not self._kept_model.flops_total:
                raise ValueError("target_flops_kept needs an analysis with FLOPs (frontends.load of a model)")
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
        if self.redundant is None:  # the partition step needs every statistic
            return Need(pre=True, d2=True) if j >= 1 else Need()
        if j <= group["pruning_steps"] and self.num_zero() < self.goal:
            # only the non-zero candidates are penalized: every other parameter steps with its statistics
            return Need(pre=True, d2=True, active=self.redundant & ~self._zero)
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
        self.saliency = saliency_scores(x2, xd, d2, self.layout.zig_numel, self.prunable)
        kept = self._kept_target(group)
        if kept is not None:  # G_R: the shortest prefix of the saliency order that reaches the target
            order = removal_order(
                self.saliency.cpu().double().numpy(),
                self.prunable.cpu().numpy(),
                self.zig_group.cpu().numpy(),
                self.group_cap.cpu().numpy(),
            )
            assert self._kept_model is not None
            k = count_for_target(self._kept_model, order, *kept)
            redundant = torch.zeros_like(self.prunable)
            redundant[torch.as_tensor(order[:k], device=redundant.device)] = True
            self.redundant = redundant
            self.goal = int((redundant | (self._zero & self.prunable)).sum())
            return redundant
        target = self.target_count(group["target_group_sparsity"])
        share = min(group["target_group_sparsity"] + group["tolerance_group_sparsity"], 0.999)
        count = max(math.floor(share * self.num_prunable + 1e-9), target)
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
        if self.uniform_kinds is not None:
            redundant = self.redundant = self._made_uniform(redundant)
            self.goal = int((redundant | (self._zero & self.prunable)).sum())
        return redundant

    @staticmethod
    def _uniform_kinds(
        analysis: PruneAnalysis, uniform: bool | Collection[tuple] | Mapping[tuple, int]
    ) -> list[tuple[list[int], int]] | None:
        """``uniform`` resolved against the analysis: (group ids, step) per kind, or None when off."""
        if uniform is False:
            return None
        kinds = uniform_kinds(analysis)
        if uniform is True:
            return [([g.id for g in gs], 1) for gs in kinds.values()]
        if isinstance(uniform, str | bytes) or not isinstance(uniform, Collection):
            raise ValueError(
                f"uniform must be a bool, a collection of kinds or a mapping kind -> step, got {uniform!r}"
            )
        unknown = [k for k in uniform if k not in kinds]
        if unknown:
            raise ValueError(f"uniform names kinds the analysis does not have: {unknown[:3]}")
        steps = uniform if isinstance(uniform, Mapping) else dict.fromkeys(uniform, 1)
        return [([g.id for g in kinds[k]], max(int(steps[k]), 1)) for k in uniform]

    def _made_uniform(self, first: torch.Tensor) -> torch.Tensor:
        """G_R with the same count in every group of each uniform kind (see the class docstring)."""
        assert self.uniform_kinds is not None and self.saliency is not None
        scale = self.goal / max(1, int(first.sum()))  # candidates s + τ -> goal s
        room = self.room().cpu()
        group_of = self.zig_group.cpu()
        taken = torch.bincount(group_of[first.cpu()], minlength=room.numel())
        zig_ids = {g.id: torch.as_tensor(g.zig_ids, dtype=torch.long) for g in self.analysis.groups}
        saliency = self.saliency.cpu()
        chosen = torch.zeros_like(first, device="cpu")
        for ids, step in self.uniform_kinds:
            mean = float(taken[ids].double().mean())
            count = min(math.floor(scale * mean + 0.5), int(room[ids].min()))
            count -= count % step
            if count <= 0:
                continue
            for g in ids:
                zigs = zig_ids[g]
                top = torch.argsort(saliency[zigs], descending=True, stable=True)[:count]
                chosen[zigs[top]] = True
        return chosen.to(first.device) & self.prunable

    def _kept_target(self, group: dict) -> tuple[str, float] | None:
        """("params" | "flops", share kept) when the target is given in those units."""
        for unit in ("params", "flops"):
            if group.get(f"target_{unit}_kept") is not None:
                return unit, float(group[f"target_{unit}_kept"])
        return None

    def progress(self) -> SparsityProgress:
        """The sparsity reached against the target, in ZIGs, parameters and FLOPs kept."""
        group = self.param_groups[0]
        kept_model = self._kept_model or KeptModel(self.analysis)
        self._kept_model = kept_model
        zero = (self._zero & self.prunable).cpu().numpy()
        params, flops = kept_model.kept(zero)
        kept = self._kept_target(group)
        if self.partitioned:
            target: int | None = self.goal
        else:
            sparsity = group.get("target_group_sparsity")
            target = None if kept is not None or sparsity is None else self.target_count(sparsity)
        start = group["start_pruning_steps"]
        return SparsityProgress(
            optimizer=type(self).__name__,
            steps_done=self.steps_done,
            window_start=start,
            window_end=start + group["pruning_steps"],
            zero_zigs=self.num_zero(),
            target_zigs=target,
            prunable_zigs=self.num_prunable,
            params_kept=params,
            flops_kept=flops,
            target_params_kept=group.get("target_params_kept"),
            target_flops_kept=group.get("target_flops_kept"),
        )

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
