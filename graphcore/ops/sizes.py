"""Operators that read or build shapes rather than data (Shape, Size, ConstantOfShape, Range, Constant):
the vertex kind ``shape``; their values are tracked by ``graphcore/fold.py`` through the ``fold`` hooks.
"""

from __future__ import annotations

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Node
from graphcore.ops.common import never, rank
from graphcore.ops.layout import shape_operand
from graphcore.ops.registry import register_op


def _shape(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    r = rank(x)
    if x is None or r is None:
        return
    for a in range(r):
        ctx.touch(x, a)
    start = int(node.attr("start", 0))
    end = node.attr("end")
    start = start + r if start < 0 else start
    end = r if end is None else (int(end) + r if int(end) < 0 else int(end))
    ctx.set_entries(node.outputs[0], [Entry.dim(x, a) for a in range(max(start, 0), min(end, r))])


def _size(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    r = rank(x)
    if x is None or r is None:
        return
    refs = tuple((x.name, a) for a in range(r))
    n = x.numel
    for a in range(r):
        ctx.touch(x, a)
    ctx.set_entries(node.outputs[0], [Entry("expr", n, refs=refs)], scalar=True)
    for a in range(r):
        ctx.pin(x, a, "its size is read by Size")


def _constant_of_shape(ctx: ChannelGraph, node: Node) -> None:
    y = node.outputs[0]
    shape_operand(ctx, node, 0, y)
    value = node.attr("value")
    is_zero = value is None or float(np.asarray(value).reshape(-1)[0]) == 0.0
    if y.shape is not None:
        for a in range(len(y.shape)):
            ctx.set_zero(y, a, is_zero)
            if ctx.slot(y, a) is not None and ctx.slot(y, a) not in ctx.pins:
                ctx.touch(y, a)


def _nothing(ctx: ChannelGraph, node: Node) -> None:
    """Shape-only ops: nothing flows through channels."""


def _constant(ctx: ChannelGraph, node: Node) -> None:
    """A weight written as a Constant node (the frontend makes it a parameter) is a source like an
    initializer: its axes are free until a reader ties or pins them, and construct slices it where it
    is stored. Any other constant (sizes, indices, masks) keeps its shape: nothing would slice it."""
    for y in node.outputs:
        if y.is_param:
            for a in range(len(y.shape or ())):
                ctx.touch(y, a)


def _constant_of_shape_fold(
    ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]
) -> list[Entry] | None:
    shape = ins[0] if ins else None
    if shape is None or len(shape) != 1:
        return None
    n = shape[0].value
    if n is None or n > 64:
        return None
    value = node.attr("value")
    fill = int(np.asarray(value).reshape(-1)[0]) if value is not None else 0
    if value is not None and np.asarray(value).dtype.kind not in "iub":
        return None
    return [Entry.lit(fill) for _ in range(n)]


def _range_fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    if len(ins) < 3:
        return None
    bounds: list[int] = []
    refs: list[tuple[str, int]] = []
    for e in ins:
        if e is None or len(e) != 1 or e[0].value is None:
            return None
        bounds.append(e[0].value)
        refs.extend(e[0].sources())
    start, limit, delta = bounds[0], bounds[1], bounds[2]
    if not delta or abs((limit - start) // delta) > 64:
        return None
    return [Entry("expr", v, refs=tuple(refs)) for v in range(start, limit, delta)]


# zero_when: their outputs are sizes, indices and constants, not data a removal structure computes.
register_op("Shape", _shape, kind="shape", zero_when=never)
register_op("Size", _size, kind="shape", zero_when=never)
register_op(
    "ConstantOfShape", _constant_of_shape, kind="shape", fold=_constant_of_shape_fold, zero_when=never
)
register_op("Constant", _constant, kind="shape", zero_when=never)
register_op("Range", _nothing, kind="shape", fold=_range_fold, zero_when=never)
register_op("NonZero", _nothing, kind="shape", zero_when=never)
register_op("EyeLike", _nothing, kind="shape", zero_when=never)
