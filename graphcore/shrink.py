"""What a smaller model looks like once some ZIGs are removed — independent of torch or ONNX.

``plan`` turns a set of removed ZIG ids into: the surviving indices of every axis, the slices of every
parameter, new attribute values (Conv ``group`` ...), and the rewritten shape literals. Both lowerings
(``construct`` for ONNX and for torch) only apply this plan, so they cannot disagree on what was cut.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import numpy as np

from graphcore.channels import SlotKey
from graphcore.errors import ZigraphError
from graphcore.groups import ParamSlice, PruneAnalysis
from graphcore.ir import Dim, Value
from graphcore.ops import rule_for

__all__ = ["ShrinkPlan", "plan"]


@dataclass
class ShrinkPlan:
    """Everything a lowering needs to build the smaller model."""

    removed_zigs: np.ndarray
    kept_masks: dict[SlotKey, np.ndarray]
    param_keep: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    literal_rewrites: dict[tuple, int] = field(default_factory=dict)
    operand_rewrites: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    node_updates: dict[str, dict] = field(default_factory=dict)
    removed: list[ParamSlice] = field(default_factory=list)

    def kept(self, v: Value | None, axis: int) -> np.ndarray | None:
        if v is None:
            return None
        return self.kept_masks.get((v.name, axis))

    def new_shape(self, v: Value) -> tuple[Dim, ...]:
        assert v.shape is not None
        return tuple(
            int(self.kept_masks[(v.name, a)].sum()) if (v.name, a) in self.kept_masks else d
            for a, d in enumerate(v.shape)
        )


def plan(
    analysis: PruneAnalysis, removed_zigs: Iterable[int], erased_nodes: Collection[str] = frozenset()
) -> ShrinkPlan:
    """Check that ``removed_zigs`` may be removed together and derive the smaller model.

    ``erased_nodes``: operators that erasing deletes whole. The channels of an erased Concat branch may
    empty their group there (the erase analysis vouches for the selection instead of the group checks),
    and those operators get no shape rewrites or attribute updates.
    """
    removed = np.unique(np.asarray(list(removed_zigs), dtype=np.int64))
    if not erased_nodes:
        _check_selection(analysis, removed)
    internal = analysis.internal
    if internal is None:
        raise ZigraphError(
            "this analysis was built by hand and does not say where each channel lives; "
            "construct needs the result of graphcore.analyze"
        )
    kept = internal.kept_masks(removed)
    ctx = internal.ctx
    graph = analysis.graph
    p = ShrinkPlan(removed_zigs=removed, kept_masks=kept, removed=analysis.slices(removed.tolist()))

    for v in graph.params:
        axes = []
        for a in range(v.rank or 0):
            m = kept.get((v.name, a))
            if m is not None and not m.all():
                axes.append((a, np.nonzero(m)[0]))
        if axes:
            p.param_keep[v.name] = axes

    for node_name, index, out_name, entries in ctx.shape_operands:
        if node_name in erased_nodes:
            continue
        out = graph.values[out_name]
        new = p.new_shape(out)
        old = out.shape
        assert old is not None  # new_shape checked it
        if tuple(old) == tuple(new):
            continue
        known = [e.value for e in entries if e.value is not None]
        if len(known) == len(entries):
            # Every element is known: write a fresh operand, changing only the sizes that moved
            # (-1 and 0 keep inferring / copying, which follows the pruning by itself).
            fresh = [
                int(v) if old[k] == new[k] or v in (-1, 0) else _size(new[k]) for k, v in enumerate(known)
            ]
            p.operand_rewrites[(node_name, index)] = np.array(fresh, dtype=np.int64)
            continue
        for k, e in enumerate(entries):
            if old[k] == new[k]:
                continue
            if e.kind == "lit" and e.src is not None and len(e.src) == 4:
                if e.value in (-1, 0):
                    continue
                p.literal_rewrites[e.src] = _size(new[k])
            elif e.kind != "dim":
                raise ZigraphError(
                    f"internal error: shape operand {index} of node '{node_name}' cannot follow the pruning"
                )

    for node in graph.nodes:
        rule = rule_for(node)
        if rule is None or rule.shrink is None or node.name in erased_nodes:
            continue
        touched = any(
            (v.name, a) in kept and not kept[(v.name, a)].all()
            for v in [*node.inputs, *node.outputs]
            if v is not None and v.shape is not None
            for a in range(len(v.shape))
        )
        if touched:
            upd = rule.shrink(node, p)
            if upd:
                p.node_updates[node.name] = upd
    return p


def _size(d: Dim) -> int:
    """A size the pruning changed: it comes from a kept mask, so it is always a known integer."""
    if not isinstance(d, int):
        raise ZigraphError(f"internal error: a pruned axis has no static size ({d!r})")
    return d


def _check_selection(analysis: PruneAnalysis, removed: np.ndarray) -> None:
    if removed.size == 0:
        return
    if removed.min() < 0 or removed.max() >= analysis.num_zigs:
        raise ZigraphError(f"ZIG ids must lie in [0, {analysis.num_zigs})")
    groups = analysis.zig_group[removed]
    for gid in np.unique(groups):
        g = analysis.groups[int(gid)]
        if not g.prunable:
            raise ZigraphError(f"group {g.id} is not prunable: {g.reason}")
        n = int((groups == gid).sum())
        if g.size - n < g.min_keep:
            raise ZigraphError(f"removing {n} of {g.size} channels would empty group {g.id}")
