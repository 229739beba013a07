"""Operators that index or select along axes: the selected axes never shrink, the others pass through."""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Node
from graphcore.ops.common import const_ints, data_zero, never, rank
from graphcore.ops.registry import register_op


def _along_axes(axes_of, what: str):
    def relate(ctx: ChannelGraph, node: Node) -> None:
        x = node.input(0)
        r = rank(x)
        if x is None or r is None:
            for o in node.outputs:
                ctx.pin_all(o, f"{node.op} with unknown shape")
            return
        axes = axes_of(ctx, node, r)
        for o in node.outputs:
            if rank(o) != r:
                ctx.pin_all(o, f"{node.op} changes rank")
                continue
            for a in range(r):
                if axes is None or a in axes:
                    ctx.pin(x, a, f"{node.op} {what} this axis")
                    ctx.pin(o, a, f"{node.op} {what} this axis")
                elif ctx.link(x, a, o, a) and o is node.outputs[0] and node.op == "Trilu":
                    ctx.set_zero(o, a, ctx.zero(x, a))

    return relate


def _topk_axes(ctx: ChannelGraph, node: Node, r: int):
    a = int(node.attr("axis", -1))
    return {a + r if a < 0 else a}


def _elements_axes(ctx: ChannelGraph, node: Node, r: int):
    return None  # every axis is data-dependent


# zero_when: each output element is an element of the data operands (a Scatter's data and updates,
# OneHot's values; TopK's values), so all-zero data gives all-zero output; NonMaxSuppression gives indices.
_DATA_OPERANDS = {
    "GatherElements": (0,), "ScatterElements": (0, 2), "ScatterND": (0, 2), "GatherND": (0,),
    "Scatter": (0, 2), "ReverseSequence": (0,), "Compress": (0,), "Unique": (0,), "OneHot": (2,),
}  # fmt: skip
register_op("Trilu", _along_axes(lambda c, n, r: {r - 2, r - 1}, "masks"), zero_when=data_zero(0))
register_op("TopK", _along_axes(_topk_axes, "selects along"), zero_when=data_zero(0))
for _op in ("GatherElements", "ScatterElements", "ScatterND", "GatherND", "Scatter", "ReverseSequence",
            "Compress", "Unique", "OneHot", "NonMaxSuppression"):  # fmt: skip
    _data = _DATA_OPERANDS.get(_op)
    register_op(
        _op, _along_axes(_elements_axes, "indexes"), zero_when=never if _data is None else data_zero(*_data)
    )


def _cumsum_axes(ctx: ChannelGraph, node: Node, r: int):
    axis = const_ints(ctx, node, 1)
    return None if axis is None else {axis[0] + r if axis[0] < 0 else axis[0]}


register_op("CumSum", _along_axes(_cumsum_axes, "accumulates along"), zero_when=data_zero(0))
