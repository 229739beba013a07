"""Handlers that read sizes: ``x.shape``, ``x.size(i)``, ``dim``, ``numel`` and the ``*_like`` fills.

A traced size becomes a Shape (then Gather) whose elements remember which axis of which Value they
copy (``Builder.dims``), so a reshape spelled from them can be rewritten when that axis shrinks.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from frontends.torch_lower import Builder, Handler, Unsupported, on_function, on_method, static_size
from frontends.torch_ops.common import norm_axis, rank, simple, tensor_input
from graphcore.ir import Value

__all__ = ["emit_pick", "emit_shape"]


# -- shapes and sizes ------------------------------------------------------------------------------
def emit_shape(b: Builder, n: fx.Node, x: Value, out: Value | None = None) -> Value:
    r = rank(x)
    s = out or b.tmp(n, "shape", (r,), "int64")
    b.emit(n, "Shape", [x], [s])
    b.dims[s.name] = [(x, a) for a in range(r)]
    return s


def emit_pick(b: Builder, n: fx.Node, shape_v: Value, idx: int, out: Value) -> Value:
    """Element ``idx`` of a 1-D shape value (a traced ``x.size(i)``)."""
    k = static_size(shape_v, 0)
    i = norm_axis(idx, k)
    b.emit(n, "Gather", [shape_v, b.const(n, i, "idx", np.int64)], [out], axis=0)
    src = b.dims.get(shape_v.name)
    b.dims[out.name] = [src[i] if src else None]
    return out


@on_method("size")
def _size(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    dim = b.arg(n, 1, "dim", None)
    if dim is None:
        return emit_shape(b, n, x, b.out(n))
    s = emit_shape(b, n, x)
    return emit_pick(b, n, s, b.static_int(dim), b.out(n))


@on_method("dim", "ndimension")
def _dim(b: Builder, n: fx.Node) -> int:
    return rank(tensor_input(b, n))


@on_method("numel")
def _numel(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    y = b.out(n)
    b.emit(n, "Size", [x], [y])
    return y


@on_function(builtins.getattr)
def _getattr(b: Builder, n: fx.Node) -> Any:
    obj, attr = b.arg(n, 0), b.arg(n, 1)
    if not isinstance(obj, Value):
        raise Unsupported("getattr on a non-tensor")
    if attr == "shape":
        return emit_shape(b, n, obj, b.out(n))
    if attr == "ndim":
        return rank(obj)
    if attr in ("T", "mT"):
        r = rank(obj)
        perm = list(range(r))[::-1] if attr == "T" else [*range(r - 2), r - 1, r - 2]
        return simple(b, n, "Transpose", obj, perm=perm)
    if attr == "data":
        return simple(b, n, "Identity", obj)
    m = b.meta.get(n)
    if isinstance(m, bool | str | torch.dtype | torch.device) or m is None:
        return m
    raise Unsupported(f"attribute {attr}")


def _like(value: float | None) -> Handler:
    def h(b: Builder, n: fx.Node) -> Value:
        x = tensor_input(b, n)
        fill = value if value is not None else b.arg(n, 1, "fill_value")
        if not isinstance(fill, int | float):
            raise Unsupported("fill value")
        y = b.out(n)
        b.emit(n, "ConstantOfShape", [emit_shape(b, n, x)], [y], value=np.array([fill], dtype=np.float32))
        return y

    return h


def _filled(value: float) -> Handler:
    """``torch.zeros(b, c, n)`` / ``aten.zeros([b, c, n])``: ``ConstantOfShape`` on the sizes, literals
    and traced sizes alike (``Builder.shape_operand``), as an ONNX export writes it. A tensor created
    with a channel count as a size (Mamba's scan state, ``zeros(batch, intermediate, state)``) then
    follows that channel: construct rewrites the literal; a size computed at run time pins its axis."""

    def h(b: Builder, n: fx.Node) -> Value:
        raw = b.raw(n, 0, "size", None)
        if isinstance(raw, list | tuple):
            sizes, paths = list(raw), [(*(b.path(n, 0, "size") or ()), k) for k in range(len(raw))]
        elif raw is not None and "size" not in n.kwargs:  # varargs: ``torch.zeros(2, 3)``
            sizes, paths = list(n.args), [("args", k) for k in range(len(n.args))]
        else:
            raise Unsupported("size")
        y = b.out(n)
        if not sizes:
            raise Unsupported("a scalar has no sizes")
        shape, sites = b.shape_operand(n, [b.conv(v) for v in sizes], paths, y)
        if len(sites) != rank(y):
            raise Unsupported("size")
        node = b.emit(n, "ConstantOfShape", [shape], [y], value=np.array([value], dtype=np.float32))
        b.operand(node, 0, sites)
        return y

    return h


on_function(torch.zeros)(_filled(0.0))
on_function(torch.ones)(_filled(1.0))
on_function(torch.zeros_like)(_like(0.0))
on_function(torch.ones_like)(_like(1.0))
on_function(torch.full_like)(_like(None))
