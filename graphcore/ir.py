"""The framework-neutral graph every frontend produces and every pass reads.

Values carry shapes, never weight data: a model whose weights live in ONNX external data is analyzed
without reading them. Only small integer tensors (shape arithmetic) keep a numpy value, because passes
must know Reshape targets and Split sizes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

__all__ = ["Dim", "Graph", "Node", "Value"]

Dim = int | str | None
"""A static size, a symbolic name (batch, sequence) or None when nothing is known."""


@dataclass(eq=False, slots=True)
class Value:
    """A tensor edge of the graph; parameters are Values with a stable name and ``is_param``."""

    name: str
    shape: tuple[Dim, ...] | None = None
    dtype: str | None = None
    is_param: bool = False
    trainable: bool = False
    const: np.ndarray | None = None
    alias_of: str | None = None
    """For a parameter: the weight it is one read of (a shared ONNX constant gets one alias per reader,
    so sharing never ties the readers' channels); None for the weight itself."""
    producer: Node | None = field(default=None, repr=False)
    consumers: list[tuple[Node, int]] = field(default_factory=list, repr=False)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known integer."""
        s = self.shape
        if s is None:
            return None
        for d in s:  # a loop, not all() over a generator: asked for every parameter by several passes
            if type(d) is not int:
                break
        else:
            return cast("tuple[int, ...]", s)  # the usual case: already a tuple of plain ints
        dims = tuple(int(d) for d in s if isinstance(d, int))
        return dims if len(dims) == len(s) else None

    @property
    def numel(self) -> int | None:
        s = self.static_shape
        return None if s is None else math.prod(s)


@dataclass(eq=False, slots=True)
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
    """Nodes in topological order plus O(1) producer/consumer links on every Value.

    The links are kept by ``add_node`` and by the editing methods below (in the spirit of torch.fx's
    ``replace_all_uses_with`` and ``erase_node``); code outside this class never assigns ``producer``
    or ``consumers`` itself, so the two directions cannot disagree.
    """

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

    # -- editing --------------------------------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Every consumer of ``old``, and the graph outputs, read ``new`` instead. O(uses + outputs).

        ``old`` keeps its producer and is left unused, so ``remove_node`` may take its producer next.
        """
        if old is new:
            return
        for node, i in old.consumers:
            node.inputs[i] = new
            new.consumers.append((node, i))
        old.consumers = []
        self.outputs = [new if v is old else v for v in self.outputs]

    def set_input(self, node: Node, index: int, v: Value | None) -> None:
        """Operand ``index`` of ``node`` reads ``v`` (None: absent), padding absent operands before it;
        the old operand forgets this use. O(uses of the old operand)."""
        while len(node.inputs) <= index:
            node.inputs.append(None)
        old = node.inputs[index]
        if old is not None:
            old.consumers = [(c, j) for c, j in old.consumers if not (c is node and j == index)]
        node.inputs[index] = v
        if v is not None:
            v.consumers.append((node, index))

    def replace_output(self, old: Value, new: Value) -> None:
        """The node that produces ``old`` produces ``new`` in its place; ``old`` leaves the graph.

        For a frontend that learns only after emitting a node which Value it must write. Refuses when
        ``old`` is still read (move its uses first with ``replace_all_uses``) or ``new`` has a producer.
        """
        node = old.producer
        if node is None:
            raise ValueError(f"'{old.name}' has no producer to hand over")
        if new.producer is not None:
            raise ValueError(f"'{new.name}' is already produced by {new.producer.label}")
        if old.consumers or self._is_output(old):
            raise ValueError(f"cannot remove '{old.name}': it is still connected")
        node.outputs = [new if v is old else v for v in node.outputs]
        new.producer = node
        old.producer = None
        self.remove_value(old)

    def remove_node(self, node: Node) -> None:
        """Take ``node`` out of the graph: its inputs forget it, its outputs lose their producer.

        Refuses while any output is still read by a node or is a graph output. O(uses of its inputs),
        plus a scan of ``nodes`` unless ``node`` is the last one (the common case: undoing a step).
        """
        for v in node.outputs:
            if v.consumers or self._is_output(v):
                raise ValueError(f"cannot remove {node.label}: its output '{v.name}' is still used")
        for i, u in enumerate(node.inputs):
            if u is not None:
                u.consumers = [(c, j) for c, j in u.consumers if not (c is node and j == i)]
        for v in node.outputs:
            if v.producer is node:
                v.producer = None
        if self.nodes and self.nodes[-1] is node:
            self.nodes.pop()
        else:
            self.nodes.remove(node)

    def remove_value(self, v: Value) -> None:
        """Forget the name of a Value nothing produces or reads any more (refuses otherwise)."""
        if v.producer is not None or v.consumers or self._is_output(v) or any(x is v for x in self.inputs):
            raise ValueError(f"cannot remove '{v.name}': it is still connected")
        if self.values.get(v.name) is v:
            del self.values[v.name]

    def _is_output(self, v: Value) -> bool:
        return any(o is v for o in self.outputs)

    # -- queries --------------------------------------------------------------------------------
    @property
    def params(self) -> Iterator[Value]:
        return (v for v in self.values.values() if v.is_param)

    @property
    def stored_params(self) -> Iterator[Value]:
        """Parameters as the model stores them: aliases of a shared weight are not counted again."""
        return (v for v in self.values.values() if v.is_param and v.alias_of is None)

    def sort(self) -> None:
        """Put ``nodes`` in a deterministic topological order (stable for already-sorted graphs)."""
        placed: set[Node] = set()  # nodes hash by identity (eq=False)
        for n in self.nodes:  # the usual case, a graph already in order, costs one pass
            for v in n.inputs:
                if v is not None and v.producer is not None and v.producer not in placed:
                    break
            else:
                placed.add(n)
                continue
            break
        else:
            return
        position = {id(n): i for i, n in enumerate(self.nodes)}
        indeg = {
            id(n): sum(1 for v in n.inputs if v is not None and v.producer is not None) for n in self.nodes
        }
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

    def find(self, op: str) -> list[Node]:
        return [n for n in self.nodes if n.op == op]

    def summary_ops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            key = f"{n.domain}::{n.op}" if n.domain else n.op
            counts[key] = counts.get(key, 0) + 1
        return counts
