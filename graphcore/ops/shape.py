"""Output shapes the declarations share: same as the input, numpy broadcasting.

ONNX's inference gives up after a Reshape whose target is computed at run time (TorchScript exports of
attention do this), and everything downstream loses even its rank. Our shape-value tracking often knows
the target; an op's ``shape`` hook carries the shape on from there.
"""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node

__all__ = ["broadcast_dims", "broadcast_shape", "same_shape"]


def same_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """The output has the shape of the first input (activations, normalizations, softmax ...)."""
    x = node.input(0)
    return None if x is None else x.shape


def broadcast_dims(shapes: list[tuple[Dim, ...]]) -> tuple[Dim, ...]:
    """Numpy broadcasting of possibly symbolic shapes; a dim that cannot be told is None."""
    r = max(len(s) for s in shapes)
    out: list[Dim] = []
    for a in range(r):
        dims = [s[a - (r - len(s))] for s in shapes if a - (r - len(s)) >= 0]
        non1 = [d for d in dims if d != 1]
        if not non1:
            out.append(1)
        elif all(d == non1[0] for d in non1):
            out.append(non1[0])
        elif all(isinstance(d, str) for d in non1):
            # Different symbols (ONNX's inference names them afresh after an op it does not know, a
            # com.microsoft fusion): the result is one more symbol, equal only to the same broadcast.
            out.append("|".join(sorted({part for d in non1 for part in str(d).split("|")})))
        else:
            ints = [d for d in non1 if isinstance(d, int)]
            out.append(ints[0] if ints and all(d == ints[0] for d in ints) else None)
    return tuple(out)


def broadcast_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """The output of an elementwise op on several operands: their shapes broadcast."""
    shapes: list[tuple[Dim, ...]] = []
    for v in node.inputs:
        if v is None:
            continue
        if v.shape is None:
            return None
        shapes.append(v.shape)
    return broadcast_dims(shapes) if shapes else None
