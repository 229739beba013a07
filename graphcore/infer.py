"""Fill output shapes that the frontend's shape inference could not give.

ONNX shape inference gives up after a Reshape whose target is computed at run time (TorchScript exports
of attention do this), and everything downstream loses even its rank. Our shape-value tracking often
knows the target; these few rules carry the shape on through the ops that usually follow.
"""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node, Value

__all__ = ["fill_output_shape"]

_SAME_SHAPE = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Erf", "Identity", "Cast", "Dropout", "Softmax",
    "LogSoftmax", "Neg", "Abs", "Sqrt", "Exp", "HardSwish", "HardSigmoid", "Elu", "Selu", "Softplus",
    "Clip", "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "RMSNormalization", "LpNormalization", "MeanVarianceNormalization", "LRN", "Mish", "Softsign", "Celu",
    "ThresholdedRelu", "Reciprocal", "Log", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Hardmax",
    "CastLike", "Shrink",
}  # fmt: skip
"""Ops whose output has the shape of their first input. ONNX's own inference leaves some of them
without a shape (GroupNormalization-21, a function op, in onnx 1.17 to 1.23)."""
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min", "Equal", "Less", "Greater"}


def _known(v: Value | None) -> bool:
    return v is not None and v.shape is not None


def _ints(v: Value | None) -> list[int] | None:
    if v is None or v.const is None:
        return None
    return [int(x) for x in v.const.reshape(-1)]


def _broadcast(shapes: list[tuple[Dim, ...]]) -> tuple[Dim, ...] | None:
    r = max(len(s) for s in shapes)
    out: list[Dim] = []
    for a in range(r):
        dims = [s[a - (r - len(s))] for s in shapes if a - (r - len(s)) >= 0]
        non1 = [d for d in dims if d != 1]
        if not non1:
            out.append(1)
        elif all(d == non1[0] for d in non1):
            out.append(non1[0])
        else:
            ints = [d for d in non1 if isinstance(d, int)]
            out.append(ints[0] if ints and all(d == ints[0] for d in ints) else None)
    return tuple(out)


def fill_output_shape(ctx: ChannelGraph, node: Node) -> None:
    if not node.outputs or node.outputs[0].shape is not None:
        return
    y = node.outputs[0]
    x = node.input(0)
    op = node.op
    if op in _SAME_SHAPE and _known(x):
        y.shape = x.shape
    elif op in _BROADCAST and all(_known(v) for v in node.inputs if v is not None):
        y.shape = _broadcast([v.shape for v in node.inputs if v is not None])  # type: ignore[misc]
    elif op == "Transpose" and _known(x):
        perm = node.attr("perm") or list(range(len(x.shape)))[::-1]  # type: ignore[arg-type]
        y.shape = tuple(x.shape[p] for p in perm)  # type: ignore[index]
    elif op in ("Unsqueeze", "Squeeze") and _known(x):
        axes = node.attr("axes") or _ints(node.input(1))
        shape = list(x.shape)  # type: ignore[arg-type]
        if op == "Unsqueeze" and axes is not None:
            r = len(shape) + len(axes)
            for a in sorted(a % r for a in axes):
                shape.insert(a, 1)
            y.shape = tuple(shape)
        elif op == "Squeeze":
            r = len(shape)
            drop = {a % r for a in axes} if axes is not None else {a for a, d in enumerate(shape) if d == 1}
            y.shape = tuple(d for a, d in enumerate(shape) if a not in drop)
    elif op == "Gather" and _known(x) and _known(node.input(1)):
        axis = int(node.attr("axis", 0)) % len(x.shape)  # type: ignore[arg-type]
        y.shape = (*x.shape[:axis], *node.input(1).shape, *x.shape[axis + 1 :])  # type: ignore[index, union-attr, misc]
    elif op == "Reshape" and _known(x):
        entries = ctx.get_entries(node.input(1))
        if entries is not None:
            y.shape = tuple(None for _ in entries)
    elif op == "MatMul" and _known(x) and _known(node.input(1)):
        a, b = x.shape, node.input(1).shape  # type: ignore[union-attr]
        if len(a) >= 2 and len(b) >= 2:  # type: ignore[arg-type]
            batch = _broadcast([a[:-2], b[:-2]]) if len(a) > 2 or len(b) > 2 else ()  # type: ignore[index]
            y.shape = (*(batch or ()), a[-2], b[-1])  # type: ignore[index]
