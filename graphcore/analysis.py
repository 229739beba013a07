"""Pruning analysis: run every op rule once, then read node groups and ZIGs off the channel graph.

Cost: one pass over the nodes (each rule is vectorized over its axis sizes), one sparse
connected-components call over all channel elements, and a few segment reductions — linear in the
size of the graph.
"""

from __future__ import annotations

import math

import numpy as np

from graphcore.channels import ChannelGraph, Folded, SlotKey, spans
from graphcore.errors import AnalysisError
from graphcore.fold import fold_node
from graphcore.groups import ChannelMap, NodeGroup, PruneAnalysis
from graphcore.infer import fill_output_shape, needs_shape
from graphcore.ir import Dim, Graph, Node, Value
from graphcore.ops import declarations_for, rule_for
from graphcore.ops.head_dims import attention_granularity, attention_used
from graphcore.ops.registry import Cost
from graphcore.util import BIG_GRAPH_NODES, gc_paused, return_freed_memory

__all__ = ["analyze", "build_channel_graph", "node_flops"]


def build_channel_graph(graph: Graph) -> tuple[ChannelGraph, dict[str, int], dict[str, int]]:
    """Run every op rule in topological order; returns the channel graph, kind counts and unknown ops."""
    ctx = ChannelGraph()
    kinds: dict[str, int] = {}
    unknown: dict[str, int] = {}
    keys_of: dict[str, tuple[tuple[Dim, ...], tuple[SlotKey, ...]]] = {}
    stem_weights: set[str] = set()  # weights (and aliases) a stem reads: ``_tie_shared_matrices``
    for v in graph.inputs:
        ctx.pin_all(v, f"graph input '{v.name}' has a fixed width")
        ctx.input_symbols.update(d for d in (v.shape or ()) if isinstance(d, str))
    for node in graph.nodes:
        ctx.node = node
        ctx.touched = set()
        ctx.handled_shape_inputs = set()
        if ctx.subst:
            ctx.resolve_symbols(node)
        if needs_shape(ctx, node):
            try:  # noqa: SIM105 (not contextlib.suppress: a context manager object per node)
                fill_output_shape(ctx, node)
            except Exception:  # best effort: a shape left unknown only makes rules block
                pass
        rule = rule_for(node)
        if rule is not None and (rule.fold is not None or rule.literal is not None):
            fold_node(ctx, node, rule)  # which does nothing for a rule with neither hook
        if rule is None:
            key = f"{node.domain}::{node.op}" if node.domain else node.op
            unknown[key] = unknown.get(key, 0) + 1
            kinds["unknown"] = kinds.get("unknown", 0) + 1
            for u in [*node.inputs, *node.outputs]:
                ctx.pin_all(u, f"unknown op {key}: its channel semantics are not declared")
        else:
            kind = rule.kind_of(node)
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "stem":
                stem_weights.update(u.name for u in node.inputs if u is not None and u.is_param)
            try:
                rule.relate(ctx, node)
            except Exception as exc:  # a rule that cannot handle this node must block, never guess
                for u in [*node.inputs, *node.outputs]:
                    ctx.pin_all(
                        u, f"rule for {node.op} could not handle this node ({type(exc).__name__}: {exc})"
                    )
        _pin_untouched(ctx, node, keys_of)
        _pin_unhandled_sizes(ctx, node)
    ctx.node = None
    _tie_shared_matrices(ctx, graph, stem_weights)
    for v in graph.outputs:
        ctx.pin_all(v, f"graph output '{v.name}' must keep its shape")
    return ctx, kinds, unknown


