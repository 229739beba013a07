"""Erasing analysis: removal structures made of whole operators, their hierarchy, and validity.

A network is cut into *segments* (ALGORITHMS.md §3.2): a joint (an operator reading two or more
activations) is a segment of its own; any other operator continues the segment of its producer when that
producer has exactly one consumer and is no joint. A segment holding trainable parameters is a candidate
*removal structure*; it is **erasable** when

* every operator it feeds is an Add/Sum joint (whose other inputs already have the joint's output shape)
  or a channel Concat whose consumers contract the branch's channels away (the channels are then cut from
  those consumers with the pruning machinery), never a Mul gate, a graph output or another operator;
* zeroing its variables (the trainable parameters only it uses) makes its output exactly zero: walking the
  segment, each operator's ``zero_when`` fact from the op table says whether its output is zero given
  which operands are (``graphcore.ops.output_is_zero``).

Erasing a structure then changes nothing the zeroed network computes: the joint adds (or concatenates) a
zero. Operators that only fed the structure die with it, and a structure that dies with another is its
child (``parent``). ``valid`` and ``plan`` are one forward and one backward pass over the graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphcore.analysis import node_flops
from graphcore.errors import AnalysisError
from graphcore.groups import NodeGroup, ParamSlice, PruneAnalysis
from graphcore.ir import Graph, Node, Value
from graphcore.ops import ErasedInput, declarations_for, output_is_zero, rule_for

__all__ = ["EraseAnalysis", "ErasePlan", "Structure", "analyze_erase", "erased_input"]


def erased_input(node: Node) -> ErasedInput | None:
    """What ``node`` does when one of its inputs is erased, from the op table: ``drop`` a zero term (a
    sum), ``cut`` a block of zero channels (a concatenation), or None: it cannot lose an input (a gate,
    a product: a zero operand is not the same as no operand)."""
    return next((r.erased_input for r in declarations_for(node) if r.erased_input is not None), None)


@dataclass
class Structure:
    """One candidate removal structure (a segment with trainable parameters)."""

    id: int
    segment: list[str]
    params: list[str]
    joints: list[str]
    erasable: bool
    reason: str | None
    dies_with: list[str] = field(default_factory=list)
    parent: int | None = None
    children: list[int] = field(default_factory=list)
    num_params: int = 0
    flops: int = 0


@dataclass
class ErasePlan:
    """What erasing ``erased`` removes from the graph and how the survivors are rewired."""

    erased: list[int]
    removed_nodes: list[str]
    bypass: dict[str, str]
    drop_inputs: dict[str, list[int]]
    removed_zigs: np.ndarray
    removed_params: list[str]
    removed: list[ParamSlice]


@dataclass
class _Flow:
    """Index tables of the data flow, built once: every pass below is a loop over these lists."""

    nodes: list[Node]
    index: dict[str, int]
    is_data: list[bool]
    data_inputs: list[list[int]]  # per node: producers of its distinct data operands (-1: a graph input)
    consumers: list[list[int]]  # per node: ids of the nodes reading any of its outputs (data or not)
    feeds_output: list[bool]
    joint: list[bool]
    data_values: set[int]  # ids of the Values computed from a graph input (activations)


@dataclass
class EraseAnalysis(PruneAnalysis):
    """The erasing analysis: a ``PruneAnalysis`` whose ZIGs are whole removal structures.

    One group per candidate structure (``zig_ids == [id]``, ``min_keep == 0``, ``params`` whole tensors on
    axis 0), so every optimizer and the report read it as they read a pruning analysis. ``prune`` is the
    pruning analysis of the same graph: construct cuts the channels of erased Concat branches with it.
    """

    structures: list[Structure] = field(default_factory=list)
    prune: PruneAnalysis | None = field(default=None, repr=False)
    flow: _Flow | None = field(default=None, repr=False)
    concat_zigs: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    params_erasable: int = 0

    @property
    def _flow(self) -> _Flow:
        if self.flow is None:
            raise AnalysisError("this erasing analysis was built without its data flow")
        return self.flow

    # -- validity ------------------------------------------------------------------------------------
    def valid(self, erased: Iterable[int]) -> bool:
        """Does the network still compute every output with ``erased`` gone? Linear time."""
        return self.why_invalid(erased) is None

    def why_invalid(self, erased: Iterable[int]) -> str | None:
        return self._check(self._ids(erased))[1]

    def _check(self, ids: list[int]) -> tuple[list[bool], str | None]:
        """Which nodes still compute something, and why the selection is not valid (None when it is)."""
        bad = [i for i in ids if not self.structures[i].erasable]
        if bad:
            s = self.structures[bad[0]]
            return [], f"structure {s.id} is not erasable: {s.reason}"
        alive, problem = self._forward(ids)
        if problem is not None:
            return alive, problem
        flow = self._flow
        for v in self.graph.outputs:
            p = v.producer
            if p is not None and not alive[flow.index[p.name]]:
                return alive, f"graph output '{v.name}' would no longer be computed"
        return alive, None

    def select(self, order: Sequence[int], k: int) -> list[int]:
        """The hierarchical search (ALGORITHMS.md §5.1): walk ``order`` (most redundant first) and keep a
        structure when everything kept so far plus it stays valid, until ``k`` erasable structures go.

        Structures nested in a kept one go with it and count toward ``k`` (``erased_by``); so a nested
        one is passed over once its enclosing structure is kept, one kept earlier is folded into its
        enclosing structure when that is kept, and a structure that would take more than ``k`` with it is
        passed over for a smaller one. A structure passed over as invalid is tried again once later ones
        were kept.
        """
        chosen: list[int] = []
        gone: set[int] = set()
        grew = True
        # Validity is not monotone: erasing a and b can be invalid (an operator after them would read
        # zeros it does not map to zero) while a, b and that operator's own structure are valid. So a
        # structure passed over is tried again after later ones were kept; each extra walk follows a
        # kept structure, so there are at most k + 1 of them.
        while grew and len(gone) < k:
            grew = False
            for sid in order:
                if len(gone) >= k:
                    break
                sid = int(sid)
                if not 0 <= sid < len(self.structures) or not self.structures[sid].erasable or sid in gone:
                    continue
                inside = self.erased_by([sid])
                if len(gone | inside) > k or not self.valid([*chosen, sid]):
                    continue
                chosen = [c for c in chosen if c not in inside] + [sid]
                gone |= inside
                grew = True
        return chosen

    def erased_by(self, chosen: Iterable[int]) -> set[int]:
        """The erasable structures that go when ``chosen`` are erased: them and everything nested in them."""
        out: set[int] = set()
        stack = [int(c) for c in chosen]
        while stack:
            c = stack.pop()
            if c in out:
                continue
            if self.structures[c].erasable:
                out.add(c)
            stack.extend(self.structures[c].children)
        return out

    def ancestors(self, sid: int) -> list[int]:
        """The structures ``sid`` is nested in, innermost first."""
        out: list[int] = []
        p = self.structures[sid].parent
        while p is not None and p not in out:
            out.append(p)
            p = self.structures[p].parent
        return out

    # -- the plan ------------------------------------------------------------------------------------
    def plan(self, erased: Iterable[int]) -> ErasePlan:
        """Nodes that go, joints that are rewired, parameters and slices that vanish."""
        ids = self._ids(erased)
        alive, why = self._check(ids)
        if why is not None:
            raise AnalysisError(f"cannot erase structures {ids}: {why}")
        flow = self._flow
        needed = self._backward(alive)
        removed_nodes = [flow.nodes[i].name for i in range(len(flow.nodes)) if not needed[i]]
        bypass: dict[str, str] = {}
        drop: dict[str, list[int]] = {}
        for i, node in enumerate(flow.nodes):
            if not needed[i] or not flow.joint[i] or erased_input(node) is None:
                continue
            gone = [
                j
                for j, v in enumerate(node.inputs)
                if v is not None and v.producer is not None and not alive[flow.index[v.producer.name]]
            ]
            if not gone:
                continue
            live = [j for j, v in enumerate(node.inputs) if v is not None and j not in gone]
            data_live = [j for j in live if self._is_data_value(node.inputs[j])]
            if len(data_live) == 1:
                v = node.inputs[data_live[0]]
                assert v is not None
                bypass[node.name] = v.name
            else:
                drop[node.name] = gone
        zigs = [self.concat_zigs[i] for i in ids if i in self.concat_zigs]
        removed_zigs = np.unique(np.concatenate(zigs)) if zigs else np.zeros(0, dtype=np.int64)
        gone_nodes = set(removed_nodes)
        removed_params = [
            v.name
            for v in self.graph.params
            if v.consumers
            and all(c.name in gone_nodes for c, _ in v.consumers)
            and not any(v is x for x in self.graph.inputs)
        ]
        slices = [self._whole(name) for name in removed_params]
        whole = set(removed_params)
        if removed_zigs.size and self.prune is not None:
            slices += [s for s in self.prune.slices(removed_zigs.tolist()) if s.param not in whole]
        return ErasePlan(
            erased=ids,
            removed_nodes=removed_nodes,
            bypass=bypass,
            drop_inputs=drop,
            removed_zigs=removed_zigs,
            removed_params=removed_params,
            removed=[s for s in slices if s is not None],
        )

    @property
    def params_prunable(self) -> int:
        """Parameters that vanish when some erasable structure is erased (with what dies with it)."""
        return self.params_erasable

    # -- internals -----------------------------------------------------------------------------------
    def _ids(self, erased: Iterable[int]) -> list[int]:
        ids = sorted({int(i) for i in erased})
        for i in ids:
            if not 0 <= i < len(self.structures):
                raise AnalysisError(f"no removal structure {i} (there are {len(self.structures)})")
        return ids

    def _forward(self, ids: list[int]) -> tuple[list[bool], str | None]:
        """Which nodes still compute something, in one pass in graph order.

        An Add/Sum/Concat joint that lost some inputs keeps the others: a Sum only where they already
        have its output's shape, a Concat only where each lost input is an erased branch whose channels
        the plan cuts. One that lost every input is gone too (a zero its consumers drop in turn), and so
        is any other operator that lost an input — as long as it maps those zeros to zero. Returns the
        first place where the erased network would differ from the zeroed one.
        """
        flow = self._flow
        n = len(flow.nodes)
        removed = [False] * n
        cut: set[int] = set()  # last nodes of erased Concat branches (their channels are planned)
        for i in ids:
            seg = self.structures[i].segment
            for name in seg:
                removed[flow.index[name]] = True
            if i in self.concat_zigs:
                cut.add(flow.index[seg[-1]])
        alive = [True] * n
        problem: str | None = None
        for i in range(n):
            if removed[i]:
                alive[i] = False
                continue
            ins = flow.data_inputs[i]
            if not ins:
                continue
            dead = [p for p in ins if p >= 0 and not alive[p]]
            if not dead:
                continue
            node = flow.nodes[i]
            if not flow.joint[i] or erased_input(node) is None or len(dead) == len(ins):
                # it reads only zeros where erased structures were: gone, as a zero, when it maps them to
                # zero (a sum of erased branches, a ReLU after it); otherwise the zeroed network computes
                # a value here (sigmoid(0) = 0.5) that the erased one would not
                alive[i] = False
                gone = [
                    v is not None and v.producer is not None and not alive[flow.index[v.producer.name]]
                    for v in node.inputs
                ]
                if problem is None and not output_is_zero(node, gone):
                    problem = (
                        f"{node.label} would read zeros where erased structures were and does not map"
                        " them to zero"
                    )
                continue
            if problem is None:
                problem = self._drop_problem(node, dead, cut, alive)
        return alive, problem

    def _drop_problem(self, node: Node, dead: list[int], cut: set[int], alive: list[bool]) -> str | None:
        flow = self._flow
        if erased_input(node) == "cut":
            if any(p not in cut for p in dead):
                return f"{node.label} would lose an input whose channels are not cut from its consumers"
            return None
        out = node.outputs[0].shape
        for v in node.inputs:
            if v is None or id(v) not in flow.data_values:
                continue
            p = v.producer
            if p is not None and not alive[flow.index[p.name]]:
                continue
            if out is None or v.shape is None or tuple(v.shape) != tuple(out):
                return f"{node.label} would be left with '{v.name}', which does not have its output's shape"
        return None

    def _backward(self, alive: list[bool]) -> list[bool]:
        flow = self._flow
        n = len(flow.nodes)
        needed = [False] * n
        for i in range(n - 1, -1, -1):
            if not alive[i]:
                continue
            needed[i] = flow.feeds_output[i] or any(needed[c] for c in flow.consumers[i])
        return needed

    def _is_data_value(self, v: Value | None) -> bool:
        if v is None:
            return False
        return id(v) in self._flow.data_values

    def _whole(self, name: str) -> ParamSlice | None:
        shape = self.param_shapes.get(name, ())
        v = self.graph.values.get(name)
        if not shape or v is None or not _is_weight(v):
            return None
        return ParamSlice(name, 0, tuple(range(shape[0])))


def _is_weight(v: Value) -> bool:
    """A float tensor: integer initializers are shape operands, never zeroed by a check."""
    return v.dtype is None or v.dtype.startswith(("float", "bfloat"))


def _param_sources(node: Node, flow: _Flow) -> list[Value]:
    """Parameters a node reads, directly or through a constant subgraph (a weight's Transpose, Cast)."""
    out: list[Value] = []
    seen: set[int] = set()
    stack = [v for v in reversed(node.inputs) if v is not None]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.is_param:
            out.append(v)
        elif v.producer is not None and id(v) not in flow.data_values:
            stack.extend(u for u in reversed(v.producer.inputs) if u is not None)
    return out


# --------------------------------------------------------------------------------------------------------
# building the analysis
# --------------------------------------------------------------------------------------------------------


def _flow_of(graph: Graph) -> _Flow:
    nodes = list(graph.nodes)
    index = {n.name: i for i, n in enumerate(nodes)}
    if len(index) != len(nodes):
        raise AnalysisError("the graph has two nodes with the same name; erasing needs unique names")
    data_values: set[int] = {id(v) for v in graph.inputs}
    is_data = [False] * len(nodes)
    data_inputs: list[list[int]] = []
    for i, node in enumerate(nodes):
        rule = rule_for(node)
        shape_kind = rule is not None and rule.kind_of(node) == "shape"
        srcs: dict[int, int] = {}
        for v in node.inputs:
            if v is not None and id(v) in data_values:
                srcs.setdefault(id(v), -1 if v.producer is None else index[v.producer.name])
        if srcs and not shape_kind:
            is_data[i] = True
            for v in node.outputs:
                data_values.add(id(v))
        data_inputs.append(list(srcs.values()) if is_data[i] else [])
    consumers: list[list[int]] = []
    for node in nodes:
        seen: dict[int, None] = {}
        for v in node.outputs:
            for c, _ in v.consumers:
                seen.setdefault(index[c.name], None)
        consumers.append(list(seen))
    outs = {id(v) for v in graph.outputs}
    feeds_output = [any(id(v) in outs for v in n.outputs) for n in nodes]
    joint = [is_data[i] and len(data_inputs[i]) >= 2 for i in range(len(nodes))]
    return _Flow(nodes, index, is_data, data_inputs, consumers, feeds_output, joint, data_values)


def analyze_erase(graph: Graph, prune: PruneAnalysis) -> EraseAnalysis:
    """Segments, candidate structures, their erasability, what dies with each and their nesting."""
    flow = _flow_of(graph)
    data_consumers = [[c for c in cs if flow.is_data[c]] for cs in flow.consumers]
    segments = _segments(flow, data_consumers)
    builder = _Builder(graph, flow, data_consumers, prune)
    structures: list[Structure] = []
    for seg in segments:
        s = builder.structure(len(structures), seg)
        if s is not None:
            structures.append(s)
    _nest(structures, flow)
    groups: list[NodeGroup] = []
    param_axes: dict[tuple[str, int], np.ndarray] = {}
    shapes = {v.name: v.static_shape or () for v in graph.params}
    for s in structures:
        for p in s.params:
            param_axes[(p, 0)] = np.full(shapes[p][0], s.id, dtype=np.int64)
        groups.append(
            NodeGroup(
                id=s.id,
                zig_ids=np.array([s.id], dtype=np.int64),
                params=[(p, 0) for p in s.params],
                prunable=s.erasable,
                reason=s.reason,
                num_params=s.num_params,
                flops=s.flops,
                nodes=[*s.segment, *s.dies_with],
                min_keep=0,
                parent=s.parent,
            )
        )
    return EraseAnalysis(
        graph=graph,
        groups=groups,
        zig_group=np.arange(len(structures), dtype=np.int64),
        param_axes=param_axes,
        trainable={v.name: v.trainable for v in graph.params},
        param_shapes=shapes,
        mode="erase",
        attention=prune.attention,
        flops_total=prune.flops_total,
        params_total=prune.params_total,
        vertex_kinds=dict(prune.vertex_kinds),
        unknown_ops=dict(prune.unknown_ops),
        internal=None,
        structures=structures,
        prune=prune,
        flow=flow,
        concat_zigs=builder.concat_zigs,
        params_erasable=sum(n for _, n in builder.erasable_params),
    )


def _segments(flow: _Flow, data_consumers: list[list[int]]) -> list[list[int]]:
    """Data nodes cut into segments (ALGORITHMS.md §3.2), in graph order of their heads."""
    seg_of = [-1] * len(flow.nodes)
    segments: list[list[int]] = []
    for i in range(len(flow.nodes)):
        if not flow.is_data[i]:
            continue
        ins = flow.data_inputs[i]
        p = ins[0] if len(ins) == 1 else -1
        extends = (
            not flow.joint[i]
            and p >= 0
            and not flow.joint[p]
            and len(data_consumers[p]) == 1
            and not flow.feeds_output[p]
        )
        if extends:
            seg_of[i] = seg_of[p]
            segments[seg_of[i]].append(i)
        else:
            seg_of[i] = len(segments)
            segments.append([i])
    return segments


class _Builder:
    """Reads one segment at a time: its variables, zero-invariance, where it ends, what dies with it."""

    def __init__(
        self, graph: Graph, flow: _Flow, data_consumers: list[list[int]], prune: PruneAnalysis
    ) -> None:
        self.graph = graph
        self.flow = flow
        self.data_consumers = data_consumers
        self.prune = prune
        self.concat_zigs: dict[int, np.ndarray] = {}
        self.erasable_params: set[tuple[str, int]] = set()  # (name, numel) owned by an erasable structure
        self._zig_params: dict[int, set[str]] | None = None

    # -- one structure ---------------------------------------------------------------------------------
    def structure(self, sid: int, seg: list[int]) -> Structure | None:
        flow = self.flow
        if flow.joint[seg[0]]:
            return None
        names = {flow.nodes[i].name for i in seg}
        sources: dict[str, Value] = {}
        for i in seg:
            for v in _param_sources(flow.nodes[i], flow):
                if v.trainable:
                    sources[v.name] = v
        if not sources:
            return None
        variables = [
            name
            for name, v in sources.items()
            if v.rank
            and v.static_shape is not None
            and all(c.name in names or not self._reaches(c.name, names) for c, _ in v.consumers)
        ]
        last = seg[-1]
        joints = [flow.nodes[c].name for c in self.data_consumers[last]]
        reason = self._why_not(sid, seg, set(variables))
        gone = set(seg)
        if reason is None:  # what dies with it matters only for a structure that can go
            gone = self._dies(seg)
            reason = self._shape_reads(gone)
        s = Structure(
            id=sid,
            segment=[flow.nodes[i].name for i in seg],
            params=variables,
            joints=joints,
            erasable=reason is None,
            reason=reason,
            dies_with=[flow.nodes[i].name for i in sorted(gone - set(seg))],
        )
        gone_names = {flow.nodes[i].name for i in gone}
        owned = self._owned_params(gone_names)
        s.num_params = sum(v.numel or 0 for v in owned if v.trainable)
        if s.erasable:
            self.erasable_params.update(
                (v.name, math.prod(v.static_shape or ())) for v in owned if v.trainable
            )
        s.flops = int(sum(node_flops(flow.nodes[i]) for i in gone))
        return s

    def _why_not(self, sid: int, seg: list[int], variables: set[str]) -> str | None:
        flow = self.flow
        last = seg[-1]
        lnode = flow.nodes[last]
        if not variables:
            return "its parameters are also used outside it (shared weights stay)"
        if flow.feeds_output[last]:
            return f"its output '{lnode.outputs[0].name}' is a graph output"
        succ = self.data_consumers[last]
        if not succ:
            return "its output is not used"
        for ci in succ:
            cn = flow.nodes[ci]
            if not flow.joint[ci]:
                return f"its output also feeds {cn.label}, which would lose its input"
            if erased_input(cn) is None:
                return (
                    f"it feeds {cn.label}: a zero operand of {cn.op} is not the same as no operand"
                    " (only joints that sum or concatenate can lose an input)"
                )
        why = self._zero_invariant(seg, variables)
        if why is not None:
            return why
        for ci in succ:
            cn = flow.nodes[ci]
            if erased_input(cn) == "cut":
                if len(succ) != 1:
                    return f"it feeds {cn.label} and other operators"
                why = self._concat(sid, seg, cn, variables)
                if why is not None:
                    return why
            else:
                why = self._sum_shapes(cn, lnode)
                if why is not None:
                    return why
        return None

    def _shape_reads(self, gone: set[int]) -> str | None:
        """A shape computation outside the structure that reads one of its values keeps it."""
        flow = self.flow
        names = {flow.nodes[i].name for i in gone}
        for i in gone:
            for v in flow.nodes[i].outputs:
                for c, _ in v.consumers:
                    outside = c.name not in names and not flow.is_data[flow.index[c.name]]
                    if outside and self._reaches(c.name, names):
                        return f"{c.label} reads the shape of '{v.name}', which would be gone"
        return None

    def _zero_invariant(self, seg: list[int], variables: set[str]) -> str | None:
        """Walk the segment with its variables at zero: is its output exactly zero?

        An operator that does not map zero to zero in the middle is fine when a later one zeroes the
        stream again (conv → sigmoid → conv); one that turns a zero into inf/NaN is not, since a later
        zero weight times NaN is still NaN.
        """
        flow = self.flow
        memo: dict[int, bool] = {}
        z = False
        last_nonzero: Node | None = None
        for i in seg:
            node = flow.nodes[i]
            flags = [
                True
                if v is None
                else (z if id(v) in flow.data_values else self._const_zero(v, variables, memo))
                for v in node.inputs
            ]
            nz = output_is_zero(node, flags)
            sees_zero = any(f and v is not None for f, v in zip(flags, node.inputs, strict=False))
            if not nz and sees_zero and any(r.blows_up_at_zero(node) for r in declarations_for(node)):
                return f"{node.label} turns the structure's zeros into inf or NaN"
            if z and not nz:
                last_nonzero = node
            z = nz
        if not z:
            if last_nonzero is not None:
                return (
                    f"{last_nonzero.label} does not map zero to zero and no later operator zeroes the"
                    " stream again, so the structure's output is not zero when its parameters are"
                )
            return "no operator in it makes its output exactly zero when its parameters are zero"
        return None

    def _const_zero(self, v: Value, variables: set[str], memo: dict[int, bool]) -> bool:
        """Is a non-activation operand all-zero once the variables are zero?"""
        key = id(v)
        if key in memo:
            return memo[key]
        memo[key] = False  # cycles cannot happen; this only guards re-entry
        if v.is_param:
            out = v.name in variables
        elif v.const is not None:
            arr = np.asarray(v.const)
            out = bool(arr.size) and bool(np.all(arr == 0))
        elif v.producer is not None:
            p = v.producer
            flags = [True if u is None else self._const_zero(u, variables, memo) for u in p.inputs]
            out = output_is_zero(p, flags)
        else:
            out = False
        memo[key] = out
        return out

    def _sum_shapes(self, joint: Node, lnode: Node) -> str | None:
        out = joint.outputs[0].shape
        mine = {id(v) for v in lnode.outputs}
        for v in joint.inputs:
            if v is None or id(v) in mine:
                continue
            if out is None or v.shape is None or tuple(v.shape) != tuple(out):
                return (
                    f"the other input '{v.name}' of {joint.label} does not have the output's shape, so it"
                    " cannot stand alone"
                )
        return None

    # -- Concat branches -------------------------------------------------------------------------------
    def _concat(self, sid: int, seg: list[int], cat: Node, variables: set[str]) -> str | None:
        """A Concat branch is erasable when its channels are zero up to stems that contract them away;
        those stems' input channels are then cut with the pruning machinery."""
        flow, prune = self.flow, self.prune
        cmap = prune.internal
        out = cat.outputs[0]
        if cmap is None or out.shape is None:
            return f"the channels of {cat.label} are not tracked"
        rank = len(out.shape)
        axis = int(cat.attr("axis", 0)) % max(rank, 1)
        mine = {id(v) for v in flow.nodes[seg[-1]].outputs}
        offset, size = 0, None
        for v in cat.inputs:
            width = None if v is None or v.shape is None else v.shape[axis]
            if v is None or not isinstance(width, int):
                return f"the inputs of {cat.label} have unknown sizes along axis {axis}"
            if id(v) in mine:
                if size is not None:
                    return f"it enters {cat.label} twice"
                size = width
            elif size is None:
                offset += width
        key = cmap.ctx.slot(out, axis)
        if size is None or key is None or key not in cmap.ctx.offset:
            return f"the channels of {cat.label} are not tracked"
        elems = cmap.ctx.elements(key)[offset : offset + size]
        zigs = cmap.zig_of_comp[cmap.labels[elems]]
        if (zigs < 0).any():
            return f"its channels in {cat.label} hold no parameters of their consumers"
        for z in np.unique(zigs):
            g = prune.groups[int(prune.zig_group[z])]
            if g.reason is not None and not g.reason.startswith("a single channel"):
                return f"its channels in {cat.label} cannot be cut: {g.reason}"
        weights = self._contracting_consumers(out)
        if isinstance(weights, str):
            return weights
        allowed = set(weights)
        for i in seg:
            allowed.update(v.name for v in _param_sources(flow.nodes[i], flow))
        zp = self._params_by_zig()
        for z in np.unique(zigs):
            extra = zp.get(int(z), set()) - allowed
            if extra:
                return f"its channels in {cat.label} also reach '{sorted(extra)[0]}', which is not zero there"
        self.concat_zigs[sid] = np.unique(zigs).astype(np.int64)
        return None

    def _contracting_consumers(self, start: Value) -> list[str] | str:
        """Weights of the stems that contract the channels of ``start`` away, through zero-preserving
        operators without parameters; a reason string when something else sees them."""
        flow = self.flow
        weights: list[str] = []
        stack = [start]
        seen: set[int] = set()
        while stack:
            v = stack.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            if any(v is o for o in self.graph.outputs):
                return f"the erased channels would reach the graph output '{v.name}'"
            for c, idx in v.consumers:
                ci = flow.index[c.name]
                if not flow.is_data[ci]:
                    if self._reaches(c.name, set()):
                        return f"{c.label} reads the shape of '{v.name}'"
                    continue
                w = _contraction_weight(c, idx)
                if w is not None:
                    weights.append(w)
                    continue
                if flow.joint[ci]:
                    return f"the erased channels meet {c.label}"
                params = [p for p in _param_sources(c, flow) if p.trainable]
                flags = [u is v for u in c.inputs]
                if params or not output_is_zero(c, flags):
                    return f"{c.label} sees the erased channels and does not keep them at zero"
                stack.extend(c.outputs)
        return weights

    def _params_by_zig(self) -> dict[int, set[str]]:
        if self._zig_params is None:
            out: dict[int, set[str]] = {}
            for (name, _axis), owner in self.prune.param_axes.items():
                for z in np.unique(owner[owner >= 0]).tolist():
                    out.setdefault(int(z), set()).add(name)
            self._zig_params = out
        return self._zig_params

    # -- what dies with a structure ----------------------------------------------------------------------
    def _dies(self, seg: list[int]) -> set[int]:
        """The segment plus every data node upstream whose consumers all die (local, not a full pass)."""
        flow = self.flow
        gone = set(seg)
        names = {flow.nodes[i].name for i in seg}
        stack = [p for p in flow.data_inputs[seg[0]] if p >= 0]
        while stack:
            p = stack.pop()
            if p in gone or flow.feeds_output[p]:
                continue
            ok = True
            for c in flow.consumers[p]:
                if c in gone:
                    continue
                if flow.is_data[c] or self._reaches(flow.nodes[c].name, names):
                    ok = False
                    break
            if not ok:
                continue
            gone.add(p)
            names.add(flow.nodes[p].name)
            stack.extend(q for q in flow.data_inputs[p] if q >= 0)
        return gone

    def _reaches(self, name: str, gone: set[str]) -> bool:
        """Does node ``name`` (or a constant subgraph after it) feed anything outside ``gone``?"""
        flow = self.flow
        stack = [flow.index[name]]
        seen: set[int] = set()
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            if flow.nodes[i].name in gone:
                continue
            if flow.is_data[i] or flow.feeds_output[i]:
                return True
            stack.extend(flow.consumers[i])
        return False

    def _owned_params(self, gone: set[str]) -> list[Value]:
        """Parameters read only by ``gone`` (directly or through constant subgraphs)."""
        out: dict[str, Value] = {}
        for name in gone:
            for v in _param_sources(self.flow.nodes[self.flow.index[name]], self.flow):
                if v.name not in out and all(
                    c.name in gone or not self._reaches(c.name, gone) for c, _ in v.consumers
                ):
                    out[v.name] = v
        return list(out.values())


def _contraction_weight(node: Node, idx: int) -> str | None:
    """The weight of a stem that sums its input ``idx`` (its input 0) over the channel axis, or None."""
    if idx != 0:
        return None
    hook = next((r.contraction for r in declarations_for(node) if r.contraction is not None), None)
    where = None if hook is None else hook(node)
    if where is None:
        return None
    w = node.input(where[0])
    return w.name if w is not None and w.is_param else None


def _nest(structures: list[Structure], flow: _Flow) -> None:
    """``parent``: the smallest erasable structure whose erasure also removes this one."""
    head = {s.segment[0]: s.id for s in structures}
    best: dict[int, tuple[int, int]] = {}
    for t in structures:
        if not t.erasable:
            continue
        size = len(t.segment) + len(t.dies_with)
        for name in t.dies_with:
            sid = head.get(name)
            if sid is not None and sid != t.id and (sid not in best or size < best[sid][0]):
                best[sid] = (size, t.id)
    for sid, (_, pid) in best.items():
        structures[sid].parent = pid
        structures[pid].children.append(sid)
