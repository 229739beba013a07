"""Which tensors of an ONNX model are weights, and how shared weights become one parameter per use.

A *weight* is a tensor whose value the file fixes: an initializer, or the float ``value`` of a
``Constant`` node of more than one element. In IR version 4 and later an initializer that is also listed
as a graph input is a default the caller may override, so it is an input of fixed width, not a weight;
IR version 3 lists every initializer among the inputs, and there they are weights — as they are in a
later file that keeps that convention and lists every initializer (``overridable_inputs``).

Exporters deduplicate identical tensors: a freshly initialized network gets one zero bias shared by every
conv of a width, and a tied embedding is read by the lookup and by the output projection. In an ONNX
model a constant read by several nodes can be cloned per reader without changing the function, so a
weight's readers must not be tied to each other through it. ``param_uses`` gives every read of a weight
beyond the first its own *alias* name; the frontend makes each alias a parameter of its own, and
construct writes one tensor per distinct slicing (uses that keep the same slices share one, the first
under the original name). The aliases are a function of the model alone, so a removed-slices list that
names them (a report) can be applied to the model again by anyone who reads it with this module.

Reads inside a subgraph (an ``If`` branch reading an outer weight) are never aliased: those readers are
invisible to the analysis, so such a weight keeps its one name.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass

import onnx

from frontends.onnx_rows import SUBGRAPH_TYPES, NodeRow, field_getter, initializer_rows, node_rows

__all__ = [
    "ALIAS_MARK",
    "ParamUse",
    "initializer_names",
    "is_weight_constant",
    "node_name",
    "outer_reads",
    "overridable_inputs",
    "param_uses",
    "stored_tensors",
    "weight_names",
]

ALIAS_MARK = "@"
"""Separates a weight's name from the reader in an alias: ``conv2.bias@Conv_7``."""

_DEFAULT_DOMAINS = ("", "ai.onnx")
_INPUTS = field_getter(NodeRow, "inputs")
_FLOAT_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
})  # fmt: skip


@dataclass(frozen=True)
class ParamUse:
    """One read of a weight: operand ``index`` of node ``node`` (its index in ``model.graph.node``)."""

    source: str
    node: int
    index: int


def node_name(pn: onnx.NodeProto | NodeRow, idx: int) -> str:
    """The name the IR gives a node: its own, or ``{op_type}_{index}`` when the file leaves it empty
    (of a node or of its row, which reads the same two fields)."""
    return pn.name or f"{pn.op_type}_{idx}"


def is_weight_constant(pn: onnx.NodeProto) -> bool:
    """A ``Constant`` node whose value is a float tensor of more than one element: a weight written as a
    node. A single number (a softmax scale, an epsilon, an exponent) carries no channel and is an
    operand, not a weight; integer constants are sizes and indices."""
    if pn.op_type != "Constant" or pn.domain not in _DEFAULT_DOMAINS or len(pn.output) != 1:
        return False
    for att in pn.attribute:
        if att.name == "value":
            return att.t.data_type in _FLOAT_TYPES and math.prod(att.t.dims) > 1
        if att.name == "value_floats":
            return len(att.floats) > 1
    return False


def stored_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """The tensors the file stores, by the name graph nodes read them by: initializers and the values of
    Constant nodes (an initializer wins a name clash, as onnxruntime resolves it)."""
    out = {t.name: t for t in model.graph.initializer}
    for pn in model.graph.node:
        if pn.op_type == "Constant" and pn.output:
            for att in pn.attribute:
                if att.name == "value":
                    out.setdefault(pn.output[0], att.t)
    return out


def overridable_inputs(model: onnx.ModelProto, inits: set[str] | None = None) -> set[str]:
    """Initializers that are also graph inputs in IR >= 4 and are there on purpose: defaults a caller
    may override, so inputs of fixed width.

    A file that lists *every* initializer among its inputs follows IR 3's convention (older exporters
    and converters kept it after IR 4, torch's ``keep_initializers_as_inputs``): the listing says
    nothing about which tensors are meant to be fed, and those are read as weights, as in IR 3 (the
    pruned model's input declarations follow their new shapes). Only a selective listing marks
    deliberate runtime arguments."""
    return _overridable(model, initializer_names(model) if inits is None else inits)


def initializer_names(model: onnx.ModelProto) -> set[str]:
    """The names of the graph's initializers (a caller that asks several questions of a big model
    reads them once: each read of a repeated protobuf field builds a wrapper per element)."""
    return {r.name for r in initializer_rows(model.graph)}