def _tie_shared_matrices(ctx: ChannelGraph, graph: Graph, stem_weights: set[str]) -> None:
    """Every read of a shared weight of two or more axes that a stem reads is cut like the others.

    A weight read by several nodes gets an alias per extra read (``Value.alias_of``), so that tensors an
    exporter stored once only because they were equal (zero biases, norm scales) are not tied; construct
    then writes one copy per distinct slicing. A matrix is shared on purpose (ALBERT's one layer applied
    at every depth, a tied embedding): its reads cut differently were one copy each, and pruning ALBERT
    from its TorchScript export grew the model (14,036 to 14,205 parameters at 50%). Equal random
    matrices do not happen by chance, and tying equal constant ones (zero-initialized layers) is only
    conservative. Only weights that some stem reads (directly, or the first read through an Identity
    the exporter put there) are tied: a table that elementwise ops of every layer read (a rotary
    cos/sin table, a mask, scatter indices) must not tie those layers' channels. A weight that is also
    a graph output keeps its full width: its reads are tied to each other instead."""
    values = graph.values
    matrices = {
        v.alias_of if v.alias_of is not None else name
        for name in stem_weights
        if (v := values.get(name)) is not None and v.shape is not None and len(v.shape) >= 2
    }
    outputs = {v.name for v in graph.outputs}
    first: dict[str, Value] = {}
    for v in values.values():
        src = v.alias_of
        if src is None or src not in matrices or v.shape is None:
            continue
        anchor = first.setdefault(src, v) if src in outputs else values.get(src)
        if anchor is None or anchor is v or anchor.shape != v.shape:
            continue
        for a in range(len(v.shape)):
            ctx.link(v, a, anchor, a)


def _pin_untouched(
    ctx: ChannelGraph, node: Node, keys_of: dict[str, tuple[tuple[Dim, ...], tuple[SlotKey, ...]]]
) -> None:
    """Pin every static axis of the node's values that its rule left unrelated.

    ``keys_of`` caches, per value name and shape object, the keys of the axes that can be static (an
    integer size, or a slot already): a value is seen by its producer and by every consumer, and the
    usual value, whose axes the rule related, is then one set comparison. A symbolic axis (the batch)
    never has a slot (``slot`` says None), so it is left out rather than asked about each time."""
    offset, touched = ctx.offset, ctx.touched
    for vs in (node.inputs, node.outputs):
        for v in vs:
            if v is None:
                continue
            shape = v.shape
            if shape is None:
                continue
            name = v.name
            cached = keys_of.get(name)
            if cached is not None and cached[0] is shape:
                keys = cached[1]
            else:
                keys = tuple(
                    [(name, a) for a, d in enumerate(shape) if isinstance(d, int) or (name, a) in offset]
                )
                keys_of[name] = (shape, keys)
            if touched.issuperset(keys):
                continue  # the usual case: the rule said how every axis maps
            for k in keys:
                if k in touched:
                    continue
                if k not in offset:
                    k2 = ctx.slot(v, k[1])
                    if k2 is None or k2 in touched:
                        continue
                ctx.pin_key(k, f"{node.op} does not say how axis {k[1]} of '{name}' maps")


def _pin_unhandled_sizes(ctx: ChannelGraph, node: Node) -> None:
    if not ctx.entries:
        return  # no shape value tracked yet (a graph without shape arithmetic): nothing to pin
    for i, v in enumerate(node.inputs):
        if v is None or i in ctx.handled_shape_inputs:
            continue
        entries = ctx.entries.get(v.name)
        if not entries:
            continue
        for e in entries:
            for name, axis in e.sources():
                src = ctx.values.get(name)
                if src is not None:
                    ctx.pin(src, axis, f"its size is used in a computation by {node.label}")


def node_flops(node: Node) -> int:
    """FLOPs of one node (multiply-adds × 2) from its op's ``cost`` hook; 0 for ops that declare none.

    Only the ops that dominate cost declare one (convolutions and matrix products). Symbolic dimensions
    (batch, sequence length) count as 1. An op of another domain that declares nothing but carries an
    ONNX op's name is costed as that op.
    """
    return _flops(node, _cost_hook(node))


def _cost_hook(node: Node) -> Cost | None:
    """The first ``cost`` hook among the node's declarations (the same for every node of one op)."""
    return next((r.cost for r in declarations_for(node) if r.cost is not None), None)


def _flops(node: Node, cost: Cost | None) -> int:
    y = node.outputs[0] if node.outputs else None
    if cost is None or y is None or y.shape is None:
        return 0
    return cost(node)


