"""Node groups and zero-invariant groups (ZIGs): the result of the pruning analysis.

A ZIG is one channel of a node group: every parameter slice (param, axis, indices) that produces or
consumes that channel. Zeroing all slices of a ZIG and deleting them gives exactly the same network,
which is the contract ``construct`` and every optimizer rely on.

The representation is columnar so optimizers can batch their math: for every parameter axis that any
ZIG touches, ``param_axes[(name, axis)]`` holds the global ZIG id that owns each index (or -1).

``PruneAnalysis.report()`` fills the pydantic schema of ``graphcore.report``; that module holds only the
schema, so the two never import each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from graphcore.channels import ChannelGraph, Folded, SlotKey
from graphcore.ir import Graph
from graphcore.report import Report
from graphcore.util import gc_paused

__all__ = ["ChannelMap", "NodeGroup", "ParamSlice", "PruneAnalysis"]


@dataclass(frozen=True)
class ParamSlice:
    """Indices ``indices`` along ``axis`` of parameter ``param``."""

    param: str
    axis: int
    indices: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        return {"param": self.param, "axis": self.axis, "indices": list(self.indices)}


@dataclass
class NodeGroup:
    """Channels whose spaces are tied; each channel is one ZIG (global ids in ``zig_ids``)."""

    id: int
    zig_ids: np.ndarray
    params: list[tuple[str, int]]
    prunable: bool
    reason: str | None = None
    num_params: int = 0
    flops: int = 0
    nodes: list[str] = field(default_factory=list)
    min_keep: int = 1
    parent: int | None = None  # erasing: the structure whose erasure also removes this one

    @property
    def size(self) -> int:
        return len(self.zig_ids)


class ChannelMap:
    """Which element of which axis is which channel: what construct needs beyond the public result.

    ``labels`` gives every element of every tracked axis of ``ctx`` its connected component, and
    ``zig_of_comp`` the ZIG of each component (-1 where the component is no ZIG).
    """

    def __init__(self, ctx: ChannelGraph, labels: np.ndarray | Folded, zig_of_comp: np.ndarray) -> None:
        self.ctx = ctx
        self._labels = labels
        self.zig_of_comp = zig_of_comp

    @property
    def labels(self) -> np.ndarray:
        """Per element of ``ctx``; built on first use from the analysis's folded components, so an
        analysis that is only reported never holds an array of every element."""
        if not isinstance(self._labels, np.ndarray):
            self._labels = self._labels.expand()
        return self._labels

    def kept_masks(self, removed_zigs: np.ndarray) -> dict[SlotKey, np.ndarray]:
        """For every static axis of every value: which indices survive removing ``removed_zigs``."""
        nz = int(self.zig_of_comp.max()) + 1 if self.zig_of_comp.size else 0
        gone = np.zeros(nz + 1, dtype=bool)
        gone[np.asarray(removed_zigs, dtype=np.int64)] = True
        elem_zig = self.zig_of_comp[self.labels] if self.labels.size else self.labels
        elem_gone = gone[elem_zig]  # -1 indexes the sentinel (always False)
        out: dict[SlotKey, np.ndarray] = {}
        for k, o in self.ctx.offset.items():
            out[k] = ~elem_gone[o : o + self.ctx.size[k]]
        return out


@dataclass
class PruneAnalysis:
    """Everything the pruning analysis found about one graph.

    ``internal`` is None for analyses built by hand (tests, ``optimizers.synthetic``): enough for the
    optimizers, not for construct, which needs to know where every channel lives.
    """

    graph: Graph
    groups: list[NodeGroup]
    zig_group: np.ndarray
    param_axes: dict[tuple[str, int], np.ndarray]
    trainable: dict[str, bool]
    param_shapes: dict[str, tuple[int, ...]]
    mode: str = "prune"
    attention: str = "dims"  # attention channels: head dimensions or whole heads (graphcore.analyze)
    flops_total: int = 0
    params_total: int = 0
    vertex_kinds: dict[str, int] = field(default_factory=dict)
    unknown_ops: dict[str, int] = field(default_factory=dict)
    internal: ChannelMap | None = field(default=None, repr=False)

    @property
    def num_zigs(self) -> int:
        return int(self.zig_group.shape[0])

    @property
    def prunable_groups(self) -> list[NodeGroup]:
        return [g for g in self.groups if g.prunable]

    def prunable_zig_ids(self) -> np.ndarray:
        ids = [g.zig_ids for g in self.groups if g.prunable]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    def slices(self, zig_ids: Iterable[int]) -> list[ParamSlice]:
        """The parameter slices of the given ZIGs, merged per (param, axis), indices sorted."""
        wanted = np.zeros(self.num_zigs, dtype=bool)
        ids = np.fromiter(zig_ids, dtype=np.int64)
        if ids.size == 0:
            return []
        wanted[ids] = True
        out = []
        for (name, axis), owner in self.param_axes.items():
            hit = np.nonzero((owner >= 0) & wanted[np.maximum(owner, 0)])[0]
            if hit.size:
                out.append(ParamSlice(name, axis, tuple(int(i) for i in hit)))
        return out

    def zig_slices(self, zig_id: int) -> list[ParamSlice]:
        return self.slices([zig_id])

    @property
    def params_prunable(self) -> int:
        """Parameter scalars covered by a prunable ZIG (union over axes, computed exactly).

        Counted as stored: the aliases of a shared ONNX weight (one per extra read) and the weight are
        one tensor, and a scalar counts once when a prunable ZIG covers it in any of its reads (the
        scalars no read covers are a product over axes of the indices no read covers)."""
        prunable_zig = np.zeros(self.num_zigs + 1, dtype=bool)
        prunable_zig[self.prunable_zig_ids()] = True
        values = self.graph.values if self.graph is not None else {}
        # Axes linked whole share one owner array: each distinct array is counted once, and all of
        # them in one vectorized pass (a numpy call or three per axis was most of a 100k-node report).
        per_param: dict[str, dict[int, list[int]]] = {}  # stored name -> axis -> distinct owner arrays
        slot: dict[int, int] = {}
        owners: list[np.ndarray] = []
        for (name, axis), owner in self.param_axes.items():
            if not self.trainable.get(name):
                continue
            v = values.get(name)
            stored = v.alias_of if v is not None and v.alias_of is not None else name
            i = slot.get(id(owner))
            if i is None:
                i = slot[id(owner)] = len(owners)
                owners.append(owner)
            per_param.setdefault(stored, {}).setdefault(axis, []).append(i)
        if not owners:
            return 0
        sizes = np.fromiter(map(len, owners), dtype=np.int64, count=len(owners))
        uncovered = ~prunable_zig[np.concatenate(owners)]  # owner -1 hits the sentinel (False)
        ends = np.cumsum(sizes)
        uncovered_before = np.concatenate(([0], np.cumsum(uncovered)))
        counts = (uncovered_before[ends] - uncovered_before[ends - sizes]).tolist()
        starts = (ends - sizes).tolist()
        total = 0
        for name, axes in per_param.items():
            shape = self.param_shapes.get(name, ())
            numel = math.prod(shape) if shape else 1
            left = 1
            for a, d in enumerate(shape):
                ids = axes.get(a)
                if ids is None:
                    left *= d
                elif len(ids) == 1:
                    left *= counts[ids[0]]
                else:  # several reads of one stored weight: an index is left where no read covers it
                    mask = np.ones(int(sizes[ids[0]]), dtype=bool)
                    for i in ids:
                        mask &= uncovered[starts[i] : starts[i] + int(sizes[i])]
                    left *= int(np.count_nonzero(mask))
            total += numel - left
        return int(total)

    def report(self, removed: list[ParamSlice] | None = None) -> Report:
        """The pydantic report (schema ``graphcore.report.Report``), with ``removed`` when given."""
        with gc_paused():  # tens of thousands of small objects: collections scanned the whole IR each time
            return self._report(removed)

    def _report(self, removed: list[ParamSlice] | None) -> Report:
        graph = self.graph
        # Plain dicts validated once, in pydantic's compiled core: a model object built per group and
        # per parameter axis was most of the report's time on a 100k-node graph.
        groups = [
            {
                "id": g.id,
                "size": g.size,
                "params": [{"name": n, "axis": a} for n, a in g.params],
                "prunable": g.prunable,
                "reason": g.reason,
                "num_params": g.num_params,
                "flops": g.flops,
                "parent": g.parent,
                "nodes": g.nodes,
            }
            for g in self.groups
        ]
        return Report.model_validate(
            {
                "model": {
                    "name": graph.name,
                    "format": graph.format,
                    "opset": graph.opset,
                    "source": graph.meta.get("source"),
                },
                "mode": self.mode,
                "attention": self.attention,
                "num_nodes": len(graph.nodes),
                "vertex_kinds": dict(self.vertex_kinds),
                "unknown_ops": dict(self.unknown_ops),
                "params_total": self.params_total,
                "params_prunable": self.params_prunable,
                "flops_total": self.flops_total,
                "num_groups": len(self.groups),
                "num_prunable_groups": sum(1 for g in self.groups if g.prunable),
                "num_zigs": self.num_zigs,
                "num_prunable_zigs": int(self.prunable_zig_ids().size),
                "groups": groups,
                "removed": None
                if removed is None
                else [{"param": s.param, "axis": s.axis, "indices": list(s.indices)} for s in removed],
            }
        )
