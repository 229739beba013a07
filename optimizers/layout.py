"""Where every ZIG lives inside a torch model's parameters, and batched per-ZIG math over it.

The analysis says, for each owned parameter axis, which ZIG owns each index. This module turns that
into index tensors once, so that every per-ZIG quantity an optimizer needs in a step (squared norms,
dot products, broadcasting a per-ZIG coefficient back onto the parameters, zeroing chosen ZIGs)
costs a fixed number of tensor operations per *parameter*, never a Python loop over ZIGs.

How a per-ZIG sum is computed: for every parameter, reduce the elementwise product over the axes no
ZIG owns (:meth:`ZigLayout.reduce`), then over all owned axes but one, which leaves one value per
index of each owned axis. Concatenating those vectors over all parameters and segment-summing them
by owner id (:meth:`ZigLayout.segment_sum`) gives the per-ZIG totals. Overlapping ZIGs (an entry
owned by a row ZIG and a column ZIG) are exact: the entry counts in both.

Per-ZIG vectors have length ``num_zigs + 1``: the last slot collects indices owned by no ZIG
(owner -1 in the analysis), so no masking is needed anywhere; its value is never used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from graphcore.groups import PruneAnalysis

__all__ = ["ParamAxes", "Scratch", "ZigLayout", "local", "local_shard"]


def local_shard(t: torch.Tensor) -> tuple[torch.Tensor, int | None, Any]:
    """``(local tensor, first global row it holds, process group)`` of a parameter.

    A plain tensor is its own shard (``None``, ``None``). A DTensor (FSDP2's ``fully_shard``) must be
    sharded along dim 0 over a 1-D mesh, which is what FSDP2 does: the optimizer then works on the
    local rows and sums its per-ZIG statistics over the mesh, so every rank decides alike.
    """
    try:
        from torch.distributed.tensor import DTensor, Shard
    except ImportError:  # pragma: no cover - torch without distributed
        return t, None, None
    if not isinstance(t, DTensor):
        return t, None, None
    mesh, placements = t.device_mesh, tuple(t.placements)
    if mesh.ndim != 1 or placements != (Shard(0),):
        raise ValueError(
            f"group optimizers support parameters sharded along dim 0 over a 1-D mesh (FSDP2's "
            f"fully_shard); got placements {placements} on a {mesh.ndim}-D mesh"
        )
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(t.shape, mesh, t.placements)
    return t.to_local(), int(offset[0]), mesh.get_group()


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this process holds (``t`` itself unless it is a DTensor)."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


@dataclass(frozen=True)
class ParamAxes:
    """The owned axes of one parameter and, per axis, the owner ZIG of every index."""

    param: int  # position in ZigLayout.params
    axes: tuple[int, ...]  # owned axes, increasing
    owners: tuple[torch.Tensor, ...]  # int64, one per owned axis; num_zigs where nobody owns the index
    # The parameter viewed with each owned axis alone and each run of unowned axes merged: a conv
    # weight [O, I, 3, 3] owned by rows and columns is [O, I, 9], a 1x1 one [O, I]. Reductions then
    # run over one contiguous block instead of a strided set of axes.
    blocks: tuple[int, ...]
    owned_pos: tuple[int, ...]  # where the owned axes are in ``blocks``
    rest_pos: tuple[int, ...]  # where the merged unowned runs are
    # one owned axis whose indices all belong to one ZIG (an erase structure's whole tensor): its
    # statistics are whole-tensor dot products, one BLAS pass and no temporary
    uniform: bool = False

    @property
    def is_vector(self) -> bool:
        """One owned axis and nothing else of size > 1 (a bias, a BN scale): batched with its kind."""
        return len(self.owned_pos) == 1 and not self.rest_pos


class Scratch:
    """One reusable buffer per (device, dtype) for products that are reduced right away.

    Allocating a parameter-sized temporary for every product costs page faults on CPU (freshly
    mapped memory); one buffer sized to the largest parameter is reused by every reduction instead.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def like(self, t: torch.Tensor) -> torch.Tensor:
        key = (t.device, t.dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < t.numel():
            buf = torch.empty(t.numel(), device=t.device, dtype=t.dtype)
            self._buffers[key] = buf
        return buf[: t.numel()].view(t.shape)


class ZigLayout:
    """The ZIG slices of ``analysis`` resolved onto concrete parameter tensors.

    ``params`` maps parameter names to tensors (the model's ``named_parameters()``); names in
    ``analysis.param_axes`` that are not in it (buffers such as BatchNorm running statistics) are
    ignored. With ``only`` (bool per ZIG id), a parameter axis none of whose owners is in ``only``
    is left out: an optimizer that decides only about those ZIGs reads each of their slices and
    never spends a pass on a parameter (an erase analysis's untouched layers, a classifier's
    unprunable outputs) whose statistics nothing uses.
    """

    def __init__(
        self, analysis: PruneAnalysis, params: Mapping[str, torch.Tensor], only: np.ndarray | None = None
    ) -> None:
        self.num_zigs = analysis.num_zigs
        by_tensor: dict[int, dict[int, np.ndarray]] = {}
        tensors: dict[int, torch.Tensor] = {}
        seen_devices = {params[name].device for name, _ in analysis.param_axes if name in params}
        for (name, axis), owner in analysis.param_axes.items():
            if name not in params:
                continue
            if only is not None:
                own = np.asarray(owner, dtype=np.int64)
                if not only[own[own >= 0]].any():
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
        devices = seen_devices
        if len(devices) > 1:
            raise ValueError(
                f"ZIG parameters live on several devices {sorted(map(str, devices))}; "
                "group optimizers need one device per process (as under DDP)"
            )
        self.device = devices.pop() if devices else torch.device("cpu")
        wide = any(t.dtype == torch.float64 for t in tensors.values())
        self.dtype = torch.float64 if wide else torch.float32
        #: the tensors the steps work on: each parameter itself, or its local shard (FSDP2 / DTensor)
        self.params: list[torch.Tensor] = []
        #: the parameters as the model holds them (what the optimizer's param_groups list)
        self.sources: list[torch.Tensor] = []
        self.slots: list[ParamAxes] = []
        self._repeated: dict[int, torch.Tensor] = {}  # per parameter index: see _repeated_owner
        #: the process group per-ZIG totals are summed over when parameters are sharded (else None)
        self.group: Any = None
        shards = {key: local_shard(t) for key, t in tensors.items()}
        groups = {id(g): g for _, _, g in shards.values() if g is not None}
        plain = any(g is None for _, _, g in shards.values())
        if len(groups) > 1 or (groups and plain):
            raise ValueError(
                "ZIG parameters are sharded over several process groups, or only some of them are; "
                "shard the whole model with one mesh (fully_shard on the root and its blocks)"
            )
        self.group = next(iter(groups.values()), None)
        numel = np.zeros(self.num_zigs + 1, dtype=np.float64)
        cat_owner: list[np.ndarray] = []
        for key, axes_map in by_tensor.items():
            tensor = tensors[key]
            local, row0, _ = shards[key]
            axes = tuple(sorted(axes_map))
            owners = []
            for axis in axes:
                own = np.where(axes_map[axis] >= 0, axes_map[axis], self.num_zigs)
                np.add.at(numel, own, tensor.numel() // max(tensor.shape[axis], 1))  # global counts
                if axis == 0 and row0 is not None:
                    own = own[row0 : row0 + local.shape[0]]  # this rank's rows
                cat_owner.append(own)
                owners.append(torch.as_tensor(own, device=self.device))
            blocks, owned_pos, rest_pos = _block_shape(tuple(local.shape), axes)
            last = cat_owner[-1]
            uniform = len(axes) == 1 and last.size > 0 and bool((last == last[0]).all())
            slot = ParamAxes(len(self.params), axes, tuple(owners), blocks, owned_pos, rest_pos, uniform)
            if uniform and not slot.is_vector:  # one total per statistic: one entry in the per-index vector
                cat_owner[-1] = last[:1]
            self.slots.append(slot)
            self.params.append(local)
            self.sources.append(tensor)
        numel[self.num_zigs] = 0.0
        #: number of scalars of every ZIG on these parameters (an entry owned twice counts twice)
        self.zig_numel = torch.as_tensor(numel, dtype=self.dtype, device=self.device)
        self.has_slices = self.zig_numel > 0
        owner_all = np.concatenate(cat_owner) if cat_owner else np.zeros(0, dtype=np.int64)
        self._cat_owner = torch.as_tensor(owner_all, device=self.device)
        # Segment sums in a fixed order (sorted by owner): deterministic on every device, which is
        # what keeps decisions identical on all DDP ranks (index_add_ uses atomics on CUDA).
        self._order = torch.as_tensor(np.argsort(owner_all, kind="stable"), device=self.device)
        self._lengths = torch.as_tensor(
            np.bincount(owner_all, minlength=self.num_zigs + 1), device=self.device
        )
        #: the parameters whose slots are vectors, handled together to save per-tensor overhead
        self.vectors = [slot.param for slot in self.slots if slot.is_vector]
        vec_owners = [self.slots[i].owners[0] for i in self.vectors]
        self._vec_owner = torch.cat(vec_owners) if vec_owners else torch.zeros(0, dtype=torch.int64)
        self._vec_sizes = [len(o) for o in vec_owners]
        starts = np.cumsum([0] + [len(o) for o in cat_owner])
        self._offsets: list[int] = []  # per slot: where its axes start in the concatenated vector
        k = 0
        for slot in self.slots:
            self._offsets.append(int(starts[k]))
            k += len(slot.axes)
        # per slot, where its indices start and end in the per-index vector (for touched)
        self._slot_start = torch.as_tensor(self._offsets, dtype=torch.int64, device=self.device)
        self._slot_end = torch.as_tensor([*self._offsets[1:], int(starts[-1])], device=self.device)

    # ------------------------------------------------------------------ reductions
    def reduce(
        self,
        slot: ParamAxes,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        scratch: Scratch | None = None,
        pairs: dict[int, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Sums of ``x*y`` (``x²`` when y is None) of one parameter per index of each owned axis
        (one total for a tensor that is wholly one ZIG's: its axis has one entry in the layout).

        One vector per owned axis, in ``slot.axes`` order, in accumulation dtype. With ``pairs``, the
        :meth:`pair_sums` matrix (when the layout has one) is kept there under the parameter's index.
        """
        if slot.uniform and not slot.is_vector:  # the whole tensor is one ZIG's: one dot product
            flat = x.reshape(-1)
            return [torch.dot(flat, flat if y is None else y.reshape(-1)).to(self.dtype).view(1)]
        xv = x.reshape(slot.blocks)
        if slot.is_vector:  # a bias, a BN scale: small, no scratch needed
            return [(xv * xv if y is None else xv * y.reshape(slot.blocks)).to(self.dtype)]
        if y is None and slot.owned_pos == (0,) and slot.blocks[1] >= 64:
            return [_sq_norm(xv, (1,)).to(self.dtype)]  # rows of a weight: one fast reduction
        prod = _product(xv, None if y is None else y.reshape(slot.blocks), scratch)
        # the pair matrix costs a skinny matrix-vector pass (a 3x3 kernel's 9 taps per row): only
        # worth it when the caller keeps it for the cross terms; rows and columns come straight
        # from the product otherwise (two long matrix-vector products). A [O, I] weight has no pair
        # matrix smaller than itself: its cross terms recompute x² from the parameter in the second
        # sweep, which reads it anyway, instead of keeping a parameter-sized copy between sweeps.
        pair = self.pair_sums(slot, prod) if pairs is not None else None
        if pair is not None:
            assert pairs is not None
            pairs[slot.param] = pair
            return self.pair_reduce(pair)
        return [_sum_except(prod, pos).to(self.dtype) for pos in slot.owned_pos]

    @staticmethod
    def pair_sums(slot: ParamAxes, prod: torch.Tensor) -> torch.Tensor | None:
        """For a parameter owned along its first two blocks with a trailing unowned run
        (``[O, I, B]``: a conv weight by rows and columns), ``prod`` summed over the run: ``[O, I]``,
        one pass; rows and columns are then sums over that small matrix. None for other layouts."""
        if slot.owned_pos != (0, 1) or len(slot.blocks) != 3:
            return None
        n0, n1, b = slot.blocks
        return (prod.reshape(n0 * n1, b) @ _ones(b, prod)).view(n0, n1)

    def pair_reduce(self, pair: torch.Tensor) -> list[torch.Tensor]:
        """Row and column sums of a :meth:`pair_sums` matrix, in accumulation dtype."""
        rows = pair @ _ones(pair.shape[1], pair)
        return [rows.to(self.dtype), (_ones(pair.shape[0], pair) @ pair).to(self.dtype)]

    def reduce_vectors(
        self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """:meth:`reduce` for all the vector parameters (``self.vectors`` order) in a few kernels."""
        if not xs:
            return []
        flat = torch.cat([x.reshape(-1) for x in xs])
        other = flat if ys is None else torch.cat([y.reshape(-1) for y in ys])
        return list(torch.split((flat * other).to(self.dtype), self._vec_sizes))

    def vector_coef(self, coef: torch.Tensor) -> list[torch.Tensor]:
        """``coef`` of the owner of every entry of each vector parameter, shaped like the parameter."""
        flat = torch.split(coef[self._vec_owner], self._vec_sizes)
        return [v.view(self.params[i].shape) for i, v in zip(self.vectors, flat)]

    def cross(
        self,
        slot: ParamAxes,
        coef: torch.Tensor,
        x: torch.Tensor,
        scratch: Scratch | None = None,
        pair: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Per index of each owned axis: ``Σ x_e² · (sum of coef over e's owners on the other axes)``.

        ``pair``: x²'s :meth:`pair_sums` of this step when the caller kept it (saves a pass).

        For a row ZIG of a weight whose columns belong to other ZIGs, this is the share of
        ``Σ_{e∈g} c_e x_e²`` (``c_e`` the summed coefficients of e's owners) that comes from the
        column owners. Zero for a parameter with one owned axis.
        """
        if len(slot.axes) == 1:
            return [torch.zeros(len(slot.owners[0]), dtype=self.dtype, device=self.device)]
        owned = slot.owned_pos
        if pair is not None:  # x² already summed over the trailing run: two small products
            k0, k1 = (coef[own].to(pair.dtype) for own in slot.owners)
            return [(pair @ k1).to(self.dtype), (k0 @ pair).to(self.dtype)]
        sq = _product(x.reshape(slot.blocks), None, scratch)
        ks = [coef[own].to(sq.dtype) for own in slot.owners]
        if owned == (0, 1):  # [n0, n1] or [n0, n1, B]: two matrix-vector products, no temporary
            n0, n1 = sq.shape[0], sq.shape[1]
            tail = sq.numel() // max(n0 * n1, 1)
            flat = sq.reshape(n0, n1 * tail)
            rows = flat @ (ks[1].repeat_interleave(tail) if tail > 1 else ks[1])
            cols = ks[0] @ flat
            cols = cols.reshape(n1, tail) @ _ones(tail, cols) if tail > 1 else cols
            return [rows.to(self.dtype), cols.to(self.dtype)]
        out = []
        for a, pos in enumerate(owned):
            weight = sum(k.view(_axis_shape(sq.dim(), owned[b], len(k))) for b, k in enumerate(ks) if b != a)
            out.append(_sum_except(sq * weight, pos).to(self.dtype))
        return out

    def segment_sum(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-ZIG totals of per-index vectors given for every slot and owned axis, in order."""
        if not parts:
            parts = [torch.zeros(0, dtype=self.dtype, device=self.device)]
        return self.totals(torch.cat(list(parts)).unsqueeze(0))[0]

    @property
    def index_length(self) -> int:
        """Length of the per-index vector: one entry per owned index of every slot and axis."""
        return int(self._cat_owner.numel())

    def totals(self, flat: torch.Tensor) -> torch.Tensor:
        """Per-ZIG totals of per-index vectors given whole (``[k, index_length]`` → ``[k, num_zigs + 1]``)."""
        if flat.device.type == "cpu":  # sequential scatters in entry order: the sorted sums, bit for bit
            out = torch.zeros((flat.shape[0], self.num_zigs + 1), dtype=flat.dtype)
            out.scatter_add_(1, self._cat_owner.expand(flat.shape[0], -1), flat)
        else:  # sorted segment sums (index_add_ uses atomics on CUDA)
            out = torch.stack([self._sorted_sum(row) for row in flat])
        if self.group is not None:  # sharded parameters: every rank gets the totals over all shards
            import torch.distributed as dist

            dist.all_reduce(out, group=self.group)
        return out

    def _sorted_sum(self, row: torch.Tensor) -> torch.Tensor:
        """Per-ZIG totals of one per-index vector in a fixed order, as a segment reduction."""
        return torch.segment_reduce(row[self._order], "sum", lengths=self._lengths, unsafe=True)

    def at_index(self, values: torch.Tensor) -> torch.Tensor:
        """A per-ZIG vector read at every owned index of every slot, in :meth:`segment_sum` order
        (one gather per step instead of one per parameter and axis)."""
        return torch.index_select(values, 0, self._cat_owner)

    def zeros_flat(self) -> torch.Tensor:
        """A zero per-index vector over all slots and owned axes (what :meth:`put_flat` fills)."""
        return torch.zeros(self._cat_owner.numel(), dtype=self.dtype, device=self.device)

    def index_start(self, slot: ParamAxes) -> int:
        """Where a slot's axes start in the per-index vector (:meth:`at_index`, :meth:`put_flat`)."""
        return self._offsets[slot.param]

    def put_flat(self, flat: torch.Tensor, slot: ParamAxes, parts: Sequence[torch.Tensor]) -> None:
        """Write one slot's per-axis vectors into their place in ``flat``."""
        start = self.index_start(slot)
        for part in parts:
            flat[start : start + part.numel()] = part
            start += part.numel()

    def sq_norms(self, tensors: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Squared L2 norm of every ZIG over ``tensors`` (default: the parameters themselves)."""
        tensors = self.params if tensors is None else tensors
        parts: list[torch.Tensor] = []
        for slot in self.slots:
            parts.extend(self.reduce(slot, tensors[slot.param]))
        return self.segment_sum(parts)

    # ------------------------------------------------------------------ broadcasts
    def broadcast_sum(self, coef: torch.Tensor, slot: ParamAxes) -> torch.Tensor:
        """``coef`` summed over the owners of every entry of one parameter (a broadcastable tensor)."""
        ndim = self.params[slot.param].dim()
        out: torch.Tensor | None = None
        for axis, own in zip(slot.axes, slot.owners):
            v = coef[own].view(_axis_shape(ndim, axis, len(own)))
            out = v if out is None else out + v
        return _owned(out, slot)

    def scale_(
        self, slot: ParamAxes, coef: torch.Tensor, decay: float, lr: float, scratch: Scratch | None = None
    ) -> None:
        """``p ← (decay − lr·Σ coef over the owners of each entry)·p``, in place, in few passes.

        A weight owned by rows and columns gets its factor as one outer sum ``row[o] + col[j]`` over
        ``[O, I·B]`` (the column coefficients repeated over a short trailing run ``B``, so the
        broadcast streams whole rows; written into ``scratch`` when given, which saves the page
        faults of a fresh parameter-sized tensor every step); other layouts broadcast.
        """
        p = self.params[slot.param]
        if slot.owned_pos == (0, 1) and len(slot.blocks) in (2, 3) and p.is_contiguous():
            n0, n1 = slot.blocks[0], slot.blocks[1]
            b = slot.blocks[2] if len(slot.blocks) == 3 else 1
            row = (decay - lr * coef[slot.owners[0]]).view(n0, 1)
            if b >= 64:  # a long trailing run: a [O, I, 1] factor broadcasts fast as it is
                col = coef[slot.owners[1]].view(1, n1, 1)
                p.view(slot.blocks).mul_(torch.add(row.view(n0, 1, 1), col, alpha=-lr).to(p.dtype))
                return
            col = coef[self._repeated_owner(slot)].view(1, n1 * b)
            if scratch is None:
                factor = torch.add(row, col, alpha=-lr).to(p.dtype)
            else:  # summed in the coefficients' dtype, stored in the parameter's
                factor = torch.add(row, col, alpha=-lr, out=scratch.like(p).view(n0, n1 * b))
            p.view(n0, n1 * b).mul_(factor)
            return
        p.mul_((decay - lr * self.broadcast_sum(coef, slot)).to(p.dtype))

    def _repeated_owner(self, slot: ParamAxes) -> torch.Tensor:
        """The column owners of a ``[O, I, B]`` slot repeated B times (one per entry of a row), cached."""
        own = self._repeated.get(slot.param)
        if own is None:
            b = slot.blocks[2] if len(slot.blocks) == 3 else 1
            own = self._repeated[slot.param] = slot.owners[1].repeat_interleave(b)
        return own

    def broadcast_prod(self, factor: torch.Tensor, slot: ParamAxes) -> torch.Tensor:
        """``factor`` multiplied over the owners of every entry of one parameter."""
        ndim = self.params[slot.param].dim()
        out: torch.Tensor | None = None
        for axis, own in zip(slot.axes, slot.owners):
            v = factor[own].view(_axis_shape(ndim, axis, len(own)))
            out = v if out is None else out * v
        return _owned(out, slot)

    def touched(self, mask: torch.Tensor) -> list[bool]:
        """For each parameter, whether any of its indices is owned by a ZIG in ``mask`` (one sync)."""
        if not self.slots:
            return []
        # owned indices hit, counted up to every slot boundary: a slot is touched when its count grows
        counts = torch.zeros(self.index_length + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(self.at_index(mask), 0, out=counts[1:])
        return (counts[self._slot_end] > counts[self._slot_start]).tolist()

    def zero_slices(self, mask: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """``(param, axis, indices)`` of every slice owned by a ZIG in ``mask``: what zeroing writes."""
        out = []
        for slot in self.slots:
            for axis, own in zip(slot.axes, slot.owners):
                idx = torch.nonzero(mask[own]).flatten()
                if idx.numel():
                    out.append((slot.param, axis, idx))
        return out

    def zero_(self, mask: torch.Tensor) -> None:
        """Set every slice of the ZIGs in ``mask`` (bool, length num_zigs + 1) exactly to zero."""
        for i, axis, idx in self.zero_slices(mask):
            self.params[i].index_fill_(axis, idx, 0.0)


def _owned(out: torch.Tensor | None, slot: ParamAxes) -> torch.Tensor:
    """A broadcast over a slot's owned axes; a slot always has one (the layout lists no other)."""
    if out is None:
        raise ValueError(f"parameter {slot.param} has no owned axis")
    return out


def _axis_shape(ndim: int, axis: int, size: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = size
    return tuple(shape)


def _product(x: torch.Tensor, y: torch.Tensor | None, scratch: Scratch | None) -> torch.Tensor:
    """``x*y`` (or ``x*x``), written into the scratch buffer when one is given."""
    y = x if y is None else y
    if scratch is None:
        return x * y
    return torch.mul(x, y, out=scratch.like(x))


def _block_shape(
    shape: tuple[int, ...], axes: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``ParamAxes.blocks`` of a parameter shape: owned axes alone, runs of unowned ones merged."""
    blocks: list[int] = []
    owned: list[int] = []
    run = 1
    for d, size in enumerate(shape):
        if d in axes:
            if run != 1:
                blocks.append(run)
            run = 1
            owned.append(len(blocks))
            blocks.append(size)
        else:
            run *= size
    if run != 1:
        blocks.append(run)
    rest = tuple(i for i in range(len(blocks)) if i not in owned)
    return tuple(blocks), tuple(owned), rest


def _sq_norm(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=dims).square()


_ONES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _ones(n: int, like: torch.Tensor) -> torch.Tensor:
    """A vector of ``n`` ones, a view of one cached buffer per dtype and device (reductions run as
    matrix-vector products with it a dozen times per parameter and step; nothing writes to it)."""
    key = (like.dtype, like.device)
    buf = _ONES.get(key)
    if buf is None or buf.numel() < n:
        buf = _ONES[key] = torch.ones(max(n, 4096), dtype=like.dtype, device=like.device)
    return buf[:n]


def _sum_except(t: torch.Tensor, pos: int) -> torch.Tensor:
    """Sum of a contiguous tensor over every dim but ``pos``, as matrix-vector products.

    Viewing ``t`` as ``[A, n, B]``, a product with a vector of ones sums A (then B): BLAS reads the
    long contiguous rows at full speed, several times faster than a reduction kernel over a short
    trailing block (the 9 taps of a 3x3 kernel) or over a leading dim.
    """
    n = t.shape[pos]
    before = math.prod(t.shape[:pos])
    after = t.numel() // max(before * n, 1)
    out = t.reshape(n * after) if before == 1 else _ones(before, t) @ t.reshape(before, n * after)
    return out if after == 1 else out.reshape(n, after) @ _ones(after, t)
