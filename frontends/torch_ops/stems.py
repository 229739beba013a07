"""Handlers of the ops that own a weight and open a channel space: Linear, MatMul, Einsum, Conv, Embedding."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from frontends.torch_lower import Builder, Handler, Unsupported, on_function, on_method, on_module
from frontends.torch_ops.common import module_of, rank, shape_of, tensor_input
from graphcore.ir import Value

__all__ = ["emit_linear"]


# -- linear algebra --------------------------------------------------------------------------------
def emit_linear(b: Builder, n: fx.Node, x: Value, w: Value, bias: Value | None, y: Value) -> Value:
    """``x @ w.T + bias``: Gemm(transB=1) for 2-D inputs, else MatMul with the transposed weight + Add."""
    ws = shape_of(w)
    if len(ws) != 2:
        raise Unsupported("linear weight is not 2-D")
    if rank(x) == 2:
        b.emit(n, "Gemm", [x, w, bias], [y], transB=1)
        return y
    wt = b.tmp(n, "weight_t", (ws[1], ws[0]), w.dtype)
    b.emit(n, "Transpose", [w], [wt], perm=[1, 0])
    if bias is None:
        b.emit(n, "MatMul", [x, wt], [y])
        return y
    mm = b.tmp(n, "mm", y.shape or (), y.dtype)
    b.emit(n, "MatMul", [x, wt], [mm])
    b.emit(n, "Add", [mm, bias], [y])
    return y


@on_module(nn.Linear)
def _linear_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.Linear)
    x = tensor_input(b, n)
    w = b.module_param(n, mod, "weight")
    if w is None:
        raise Unsupported("Linear without a weight")
    return emit_linear(b, n, x, w, b.module_param(n, mod, "bias"), b.out(n))


@on_function(F.linear)
def _linear_fn(b: Builder, n: fx.Node) -> Value:
    x, w, bias = tensor_input(b, n), b.arg(n, 1, "weight"), b.arg(n, 2, "bias", None)
    if not isinstance(w, Value):
        raise Unsupported("linear weight is not a tensor")
    return emit_linear(b, n, x, w, bias, b.out(n))


@on_function(torch.matmul, operator.matmul, torch.bmm, torch.mm)
@on_method("matmul", "bmm", "mm", "__matmul__")
def _matmul(b: Builder, n: fx.Node) -> Value:
    a, c = b.arg(n, 0, "input"), b.arg(n, 1, "other" if n.target is not torch.mm else "mat2")
    if not isinstance(a, Value) or not isinstance(c, Value):
        raise Unsupported("matmul operand is not a tensor")
    y = b.out(n)
    b.emit(n, "MatMul", [a, c], [y])
    return y


@on_function(torch.addmm)
@on_method("addmm")
def _addmm(b: Builder, n: fx.Node) -> Value:
    """``bias + a @ m``: a Gemm without transB (the weight stored ``[in, out]``), as ONNX spells it."""
    bias, a, m = b.arg(n, 0, "input"), b.arg(n, 1, "mat1"), b.arg(n, 2, "mat2")
    if n.kwargs.get("beta", 1) != 1 or n.kwargs.get("alpha", 1) != 1:
        raise Unsupported("addmm with beta/alpha")
    if not all(isinstance(v, Value) for v in (bias, a, m)):
        raise Unsupported("addmm operand is not a tensor")
    y = b.out(n)
    b.emit(n, "Gemm", [a, m, bias], [y])
    return y


@on_function(torch.einsum)
def _einsum(b: Builder, n: fx.Node) -> Value:
    eq = b.arg(n, 0, "equation")
    ops, _ = b.varargs(n, 1, "operands")
    if not isinstance(eq, str) or not all(isinstance(v, Value) for v in ops):
        raise Unsupported("einsum operands")
    y = b.out(n)
    b.emit(n, "Einsum", list(ops), [y], equation=eq.replace(" ", ""))
    return y


# -- convolutions ----------------------------------------------------------------------------------
def emit_conv(
    b: Builder,
    n: fx.Node,
    x: Value,
    w: Value,
    bias: Value | None,
    groups: int,
    transpose: bool,
    groups_path: tuple | None,
) -> Value:
    ws = shape_of(w)
    xs = shape_of(x)
    nsp = len(ws) - 2
    if len(xs) != nsp + 2:
        raise Unsupported("unbatched convolution input")
    y = b.out(n)
    op = "ConvTranspose" if transpose else "Conv"
    node = b.emit(n, op, [x, w, bias], [y], group=int(groups), kernel_shape=list(ws[2:]))
    b.attr_site(node, "group", n, groups_path)
    return y


@on_module(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.modules.conv._ConvNd)
    if len(n.args) + len(n.kwargs) != 1:
        raise Unsupported("ConvTranspose with output_size")
    x = tensor_input(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    assert w is not None
    transpose = isinstance(mod, nn.modules.conv._ConvTransposeNd)
    return emit_conv(b, n, x, w, bias, int(mod.groups), transpose, ("module", "groups"))


def _conv_fn(transpose: bool) -> Handler:
    def h(b: Builder, n: fx.Node) -> Value:
        x, w = tensor_input(b, n), b.arg(n, 1, "weight")
        bias = b.arg(n, 2, "bias", None)
        gi = 6  # conv: (x, w, b, stride, padding, dilation, groups); transposed: output_padding, groups
        groups = b.arg(n, gi, "groups", 1)
        if not isinstance(w, Value) or not isinstance(groups, int):
            raise Unsupported("conv arguments")
        return emit_conv(b, n, x, w, bias, groups, transpose, b.path(n, gi, "groups"))

    return h


on_function(F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d)(_conv_fn(False))
on_function(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)(_conv_fn(True))


@on_module(nn.Embedding)
def _embedding_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.Embedding)
    idx = tensor_input(b, n)
    w = b.module_param(n, mod, "weight")
    y = b.out(n)
    b.emit(n, "Gather", [w, idx], [y], axis=0)
    return y


@on_function(F.embedding)
def _embedding_fn(b: Builder, n: fx.Node) -> Value:
    idx, w = tensor_input(b, n), b.arg(n, 1, "weight")
    y = b.out(n)
    b.emit(n, "Gather", [w, idx], [y], axis=0)
    return y
