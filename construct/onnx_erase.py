"""Lower an erasing plan onto an ONNX model: whole operators gone, joints bypassed, Concat consumers sliced.

The plan (``EraseAnalysis.plan``) names IR nodes; for ONNX each IR node is one node of the model the
frontend read (``node.origin`` is its index), and IR value names are ONNX value names, so every edit is
addressed exactly. Order matters: the channel slicing of Concat consumers runs first, through the same
code as pruning (``onnx_construct.apply_shrink``), while node indices still match the IR; the node
deletions come last.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import onnx
from onnx import helper

from construct.erase_zeros import erased_structures
from construct.onnx_construct import _internalize, apply_shrink, finish
from graphcore.erase import EraseAnalysis, ErasePlan
from graphcore.errors import ZigraphError
from graphcore.ir import Graph
from graphcore.shrink import plan as shrink_plan

__all__ = ["erase_onnx"]


def erase_onnx(
    model: str | os.PathLike | onnx.ModelProto | None,
    analysis: EraseAnalysis,
    erased: Iterable[int] | None = None,
) -> onnx.ModelProto:
    """The ONNX model with the structures ``erased`` physically removed; the input is never modified.

    ``model``: the model whose weights to use (a path or a ModelProto with the same graph as the one
    analysed, e.g. after training), or None for the analysed model itself. ``erased``: structure ids; by
    default the structures whose variables are all exactly zero in ``model``.
    """
    graph: Graph = analysis.graph
    if graph.format != "onnx" or "model" not in graph.meta:
        raise ZigraphError("erase_onnx needs an analysis of an ONNX model (frontends.load('model.onnx'))")
    small, base = _source(model, graph)
    if erased is None:
        erased = erased_structures(small if model is not None else None, analysis)
    ep = analysis.plan(list(erased))
    gone = set(ep.removed_nodes) | set(ep.bypass)
    if len(ep.removed_zigs):
        prune = analysis.prune
        if prune is None:
            raise ZigraphError("this erasing analysis has no channel map; build it with graphcore.analyze")
        sp = shrink_plan(prune, ep.removed_zigs, erased_nodes=gone)
        apply_shrink(small, prune.graph, sp, base, skip=gone)
    else:
        _internalize(small, base)
    _remove(small, graph, ep, gone)
    finish(small, graph.meta["model"], "erased")
    return small


def _source(
    model: str | os.PathLike | onnx.ModelProto | None, graph: Graph
) -> tuple[onnx.ModelProto, Path | None]:
    """A private copy of the model to edit, and the folder its external data lives in."""
    if model is None:
        out = onnx.ModelProto()
        out.CopyFrom(graph.meta["model"])
        return out, graph.meta.get("base_dir")
    from frontends.onnx_frontend import read_onnx

    out, base = read_onnx(model)  # a copy, functions inlined as for the analysis
    analysed = graph.meta["model"].graph.node
    if len(out.graph.node) != len(analysed) or any(
        a.op_type != b.op_type or list(a.input) != list(b.input) for a, b in zip(out.graph.node, analysed)
    ):
        raise ZigraphError("the model is not the one the analysis was made from (its graph differs)")
    return out, base if base is not None else graph.meta.get("base_dir")


def _remove(model: onnx.ModelProto, graph: Graph, ep: ErasePlan, gone: set[str]) -> None:
    """Delete the erased nodes, route every use of a bypassed joint to its surviving input, drop joint
    inputs, and delete what only fed erased nodes (constants, shape arithmetic)."""
    ir = {n.name: n for n in graph.nodes}
    missing = sorted(n for n in gone if n not in ir)
    if missing:
        raise ZigraphError(f"internal error: the erase plan names unknown nodes {missing[:3]}")
    g = model.graph

    def resolve(value: str) -> str:
        seen = set()
        while True:
            v = graph.values.get(value)
            prod = v.producer if v is not None else None
            if prod is None or prod.name not in ep.bypass or value in seen:
                return value
            seen.add(value)
            value = ep.bypass[prod.name]

    subst: dict[str, str] = {}
    for joint in ep.bypass:
        out = ir[joint].outputs[0].name
        subst[out] = resolve(out)
    deleted = {ir[n].origin for n in gone}
    for joint, positions in ep.drop_inputs.items():
        pn = g.node[ir[joint].origin]
        drop = set(positions)
        kept = [x for i, x in enumerate(pn.input) if i not in drop]
        del pn.input[:]
        pn.input.extend(kept)
    survivors = [pn for i, pn in enumerate(g.node) if i not in deleted]
    renames = _keep_output_names(g, survivors, subst)
    for pn in survivors:
        _substitute(pn, subst)
        for i, o in enumerate(pn.output):
            if o in renames:
                pn.output[i] = renames[o]
    g.node.extend(
        helper.make_node("Identity", [subst[o.name]], [o.name], name=f"{o.name}__zigraph_bypass")
        for o in g.output
        if o.name in subst
    )
    deleted |= _dead_producers(g, deleted)  # after the rewiring: a bypass target is still read
    for i in sorted(deleted, reverse=True):  # in place: detaching messages from a repeated field clears them
        del g.node[i]


def _keep_output_names(
    g: onnx.GraphProto, survivors: list[onnx.NodeProto], subst: dict[str, str]
) -> dict[str, str]:
    """A graph output that was a bypassed joint's keeps its name: the surviving value is renamed to it
    when that is safe (produced by a surviving node, not itself an output, not read inside a subgraph);
    otherwise an Identity is added (``subst`` keeps the entry). Returns producer-output renames and
    updates ``subst`` so every reader follows."""
    outputs = {o.name for o in g.output}
    produced = {o for pn in survivors for o in pn.output}
    in_subgraphs = _subgraph_reads(survivors)
    renames: dict[str, str] = {}
    for o in g.output:
        repl = subst.get(o.name)
        if repl is None or repl == o.name:
            continue
        if repl in produced and repl not in outputs and repl not in in_subgraphs and repl not in renames:
            renames[repl] = o.name
            for k, v in list(subst.items()):
                if v == repl:
                    subst[k] = o.name
            subst[repl] = o.name
            subst[o.name] = o.name
    for k in [k for k, v in subst.items() if k == v]:
        del subst[k]
    return renames


def _substitute(pn: onnx.NodeProto, subst: dict[str, str]) -> None:
    """Rename the values ``pn`` reads, also where a subgraph body reads them from the outer scope."""
    for i, x in enumerate(pn.input):
        if x in subst:
            pn.input[i] = subst[x]
    for att in pn.attribute:
        subs = [att.g] if att.type == onnx.AttributeProto.GRAPH else list(att.graphs)
        for sg in subs:
            for inner in sg.node:
                _substitute(inner, subst)


def _subgraph_reads(nodes: list[onnx.NodeProto]) -> set[str]:
    out: set[str] = set()
    for pn in nodes:
        for att in pn.attribute:
            subs = [att.g] if att.type == onnx.AttributeProto.GRAPH else list(att.graphs)
            for sg in subs:
                out |= {x for n in sg.node for x in n.input}
                out |= _subgraph_reads(list(sg.node))
    return out


def _dead_producers(g: onnx.GraphProto, deleted: set[int]) -> set[int]:
    """Nodes that fed only deleted nodes (a Reshape's shape constant, a Shape-Gather chain): they go
    too. Only ancestors of deleted nodes are considered, so nothing the original kept unused is touched."""
    producer = {o: i for i, pn in enumerate(g.node) for o in pn.output if o}
    readers: dict[str, set[int]] = {}
    for i, pn in enumerate(g.node):
        for x in [*pn.input, *_subgraph_reads([pn])]:
            readers.setdefault(x, set()).add(i)
    outputs = {o.name for o in g.output}
    dead = set(deleted)
    work = [producer[x] for i in deleted for x in g.node[i].input if x in producer]
    extra: set[int] = set()
    while work:
        i = work.pop()
        if i in dead:
            continue
        outs = [o for o in g.node[i].output if o]
        if any(o in outputs or readers.get(o, set()) - dead for o in outs):
            continue
        dead.add(i)
        extra.add(i)
        work.extend(producer[x] for x in g.node[i].input if x in producer)
    return extra
