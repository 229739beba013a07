"""Handlers for the ATen ops of a ``torch.export`` graph (the fallback tracer).

Most ATen schemas take their arguments in the same order as the torch function of the same name, so
they share the handler of ``frontends.torch_ops``; the few that differ (``embedding``, ``batch_norm``,
``slice``, ``select`` ...) have their own here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx

from frontends.torch_lower import FUNCTIONS, INT64_MAX, Builder, Unsupported, on_function
from frontends.torch_meta import LitSite
from frontends.torch_ops import FAMILIES  # noqa: F401  (registers the handlers SHARED points at)
from frontends.torch_ops.common import as_operand, clip, norm_axis, rank, shape_of, simple, tensor_input
from frontends.torch_ops.elementwise import to_dtype
from frontends.torch_ops.layout import emit_split, reshape_as
from frontends.torch_ops.layout import pad as emit_pad
from frontends.torch_ops.normalize import emit_batchnorm
from frontends.torch_ops.shapes import emit_pick, emit_shape
from graphcore.ir import Value

__all__ = ["SHARED"]

aten = torch.ops.aten


def _overloads(*names: str) -> list[Any]:
    out = []
    for name in names:
        packet = getattr(aten, name, None)
        if packet is None:
            continue
        for ov in packet.overloads():
            out.append(getattr(packet, ov))
    return out


SHARED: dict[Any, tuple[str, ...]] = {
    torch.relu: ("relu", "relu_"),
    torch.sigmoid: ("sigmoid", "sigmoid_"),
    torch.tanh: ("tanh", "tanh_"),
    torch.nn.functional.hardswish: ("hardswish", "hardswish_"),
    torch.nn.functional.hardsigmoid: ("hardsigmoid", "hardsigmoid_"),
    torch.nn.functional.mish: ("mish",),
    torch.nn.functional.silu: ("silu", "silu_"),
    torch.nn.functional.gelu: ("gelu",),
    torch.nn.functional.leaky_relu: ("leaky_relu",),
    torch.nn.functional.elu: ("elu",),
    torch.nn.functional.softplus: ("softplus",),  # Mamba's time step
    torch.nn.functional.relu6: ("relu6", "relu6_"),  # its own ATen op under torch.export, not a hardtanh
    torch.exp: ("exp",),
    torch.sqrt: ("sqrt",),
    torch.neg: ("neg",),
    torch.repeat_interleave: ("repeat_interleave",),
    torch.erf: ("erf",),
    torch.sin: ("sin",),
    torch.cos: ("cos",),
    torch.abs: ("abs",),
    torch.reciprocal: ("reciprocal",),
    torch.clone: ("clone", "contiguous", "alias", "detach", "dropout", "lift_fresh_copy"),
    torch.clamp: ("clamp", "clip"),
    torch.add: ("add", "add_"),
    torch.sub: ("sub", "sub_"),
    torch.mul: ("mul", "mul_"),
    torch.div: ("div", "div_"),
    torch.pow: ("pow",),
    torch.matmul: ("matmul", "bmm", "mm"),
    torch.addmm: ("addmm",),
    torch.nn.functional.linear: ("linear",),
    torch.nn.functional.conv2d: ("conv1d", "conv2d", "conv3d"),
    torch.nn.functional.conv_transpose2d: ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
    torch.nn.functional.layer_norm: ("layer_norm",),
    torch.nn.functional.rms_norm: ("rms_norm",),
    torch.nn.functional.group_norm: ("group_norm",),
    torch.reshape: ("view", "reshape", "_unsafe_view"),
    torch.permute: ("permute",),
    torch.transpose: ("transpose",),
    torch.t: ("t", "numpy_T"),  # ``w.T`` (Falcon: ``x @ self.weight.T``); both reverse every axis
    torch.squeeze: ("squeeze",),
    torch.unsqueeze: ("unsqueeze",),
    torch.cat: ("cat", "concat"),
    torch.stack: ("stack",),
    torch.flatten: ("flatten",),
    torch.unflatten: ("unflatten",),
    torch.mean: ("mean",),
    torch.linalg.vector_norm: ("linalg_vector_norm",),
    torch.sum: ("sum",),
    torch.amax: ("amax",),
    torch.amin: ("amin",),
    torch.einsum: ("einsum",),
    torch.where: ("where",),
    torch.zeros: ("zeros",),
    torch.ones: ("ones",),
    torch.zeros_like: ("zeros_like",),
    torch.ones_like: ("ones_like",),
    torch.nn.functional.scaled_dot_product_attention: ("scaled_dot_product_attention",),
    torch.nn.functional.adaptive_avg_pool1d: ("adaptive_avg_pool1d",),  # Swin's pooler
    torch.nn.functional.adaptive_avg_pool2d: ("adaptive_avg_pool2d",),
    torch.nn.functional.max_pool2d: ("max_pool2d", "max_pool2d_with_indices"),
    torch.nn.functional.avg_pool2d: ("avg_pool2d",),
    torch.nn.functional.softmax: ("softmax", "_softmax"),
    torch.nn.functional.log_softmax: ("log_softmax", "_log_softmax"),
    torch.nn.functional.interpolate: ("upsample_nearest2d", "upsample_bilinear2d"),
}
"""torch function -> the ATen ops whose overloads take the same arguments, so share its handler."""

for _handler_of, _names in SHARED.items():
    for _op in _overloads(*_names):
        FUNCTIONS[_op] = FUNCTIONS[_handler_of]


@on_function(*_overloads("_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size"))
def _nothing(b: Builder, n: fx.Node) -> None:
    return None


# ``x.reshape_as(y)`` (LeViT's MLP: a BatchNorm over ``flatten(0, 1)``, then back): the method's handler
on_function(*_overloads("reshape_as", "view_as"))(reshape_as)


@on_function(*_overloads("mT"))
def _matrix_transpose(b: Builder, n: fx.Node) -> Value:
    """``x.mT``: the last two axes swapped (torch.export's spelling of the attribute)."""
    x = tensor_input(b, n)
    r = rank(x)
    return simple(b, n, "Transpose", x, perm=[*range(r - 2), r - 1, r - 2])


@on_function(*_overloads("hardtanh", "hardtanh_"))
def _hardtanh(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    lo, hi = float(b.arg(n, 1, "min_val", -1.0)), float(b.arg(n, 2, "max_val", 1.0))
    return clip(b, n, x, lo, hi)


@on_function(*_overloads("_to_copy", "to"))
def _to_copy(b: Builder, n: fx.Node) -> Value:
    return to_dtype(b, n)


@on_function(*_overloads("embedding"))
def _embedding(b: Builder, n: fx.Node) -> Value:
    w, idx = b.arg(n, 0, "weight"), b.arg(n, 1, "indices")
    y = b.out(n)
    b.emit(n, "Gather", [w, idx], [y], axis=0)
    return y


@on_function(*_overloads("batch_norm"))
def _batch_norm(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    w, bias, mean, var = (b.arg(n, i, None, None) for i in (1, 2, 3, 4))
    return emit_batchnorm(b, n, x, w, bias, mean, var, eps=b.arg(n, 7, "eps", 1e-5))


@on_function(*_overloads("_native_batch_norm_legit_no_training"))
def _bn_no_training(b: Builder, n: fx.Node) -> Any:
    x = tensor_input(b, n)
    w, bias, mean, var = (b.arg(n, i, None, None) for i in (1, 2, 3, 4))
    res = b.make(n.name, b.meta.get(n))
    if not isinstance(res, tuple | list) or not isinstance(res[0], Value):
        raise Unsupported("batch norm result")
    emit_batchnorm(b, n, x, w, bias, mean, var, eps=b.arg(n, 6, "eps", 1e-5), y=res[0])
    return res


@on_function(*_overloads("rsub"))
def _rsub(b: Builder, n: fx.Node) -> Value:
    x, other = tensor_input(b, n), b.arg(n, 1, "other")
    if n.kwargs.get("alpha", 1) != 1:
        raise Unsupported("rsub with alpha")
    y = b.out(n)
    b.emit(n, "Sub", [as_operand(b, n, other, x, "o"), x], [y])
    return y


@on_function(*_overloads("slice"))
def _slice(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    r = rank(x)
    dim = norm_axis(b.static_int(b.arg(n, 1, "dim", 0)), r)
    start, end, step = b.arg(n, 2, "start", None), b.arg(n, 3, "end", None), b.arg(n, 4, "step", 1)
    vals: list[Value] = []
    sites: list[LitSite | None] = []
    for which, i, bound, default in (("start", 2, start, 0), ("end", 3, end, INT64_MAX)):
        site = None
        if bound is None or (isinstance(bound, int) and abs(bound) >= 2**62):
            vals.append(b.const(n, [default if bound is None else bound], which, np.int64))
        elif isinstance(bound, int):
            path = b.path(n, i, which)
            site = LitSite(n.name, path, bound) if path else None
            vals.append(b.lit(n, [bound], [site], which))
        else:
            raise Unsupported("traced slice bound")
        sites.append(site)
    if not isinstance(step, int) or step <= 0:
        raise Unsupported("slice step")
    y = b.out(n)
    axes, steps = b.const(n, [dim], "axes", np.int64), b.const(n, [step], "steps", np.int64)
    node = b.emit(n, "Slice", [x, vals[0], vals[1], axes, steps], [y])
    b.operand(node, 1, sites[:1])
    b.operand(node, 2, sites[1:])
    return y


@on_function(*_overloads("select"))
def _select(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    dim = norm_axis(b.static_int(b.arg(n, 1, "dim")), rank(x))
    idx = b.static_int(b.arg(n, 2, "index"))
    y = b.out(n)
    b.emit(n, "Gather", [x, b.const(n, idx, "index", np.int64)], [y], axis=dim)
    return y


@on_function(aten.index.Tensor)
def _index(b: Builder, n: fx.Node) -> Value:
    """``x[:, idx]`` with one integer index tensor (``aten.index(x, [None, idx])``): ONNX ``Gather``
    on that axis, the same result (the index's shape replaces the axis; negative indices count from
    the end in both). Swin's relative position bias reads its table this way, so its heads are
    channels. Boolean masks and several index tensors (whose result axes move) stay unknown ops."""
    x = tensor_input(b, n)
    indices = b.arg(n, 1, "indices")
    if not isinstance(indices, list | tuple) or not indices:
        raise Unsupported("index list")
    *lead, idx = indices
    if (
        any(it is not None for it in lead)
        or not isinstance(idx, Value)
        or idx.dtype not in ("int64", "int32")
    ):
        raise Unsupported("advanced indexing")
    y = b.out(n)
    b.emit(n, "Gather", [x, idx], [y], axis=len(lead))
    return y


@on_function(*_overloads("split", "split_with_sizes", "chunk"))
def _split(b: Builder, n: fx.Node) -> Any:
    x = tensor_input(b, n)
    dim = b.static_int(b.arg(n, 2, "dim", 0))
    kind = "chunk" if "chunk" in str(n.target) else "split"
    return emit_split(b, n, x, dim, kind, b.path(n, 1, "split_size"))


@on_function(*_overloads("expand"))
def _expand(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    sizes = b.raw(n, 1, "size")
    if not isinstance(sizes, list | tuple):
        raise Unsupported("expand size")
    elems = [b.conv(s) for s in sizes]
    y = b.out(n)
    shape, sites = b.shape_operand(n, elems, [("args", 1, k) for k in range(len(elems))], y)
    b.operand(b.emit(n, "Expand", [x, shape], [y]), 1, sites)
    return y


@on_function(*_overloads("sym_size"))
def _sym_size(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    s = emit_shape(b, n, x)
    return emit_pick(b, n, s, b.static_int(b.arg(n, 1, "dim")), b.out(n))


@on_function(*_overloads("constant_pad_nd"))
def _constant_pad(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    pads, value = b.arg(n, 1, "pad"), b.arg(n, 2, "value", 0)
    if not isinstance(pads, list | tuple) or not all(isinstance(p, int) for p in pads) or len(pads) % 2:
        raise Unsupported("traced padding")
    r = rank(x)
    begin, end = [0] * r, [0] * r
    for k in range(len(pads) // 2):
        begin[r - 1 - k], end[r - 1 - k] = pads[2 * k], pads[2 * k + 1]
    inputs: list[Value | None] = [x, b.const(n, begin + end, "pads", np.int64)]
    if value not in (0, 0.0):
        inputs.append(b.const(n, float(value), "value", np.float32))
    y = b.out(n)
    b.emit(n, "Pad", inputs, [y], mode="constant")
    return y


@on_function(*_overloads("pad"))
def _aten_pad(b: Builder, n: fx.Node) -> Value:
    """``aten.pad(x, pad, mode, value)``: the arguments of ``F.pad``, the same lowering (Swin pads its
    windows with it in an exported graph)."""
    return emit_pad(b, n)


@on_function(*_overloads("rsqrt"))
def _rsqrt(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    root = b.tmp(n, "sqrt", shape_of(x), x.dtype)
    b.emit(n, "Sqrt", [x], [root])
    return simple(b, n, "Reciprocal", root)
