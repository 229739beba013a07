"""Operators that index or select along axes: the selected axes never shrink, the others pass through."""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Node
from graphcore.ops.common import const_ints, rank
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


register_op("Trilu", _along_axes(lambda c, n, r: {r - 2, r - 1}, "masks"))
register_op("TopK", _along_axes(_topk_axes, "selects along"))
for _op in ("GatherElements", "ScatterElements", "ScatterND", "GatherND", "Scatter", "ReverseSequence",
            "Compress", "Unique", "OneHot", "NonMaxSuppression"):  # fmt: skip
    register_op(_op, _along_axes(_elements_axes, "indexes"))


def _cumsum_axes(ctx: ChannelGraph, node: Node, r: int):
    axis = const_ints(ctx, node, 1)
    return None if axis is None else {axis[0] + r if axis[0] < 0 else axis[0]}


register_op("CumSum", _along_axes(_cumsum_axes, "accumulates along"))
