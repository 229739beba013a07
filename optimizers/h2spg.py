"""H2SPG, the Hierarchical Half-Space Projected Gradient of OTOv3's erasing mode (ALGORITHMS.md §5).

It trains a super-network so that whole removal structures (residual branches, blocks, candidate
operators) end exactly zero, and never a set of them whose removal would cut the network. The
analysis is an erase analysis (``graphcore.analyze(ir, mode="erase")``): one ZIG per removal
structure, ZIG id == structure id, every slice a whole tensor, plus ``valid`` and ``select``.

Schedule, in optimizer steps t = 1, 2, ...:

* ``t ≤ start_pruning_steps`` (T_w), **warm-up**: plain first-order steps; before each, every
  erasable structure gets a redundancy score (DHSPG's saliency of §4.3 with the structure as the
  group: cosine of −D_g with −x_g and inverse mean magnitude, each L2-normalized across structures,
  0.5/0.5) folded into an exponential average with ``saliency_momentum`` ω.
* ``t = T_w + 1``, **hierarchical search**, once: the step's own score joins the average (so T_w = 0
  still has one), structures are ordered most redundant first (ties by id) and ``analysis.select``
  — the one selection rule, shared with ``zigraph erase`` — walks that order and keeps a structure
  only when everything kept so far plus it still leaves a valid network, up to
  K = round(``target_group_sparsity`` · #erasable) or ``target_structures``. Those are G_r.
* **Hybrid training**: exactly DHSPG's pruning window with G_r as its redundant set — the rest takes
  the plain step, each non-zero structure of G_r the step along ``−D_g − λ_g x_g/||x_g||`` with λ_g
  from the dual half-space interval and half-space projection with ε; at the end of each of the
  ``pruning_periods`` the ones still short of the staircase with the smallest mean square are projected
  to zero. So after step ``T_w + pruning_steps`` exactly G_r is zero, and stays zero.

Why every state can be cut: only structures of G_r are ever held at zero (a structure that is zero when
the optimizer is built joins the front of the search order and is released if the search does not
keep it), and G_r is valid, so after the window the zero set is exactly a valid selection. Before
that, the part of G_r that is zero may not be erasable as a whole: validity is not monotone (erasing
both branches of a concatenation can leave the bias-free conv after them computing zeros that its
consumer still reads, while the same set with that conv's own structure is valid). Construct reads
the zeros through ``analysis.select`` (``construct.erase_zeros``), which erases a valid part of them
and leaves the rest in place computing zeros, so a model taken at any step still cuts to a network
equal to it; ``sparsity_report().valid`` says whether all of the zero set went.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from graphcore.groups import PruneAnalysis
from optimizers.base import GroupStats, Need
from optimizers.dhspg import DHSPG
from optimizers.partition import saliency_scores
from optimizers.registry import register

__all__ = ["H2SPG", "ErasingAnalysis", "ErasingProgress"]


@runtime_checkable
class ErasingAnalysis(Protocol):
    """What H2SPG needs of an erase analysis beyond a ``PruneAnalysis``: the validity rule."""

    def valid(self, erased: Iterable[int]) -> bool: ...

    def select(self, order: Sequence[int], k: int) -> list[int]: ...

    def erased_by(self, chosen: Iterable[int]) -> set[int]: ...


@dataclass(frozen=True)
class ErasingProgress:
    """Where erasing stands: what was asked, what the search kept, what is zero now."""

    erasable: int  # structures the optimizer can erase
    requested: int  # K asked for (before the search: what will be asked)
    searched: bool  # whether the hierarchical search has run
    selected: list[int]  # G_r, in the order the search accepted them
    erased: int  # erasable structures that go with G_r (G_r and the structures nested in it)
    zero: list[int]  # structures exactly zero now
    valid: bool  # the zero structures can all be erased together (always after the window; see above)

    @property
    def note(self) -> str | None:
        """A one-line explanation when the search could not keep all K structures."""
        if self.searched and self.erased < self.requested:
            return (
                f"only {self.erased} of the {self.requested} requested structures can be erased "
                "together without cutting the network; erasing those"
            )
        return None


def _check_erase_analysis(analysis: PruneAnalysis) -> None:
    """Fail early on an analysis H2SPG cannot use (a pruning analysis, or a structure capped at 0)."""
    if analysis.mode != "erase" or not isinstance(analysis, ErasingAnalysis):
        raise ValueError(
            "H2SPG needs an erase analysis (graphcore.analyze(ir, mode='erase')) with valid() and select(); "
            f"got mode={analysis.mode!r} — use DHSPG for pruning"
        )
    for g in analysis.groups:
        ids = np.asarray(g.zig_ids)
        if ids.shape != (1,) or int(ids[0]) != g.id:
            raise ValueError(f"erase analysis group {g.id} must be one ZIG with the same id, got {ids}")
        if g.prunable and g.min_keep != 0:
            raise ValueError(
                f"erasable structure {g.id} has min_keep={g.min_keep}; an erase analysis must allow each "
                "structure to vanish whole (min_keep 0)"
            )


@register("h2spg")
class H2SPG(DHSPG):
    """Hierarchical Half-Space Projected Gradient: erases K removal structures, always validly.

    Hyperparameters: those of :class:`DHSPG` with the same meaning (``lr``, ``variant``, ``momentum``,
    ``weight_decay``, ``target_group_sparsity`` (0.5, a share of the erasable structures),
    ``start_pruning_steps`` T_w (0), ``pruning_steps`` (1000), ``pruning_periods`` (1), ``lmbda``,
    ``lmbda_amplify``, ``hat_lmbda_coeff``, ``epsilon`` (0.0), ``fixed_zero_groups``, ``foreach``, and
    the other first-order ones), plus ``saliency_momentum`` ω (0.9) of the score average and
    ``target_structures`` (None), an absolute K that overrides the share. DHSPG's
    ``tolerance_group_sparsity`` and ``group_divisible`` have no meaning here: the search picks
    exactly the structures to erase.
    """

    _holdable: torch.Tensor | None = None  # ZIGs that may be held at zero (None: every prunable one)

    def __init__(
        self,
        model: nn.Module,
        analysis: PruneAnalysis,
        *,
        target_group_sparsity: float = 0.5,
        target_structures: int | None = None,
        saliency_momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        unsupported = (
            "tolerance_group_sparsity",
            "group_divisible",
            "target_params_kept",
            "target_flops_kept",
            "uniform",
        )
        for name in unsupported:
            if name in kwargs:
                raise ValueError(f"H2SPG has no {name}: the hierarchical search picks exactly K structures")
        if not 0.0 <= saliency_momentum < 1.0:
            raise ValueError(f"saliency_momentum must be in [0, 1), got {saliency_momentum}")
        count_ok = isinstance(target_structures, int) and not isinstance(target_structures, bool)
        if target_structures is not None and not (count_ok and target_structures >= 0):
            raise ValueError(f"target_structures must be an int >= 0 or None, got {target_structures!r}")
        _check_erase_analysis(analysis)
        assert isinstance(analysis, ErasingAnalysis)  # checked above; narrows the type for the search
        super().__init__(
            model,
            analysis,
            target_group_sparsity=target_group_sparsity,
            tolerance_group_sparsity=0.0,
            group_divisible=1,
            target_structures=target_structures,
            saliency_momentum=saliency_momentum,
            **kwargs,
        )
        self.hierarchy: ErasingAnalysis = analysis
        self.selected: list[int] | None = None  # G_r, set once by the search
        self._ema = torch.zeros(self.layout.num_zigs + 1, dtype=self.layout.dtype, device=self.layout.device)
        self._scored = 0  # steps folded into the average
        # A structure zero from the start (a checkpoint) is held only while the zero set stays valid.
        zero = self.zero_zig_ids().tolist()
        keep = set(self.hierarchy.select(zero, len(zero)))
        self._holdable = self.prunable.clone()
        released = [z for z in zero if z not in keep]
        if released:
            self._holdable[torch.as_tensor(released, device=self.layout.device)] = False
        self._set_zero(self._zero & self._holdable)

    # ------------------------------------------------------------------ schedule
    @property
    def searched(self) -> bool:
        """Whether the hierarchical search has run (G_r is fixed from then on)."""
        return self.selected is not None

    @property
    def requested(self) -> int:
        """K: how many structures the search is asked for."""
        group = self.param_groups[0]
        if group["target_structures"] is not None:
            return int(group["target_structures"])
        return math.floor(group["target_group_sparsity"] * self.num_prunable + 0.5)

    @property
    def scores(self) -> torch.Tensor:
        """Redundancy per structure id (the warm-up average, higher = erase first); −inf: not erasable."""
        ema = self._ema[:-1]
        return torch.where(self.prunable[:-1], ema, torch.full_like(ema, -torch.inf))

    def need(self, group: dict) -> Need:
        if not self.searched and self._window_step(group) < 1:
            # warm-up: score, then the plain step, taken in the same pass (nothing is penalized)
            return Need(pre=True, d2=True, active=torch.zeros_like(self.prunable))
        return super().need(group)

    def update(self, stats: GroupStats, group: dict) -> None:
        if not self.searched and self._window_step(group) < 1:
            if stats.xd is None or stats.d2 is None:
                raise RuntimeError("H2SPG scores from the statistics of Need(pre=True, d2=True)")
            self._accumulate(stats.x2, stats.xd, stats.d2, group)
            self.penalized_step(stats, group, torch.zeros_like(stats.x2))  # the plain step
            return
        super().update(stats, group)

    def _observed_zero(self, x2: torch.Tensor) -> torch.Tensor:
        zero = super()._observed_zero(x2)
        return zero if self._holdable is None else zero & self._holdable

    # ------------------------------------------------------------------ scores and search
    def _accumulate(self, x2: torch.Tensor, xd: torch.Tensor, d2: torch.Tensor, group: dict) -> None:
        """Fold this step's redundancy scores into the average ``s ← ω s + (1−ω) s_t`` (§5.2).

        Zero structures are left out of the normalization (their inverse magnitude is unbounded and
        would flatten everyone else's); they lead the search order anyway.
        """
        live = self.prunable & (x2 > 0)
        step = saliency_scores(x2, xd, d2, self.layout.zig_numel, live)
        step = torch.where(live, step, torch.zeros_like(step))
        omega = group["saliency_momentum"]
        self._ema.mul_(omega).add_(step, alpha=1.0 - omega)
        self._scored += 1

    def _partition(self, x2: torch.Tensor, xd: torch.Tensor, d2: torch.Tensor, group: dict) -> torch.Tensor:
        """The hierarchical search (§5.1), once, at the first step after warm-up; returns G_r as a mask."""
        self._accumulate(x2, xd, d2, group)
        ema = self._ema.cpu().numpy()[:-1]
        zero = (self._zero & self.prunable).cpu().numpy()[:-1]
        candidates = np.nonzero(self.prunable.cpu().numpy()[:-1])[0]
        # zero structures first (already erased), then most redundant first, ties by id
        keys = (candidates, -ema[candidates], ~zero[candidates])
        order = candidates[np.lexsort(keys)].tolist()
        self.selected = [int(s) for s in self.hierarchy.select(order, self.requested)]
        chosen = torch.zeros_like(self.prunable)
        if self.selected:
            chosen[torch.as_tensor(self.selected, device=chosen.device)] = True
        if not bool((chosen <= self.prunable).all()):
            raise RuntimeError(f"the search returned structures that are not erasable: {self.selected}")
        self.redundant = chosen
        self.saliency = self._ema.clone()
        self._holdable = chosen.clone()
        self._set_zero(self._zero & chosen)  # a zero structure the search did not keep is released
        self.goal = len(self.selected)
        return chosen

    # ------------------------------------------------------------------ reporting
    def sparsity_report(self) -> ErasingProgress:
        """What was asked, what the search kept, and which structures are zero now."""
        zero = [int(z) for z in self.zero_zig_ids()]
        return ErasingProgress(
            erasable=int(self.prunable.sum()),
            requested=self.requested,
            searched=self.searched,
            selected=list(self.selected or []),
            erased=len(self.hierarchy.erased_by(self.selected or [])),
            zero=zero,
            valid=self.hierarchy.valid(zero),
        )

    # ------------------------------------------------------------------ state dict
    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra["scores"] = self._ema.cpu()
        extra["scored"] = self._scored
        extra["selected"] = None if self.selected is None else list(self.selected)
        extra["holdable"] = None if self._holdable is None else self._holdable.cpu()
        return extra

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        holdable = extra.get("holdable")
        self._holdable = None if holdable is None else holdable.to(self.layout.device)
        super()._load_extra_state(extra)
        self._ema = extra["scores"].to(device=self.layout.device, dtype=self.layout.dtype)
        self._scored = int(extra.get("scored", 0))
        selected = extra.get("selected")
        self.selected = None if selected is None else [int(s) for s in selected]
        if self.selected is not None:
            self.saliency = self._ema.clone()
