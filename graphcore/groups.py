"""Node groups and zero-invariant groups (ZIGs): the result of the pruning analysis.

A ZIG is one channel of a node group: every parameter slice (param, axis, indices) that produces or
consumes that channel. Zeroing all slices of a ZIG and deleting them gives exactly the same network,
which is the contract ``construct`` and every optimizer rely on.

The representation is columnar so optimizers can batch their math: for every parameter axis that any
ZIG touches, ``param_axes[(name, axis)]`` holds the global ZIG id that owns each index (or -1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["NodeGroup", "ParamSlice", "PruneAnalysis", "Selection"]


@dataclass(frozen=True)
class ParamSlice:
    """Indices ``indices`` along ``axis`` of parameter ``param``."""

    param: str
    axis: int
    indices: tuple[int, ...]

    def to_json(self) -> dict:
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

    @property
    def size(self) -> int:
        return len(self.zig_ids)


@dataclass
class PruneAnalysis:
    """Everything the pruning analysis found about one graph."""

    graph: object  # graphcore.ir.Graph (kept untyped to avoid an import cycle in type checkers)
    groups: list[NodeGroup]
    zig_group: np.ndarray
    param_axes: dict[tuple[str, int], np.ndarray]
    trainable: dict[str, bool]
    param_shapes: dict[str, tuple[int, ...]]
    mode: str = "prune"
    flops_total: int = 0
    params_total: int = 0
    internal: object = field(default=None, repr=False)

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

    def report(self, removed: list[ParamSlice] | None = None):
        """The pydantic report (``graphcore.report.Report``)."""
        from graphcore.report import build_report

        return build_report(self, removed)


@dataclass
class Selection:
    """A set of ZIGs chosen for removal, with the slices it removes."""

    zig_ids: np.ndarray
    analysis: PruneAnalysis

    @property
    def removed(self) -> list[ParamSlice]:
        return self.analysis.slices(self.zig_ids.tolist())
