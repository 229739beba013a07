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
import math
import operator
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import NamedTuple

import onnx

__all__ = [
    "SUBGRAPH_TYPES", "NodeRow", "TensorRow", "forget_rows", "initializer_rows", "node_rows", "shared_rows",
    "tensor_row",
]  # fmt: skip

SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
"""Attribute types that hold a graph (If branches, a Loop or Scan body)."""
_SUBGRAPH_SET = frozenset(SUBGRAPH_TYPES)


class NodeRow(NamedTuple):
    """What the passes read of one node; ``proto`` for the rest (attribute values, subgraphs).

    ``subgraphs``: an attribute holds a graph (If, Loop, Scan), whose nodes may read names of this
    scope. ``tensors``: an attribute holds a tensor (a Constant's value), which may point to external
    data. A name that is not valid UTF-8 comes back from protobuf as ``bytes``: rows keep what protobuf
    gives, and ``frontends.onnx_frontend`` refuses such a model.

    Named tuples, immutable like the frozen dataclasses they were and three times cheaper to build:
    a load builds one row per node and per initializer."""

    proto: onnx.NodeProto
    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[onnx.AttributeProto, ...]
    subgraphs: bool
    tensors: bool


class TensorRow(NamedTuple):
    """What the passes read of one stored tensor (an initializer, a Constant's value); ``proto`` for
    its data. A deep network has more initializers than nodes, and the checks, the light copy and the
    IR build each read every one's name, dims and type: reading ``dims`` alone builds a wrapper and
    costs a microsecond or two per tensor and per pass. ``numel``: the product of ``dims`` (1 for a
    scalar); ``external``: its data lives in an external file; ``raw``: it holds ``raw_data``."""

    proto: onnx.TensorProto
    name: str
    dims: tuple[int, ...]
    numel: int
    data_type: int
    external: bool
    raw: bool


def tensor_row(t: onnx.TensorProto) -> TensorRow:
    dims = tuple(t.dims[:])  # a slice of a repeated field is a list built in C: a third of tuple()'s cost
    return _new_row(TensorRow, (
        t, t.name, dims, math.prod(dims), t.data_type, t.data_location == _EXTERNAL, t.HasField("raw_data"),
    ))  # fmt: skip


# Rows are built with ``tuple.__new__`` (what a named tuple's own ``__new__`` calls, less its Python
# frame); the field order is the class's.
_new_row = tuple.__new__
_EXTERNAL = onnx.TensorProto.EXTERNAL


def _read_tensors(graph: onnx.GraphProto) -> list[TensorRow]:
    return list(map(tensor_row, graph.initializer))


def field_getter(row_type: type[tuple], *names: str) -> operator.itemgetter:
    """A reader of the named fields of a row type that runs in C (``map`` over every row of a model
    without a Python frame per row), by the fields' positions in the class."""
    return operator.itemgetter(*(row_type._fields.index(n) for n in names))  # type: ignore[attr-defined]


_SHARED: ContextVar[dict[tuple[int, str], tuple[onnx.GraphProto, list]] | None] = ContextVar(
    "zigraph_onnx_rows", default=None
)


def _read(graph: onnx.GraphProto) -> list[NodeRow]:
    rows = []
    tensor = onnx.AttributeProto.TENSOR
    new, row_type = _new_row, NodeRow
    # Repeated fields are read by slicing (a list built in C, then a tuple): ``tuple(field)`` iterates
    # the field through Python's protocol and cost half as much again.
    for pn in graph.node:
        attrs = tuple(pn.attribute[:])
        if attrs:
            types = {a.type for a in attrs}
            sub, held = not _SUBGRAPH_SET.isdisjoint(types), tensor in types
        else:
            sub = held = False
        rows.append(
            new(row_type, (
                pn, pn.op_type, pn.domain, pn.name, tuple(pn.input[:]), tuple(pn.output[:]), attrs, sub, held,
            ))
        )  # fmt: skip
    return rows


def node_rows(graph: onnx.GraphProto) -> list[NodeRow]:
    """The rows of ``graph``'s top-level nodes, in order: read once per load (``shared_rows``)."""
    return _shared(graph, "node", _read)


def initializer_rows(graph: onnx.GraphProto) -> list[TensorRow]:
    """The rows of ``graph``'s initializers, in order: read once per load (``shared_rows``)."""
    return _shared(graph, "initializer", _read_tensors)


def _shared(graph: onnx.GraphProto, kind: str, read: Callable[[onnx.GraphProto], list]) -> list:
    shared = _SHARED.get()
    if shared is None:
        return read(graph)
    key = (id(graph), kind)
    hit = shared.get(key)
    if hit is not None and hit[0] is graph:
        return hit[1]
    rows = read(graph)
    shared[key] = (graph, rows)  # the graph is held, so its id is not reused while the load runs
    return rows


def forget_rows(graph: onnx.GraphProto) -> None:
    """``graph``'s nodes were just edited: its rows are read again when next asked for."""
    shared = _SHARED.get()
    if shared is not None:
        shared.pop((id(graph), "node"), None)
        shared.pop((id(graph), "initializer"), None)


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
