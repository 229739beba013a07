"""The base every group-sparse optimizer builds on: ZIG-aware ``torch.optim.Optimizer``.

A subclass decides *which* ZIGs to penalize, by how much, and which to zero; this class does the rest
with batched primitives (see ``layout``): per-ZIG statistics of the parameters and the search
direction, the penalized trial step with its half-space test, exact zeroing within the per-group and
target budgets, keeping zero groups at zero, first-order variants (SGD with momentum / dampening /
Nesterov / weight decay, Adam, AdamW), state-dict round trips and DDP (the model may be wrapped;
every decision is a deterministic function of parameters and gradients, which DDP keeps identical on
all ranks, so no extra communication is needed).

Built as ``Opt(model, analysis, **hyperparameters)``; every hyperparameter lands in
``param_groups[0]`` so learning-rate schedulers and ``state_dict`` see it as with any torch optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from graphcore.groups import PruneAnalysis
from optimizers.first_order import VARIANTS, decoupled_decay, direction, directions
from optimizers.fused import Batch, sgd_operands, view_of
from optimizers.layout import Scratch, ZigLayout, local
from optimizers.native import Kernels, kernels, status
from optimizers.progress import remember
from optimizers.selection import select_with_caps

__all__ = ["GroupOptimizer", "GroupStats", "removed_zigs", "safe_norm", "unwrap_model"]


def safe_norm(x2: torch.Tensor) -> torch.Tensor:
    """``sqrt(x2)`` with 1 where x2 is 0, for dividing by a group norm that may vanish."""
    return torch.where(x2 > 0, x2, torch.ones_like(x2)).sqrt()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose parameter names the analysis uses (DDP and DataParallel prefix ``module.``)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


@dataclass(frozen=True)
class Need:
    """What a step needs besides the plain first-order update (see :meth:`GroupOptimizer.need`)."""

    pre: bool = False  # per-ZIG statistics of x and D before the step; update() then takes the step
    d2: bool = False  # with ``pre``: also ||D_g||²
    post: bool = False  # ||x_g||² right after the plain step (proximal methods)
    # with ``pre``: the ZIGs whose penalty coefficient may be non-zero in this step (bool, length
    # num_zigs + 1; None: any). A parameter none of whose indices such a ZIG owns takes its plain step
    # in the statistics pass, right after its statistics are read and while it is still in cache,
    # instead of in a second pass (penalized_step leaves it alone). The step is the same.
    active: torch.Tensor | None = field(default=None, compare=False)


@dataclass
class GroupStats:
    """Per-ZIG statistics of one step, all of length ``num_zigs + 1`` (see ``ZigLayout``).

    ``x2`` is ``||x_g||²`` before the step (``Need.pre``) or after the plain step (``Need.post``);
    ``directions`` holds D for every ZIG-holding parameter (None where it got no gradient).
    """

    x2: torch.Tensor
    xd: torch.Tensor | None = None
    d2: torch.Tensor | None = None
    directions: list[torch.Tensor | None] = field(default_factory=list)
    # per parameter index: x² summed over the unowned run of a row-and-column owned weight
    # (ZigLayout.pair_sums), kept by a ``pre`` pass so the cross terms need no second pass
    x2_pairs: dict[int, torch.Tensor] = field(default_factory=dict)
    # per ZIG-holding parameter: whether the statistics pass already took its plain step (Need.active)
    stepped: list[bool] = field(default_factory=list)
    # per ZIG-holding parameter: whether the fused kernels took its statistics (and take its update)
    native: list[bool] = field(default_factory=list)


class GroupOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` over a model's parameters that knows the ZIGs of ``analysis``.

    Every trainable parameter of the model is optimized (parameters with ``requires_grad=False`` or
    marked untrainable in the analysis are left alone); the ones holding ZIG slices come first in
    ``param_groups[0]["params"]``. A ZIG with a slice on an untouched parameter can never be driven
    to zero, so it is not prunable for the optimizer (``self.prunable``).

    A step is one pass over the parameters (first-order direction, then the plain update, or the
    statistics a subclass asked for), at most one batch of per-ZIG decisions, and — when the subclass
    penalizes — a second pass that applies the penalized update. Subclasses override :meth:`need`
    and :meth:`update` and, when they keep state beyond the per-parameter buffers,
    :meth:`_extra_state` / :meth:`_load_extra_state`.
    """

    def __init__(
        self,
        model: nn.Module,
        analysis: PruneAnalysis,
        *,
        lr: float = 0.1,
        variant: str = "sgd",
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fixed_zero_groups: bool = True,
        foreach: bool | None = None,
        native: bool | None = None,
        **hyperparameters: Any,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        module = unwrap_model(model)
        named = dict(module.named_parameters(remove_duplicate=False))
        _check_names(analysis, named, {n for n, _ in module.named_buffers(remove_duplicate=False)})
        frozen = {n for n, p in named.items() if not p.requires_grad or not analysis.trainable.get(n, True)}
        self.analysis = analysis
        trained = {n: p for n, p in named.items() if n not in frozen}
        self._init_zig_tables(analysis, frozen, ZigLayout(analysis, trained))
        # the layout the steps use: only parameter axes that hold a slice of a ZIG we may zero
        self.layout = ZigLayout(analysis, trained, only=self.prunable.cpu().numpy())
        params = list(self.layout.sources)
        seen = {id(p) for p in params}
        for n, p in named.items():
            if n not in frozen and id(p) not in seen:  # tied weights appear under several names
                seen.add(id(p))
                params.append(p)
        if not params:
            raise ValueError("the model has no trainable parameters")
        defaults = dict(
            lr=lr,
            variant=variant,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            betas=tuple(betas),
            eps=eps,
            fixed_zero_groups=fixed_zero_groups,
            foreach=foreach,
            native=native,
            **hyperparameters,
        )
        super().__init__([{"params": params}], defaults)
        self.num_grouped = len(self.layout.params)
        self._t = 0
        self._scratch = Scratch()
        self._zero = torch.zeros(self.layout.num_zigs + 1, dtype=torch.bool, device=self.layout.device)
        self._keep: list[torch.Tensor | None] = [None] * self.num_grouped
        # the fused CPU kernels and each parameter's view for them (None where they do not apply)
        self._kernels: Kernels | None = None
        self._batch: Batch | None = None
        if native is not False:
            on_cpu = self.layout.device.type == "cpu" and self.layout.dtype == torch.float32
            if on_cpu:
                self._kernels = kernels()
                self._batch = Batch([view_of(s, self.layout.index_start(s)) for s in self.layout.slots])
            if native and not on_cpu:
                raise ValueError("native=True: the fused kernels step float32 parameters on the CPU only")
            if native and self._kernels is None:
                raise ValueError(f"native=True, but the fused kernels cannot be used: {status()}")
        with torch.no_grad():
            self._set_zero(self._observed_zero(self.layout.sq_norms()))
        remember(module, self)  # so that construct.to_torch(model, ...) can say if a target was missed

    # ------------------------------------------------------------------ construction helpers
    def _init_zig_tables(self, analysis: PruneAnalysis, frozen: set[str], full: ZigLayout) -> None:
        """Per-ZIG group ids, the prunable mask, and per-group limits on zero ZIGs (``full``: every
        trained parameter's ZIG slices)."""
        num_zigs, num_groups = analysis.num_zigs, len(analysis.groups)
        group = np.full(num_zigs + 1, num_groups, dtype=np.int64)
        in_prunable = np.zeros(num_zigs + 1, dtype=bool)
        for i, g in enumerate(analysis.groups):
            group[np.asarray(g.zig_ids, dtype=np.int64)] = i
            in_prunable[np.asarray(g.zig_ids, dtype=np.int64)] = g.prunable
        stuck = np.zeros(num_zigs + 1, dtype=bool)  # ZIGs with a slice on a parameter we do not train
        for (name, _axis), owner in analysis.param_axes.items():
            if name in frozen:
                own = np.asarray(owner, dtype=np.int64)
                stuck[own[own >= 0]] = True
        eligible = in_prunable & ~stuck & full.has_slices.cpu().numpy()
        eligible[num_zigs] = False
        size = np.bincount(group, minlength=num_groups + 1)
        n_eligible = np.bincount(group[eligible], minlength=num_groups + 1)
        min_keep = np.array([max(int(g.min_keep), 0) for g in analysis.groups] + [0], dtype=np.int64)
        # at most size - min_keep ZIGs of a group may be zero, and only eligible ones can be
        cap = np.clip(np.minimum(n_eligible, size - min_keep), 0, None)
        cap[num_groups] = 0
        dev = full.device
        self.zig_group = torch.as_tensor(group, device=dev)
        self.prunable = torch.as_tensor(eligible, device=dev)
        self.group_size = torch.as_tensor(size, device=dev)
        self.group_cap = torch.as_tensor(cap, device=dev)
        self.num_prunable = int(in_prunable[:num_zigs].sum())  # what target sparsities count
        self.max_zero = int(cap.sum())

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step: directions and plain updates (or statistics), then :meth:`update`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        self._t += 1
        need = self.need(group)
        stats = self._sweep(group, need)
        if need.pre or need.post:
            self.update(stats, group)
        return loss

    def need(self, group: dict) -> Need:
        """What this step needs; the default, ``Need()``, is the plain first-order step."""
        return Need()

    def update(self, stats: GroupStats, group: dict) -> None:
        """Finish a step that asked for statistics.

        With ``Need.pre`` the ZIG-holding parameters have not moved yet: call :meth:`penalized_step`
        (a zero coefficient everywhere gives the plain step). With ``Need.post`` they have.
        """
        raise NotImplementedError(f"{type(self).__name__} asked for statistics but does not use them")

    def keeps_zero(self, group: dict) -> bool:
        """Whether zero ZIGs are held at zero in this step (``fixed_zero_groups`` by default)."""
        return bool(group["fixed_zero_groups"])

    def _sweep(self, group: dict, need: Need) -> GroupStats:
        """The pass over all parameters: direction, then either statistics or the plain update."""
        lr = group["lr"]
        decay = decoupled_decay(group["variant"], lr, group["weight_decay"])
        keep = self._keep_masks(group)
        layout, scratch, params = self.layout, self._scratch, group["params"]
        if not (need.pre or need.post) and self._foreach(group):
            self._plain_foreach(group, lr, decay, keep)
            return GroupStats(x2=torch.empty(0))
        # per ZIG-holding parameter: one per-index vector per owned axis
        xs: list[list[torch.Tensor]] = [[] for _ in range(self.num_grouped)]
        xds: list[list[torch.Tensor]] = [[] for _ in range(self.num_grouped)]
        dds: list[list[torch.Tensor]] = [[] for _ in range(self.num_grouped)]
        stats = GroupStats(x2=torch.empty(0), directions=[None] * self.num_grouped)
        # parameters whose plain step is taken in this pass (Need.active): no penalty can reach them
        early = [False] * self.num_grouped
        if need.pre and need.active is not None:
            early = [not t for t in layout.touched(need.active)]
        stats.stepped = early
        # the fused kernels take what they can in one call; the loop below does the rest
        flat = self._native_pre(group, stats, lr, decay) if need.pre else None
        handled = stats.native or [False] * self.num_grouped
        for i, source in enumerate(params):
            if i < self.num_grouped and handled[i]:
                continue
            # the local shard of a sharded parameter (FSDP2); its optimizer state is local too
            p = layout.params[i] if i < self.num_grouped else local(source)
            grad = None if source.grad is None else local(_dense_grad(source))
            d = None if grad is None else direction(p, grad, self.state[source], group, fused=need.pre)
            if i >= self.num_grouped:
                if d is not None:
                    _plain_update(p, d, lr, decay, None)
                continue
            slot = layout.slots[i]
            if need.pre:
                stats.directions[i] = d
                if slot.is_vector:
                    continue  # all vectors at once below
                # the x² pair matrix serves the cross terms of a penalized step only
                xs[i] = layout.reduce(slot, p, None, scratch, None if early[i] else stats.x2_pairs)
                dz = _or_zeros(d, p)
                xds[i] = layout.reduce(slot, p, dz, scratch)
                if need.d2:
                    dds[i] = layout.reduce(slot, dz, None, scratch)
                if early[i] and d is not None:
                    _plain_update(p, d, lr, decay, keep[i])
                continue
            if d is not None:
                _plain_update(p, d, lr, decay, keep[i])
            if need.post:
                xs[i] = layout.reduce(slot, p, None, scratch)
        if need.pre and not all(handled[i] for i in layout.vectors):
            ps = [layout.params[i] for i in layout.vectors]
            ds = [_or_zeros(stats.directions[i], layout.params[i]) for i in layout.vectors]
            quantities: list[tuple[list[list[torch.Tensor]], list[torch.Tensor], list[torch.Tensor] | None]]
            quantities = [(xs, ps, None), (xds, ps, ds)] + ([(dds, ds, None)] if need.d2 else [])
            for out, a, b in quantities:
                for i, v in zip(layout.vectors, layout.reduce_vectors(a, b)):
                    out[i] = [] if handled[i] else [v]
            moved = [
                (i, d)
                for i in layout.vectors
                if early[i] and not handled[i] and (d := stats.directions[i]) is not None
            ]
            if moved:
                vs = [layout.params[i] for i, _ in moved]
                if decay != 1.0:
                    torch._foreach_mul_(vs, decay)
                _foreach_update(vs, [d for _, d in moved], [keep[i] for i, _ in moved], lr)
        totals = None
        if flat is not None:  # the eager parameters' sums join the kernels' in per-index order
            for i, slot in enumerate(layout.slots):
                if not handled[i]:
                    for q, parts in enumerate((xs, xds, dds)):
                        if parts[i]:
                            layout.put_flat(flat[q], slot, parts[i])
            totals = layout.totals(flat if need.d2 else flat[:2])
        if totals is not None:
            stats.x2 = totals[0]
        elif need.pre or need.post:
            stats.x2 = layout.segment_sum([v for parts in xs for v in parts])
        if need.pre or need.post:
            before = self._zero
            self._set_zero(self._observed_zero(stats.x2))
            if any(early) and self._zero is not before and self.keeps_zero(group):
                # A ZIG found exactly zero now is held at zero from this step on: a parameter that has
                # already stepped had no keep mask for it yet, so its slices are zeroed here (what
                # the mask would have left: decay·0 − lr·D·0). Only a ZIG zeroed outside the
                # optimizer since the last step can get here.
                layout.zero_(self._zero & ~before)
        if totals is not None:
            stats.xd = totals[1]
            stats.d2 = totals[2] if need.d2 else None
        elif need.pre:
            stats.xd = layout.segment_sum([v for parts in xds for v in parts])
            stats.d2 = layout.segment_sum([v for parts in dds for v in parts]) if need.d2 else None
        return stats

    def _keep_index(self, group: dict) -> torch.Tensor | None:
        """Per owned index (``ZigLayout.at_index``), 1.0 where its ZIG may move and 0.0 where it is
        held at zero; None when nothing is held or the fused kernels are not in use."""
        if self._kernels is None or not self.keeps_zero(group) or not bool(self._zero.any()):
            return None
        return self.layout.at_index((~self._zero).to(torch.float32))

    def _native_pre(self, group: dict, stats: GroupStats, lr: float, decay: float) -> torch.Tensor | None:
        """The statistics sweep of every ZIG-holding parameter the fused kernels can take, in one call.

        Returns their x², x·D and D² sums in per-index order (``[3, n]``, zero where the eager path
        will put its own), and marks those parameters in ``stats.native``; None when there are none.
        """
        if self._kernels is None or self._batch is None:
            return None
        params, layout = group["params"], self.layout
        members: list[int] = []
        tensors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        native = [False] * self.num_grouped
        operands = (0.0, 1.0, 0.0)
        for i, view in enumerate(self._batch.views):
            source = params[i]
            if view is None or source.grad is None:
                continue
            p, grad = layout.params[i], local(_dense_grad(source))
            found = sgd_operands(p, grad, self.state[source], group)
            if found is None:
                continue
            buf, momentum, damp1, wd = found
            operands = (momentum, damp1, wd)  # the group's: the same for every parameter
            members.append(i)
            tensors.append((p, grad, buf))
            stats.directions[i] = grad if buf is None else buf
            native[i] = True
        if not members:
            return None
        flat = torch.zeros((3, layout.index_length), dtype=torch.float32)
        step = [stats.stepped[i] for i in members]
        keep = self._keep_index(group)
        self._batch.sweep1(self._kernels, members, tensors, operands, step, lr, decay, keep, flat)
        stats.native = native
        return flat

    def _keep_masks(self, group: dict) -> list[torch.Tensor | None]:
        """Per ZIG-holding parameter, the mask that holds its zero ZIGs at zero (None: nothing held)."""
        if self.keeps_zero(group):
            return self._keep
        return [None] * self.num_grouped

    def _foreach(self, group: dict) -> bool:
        """Batch plain steps with foreach kernels: by default on GPUs (few launches), not on CPU."""
        return self.layout.device.type == "cuda" if group["foreach"] is None else bool(group["foreach"])

    def _plain_foreach(self, group: dict, lr: float, decay: float, keep: list[torch.Tensor | None]) -> None:
        """The plain step of every parameter with a gradient, in a handful of foreach kernels."""
        idx = [i for i, p in enumerate(group["params"]) if p.grad is not None]
        sources = [group["params"][i] for i in idx]
        ps = [local(p) for p in sources]
        grads = [local(_dense_grad(p)) for p in sources]
        ds = directions(ps, grads, [self.state[p] for p in sources], group)
        if decay != 1.0:
            torch._foreach_mul_(ps, decay)
        _foreach_update(ps, ds, [keep[i] if i < self.num_grouped else None for i in idx], lr)

    # ------------------------------------------------------------------ primitives for subclasses
    @property
    def steps_done(self) -> int:
        """Number of :meth:`step` calls so far (restored by ``load_state_dict``)."""
        return self._t

    def penalized_step(self, stats: GroupStats, group: dict, coef: torch.Tensor) -> torch.Tensor:
        """Step the ZIG-holding parameters, adding the group-lasso gradient on penalized ZIGs.

        ``coef`` is ``λ_g/||x_g||`` per ZIG (0 where not penalized); an entry owned by several ZIGs
        gets the sum. The parameters become the trial point ``x̂ = (decay − lr·Σcoef)·x − lr·D``
        (zero ZIGs stay zero when :meth:`keeps_zero`). Returns ``<x̂_g, x_g>`` for every ZIG, from the
        statistics plus, for parameters owned along several axes, cross terms read while the
        parameter is being updated anyway.
        """
        lr = group["lr"]
        decay = decoupled_decay(group["variant"], lr, group["weight_decay"])
        keep = self._keep_masks(group)
        layout = self.layout
        stepped = stats.stepped or [False] * self.num_grouped
        touched = layout.touched(coef != 0)
        for i, done in enumerate(stepped):
            if done and touched[i]:
                raise RuntimeError(
                    f"{type(self).__name__}: a penalty reached a parameter that already stepped; "
                    "Need.active must include every ZIG given a non-zero coefficient"
                )
        cross = layout.zeros_flat()
        native = stats.native or [False] * self.num_grouped
        if any(native) and self._kernels is not None and self._batch is not None:
            members = [i for i, n in enumerate(native) if n]
            tensors = [(layout.params[i], stats.directions[i]) for i in members]
            coef_index = layout.at_index(coef.to(torch.float32))
            skip = [stepped[i] for i in members]
            keep_index = self._keep_index(group)
            self._batch.sweep2(
                self._kernels, members, tensors, skip, lr, decay, coef_index, keep_index, cross
            )
        for slot in layout.slots:
            i = slot.param
            if slot.is_vector or stepped[i] or native[i]:
                continue  # vectors: all at once below; stepped: done in the statistics pass
            p = layout.params[i]
            if touched[i] and len(slot.axes) > 1:  # overlapping owners: their share of <x̂_g, x_g>
                pair = stats.x2_pairs.get(i)
                layout.put_flat(cross, slot, layout.cross(slot, coef, p, self._scratch, pair))
            if touched[i]:
                layout.scale_(slot, coef, decay, lr, self._scratch)
                decay_i = 1.0
            else:
                decay_i = decay
            d = stats.directions[i]
            if d is not None:
                _plain_update(p, d, lr, decay_i, keep[i])
            elif decay_i != 1.0:
                p.mul_(decay_i)
        if layout.vectors:
            self._vector_step(stats, coef, lr, decay, keep, [s or n for s, n in zip(stepped, native)])
        return (decay - lr * coef) * stats.x2 - lr * layout.segment_sum([cross]) - lr * stats.xd

    def _vector_step(
        self,
        stats: GroupStats,
        coef: torch.Tensor,
        lr: float,
        decay: float,
        keep: list[torch.Tensor | None],
        stepped: list[bool],
    ) -> None:
        """:meth:`penalized_step` for the vector parameters (biases, BN), batched with foreach kernels."""
        layout = self.layout
        todo = [j for j, i in enumerate(layout.vectors) if not stepped[i]]
        if not todo:
            return
        ps = [layout.params[i] for i in layout.vectors]
        factors = layout.vector_coef(decay - lr * coef)
        ps, factors = [ps[j] for j in todo], [factors[j] for j in todo]
        torch._foreach_mul_(ps, [f if f.dtype == p.dtype else f.to(p.dtype) for f, p in zip(factors, ps)])
        moved = [
            (layout.params[i], d, keep[i])
            for i in layout.vectors
            if not stepped[i] and (d := stats.directions[i]) is not None
        ]
        _foreach_update([p for p, _, _ in moved], [d for _, d, _ in moved], [k for _, _, k in moved], lr)

    def half_space_zero(
        self,
        hat_dot: torch.Tensor,
        x2: torch.Tensor,
        active: torch.Tensor,
        epsilon: float,
        budget: int | None,
    ) -> torch.Tensor:
        """Half-space projection: zero the active ZIGs with ``<x̂_g, x_g> < ε||x_g||²`` (within limits).

        When more qualify than the per-group room or ``budget`` allow, those whose trial point went
        furthest past the boundary (smallest ``<x̂_g, x_g>/||x_g||²``) go first. Returns the ZIGs zeroed.
        """
        candidates = active & (hat_dot < epsilon * x2)
        ratio = hat_dot / safe_norm(x2).square()
        chosen = select_with_caps(candidates, ratio, self.zig_group, self.room(), budget)
        self.zero_zigs(chosen)
        return chosen

    def zero_zigs(self, mask: torch.Tensor) -> None:
        """Set every slice of the ZIGs in ``mask`` exactly to zero and remember them as zero."""
        if not bool(mask.any()):
            return
        self.layout.zero_(mask)
        self._set_zero(self._zero | mask)

    def room(self) -> torch.Tensor:
        """Per node group: how many more of its ZIGs may become zero (``min_keep`` respected)."""
        zero = self._zero & self.prunable
        used = torch.bincount(self.zig_group[zero], minlength=self.group_cap.numel())
        return self.group_cap - used

    def target_count(self, sparsity: float) -> int:
        """Number of zero ZIGs a group sparsity asks for: ``floor(s · #prunable ZIGs)``, within limits."""
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"target group sparsity must be in [0, 1], got {sparsity}")
        return min(math.floor(sparsity * self.num_prunable + 1e-9), self.max_zero)

    def num_zero(self) -> int:
        """Number of prunable ZIGs that are exactly zero (as last observed or set)."""
        return int((self._zero & self.prunable).sum())

    def group_sparsity(self) -> float:
        """Zero prunable ZIGs over all prunable ZIGs."""
        return self.num_zero() / self.num_prunable if self.num_prunable else 0.0

    def zero_zig_ids(self) -> np.ndarray:
        """Ids of the prunable ZIGs that are exactly zero."""
        return torch.nonzero(self._zero & self.prunable).flatten().cpu().numpy()

    # ------------------------------------------------------------------ zero bookkeeping
    def _observed_zero(self, x2: torch.Tensor) -> torch.Tensor:
        """Prunable ZIGs that are exactly zero; only those are ever held at zero."""
        return (x2 == 0) & self.prunable

    def _set_zero(self, zero: torch.Tensor) -> None:
        """Record the zero ZIGs; rebuild the keep masks (D is multiplied by them) where they changed."""
        if torch.equal(zero, self._zero):
            return
        changed = self.layout.touched(zero ^ self._zero)
        self._zero = zero
        keep = (~zero).to(self.layout.dtype)
        has_zero = self.layout.touched(zero)
        for slot in self.layout.slots:
            i = slot.param
            if changed[i]:
                mask = self.layout.broadcast_prod(keep, slot)
                self._keep[i] = _fast_operand(mask, self.layout.params[i]) if has_zero[i] else None

    # ------------------------------------------------------------------ state dict
    def _extra_state(self) -> dict[str, Any]:
        """State beyond torch's per-parameter buffers; subclasses extend the dict."""
        return {"step": self._t, "zero": self._zero.cpu()}

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self._t = int(extra["step"])
        self._zero = torch.zeros_like(self._zero)
        self._keep = [None] * self.num_grouped
        self._set_zero(extra["zero"].to(self.layout.device))

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["zigraph"] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("zigraph", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self._load_extra_state(extra)


def removed_zigs(model: nn.Module, analysis: PruneAnalysis, *, prunable_only: bool = True) -> np.ndarray:
    """Ids of the ZIGs all of whose slices on the model's parameters are exactly zero.

    This is how construct finds what an optimizer (built-in or plugin) removed: exact zeros are the
    whole contract. ZIGs with no slice on a parameter are never reported. With ``prunable_only``
    (the default) only ZIGs of prunable node groups count, and a group never loses more than
    ``size - min_keep`` ZIGs: surplus zero ZIGs (lowest ids removed first) are kept, which is exact
    because a zero channel kept in the network changes nothing.
    """
    module = unwrap_model(model)
    layout = ZigLayout(analysis, dict(module.named_parameters(remove_duplicate=False)))
    with torch.no_grad():
        zero = ((layout.sq_norms() == 0) & layout.has_slices).cpu().numpy()[:-1]
    if not prunable_only:
        return np.nonzero(zero)[0].astype(np.int64)
    keep = np.zeros_like(zero)
    for g in analysis.groups:
        if not g.prunable:
            continue
        ids = np.asarray(g.zig_ids, dtype=np.int64)
        hit = np.sort(ids[zero[ids]])
        keep[hit[: max(len(ids) - int(g.min_keep), 0)]] = True
    return np.nonzero(keep)[0].astype(np.int64)


def _check_names(analysis: PruneAnalysis, params: Mapping[str, torch.Tensor], buffers: set[str]) -> None:
    """Fail early when the analysis names tensors the model does not have (another model's analysis)."""
    unknown = sorted({name for name, _ in analysis.param_axes if name not in params and name not in buffers})
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ValueError(
            f"the analysis refers to {len(unknown)} tensors the model does not have ({shown}); pass the "
            "model the analysis was made from (the unwrapped module's parameter names are used)"
        )


def _dense_grad(p: torch.Tensor) -> torch.Tensor:
    grad = p.grad
    if grad is None:  # callers step only parameters that got a gradient
        raise RuntimeError("a parameter without a gradient has no direction")
    if grad.is_sparse:
        raise RuntimeError("group optimizers do not support sparse gradients")
    return grad


def _or_zeros(d: torch.Tensor | None, p: torch.Tensor) -> torch.Tensor:
    """A parameter's direction, or zeros where it got no gradient (its statistics see no movement)."""
    return torch.zeros_like(p) if d is None else d


def _plain_update(
    p: torch.Tensor, d: torch.Tensor, lr: float, decay: float, keep: torch.Tensor | None
) -> None:
    """``p ← decay·p − lr·D``; with a keep mask (0 on zero ZIGs) those entries stay exactly zero."""
    if decay != 1.0:
        p.mul_(decay)
    if keep is None:
        p.add_(d, alpha=-lr)
    else:
        p.addcmul_(d, keep, value=-lr)


def _foreach_update(
    ps: list[torch.Tensor], ds: list[torch.Tensor], keeps: list[torch.Tensor | None], lr: float
) -> None:
    """:func:`_plain_update` without the decay for many tensors, in two foreach kernels."""
    plain = [(p, d) for p, d, k in zip(ps, ds, keeps) if k is None]
    masked = [(p, d, k) for p, d, k in zip(ps, ds, keeps) if k is not None]
    if plain:
        torch._foreach_add_([p for p, _ in plain], [d for _, d in plain], alpha=-lr)
    if masked:
        torch._foreach_addcmul_(
            [p for p, _, _ in masked], [d for _, d, _ in masked], [k for _, _, k in masked], value=-lr
        )


def _fast_operand(mask: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A keep mask in the form elementwise kernels stream fastest against ``param``.

    A mask that broadcasts over a long contiguous run (``[O, 1, 1, 1]`` on a conv weight) stays
    compact; one whose run is short (``[O, I, 1, 1]`` on a 3x3 kernel: runs of 9) makes every update
    several times slower than a dense operand, so it is stored expanded, once per change of the
    zero set.
    """
    mask = mask.to(param.dtype)
    run = 1
    for size, m in zip(reversed(param.shape), reversed(mask.shape)):
        if m != 1:
            break
        run *= size
    if run >= 64 or mask.numel() == param.numel():
        return mask
    return mask.expand(param.shape).contiguous()
