"""Put an ONNX graph's nodes in topological order, as onnxruntime does before it runs a model.

ONNX requires the node list to be sorted and ``onnx.checker`` refuses a graph that is not, but real tools
write such graphs and onnxruntime runs them: ``onnxruntime.transformers.float16`` appends the ``Cast``
nodes it inserts for ``keep_io_types`` at the end of the list, after their consumers. Loading sorts.

The order is stable: a node moves only when one of its producers comes after it, and then it moves just
after the last of them (a depth-first walk that emits each node's producers before the node, visiting
nodes in file order). A sorted graph keeps its order exactly; the walk is linear in nodes + edges.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from frontends.onnx_rows import forget_rows, node_rows

__all__ = ["is_sorted", "sort_graph"]


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for att in node.attribute:
        if att.type == onnx.AttributeProto.GRAPH:
            yield att.g
        elif att.type == onnx.AttributeProto.GRAPHS:
            yield from att.graphs


def _names_read(node: onnx.NodeProto) -> Iterator[str]:
    """Every name the node reads: its inputs, and the outer-scope names its subgraphs read."""
    yield from node.input
    for sub in _subgraphs(node):
        for inner in sub.node:
            yield from _names_read(inner)


def _order(nodes: list[onnx.NodeProto]) -> list[int]:
    """Indices of ``nodes`` in stable topological order; ValueError naming a node on a cycle."""
    producer: dict[str, int] = {}
    for i, pn in enumerate(nodes):
        for out in pn.output:
            if out:
                producer.setdefault(out, i)
    deps = [[producer[n] for n in _names_read(pn) if n in producer] for pn in nodes]
    state = [0] * len(nodes)  # 0 not seen, 1 on the walk's stack, 2 emitted
    order: list[int] = []
    for root in range(len(nodes)):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(deps[root]))]
        while stack:
            i, pending = stack[-1]
            for d in pending:
                if state[d] == 0:
                    state[d] = 1
                    stack.append((d, iter(deps[d])))
                    break
                if state[d] == 1:
                    pn = nodes[d]
                    label = f"{pn.op_type} '{pn.name}'" if pn.name else f"{pn.op_type} node #{d}"
                    raise ValueError(f"the graph has a cycle through {label}")
            else:
                stack.pop()
                state[i] = 2
                order.append(i)
    return order


def sort_graph(graph: onnx.GraphProto) -> bool:
    """Sort ``graph.node`` (and every subgraph's) in place; True when anything moved.

    Names no node produces (graph inputs, initializers, outer-scope values) are already available.
    """
    moved = False
    for pn in graph.node:
        for sub in _subgraphs(pn):
            moved |= sort_graph(sub)
    nodes = list(graph.node)
    order = _order(nodes)
    if order != list(range(len(nodes))):
        sorted_nodes = [nodes[i] for i in order]
        copies = [onnx.NodeProto() for _ in sorted_nodes]
        for dst, src in zip(copies, sorted_nodes):
            dst.CopyFrom(src)
        del graph.node[:]
        graph.node.extend(copies)
        forget_rows(graph)
        moved = True
    return moved


def is_sorted(graph: onnx.GraphProto) -> bool:
    """Whether ``sort_graph`` would leave ``graph`` (and every subgraph) as it is; ValueError on a cycle.

    Lets a caller that must not edit a model (``frontends.load`` of a caller's ``ModelProto``) skip
    the copy that sorting would need in the usual case: a file that is already in order."""
    rows = node_rows(graph)
    if any(r.subgraphs for r in rows):
        nodes = list(graph.node)
        for pn in nodes:
            for sub in _subgraphs(pn):
                if not is_sorted(sub):
                    return False
        return _order(nodes) == list(range(len(nodes)))
    # No subgraphs: in order when no node reads a name that a later node produces (then ``_order``
    # moves nothing, and there is no cycle). One pass over the names, without the walk.
    produced = {o for r in rows for o in r.outputs if o}
    defined: set[str] = set()
    for r in rows:
        for x in r.inputs:
            if x in produced and x not in defined:
                return False
        defined.update(r.outputs)
    return True
