"""Fill output shapes that the frontend's shape inference could not give.

ONNX shape inference gives up after a Reshape whose target is computed at run time (TorchScript exports
of attention do this), and everything downstream loses even its rank. Our shape-value tracking often
knows the target; each op's ``shape`` hook (``graphcore/ops``) carries the shape on from there.
"""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Node
from graphcore.ops import declarations_for
from graphcore.ops.registry import Shape

__all__ = ["fill_output_shape", "shape_hook"]


def shape_hook(node: Node) -> Shape | None:
    """The first ``shape`` hook among the node's declarations (``declarations_for``)."""
    return next((r.shape for r in declarations_for(node) if r.shape is not None), None)


def fill_output_shape(ctx: ChannelGraph, node: Node) -> None:
    if not node.outputs or node.outputs[0].shape is not None:
        return
    hook = shape_hook(node)
    if hook is None:
        return
    shape = hook(ctx, node)
    if shape is not None:
        node.outputs[0].shape = shape
