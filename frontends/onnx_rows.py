"""One read of an ONNX graph's node list, shared by every check and the IR build of one load.

Reading a field of a protobuf message builds a Python object each time (with upb, a node's name, type,
domain, inputs and outputs cost about 13 µs to read), and loading a model walked the node list eight
times: the name check, the order check, the schema lookup, the light copy, the external-data check,
the weight readers, the IR build and its subgraph scan. ``load_onnx`` reads each node once into a
``NodeRow`` inside ``shared_rows``; the passes ask ``node_rows(graph)``, which hands back the rows of
that very graph object while the load runs and reads the graph afresh otherwise (a caller outside a
load, or another graph: a sorted copy, an inlined model).

A pass that edits a graph's nodes in place (``sort_graph``, ``hide_ort_only_ops``) reads its protobuf
itself and calls ``forget_rows`` on it, so that no pass reads rows of the graph as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import onnx

__all__ = ["SUBGRAPH_TYPES", "NodeRow", "forget_rows", "node_rows", "shared_rows"]

SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
"""Attribute types that hold a graph (If branches, a Loop or Scan body)."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    """What the passes read of one node; ``proto`` for the rest (attribute values, subgraphs).

    A name that is not valid UTF-8 comes back from protobuf as ``bytes``: rows keep what protobuf
    gives, and ``frontends.onnx_frontend`` refuses such a model."""

    proto: onnx.NodeProto
    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[onnx.AttributeProto, ...]
    subgraphs: bool
    """An attribute holds a graph (If, Loop, Scan): its nodes may read names of this scope."""
    tensors: bool
    """An attribute holds a tensor (a Constant's value): it may point to external data."""


_SHARED: ContextVar[dict[int, tuple[onnx.GraphProto, list[NodeRow]]] | None] = ContextVar(
    "zigraph_onnx_rows", default=None
)


def _read(graph: onnx.GraphProto) -> list[NodeRow]:
    rows = []
    tensor = onnx.AttributeProto.TENSOR
    for pn in graph.node:
        attrs = tuple(pn.attribute)
        types = {a.type for a in attrs} if attrs else ()
        rows.append(
            NodeRow(
                pn,
                pn.op_type,
                pn.domain,
                pn.name,
                tuple(pn.input),
                tuple(pn.output),
                attrs,
                any(t in SUBGRAPH_TYPES for t in types),
                tensor in types,
            )
        )
    return rows


def node_rows(graph: onnx.GraphProto) -> list[NodeRow]:
    """The rows of ``graph``'s top-level nodes, in order: read once per load (``shared_rows``)."""
    shared = _SHARED.get()
    if shared is None:
        return _read(graph)
    hit = shared.get(id(graph))
    if hit is not None and hit[0] is graph:
        return hit[1]
    rows = _read(graph)
    shared[id(graph)] = (graph, rows)  # the graph is held, so its id is not reused while the load runs
    return rows


def forget_rows(graph: onnx.GraphProto) -> None:
    """``graph``'s nodes were just edited: its rows are read again when next asked for."""
    shared = _SHARED.get()
    if shared is not None:
        shared.pop(id(graph), None)


@contextlib.contextmanager
def shared_rows() -> Iterator[None]:
    """Within this block, each graph's rows are read once (a block inside another shares its rows)."""
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)
