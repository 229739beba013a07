"""Rules the torch frontend needs beyond the ONNX vocabulary.

``zigraph.torch::PinAxes`` carries no data: it marks axes of a value that must keep their size. The torch
frontend emits it where a view/reshape/expand size is computed from other sizes at run time
(``x.view(b, 2, c // 2, h, w)``): an exported ONNX model gets a fresh constant operand after pruning,
but a torch module keeps evaluating ``c // 2``, so the axis it sizes must not shrink.
"""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Node
from graphcore.ops.common import never
from graphcore.ops.registry import register_op

__all__ = ["TORCH_DOMAIN"]

TORCH_DOMAIN = "zigraph.torch"


def _pin_axes(ctx: ChannelGraph, node: Node) -> None:
    x = node.input(0)
    if x is None or x.shape is None:
        return
    axes = {int(a) % len(x.shape) for a in node.attr("axes", [])}
    reason = str(node.attr("reason", "its size is fixed by the torch program"))
    for a in range(len(x.shape)):
        if a in axes:
            ctx.pin(x, a, reason)
        else:
            ctx.touch(x, a)


register_op("PinAxes", _pin_axes, kind="shape", domain=TORCH_DOMAIN, zero_when=never)  # it has no output
