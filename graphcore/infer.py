"""Fill output shapes that the frontend's shape inference could not give.

ONNX shape inference gives up after a Reshape whose target is computed at run time (TorchScript exports
of attention do this), and everything downstream loses even its rank. Our shape-value tracking often
knows the target; each op's ``shape`` hook (``graphcore/ops``) carries the shape on from there.
"""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node
from graphcore.ops import declarations_for
from graphcore.ops.registry import Shape

__all__ = ["fill_output_shape", "needs_shape", "shape_hook"]


def shape_hook(node: Node) -> Shape | None:
    """The first ``shape`` hook among the node's declarations (``declarations_for``)."""
    return next((r.shape for r in declarations_for(node) if r.shape is not None), None)


def _guessed(ctx: ChannelGraph, d: Dim) -> bool:
    """A symbol ONNX shape inference made up for a size it could not compute (not a graph input's
    symbol, not one whose size is known already)."""
    return isinstance(d, str) and d not in ctx.input_symbols and d not in ctx.subst


def needs_shape(ctx: ChannelGraph, node: Node) -> bool:
    """Output 0's shape is unknown, or holds a made-up symbol that a shape hook may know the size of."""
    if not node.outputs:
        return False
    shape = node.outputs[0].shape
    return shape is None or any(_guessed(ctx, d) for d in shape)


def fill_output_shape(ctx: ChannelGraph, node: Node) -> None:
    """Output 0's shape from the op's ``shape`` hook when inference left it unknown; when inference
    made up symbols where the hook knows the size (a Pad whose pads were computed from literals), each
    such symbol gets that size here and, through ``ctx.subst``, wherever else it appears downstream."""
    if not needs_shape(ctx, node):
        return
    hook = shape_hook(node)
    if hook is None:
        return
    shape = hook(ctx, node)
    y = node.outputs[0]
    if shape is None:
        return
    if y.shape is None:
        y.shape = shape
        return
    if len(shape) != len(y.shape):
        return
    learned: dict[str, int] = {}
    for old, new in zip(y.shape, shape):
        if _guessed(ctx, old) and isinstance(new, int) and learned.setdefault(str(old), new) != new:
            return  # one symbol, two sizes: inference and the hook disagree; trust neither
    ctx.subst.update(learned)
    y.shape = tuple(learned.get(d, d) if isinstance(d, str) else d for d in y.shape)
