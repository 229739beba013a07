"""The framework-neutral graph every frontend produces and every pass reads.

Values carry shapes, never weight data: a model whose weights live in ONNX external data is analyzed
without reading them. Only small integer tensors (shape arithmetic) keep a numpy value, because passes
must know Reshape targets and Split sizes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Dim", "Graph", "Node", "Value"]

Dim = int | str | None
"""A static size, a symbolic name (batch, sequence) or None when nothing is known."""


@dataclass(eq=False)
class Value:
    """A tensor edge of the graph; parameters are Values with a stable name and ``is_param``."""

    name: str
    shape: tuple[Dim, ...] | None = None
    dtype: str | None = None
    is_param: bool = False
    trainable: bool = False
    const: np.ndarray | None = None
    producer: Node | None = field(default=None, repr=False)
    consumers: list[tuple[Node, int]] = field(default_factory=list, repr=False)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known integer."""
        if self.shape is None or not all(isinstance(d, int) for d in self.shape):
            return None
        return tuple(int(d) for d in self.shape)  # type: ignore[arg-type]

    @property
    def numel(self) -> int | None:
        s = self.static_shape
        return None if s is None else math.prod(s)


@dataclass(eq=False)
class Node:
    """One operator; ``op`` uses ONNX operator names, ``origin`` maps back to the frontend object."""

    name: str
    op: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    origin: Any = field(default=None, repr=False)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def label(self) -> str:
        dom = f"{self.domain}::" if self.domain else ""
        return f"{dom}{self.op} '{self.name}'"


class Graph:
    """Nodes in topological order plus O(1) producer/consumer links on every Value."""

    def __init__(self, name: str = "model", fmt: str = "onnx", opset: int | None = None) -> None:
        self.name = name
        self.format = fmt
        self.opset = opset
        self.nodes: list[Node] = []
        self.values: dict[str, Value] = {}
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.meta: dict[str, Any] = {}

    # -- construction -------------------------------------------------------------------------
    def value(self, name: str, **kwargs: Any) -> Value:
        """Return the Value called ``name``, creating it with ``kwargs`` on first use."""
        v = self.values.get(name)
        if v is None:
            v = Value(name=name, **kwargs)
            self.values[name] = v
        else:
            for k, val in kwargs.items():
                if val is not None:
                    setattr(v, k, val)
        return v

    def add_node(self, node: Node) -> Node:
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.consumers.append((node, i))
        for v in node.outputs:
            v.producer = node
        self.nodes.append(node)
        return node

    # -- queries --------------------------------------------------------------------------------
    @property
    def params(self) -> Iterator[Value]:
        return (v for v in self.values.values() if v.is_param)

    def param(self, name: str) -> Value:
        v = self.values[name]
        if not v.is_param:
            raise KeyError(name)
        return v

    def topological_order(self) -> list[Node]:
        """Kahn's algorithm; iterative so that very deep graphs never hit a recursion limit."""
        indeg: dict[int, int] = {}
        for n in self.nodes:
            indeg[id(n)] = sum(1 for v in n.inputs if v is not None and v.producer is not None)
        ready = [n for n in self.nodes if indeg[id(n)] == 0]
        order: list[Node] = []
        while ready:
            n = ready.pop()
            order.append(n)
            for v in n.outputs:
                for c, _ in v.consumers:
                    indeg[id(c)] -= 1
                    if indeg[id(c)] == 0:
                        ready.append(c)
        if len(order) != len(self.nodes):
            raise ValueError("the graph has a cycle")
        return order

    def sort(self) -> None:
        """Put ``nodes`` in a deterministic topological order (stable for already-sorted graphs)."""
        position = {id(n): i for i, n in enumerate(self.nodes)}
        indeg = {
            id(n): sum(1 for v in n.inputs if v is not None and v.producer is not None) for n in self.nodes
        }
        import heapq

        heap = [(position[id(n)], n) for n in self.nodes if indeg[id(n)] == 0]
        heapq.heapify(heap)
        order: list[Node] = []
        while heap:
            _, n = heapq.heappop(heap)
            order.append(n)
            for v in n.outputs:
                for c, _ in v.consumers:
                    indeg[id(c)] -= 1
                    if indeg[id(c)] == 0:
                        heapq.heappush(heap, (position[id(c)], c))
        if len(order) != len(self.nodes):
            stuck = next(n for n in self.nodes if indeg[id(n)] > 0)
            raise ValueError(f"the graph has a cycle through {stuck.label}")
        self.nodes = order

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def find(self, op: str) -> list[Node]:
        return [n for n in self.nodes if n.op == op]

    def summary_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            key = f"{n.domain}::{n.op}" if n.domain else n.op
            counts[key] = counts.get(key, 0) + 1
        return counts


def iter_values(nodes: Iterable[Node]) -> Iterator[Value]:
    seen: set[int] = set()
    for n in nodes:
        for v in [*n.inputs, *n.outputs]:
            if v is not None and id(v) not in seen:
                seen.add(id(v))
                yield v
