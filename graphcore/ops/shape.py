"""Output shapes the declarations share: same as the input, numpy broadcasting.

ONNX's inference gives up after a Reshape whose target is computed at run time (TorchScript exports of
attention do this), and everything downstream loses even its rank. Our shape-value tracking often knows
the target; an op's ``shape`` hook carries the shape on from there.
"""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Dim, Node

__all__ = [
    "broadcast_dims",
    "broadcast_shape",
    "concat_shape",
    "conv_shape",
    "flatten_shape",
    "pool_shape",
    "reduce_shape",
    "same_shape",
    "windowed_dims",
]


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


# -- ops after which ONNX's inference has nothing to go on (it stopped at a com.microsoft fusion) --------


def _ints(node: Node, key: str, n: int, default: int) -> list[int]:
    got = node.attr(key)
    return [int(v) for v in got] if got else [default] * n


def _auto_pad(node: Node) -> str:
    mode = node.attr("auto_pad", b"NOTSET")
    return mode.decode() if isinstance(mode, bytes) else str(mode)


def windowed_dims(node: Node, spatial: tuple[Dim, ...], kernel: list[Dim]) -> list[Dim]:
    """Output sizes of a convolution or pool along its spatial axes: floor((in + pads - dilation * (k - 1)
    - 1) / stride) + 1, or ceil(in / stride) for SAME padding; ceil mode rounds up but drops a window
    that would start in the end padding."""
    n = len(spatial)
    pads = _ints(node, "pads", 2 * n, 0)
    strides = _ints(node, "strides", n, 1)
    dilations = _ints(node, "dilations", n, 1)
    mode = _auto_pad(node)
    ceil = bool(node.attr("ceil_mode", 0))
    out: list[Dim] = []
    for a in range(n):
        d, k = spatial[a], kernel[a]
        if not isinstance(d, int) or not isinstance(k, int):
            out.append(None)
        elif mode in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-d // strides[a]))
        else:
            begin = 0 if mode == "VALID" else pads[a]
            span = d + (0 if mode == "VALID" else pads[a] + pads[a + n]) - dilations[a] * (k - 1) - 1
            if not ceil:
                out.append(span // strides[a] + 1)
                continue
            size = -(-span // strides[a]) + 1
            # ceil mode never starts a last window inside the end padding (ONNX's inference agrees)
            out.append(size - 1 if (size - 1) * strides[a] >= d + begin else size)
    return out


def conv_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """Conv (and com.microsoft::FusedConv): batch, the weight's output channels, windowed spatial axes."""
    x, w = node.input(0), node.input(1)
    if x is None or w is None or x.shape is None or w.shape is None or len(x.shape) != len(w.shape):
        return None
    kernel: list[Dim] = [int(k) for k in node.attr("kernel_shape", [])] or list(w.shape[2:])
    return (x.shape[0], w.shape[0], *windowed_dims(node, x.shape[2:], kernel))


def pool_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """MaxPool / AveragePool / LpPool with ``kernel_shape``; a global pool keeps size 1 per spatial axis."""
    x = node.input(0)
    if x is None or x.shape is None or len(x.shape) < 2:
        return None
    if node.op.startswith("Global"):
        return (*x.shape[:2], *([1] * (len(x.shape) - 2)))
    kernel = node.attr("kernel_shape")
    if not kernel or len(kernel) != len(x.shape) - 2:
        return None
    return (*x.shape[:2], *windowed_dims(node, x.shape[2:], [int(k) for k in kernel]))


def reduce_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    """Reduce* and ArgMax / ArgMin: the reduced axes dropped or kept as 1."""
    x = node.input(0)
    if x is None or x.shape is None:
        return None
    r = len(x.shape)
    if node.op in ("ArgMax", "ArgMin"):
        axes = [int(node.attr("axis", 0))]
    elif node.input(1) is not None:
        a = node.input(1)
        if a is None or a.const is None:
            return None
        axes = [int(v) for v in a.const.reshape(-1)]
    else:
        axes = []
    if not axes and not (node.op not in ("ArgMax", "ArgMin") and node.attr("noop_with_empty_axes", 0)):
        axes = list(range(r))
    reduced = {a % r for a in axes} if r else set()
    keep = bool(node.attr("keepdims", 1))
    return tuple(1 if a in reduced else d for a, d in enumerate(x.shape) if keep or a not in reduced)


def flatten_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    x = node.input(0)
    if x is None or x.shape is None:
        return None
    axis = int(node.attr("axis", 1))
    axis = axis + len(x.shape) if axis < 0 else axis
    if not 0 <= axis <= len(x.shape):
        return None
    outer, inner = x.shape[:axis], x.shape[axis:]
    return (_product(outer), _product(inner))


def _product(dims: tuple[Dim, ...]) -> Dim:
    out = 1
    for d in dims:
        if not isinstance(d, int):
            return d if len(dims) == 1 else None
        out *= d
    return out


def concat_shape(ctx: ChannelGraph, node: Node) -> tuple[Dim, ...] | None:
    shapes = [v.shape for v in node.inputs if v is not None]
    if not shapes or any(s is None for s in shapes):
        return None
    known = [s for s in shapes if s is not None]
    r = len(known[0])
    if any(len(s) != r for s in known) or not r:
        return None
    axis = int(node.attr("axis", 0)) % r
    sizes = [s[axis] for s in known]
    total: Dim = (
        sum(d for d in sizes if isinstance(d, int)) if all(isinstance(d, int) for d in sizes) else None
    )
    return (*known[0][:axis], total, *known[0][axis + 1 :])
