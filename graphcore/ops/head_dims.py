"""Which part of a split hidden axis is an attention head dimension.

A Reshape that splits the hidden axis into heads × head_dim makes one part the *carrier* (its elements
are the channels) and pins the others, so that every removal keeps the tensor rectangular
(``layout.py``). Attention is the one place where the inner part is the better carrier: the head
dimension j of every head is one channel, removed from all heads at once, so each head keeps the same
number of dimensions by construction, and the head count and the pairing of query and key heads (GQA)
are untouched.

The head dimension is recognised by where it goes, not by names: an axis that, through layout and
elementwise ops, reaches a product of two activations (no weight) as its summed axis (queries · keysᵀ)
or as the right operand's column axis (probabilities · values) is a head dimension; an axis merged back
into the hidden size that comes straight from such a product's column axis is one too. The walk is
bounded (a few dozen nodes per reshape), so the analysis stays linear.

Rotary embeddings need nothing here: ``rotate_half``'s Slice and Concat link dimension j to j + d/2, and
the cos/sin tables (constants, or computed from the ``inv_freq`` buffer) are multiplied in along the
same axis, so the existing rules link them into the same ZIG and construct slices them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from graphcore.ir import Node, Value
from graphcore.ops.axis_groups import factorize
from graphcore.ops.common import const_list

__all__ = [
    "ATTENTION",
    "attention_granularity",
    "attention_used",
    "feeds_head_product",
    "from_head_product",
    "head_dims_enabled",
    "whole_heads",
]

_WHOLE_HEADS: ContextVar[bool] = ContextVar("zigraph_whole_heads", default=False)


@contextlib.contextmanager
def whole_heads() -> Iterator[None]:
    """Analyze with whole attention heads as the channels (the outer part of the split carries), as
    before head dimensions existed: ``with whole_heads(): graphcore.analyze(graph)``. Heads and head
    dimensions cannot both be channels of one axis: an element (h, j) would tie head h to dimension j
    and every component would merge."""
    token = _WHOLE_HEADS.set(True)
    try:
        yield
    finally:
        _WHOLE_HEADS.reset(token)


ATTENTION = ("dims", "heads")


@contextlib.contextmanager
def attention_granularity(attention: str) -> Iterator[None]:
    """``"dims"`` (head dimensions, the default) or ``"heads"`` (``whole_heads()``) as the attention
    channels for what runs inside; anything else is an AnalysisError."""
    if attention not in ATTENTION:
        from graphcore.errors import AnalysisError

        raise AnalysisError(f"unknown attention granularity {attention!r}; expected one of {ATTENTION}")
    token = _WHOLE_HEADS.set(attention == "heads")
    try:
        yield
    finally:
        _WHOLE_HEADS.reset(token)


def attention_used() -> str:
    """The granularity an analysis running now uses (recorded in its report)."""
    return "heads" if _WHOLE_HEADS.get() else "dims"


def head_dims_enabled() -> bool:
    """Head dimensions are the attention channels unless ``whole_heads()`` is active."""
    return not _WHOLE_HEADS.get()


_DEPTH = 24
_UNARY = {"Identity", "Cast", "Neg", "Relu", "Dropout", "Contiguous", "CastLike"}
_BINARY = {"Mul", "Add", "Sub", "Div"}
_SAME_AXIS = {"Slice", "Concat", "Split"}


def _activation(v: Value | None, depth: int = 8) -> bool:
    """Does ``v`` depend on a graph input? A weight reshaped or transposed before a MatMul (a flat
    stored weight, an exporter's Transpose of a constant) is still a weight, not an activation."""
    if v is None or v.is_param or v.const is not None:
        return False
    node = v.producer
    if node is None:
        return True  # a graph input
    if depth == 0:
        return True  # too deep to tell: an activation is the answer that never merges heads wrongly
    return any(_activation(x, depth - 1) for x in node.inputs if x is not None)


def _product_axis(node: Node, index: int, axis: int, rank: int) -> bool:
    """Is ``axis`` of MatMul operand ``index`` the summed axis, or the right operand's columns, of a
    product of two activations?"""
    if rank < 2 or (axis != rank - 1 and (index == 0 or axis != rank - 2)):
        return False
    # The axis test first and the right operand first: both walks are pure, and a projection's right
    # operand is a weight, which answers at once (the walk from a split visits every MatMul downstream).
    return _activation(node.input(1)) and _activation(node.input(0))


def _mapped_reshape(x: Value, y: Value, axis: int) -> int | None:
    """The output axis that holds input ``axis`` unchanged through a reshape, else None."""
    if x.shape is None or y.shape is None:
        return None
    for ia, ib in factorize(list(x.shape), list(y.shape)):
        if ia == [axis] and len(ib) == 1 and x.shape[axis] == y.shape[ib[0]]:
            return ib[0]
    return None


def _forward(node: Node, index: int, val: Value, ax: int) -> list[tuple[Value, int]]:
    """Where axis ``ax`` of operand ``index`` goes in the node's outputs (layout and elementwise ops)."""
    if not node.outputs:
        return []
    out = node.outputs[0]
    r = val.rank or 0
    if node.op in _UNARY:
        return [(out, ax)] if index == 0 else []
    if node.op in _BINARY:
        ro = out.rank
        return [(out, ax + ro - r)] if ro is not None else []
    if (node.op in _SAME_AXIS and index == 0) or node.op == "Concat":
        return [(o, ax) for o in node.outputs]
    if node.op == "Expand" and index == 0:
        ro = out.rank
        return [(out, ax + ro - r)] if ro is not None else []
    if index != 0:
        return []
    if node.op == "Transpose":
        perm = node.attr("perm") or list(range(r))[::-1]
        return [(out, list(perm).index(ax))] if ax in perm else []
    if node.op in ("Squeeze", "Unsqueeze") and out.rank is not None:
        axes = const_list(node.input(1))
        if axes is None:
            return []
        if node.op == "Unsqueeze":
            ins = sorted(a % out.rank for a in axes)
            kept = [i for i in range(out.rank) if i not in ins]
            return [(out, kept[ax])]
        rem = {a % r for a in axes}
        return [] if ax in rem else [(out, ax - sum(1 for q in rem if q < ax))]
    if node.op == "Reshape":
        b = _mapped_reshape(val, out, ax)
        return [] if b is None else [(out, b)]
    return []


def feeds_head_product(v: Value, axis: int) -> bool:
    """Does axis ``axis`` of ``v`` reach a product of two activations as a head dimension?"""
    frontier = [(v, axis, _DEPTH)]
    seen: set[tuple[str, int]] = set()
    while frontier:
        val, ax, d = frontier.pop()
        if d == 0 or (val.name, ax) in seen:
            continue
        seen.add((val.name, ax))
        r = val.rank or 0
        for node, idx in val.consumers:
            if node.op == "MatMul" and idx in (0, 1):
                if _product_axis(node, idx, ax, r):
                    return True
                continue
            frontier.extend((o, a, d - 1) for o, a in _forward(node, idx, val, ax))
    return False


def from_head_product(v: Value, axis: int) -> bool:
    """Is axis ``axis`` of ``v`` the column axis of a product of two activations (probabilities ·
    values), reached back through layout ops only?"""
    val, ax = v, axis
    for _ in range(_DEPTH):
        node = val.producer
        if node is None:
            return False
        x = node.input(0)
        if node.op == "MatMul":
            r = val.rank or 0
            return ax == r - 1 and all(_activation(node.input(i)) for i in (0, 1))
        if x is None:
            return False
        if node.op in _UNARY:
            val = x
        elif node.op == "Transpose":
            r = x.rank or 0
            perm = node.attr("perm") or list(range(r))[::-1]
            ax, val = int(perm[ax]), x
        elif node.op == "Reshape":
            back = _mapped_reshape(val, x, ax)
            if back is None:
                return False
            ax, val = back, x
        else:
            return False
    return False