def _overridable(model: onnx.ModelProto, inits: set[str]) -> set[str]:
    if model.ir_version < 4:
        return set()
    listed = {i.name for i in model.graph.input if i.name in inits}
    return set() if listed == inits else listed


def weight_names(model: onnx.ModelProto, inits: set[str] | None = None) -> set[str]:
    """Every tensor the file fixes: initializers (less overridable ones) and weight Constant outputs.
    ``inits``: ``initializer_names(model)`` when the caller has it."""
    inits = initializer_names(model) if inits is None else inits
    out = inits - _overridable(model, inits)
    out |= {
        r.outputs[0]
        for r in node_rows(model.graph)
        if r.op_type == "Constant" and is_weight_constant(r.proto)
    }
    return out


def param_uses(model: onnx.ModelProto, inits: set[str] | None = None) -> dict[str, ParamUse]:
    """Alias name -> the read it stands for, for every read of a weight but the one that keeps its name.

    The first read in node order keeps the weight's name, unless the weight is itself a graph output:
    then the output keeps it (at full width) and every node reads an alias. Names are
    ``{weight}@{node}`` (``:{operand}`` added when a node reads the weight twice), made unique against
    every name in the model deterministically.
    """
    g = model.graph
    weights = weight_names(model, inits)
    # Non-float initializers (shape constants, indices) are weights too: cloning them per use is just
    # as harmless, and a quantized int8 weight read by two dequantizations needs it.
    rows = node_rows(g)
    outputs = {o.name for o in g.output}
    # Most weights are read once: the names read more than once (or that are outputs) are found by
    # counting in C, and only their reads are listed (listing every read cost a dict entry and a list
    # per weight: most of this function on a deep network).
    counts = Counter(itertools.chain.from_iterable(map(_INPUTS, rows)))
    wanted = {x for x, c in counts.items() if (c > 1 or x in outputs) and x in weights}
    if not wanted:
        return {}
    reads: dict[str, list[tuple[int, int]]] = {}
    for idx, row in enumerate(rows):
        for i, x in enumerate(row.inputs):
            if x in wanted:
                reads.setdefault(x, []).append((idx, i))
    shared = {w: r for w, r in reads.items() if len(r) > 1 or (r and w in outputs)}
    if not shared:
        return {}
    hidden = _subgraph_reads(g)
    taken = _all_names(g)
    out: dict[str, ParamUse] = {}
    for w, uses in shared.items():
        if w in hidden:
            continue
        aliased = uses if w in outputs else uses[1:]
        for idx, i in aliased:
            row = rows[idx]
            stem = f"{w}{ALIAS_MARK}{node_name(row, idx)}"
            if sum(1 for x in row.inputs if x == w) > 1:
                stem += f":{i}"
            name, k = stem, 1
            while name in taken:
                k += 1
                name = f"{stem}#{k}"
            taken.add(name)
            out[name] = ParamUse(w, idx, i)
    return out


def _all_names(g: onnx.GraphProto) -> set[str]:
    names = {r.name for r in initializer_rows(g)} | {v.name for v in [*g.input, *g.output, *g.value_info]}
    names |= {x for r in node_rows(g) for x in (*r.inputs, *r.outputs)}
    return names


def _subgraph_reads(g: onnx.GraphProto) -> set[str]:
    """Names read inside any subgraph of ``g``'s nodes."""
    out: set[str] = set()
    for r in node_rows(g):
        if r.subgraphs:
            out.update(outer_reads(r.proto))
    return out


def outer_reads(pn: onnx.NodeProto) -> list[str]:
    """Names the subgraphs of node ``pn`` (If branches, a Loop body) read, at any depth, that they do
    not define themselves: values of the enclosing scope, in first-read order."""
    out: dict[str, None] = {}
    stack = [(att, frozenset[str]()) for att in reversed(pn.attribute) if att.type in SUBGRAPH_TYPES]
    while stack:
        att, outer_local = stack.pop()
        subs = [att.g] if att.type == onnx.AttributeProto.GRAPH else list(att.graphs)
        for sg in subs:
            local = set(outer_local) | {v.name for v in sg.input} | {t.name for t in sg.initializer}
            local |= {o for n in sg.node for o in n.output}
            for n in sg.node:
                for x in n.input:
                    if x and x not in local:
                        out.setdefault(x, None)
                stack.extend((a, frozenset(local)) for a in n.attribute if a.type in SUBGRAPH_TYPES)
    return list(out)
