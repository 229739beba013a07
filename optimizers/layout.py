"""Where every ZIG lives inside a torch model's parameters, and batched per-ZIG math over it.

The analysis says, for each owned parameter axis, which ZIG owns each index. This module turns that
into index tensors once, so that every per-ZIG quantity an optimizer needs in a step (squared norms,
dot products, broadcasting a per-ZIG scale back onto the parameters, zeroing chosen ZIGs) costs a
fixed number of tensor operations per *parameter*, never a Python loop over ZIGs.

How a per-ZIG sum is computed: for every parameter, reduce the elementwise product over the axes no ZIG
owns, which leaves a small "marginal" tensor over the owned axes only (a vector for a conv weight whose
rows are owned, an ``[out, in]`` matrix when rows and columns are owned by different ZIGs). Summing
the marginal over all owned axes but one gives one value per index of that axis; concatenating those
vectors over all parameters and segment-summing them by owner id gives the per-ZIG totals. Overlapping
ZIGs (an entry owned by a row ZIG and a column ZIG) are exact: the entry counts in both.

Per-ZIG vectors have length ``num_zigs + 1``: the last slot collects indices owned by no ZIG
(owner -1 in the analysis), so no masking is needed anywhere; its value is never used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from graphcore.groups import PruneAnalysis

__all__ = ["ParamAxes", "ZigLayout"]


@dataclass(frozen=True)
class ParamAxes:
    """The owned axes of one parameter and, per axis, the owner ZIG of every index."""

    param: int  # position in ZigLayout.params
    axes: tuple[int, ...]  # owned axes, increasing
    owners: tuple[torch.Tensor, ...]  # int64, one per owned axis; num_zigs where nobody owns the index
    rest: tuple[int, ...]  # the axes nobody owns (reduced away in marginals)


class ZigLayout:
    """The ZIG slices of ``analysis`` resolved onto concrete parameter tensors.

    ``params`` maps parameter names to tensors (the model's ``named_parameters()``); names in
    ``analysis.param_axes`` that are not in it (buffers such as BatchNorm running statistics) are
    ignored, as are names whose tensors are listed under ``exclude``.
    """

    def __init__(
        self,
        analysis: PruneAnalysis,
        params: Mapping[str, torch.Tensor],
        *,
        exclude: Sequence[str] = (),
    ) -> None:
        self.num_zigs = analysis.num_zigs
        skip = set(exclude)
        by_tensor: dict[int, dict[int, np.ndarray]] = {}
        tensors: dict[int, torch.Tensor] = {}
        for (name, axis), owner in analysis.param_axes.items():
            if name not in params or name in skip:
                continue
            tensor = params[name]
            axis = axis + tensor.dim() if axis < 0 else axis
            if not 0 <= axis < tensor.dim() or tensor.shape[axis] != len(owner):
                raise ValueError(
                    f"analysis gives {len(owner)} owners along axis {axis} of parameter {name!r}, "
                    f"but the model's tensor has shape {tuple(tensor.shape)}; was the analysis made "
                    f"for another model?"
                )
            # Tied weights reach one tensor under several names: keep one owner map per (tensor, axis).
            tensors[id(tensor)] = tensor
            by_tensor.setdefault(id(tensor), {}).setdefault(axis, np.asarray(owner, dtype=np.int64))
        self.params: list[torch.Tensor] = []
        self.slots: list[ParamAxes] = []
        devices = {t.device for t in tensors.values()}
        if len(devices) > 1:
            raise ValueError(f"ZIG parameters live on several devices {sorted(map(str, devices))}; "
                             "group optimizers need one device per process (as under DDP)")
        self.device = devices.pop() if devices else torch.device("cpu")
        floats = [t.dtype for t in tensors.values()]
        self.dtype = torch.float64 if torch.float64 in floats else torch.float32
        numel = np.zeros(self.num_zigs + 1, dtype=np.float64)
        cat_owner: list[np.ndarray] = []
        for key, axes_map in by_tensor.items():
            tensor = tensors[key]
            axes = tuple(sorted(axes_map))
            owners = []
            for axis in axes:
                own = np.where(axes_map[axis] >= 0, axes_map[axis], self.num_zigs)
                # entries per index of this axis = product of the other dims
                np.add.at(numel, own, tensor.numel() // max(tensor.shape[axis], 1))
                cat_owner.append(own)
                owners.append(torch.as_tensor(own, device=self.device))
            rest = tuple(d for d in range(tensor.dim()) if d not in axes)
            self.slots.append(ParamAxes(len(self.params), axes, tuple(owners), rest))
            self.params.append(tensor)
        numel[self.num_zigs] = 0.0
        self.zig_numel = torch.as_tensor(numel, dtype=self.dtype, device=self.device)
        owner_all = np.concatenate(cat_owner) if cat_owner else np.zeros(0, dtype=np.int64)
        self._cat_owner = torch.as_tensor(owner_all, device=self.device)
        # Segment sums in a fixed order (sorted by owner): deterministic on every device, which is
        # what keeps decisions identical on all DDP ranks (index_add_ uses atomics on CUDA).
        order = np.argsort(owner_all, kind="stable")
        self._order = torch.as_tensor(order, device=self.device)
        self._lengths = torch.as_tensor(
            np.bincount(owner_all, minlength=self.num_zigs + 1), device=self.device
        )
        self._slot_sizes = [len(o) for o in cat_owner]
        self.has_slices = self.zig_numel > 0  # ZIGs with at least one entry on these parameters

    # ------------------------------------------------------------------ reductions
    def marginals(
        self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Per parameter, ``a*b`` (or ``a**2``) summed over the unowned axes, in accumulation dtype."""
        out = []
        for slot in self.slots:
            x = a[slot.param]
            y = None if b is None else b[slot.param]
            out.append(_marginal(x, y, slot.axes, slot.rest).to(self.dtype))
        return out

    def zig_sum(self, marginals: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-ZIG totals of the marginals (length ``num_zigs + 1``)."""
        parts = []
        for slot, m in zip(self.slots, marginals):
            parts.extend(_axis_sums(m, len(slot.axes)))
        return self._segment_sum(parts)

    def zig_weighted_sum(self, marginals: Sequence[torch.Tensor], coef: torch.Tensor) -> torch.Tensor:
        """Per ZIG g: sum over its entries e of ``m_e * c_e``, where ``c_e`` = sum of ``coef`` over e's owners.

        With ``m = x**2`` and ``coef = λ/||x||`` this is ``<x_g, penalty_g>`` for overlapping groups.
        """
        parts = []
        for slot, m in zip(self.slots, marginals):
            weight = self._grid(coef, slot, on_param=False)
            parts.extend(_axis_sums(m * weight, len(slot.axes)))
        return self._segment_sum(parts)

    def sq_norms(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Squared L2 norm of every ZIG over ``tensors`` (aligned with ``params``)."""
        return self.zig_sum(self.marginals(tensors))

    def dots(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        """``<a_g, b_g>`` for every ZIG g."""
        return self.zig_sum(self.marginals(a, b))

    # ------------------------------------------------------------------ broadcasts
    def broadcast_sum(self, coef: torch.Tensor, slot: ParamAxes) -> torch.Tensor:
        """``coef`` summed over the owners of every entry of one parameter (a broadcastable tensor)."""
        return self._grid(coef, slot, on_param=True)

    def broadcast_prod(self, factor: torch.Tensor, slot: ParamAxes) -> torch.Tensor:
        """``factor`` multiplied over the owners of every entry (unowned entries get the dummy slot)."""
        shape = self.params[slot.param].shape
        out = None
        for axis, own in zip(slot.axes, slot.owners):
            v = factor[own].view(_axis_shape(len(shape), axis, len(own)))
            out = v if out is None else out * v
        return out

    def touched(self, mask: torch.Tensor) -> list[bool]:
        """For each parameter, whether any of its indices is owned by a ZIG in ``mask`` (one sync)."""
        if not self.slots:
            return []
        hit = mask[self._cat_owner].to(torch.int32)
        per_axis = torch.stack([h.max() if h.numel() else h.new_zeros(()) for h in
                                torch.split(hit, self._slot_sizes)]).tolist()
        out, i = [], 0
        for slot in self.slots:
            out.append(any(per_axis[i: i + len(slot.axes)]))
            i += len(slot.axes)
        return out

    def zero_slices(self, mask: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """``(param, axis, indices)`` of every slice owned by a ZIG in ``mask``: what zeroing writes."""
        out = []
        for slot in self.slots:
            for axis, own in zip(slot.axes, slot.owners):
                idx = torch.nonzero(mask[own]).flatten()
                if idx.numel():
                    out.append((slot.param, axis, idx))
        return out

    def zero_(self, mask: torch.Tensor, tensors: Sequence[torch.Tensor] | None = None) -> None:
        """Set every slice of the ZIGs in ``mask`` (bool, length num_zigs + 1) exactly to zero."""
        target = self.params if tensors is None else tensors
        fill_slices(target, self.zero_slices(mask))

    # ------------------------------------------------------------------ internals
    def _segment_sum(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if not parts:
            return torch.zeros(self.num_zigs + 1, dtype=self.dtype, device=self.device)
        flat = torch.cat(parts)
        return torch.segment_reduce(flat[self._order], "sum", lengths=self._lengths, unsafe=True)

    def _grid(self, coef: torch.Tensor, slot: ParamAxes, *, on_param: bool) -> torch.Tensor:
        """Sum of ``coef`` over owners, shaped to broadcast on the parameter or on its marginal."""
        ndim = self.params[slot.param].dim() if on_param else len(slot.axes)
        out = None
        for k, (axis, own) in enumerate(zip(slot.axes, slot.owners)):
            v = coef[own].view(_axis_shape(ndim, axis if on_param else k, len(own)))
            out = v if out is None else out + v
        return out


def fill_slices(tensors: Sequence[torch.Tensor], slices: Sequence[tuple[int, int, torch.Tensor]],
                value: float = 0.0) -> None:
    """Write ``value`` into the given ``(tensor index, axis, indices)`` slices (touches only those)."""
    for i, axis, idx in slices:
        tensors[i].index_fill_(axis, idx, value)


def _axis_shape(ndim: int, axis: int, size: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = size
    return tuple(shape)


def _marginal(x: torch.Tensor, y: torch.Tensor | None, axes: tuple[int, ...],
              rest: tuple[int, ...]) -> torch.Tensor:
    """``x*y`` (``x**2`` when y is None) summed over ``rest``; the result has one dim per owned axis."""
    if not rest:
        return x * x if y is None else x * y
    lead = len(axes)
    if axes == tuple(range(lead)) and x.is_contiguous() and (y is None or y.is_contiguous()):
        # Owned axes first (conv/linear rows): a 2-D view makes this one fast row reduction.
        rows = x.shape[:lead]
        xv = x.reshape(-1, x[(0,) * lead].numel()) if x.numel() else x.reshape(*rows, 0)
        if y is None:
            out = torch.linalg.vector_norm(xv, dim=-1).square()
        else:
            out = torch.linalg.vecdot(xv, y.reshape(xv.shape))
        return out.reshape(rows)
    if y is None:
        return torch.linalg.vector_norm(x, dim=rest).square()
    return (x * y).sum(dim=rest)


def _axis_sums(m: torch.Tensor, naxes: int) -> list[torch.Tensor]:
    """For each owned axis k of a marginal, its sum over the other owned axes (a vector)."""
    if naxes == 1:
        return [m.reshape(-1)]
    return [m.sum(dim=tuple(j for j in range(naxes) if j != k)) for k in range(naxes)]