def analyze(graph: Graph, mode: str = "prune", attention: str | None = None) -> PruneAnalysis:
    """Find node groups and ZIGs of ``graph``; each group says whether it is prunable and why not.
    ``attention``: ``"dims"`` or ``"heads"`` (``graphcore.modes.analyze``); None: the setting in force."""
    with gc_paused(), attention_granularity(attention_used() if attention is None else attention):
        result = _analyze(graph, mode)
    if len(graph.nodes) >= BIG_GRAPH_NODES:
        return_freed_memory()
    return result


def _analyze(graph: Graph, mode: str) -> PruneAnalysis:
    if mode != "prune":
        raise AnalysisError(
            f"graphcore.analysis runs the pruning analysis only; use graphcore.analyze(mode={mode!r})"
        )
    ctx, kinds, unknown = build_channel_graph(graph)
    while ctx.subst:
        # A size learned downstream (a symbolic axis linked to a static one) came too late for the rules
        # that ran before: they saw the axis as unknown and related nothing, which left channels
        # unlinked (a consumer's weight slices prunable on their own). Run again with it known
        # everywhere; every pass removes the symbols it learned, so this ends.
        _apply_learned(graph, ctx.subst)
        ctx, kinds, unknown = build_channel_graph(graph)
    folded = ctx.fold()
    labels = folded.labels  # per folded element (ChannelGraph.fold): classes of whole-axis links share
    n = len(labels)

    reasons: list[str] = list(ctx.pins.values())
    elem_reason = np.full(n, -1, dtype=np.int64)
    if reasons:  # slots of one class share elements: written last to first, the first pin wins
        pin_idx, pin_of = _ranges(folded, list(ctx.pins))
        elem_reason[pin_idx[::-1]] = pin_of[::-1]
    for keys, why in ctx.requirements:
        flags = [ctx.zero(ctx.values[k[0]], k[1]) for k in keys]
        if any(z is ctx.uniform(z.size, True) for z in flags):
            continue  # an operand zero on the whole axis (a trainable weight's): every channel is met
        ok = np.zeros(ctx.size[keys[0]], dtype=bool)
        for z in flags:
            ok |= z
        bad = np.nonzero(~ok)[0]
        if bad.size:
            reasons.append(why + ": removal is exact only for a channel that is zero there")
            at = folded.start[keys[0]] + bad
            at = at[elem_reason[at] < 0]  # a pin on the same element is the more direct reason
            elem_reason[at] = len(reasons) - 1

    structural = list(ctx.structural)
    ctx.release()  # what follows reads only where each channel lives
    ncomp = int(labels.max()) + 1 if n else 0
    # A blocked group reports its first reason: pins in graph order, then unmet zero requirements
    # (which are often a consequence of a pin upstream, e.g. a chunk with computed bounds).
    none = len(reasons)
    comp_reason = np.full(ncomp, none, dtype=np.int64)
    blocked = elem_reason >= 0
    _assign_min(comp_reason, labels[blocked], elem_reason[blocked])
    comp_reason[comp_reason == none] = -1

    # One pass over the tracked axes gathers everything per parameter axis (its range, trainability,
    # parameters and FLOPs per channel): each was its own pass of dict lookups over tens of thousands
    # of axes, and a parameter's element count was recomputed from its shape for every axis.
    # Parameter axes linked whole share one range of folded elements (a LLaMA's hidden size is one
    # range for hundreds of weights): every per-element step below runs once per distinct range, and
    # a ZIG's set of parameter axes is the union of its ranges' axes (each axis is in one range).
    params_total = 0
    numel: dict[str, int] = {}
    trainable: dict[str, bool] = {}
    param_shapes: dict[str, tuple[int, ...]] = {}
    for v in graph.values.values():  # one pass for the three facts per parameter
        if not v.is_param:
            continue
        shape = v.static_shape
        trainable[v.name] = v.trainable
        param_shapes[v.name] = shape or ()
        count = numel[v.name] = math.prod(shape) if shape is not None else 0
        if v.trainable and v.alias_of is None:
            params_total += count
    flops_of_param, flops_total = _flops_per_param(graph)
    values, size, fstart = ctx.values, ctx.size, folded.start
    param_slots: list[SlotKey] = list(ctx.param_keys)  # in offset order, as a walk over ``ctx.offset``
    range_id: dict[tuple[int, int], int] = {}
    slot_range_l: list[int] = []
    slot_trainable_l: list[bool] = []
    per_slot: list[int] = []
    fl_slot: list[int] = []
    for k in param_slots:
        name = k[0]
        v = values[name]
        d = size[k]
        slot_range_l.append(range_id.setdefault((fstart[k], d), len(range_id)))
        slot_trainable_l.append(v.trainable)
        elems = numel.get(name)
        if elems is None:  # a parameter the graph does not list (none today): asked directly
            elems = numel[name] = v.numel or 0
        width = d if d > 1 else 1
        per_slot.append(elems // width)
        # Saturated: a malformed model's absurd dimension must not overflow int64 (no real layer
        # spends 2**40 FLOPs on one channel at batch 1).
        charged = flops_of_param.get(name)
        fl_slot.append(min(max(charged // width, 0), 1 << 40) if charged else 0)
    slot_range = np.array(slot_range_l, dtype=np.int64)
    nr = len(range_id)
    r_start = np.fromiter((a for a, _ in range_id), dtype=np.int64, count=nr)
    r_size = np.fromiter((b for _, b in range_id), dtype=np.int64, count=nr)
    r_idx, r_of = spans(r_start, r_size)
    r_labels = labels[r_idx]
    comp_trainable = np.zeros(ncomp, dtype=bool)
    slot_trainable = np.array(slot_trainable_l, dtype=bool)
    range_trainable = np.zeros(nr, dtype=bool)
    range_trainable[slot_range[slot_trainable]] = True
    comp_trainable[r_labels[range_trainable[r_of]]] = True
    if structural:
        comp_trainable[labels[_ranges(folded, structural)[0]]] = False
    # ZIG ids in order of first appearance, so groups read in graph order.
    zig_comps = np.nonzero(comp_trainable)[0]
    first_elem = np.full(ncomp, ctx.total, dtype=np.int64)
    _assign_min(first_elem, labels, folded.first)  # the first original element of each component
    zig_comps = zig_comps[np.argsort(first_elem[zig_comps], kind="stable")]
    zig_of_comp = np.full(ncomp, -1, dtype=np.int64)
    zig_of_comp[zig_comps] = np.arange(len(zig_comps))

    # The ZIG owning each element of each range; the axes of one range share one (read-only) array.
    owner_all = zig_of_comp[r_labels]
    owner_all.flags.writeable = False
    hit = owner_all >= 0
    bounds = np.concatenate(([0], np.cumsum(r_size)))
    # any hit per range; the padding lets an empty last range start at the end, and reduceat reads
    # the next range's first element for an empty range, hence the size test
    range_hit = np.logical_or.reduceat(np.append(hit, False), bounds[:-1]) & (r_size > 0)
    views = [owner_all[bounds[r] : bounds[r + 1]] for r in range(nr)]  # one array object per range
    param_axes: dict[tuple[str, int], np.ndarray] = {
        param_slots[si]: views[r] for si, r in enumerate(slot_range.tolist()) if range_hit[r]
    }
    pz, pr = owner_all[hit], r_of[hit]
    per = np.zeros(nr, dtype=np.int64)  # parameters per channel, summed over the range's axes
    np.add.at(per, slot_range, per_slot)
    fl = np.zeros(nr, dtype=np.int64)
    np.add.at(fl, slot_range, fl_slot)

    nz = len(zig_comps)
    zig_params = _segment_sum([(pz, per[pr])], nz)
    zig_flops = _segment_sum([(pz, fl[pr])], nz)
    members, range_sets = _group_by_signature([pz] if pz.size else [], [pr], nz, nr)
    slots_of_range: list[list[int]] = [[] for _ in range(nr)]
    for si, r in enumerate(slot_range.tolist()):
        slots_of_range[r].append(si)
    signature = [sorted(si for r in rs for si in slots_of_range[r]) for rs in range_sets]

    zig_group = np.zeros(nz, dtype=np.int64)
    groups: list[NodeGroup] = []
    for gid, ids in enumerate(members):
        zs = ids
        zig_group[ids] = gid
        slots = [param_slots[s] for s in signature[gid]]
        rs = comp_reason[zig_comps[ids]]
        reason = reasons[int(rs[rs >= 0][0])] if (rs >= 0).any() else None
        if reason is None and len(zs) < 2:
            reason = "a single channel: removing it would empty the group"
        groups.append(
            NodeGroup(
                id=gid,
                zig_ids=ids,
                params=slots,
                prunable=reason is None,
                reason=reason,
                num_params=int(zig_params[ids].sum()),
                flops=int(zig_flops[ids].sum()),
                nodes=_nodes_of(slots, graph),
            )
        )

    return PruneAnalysis(
        graph=graph,
        groups=groups,
        zig_group=zig_group,
        param_axes=param_axes,
        trainable=trainable,
        param_shapes=param_shapes,
        flops_total=int(flops_total),
        params_total=int(params_total),
        vertex_kinds=kinds,
        unknown_ops=unknown,
        internal=ChannelMap(ctx, folded, zig_of_comp),
        attention=attention_used(),
    )


def _apply_learned(graph: Graph, subst: dict[str, int]) -> None:
    for v in graph.values.values():
        if v.shape is not None and any(isinstance(d, str) and d in subst for d in v.shape):
            v.shape = tuple(subst.get(d, d) if isinstance(d, str) else d for d in v.shape)


def _group_by_signature(
    pair_zig: list[np.ndarray], pair_slot: list[np.ndarray], nz: int, nslots: int
) -> tuple[list[np.ndarray], list[list[int]]]:
    """ZIGs touching exactly the same parameter axes form one node group, in order of first ZIG.

    Vectorized: each ZIG's set of axes is hashed (a sum of random 62-bit keys, one per axis), so
    grouping is one sort instead of a Python loop over tens of thousands of channels; every ZIG's set is
    then compared exactly with its group's first, and should two sets ever share a hash, the grouping is
    redone exactly (``_group_exactly``).
    """
    if nz == 0:
        return [], []
    if not pair_zig:
        return [np.arange(nz, dtype=np.int64)], [[]]
    pz = np.concatenate(pair_zig)
    ps = np.concatenate(pair_slot)
    combo = pz * (nslots + 1) + ps
    if nz * (nslots + 1) < 2**31:
        combo = combo.astype(np.int32)  # sorting half the bytes: the sort is most of this function
    combo = _sorted_unique(combo).astype(np.int64)
    uz, us = combo // (nslots + 1), combo % (nslots + 1)
    counts = np.bincount(uz, minlength=nz)  # uz is sorted: ZIG z's axes are us[bounds[z]:bounds[z + 1]]
    bounds = np.concatenate(([0], np.cumsum(counts)))
    some = np.flatnonzero(counts)
    h = np.zeros(nz, dtype=np.int64)  # a ZIG on no parameter axis has the empty set's hash, 0
    with np.errstate(over="ignore"):
        h[some] = np.add.reduceat(_hash_keys(nslots + 1)[us], bounds[some])  # int64 sums wrap
    # One stable sort by hash: each run of equal hashes lists its ZIGs in id order, so a run is a
    # group, its first entry the group's first ZIG; groups are then put in order of their first ZIG.
    order = np.argsort(h, kind="stable")
    hs = h[order]
    new = np.empty(nz, dtype=bool)
    new[0] = True
    np.not_equal(hs[1:], hs[:-1], out=new[1:])
    run_start = np.flatnonzero(new)
    run_end = np.append(run_start[1:], nz)
    by_first = np.argsort(order[run_start], kind="stable")
    members = [order[run_start[r] : run_end[r]] for r in by_first.tolist()]
    firsts = [int(m[0]) for m in members]
    leader = np.empty(nz, dtype=np.int64)  # each ZIG's group's first ZIG
    leader[order] = np.repeat(order[run_start], run_end - run_start)
    pos = np.arange(len(uz), dtype=np.int64) - bounds[uz]
    if not (counts == counts[leader]).all() or not (us == us[bounds[leader[uz]] + pos]).all():
        return _group_exactly(uz, us, bounds, nz)
    signature = [us[bounds[z] : bounds[z + 1]].tolist() for z in firsts]
    return members, signature


_HASH_KEYS: list[np.ndarray] = []


def _hash_keys(n: int) -> np.ndarray:
    """``n`` random 62-bit keys, one per parameter axis; drawn once and grown as needed (which keys
    an axis gets never changes a result: equal hashes are checked exactly)."""
    if not _HASH_KEYS or len(_HASH_KEYS[0]) < n:
        rng = np.random.default_rng(0x5EED)
        _HASH_KEYS[:] = [rng.integers(1, 2**62, size=max(n, 1024), dtype=np.int64)]
    return _HASH_KEYS[0][:n]


def _group_exactly(
    uz: np.ndarray, us: np.ndarray, bounds: np.ndarray, nz: int
) -> tuple[list[np.ndarray], list[list[int]]]:
    """The grouping by exact sets of axes, one ZIG at a time: the answer when two sets shared a hash."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for z in range(nz):
        groups.setdefault(tuple(us[bounds[z] : bounds[z + 1]].tolist()), []).append(z)
    return [np.array(m, dtype=np.int64) for m in groups.values()], [list(k) for k in groups]


def _ranges(folded: Folded, keys: list[SlotKey]) -> tuple[np.ndarray, np.ndarray]:
    """The folded elements of ``keys``'s slots concatenated in order, and for each the index of its key."""
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.fromiter(map(folded.start.__getitem__, keys), dtype=np.int64, count=len(keys))
    sizes = np.fromiter(map(folded.ctx.size.__getitem__, keys), dtype=np.int64, count=len(keys))
    return spans(starts, sizes)


def _assign_min(out: np.ndarray, idx: np.ndarray, val: np.ndarray) -> None:
    """``np.minimum.at(out, idx, val)`` by one stable sort of the values, written largest first."""
    order = np.argsort(val, kind="stable")[::-1]
    np.minimum(out, _last_wins(out, idx[order], val[order]), out=out)


def _last_wins(like: np.ndarray, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    tmp = like.copy()
    tmp[idx] = val
    return tmp


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique(x)`` by one sort: numpy 2.4's hash-based ``unique`` took 2.6 s on the 275k keys of
    ViT-B/16 (a sort takes 0.05 s)."""
    s = np.sort(x)
    if s.size == 0:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _segment_sum(parts: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    for idx, val in parts:
        np.add.at(out, idx, val)
    return out


def _flops_per_param(graph: Graph) -> tuple[dict[str, int], int]:
    """FLOPs charged to each weight (the nodes that read it), and the graph's total: one pass."""
    out: dict[str, int] = {}
    total = 0
    costs: dict[tuple[str, str], Cost | None] = {}  # per (domain, op): the cost hook ``node_flops`` reads
    for node in graph.nodes:
        key = (node.domain, node.op)
        if key in costs:
            cost = costs[key]
        else:
            cost = costs[key] = _cost_hook(node)  # looked up once per op: a generator per node was most
        if cost is None:
            continue  # most ops declare no cost
        f = _flops(node, cost)
        if not f:
            continue
        total += f
        for v in node.inputs:
            if v is not None and v.is_param and v.shape is not None and len(v.shape) >= 2:
                out[v.name] = out.get(v.name, 0) + f
    return out, total


def _nodes_of(slots: list[SlotKey], graph: Graph) -> list[str]:
    names: dict[str, None] = {}  # ordered set: a list lookup made deep residual graphs quadratic
    for name, _ in slots:
        v: Value | None = graph.values.get(name)
        if v is None:
            continue
        for c, _ in v.consumers:
            names[c.name] = None
    return list(names)
