"""Layout handlers: reshapes, permutations, squeezes and expands, joins and splits, padding, resizes.

A size the torch program spells as a literal (``view(b, 8, -1)``, ``split(x, 16)``) is recorded where
it sits (``LitSite``) so construct can rewrite it when that axis shrinks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import padding

from frontends.torch_lower import Builder, Unsupported, on_function, on_method, on_module, static_size
from frontends.torch_ops.common import module_of, norm_axis, rank, shape_of, simple, tensor_input
from frontends.torch_ops.shapes import emit_pick, emit_shape
from graphcore.ir import Value

__all__ = ["emit_split", "pad", "reshape_as"]


# -- reshapes ----------------------------------------------------------------------------------------
@on_function(torch.reshape)
@on_method("view", "reshape")
def _reshape(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    elems, paths = b.varargs(n, 1, "shape")
    if not elems:
        elems, paths = b.varargs(n, 1, "size")
    if len(elems) == 1 and isinstance(elems[0], torch.dtype):
        raise Unsupported("view as another dtype")
    y = b.out(n)
    s, sites = b.shape_operand(n, elems, paths, y)
    b.operand(b.emit(n, "Reshape", [x, s], [y]), 1, sites)
    return y


@on_method("view_as", "reshape_as")
def reshape_as(b: Builder, n: fx.Node) -> Value:
    """``x.reshape_as(other)``: a Reshape to ``other``'s runtime shape (aten's reshape_as shares it)."""
    x, other = tensor_input(b, n), b.arg(n, 1, "other")
    if not isinstance(other, Value):
        raise Unsupported("view_as a non-tensor")
    y = b.out(n)
    b.emit(n, "Reshape", [x, emit_shape(b, n, other)], [y])
    return y


@on_function(torch.flatten)
@on_method("flatten")
def _flatten_fn(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    start = b.static_int(b.arg(n, 1, "start_dim", 0))
    end = b.static_int(b.arg(n, 2, "end_dim", -1))
    return simple(b, n, "Flatten", x, axis=start, end_axis=end)


@on_module(nn.Flatten)
def _flatten_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.Flatten)
    return simple(b, n, "Flatten", tensor_input(b, n), axis=mod.start_dim, end_axis=mod.end_dim)


def _unflatten(
    b: Builder, n: fx.Node, x: Value, dim: int, sizes: list[Any], paths: list[tuple | None]
) -> Value:
    y = b.out(n)
    r = rank(x)
    d = norm_axis(dim, r)
    s = emit_shape(b, n, x)
    elems: list[Any] = []
    all_paths: list[tuple | None] = []
    for a in range(d):
        elems.append(emit_pick(b, n, s, a, b.tmp(n, f"d{a}", (), "int64")))
        all_paths.append(None)
    elems.extend(sizes)
    all_paths.extend(paths)
    for a in range(d + 1, r):
        elems.append(emit_pick(b, n, s, a, b.tmp(n, f"d{a}", (), "int64")))
        all_paths.append(None)
    s, sites = b.shape_operand(n, elems, all_paths, y)
    b.operand(b.emit(n, "Reshape", [x, s], [y]), 1, sites)
    return y


@on_module(nn.Unflatten)
def _unflatten_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.Unflatten)
    sizes = list(mod.unflattened_size)
    return _unflatten(
        b,
        n,
        tensor_input(b, n),
        mod.dim,
        sizes,
        [("module", "unflattened_size", k) for k in range(len(sizes))],
    )


@on_function(torch.unflatten)
@on_method("unflatten")
def _unflatten_fn(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    dim = b.static_int(b.arg(n, 1, "dim"))
    sizes, paths = b.varargs(n, 2, "sizes")
    return _unflatten(b, n, x, dim, sizes, paths)


@on_function(torch.permute)
@on_method("permute")
def _permute(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    dims, _ = b.varargs(n, 1, "dims")
    r = rank(x)
    perm = [norm_axis(d, r) for d in b.static_ints(dims)]
    return simple(b, n, "Transpose", x, perm=perm)


@on_function(torch.transpose, torch.swapaxes, torch.swapdims)
@on_method("transpose", "swapaxes", "swapdims")
def _transpose(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    r = rank(x)
    d0, d1 = norm_axis(b.static_int(b.arg(n, 1, "dim0")), r), norm_axis(b.static_int(b.arg(n, 2, "dim1")), r)
    perm = list(range(r))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return simple(b, n, "Transpose", x, perm=perm)


@on_function(torch.t)
@on_method("t")
def _t(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    r = rank(x)
    return simple(b, n, "Transpose", x, perm=list(range(r))[::-1])


@on_function(torch.squeeze)
@on_method("squeeze")
def _squeeze(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    dims, _ = b.varargs(n, 1, "dim")
    r = rank(x)
    xs = shape_of(x)
    axes = [norm_axis(d, r) for d in b.static_ints(dims)] if dims else [a for a in range(r) if xs[a] == 1]
    axes = [a for a in axes if xs[a] == 1]
    if not axes:
        return simple(b, n, "Identity", x)
    y = b.out(n)
    b.emit(n, "Squeeze", [x, b.axes(n, axes)], [y])
    return y


@on_function(torch.unsqueeze)
@on_method("unsqueeze")
def _unsqueeze(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    d = b.static_int(b.arg(n, 1, "dim"))
    y = b.out(n)
    b.emit(n, "Unsqueeze", [x, b.axes(n, [norm_axis(d, rank(x) + 1)])], [y])
    return y


@on_method("expand")
def _expand(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    elems, paths = b.varargs(n, 1, "size")
    y = b.out(n)
    if len(elems) != rank(y):
        raise Unsupported("expand size")
    s, sites = b.shape_operand(n, elems, paths, y)
    b.operand(b.emit(n, "Expand", [x, s], [y]), 1, sites)
    return y


@on_method("expand_as")
def _expand_as(b: Builder, n: fx.Node) -> Value:
    x, other = tensor_input(b, n), b.arg(n, 1, "other")
    if not isinstance(other, Value):
        raise Unsupported("expand_as a non-tensor")
    y = b.out(n)
    b.emit(n, "Expand", [x, emit_shape(b, n, other)], [y])
    return y


@on_method("repeat")
def _repeat(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    elems, _ = b.varargs(n, 1, "repeats")
    reps = b.static_ints(elems)
    if len(reps) != rank(x):
        raise Unsupported("repeat changes rank")
    y = b.out(n)
    b.emit(n, "Tile", [x, b.const(n, reps, "reps", np.int64)], [y])
    return y


# -- joins and splits ---------------------------------------------------------------------------------
@on_function(torch.cat, torch.concat, torch.concatenate)
def _cat(b: Builder, n: fx.Node) -> Value:
    xs = b.arg(n, 0, "tensors")
    dim = b.static_int(b.arg(n, 1, "dim", 0))
    if not isinstance(xs, list | tuple) or not all(isinstance(v, Value) for v in xs):
        raise Unsupported("cat of non-tensors")
    y = b.out(n)
    b.emit(n, "Concat", list(xs), [y], axis=norm_axis(dim, rank(y)))
    return y


@on_function(torch.stack)
def _stack(b: Builder, n: fx.Node) -> Value:
    xs = b.arg(n, 0, "tensors")
    if not isinstance(xs, list | tuple) or not all(isinstance(v, Value) for v in xs):
        raise Unsupported("stack of non-tensors")
    y = b.out(n)
    d = norm_axis(b.static_int(b.arg(n, 1, "dim", 0)), rank(y))
    parts = []
    for i, v in enumerate(xs):
        s = list(shape_of(v))
        s.insert(d, 1)
        u = b.tmp(n, f"u{i}", tuple(s), v.dtype)
        b.emit(n, "Unsqueeze", [v, b.axes(n, [d])], [u])
        parts.append(u)
    b.emit(n, "Concat", parts, [y], axis=d)
    return y


def emit_split(b: Builder, n: fx.Node, x: Value, axis: int, kind: str, size_arg: tuple | None) -> Any:
    res = b.make(n.name, b.meta.get(n))
    if not isinstance(res, tuple | list) or not all(isinstance(v, Value) for v in res):
        raise Unsupported("split result")
    r = rank(x)
    a = norm_axis(axis, r)
    sizes = [static_size(v, a) for v in res]
    if sum(sizes) != shape_of(x)[a]:
        raise Unsupported("split sizes")
    node = b.emit(n, "Split", [x, b.const(n, sizes, "sizes", np.int64)], list(res), axis=a)
    b.tm.splits[node.name] = {"fx": n.name, "axis": a, "kind": kind, "size_path": size_arg}
    return res


@on_function(torch.split)
@on_method("split")
def _split(b: Builder, n: fx.Node) -> Any:
    x = tensor_input(b, n, 0, "tensor")
    dim = b.static_int(b.arg(n, 2, "dim", 0))
    name = "split_size_or_sections" if n.op == "call_function" else "split_size"
    return emit_split(b, n, x, dim, "split", b.path(n, 1, name))


@on_function(torch.chunk)
@on_method("chunk")
def _chunk(b: Builder, n: fx.Node) -> Any:
    x = tensor_input(b, n)
    dim = b.static_int(b.arg(n, 2, "dim", 0))
    return emit_split(b, n, x, dim, "chunk", b.path(n, 1, "chunks"))


@on_function(torch.unbind)
@on_method("unbind")
def _unbind(b: Builder, n: fx.Node) -> Any:
    x = tensor_input(b, n)
    r = rank(x)
    a = norm_axis(b.static_int(b.arg(n, 1, "dim", 0)), r)
    res = b.make(n.name, b.meta.get(n))
    if not isinstance(res, tuple | list):
        raise Unsupported("unbind result")
    s = list(shape_of(x))
    s[a] = 1
    parts = [b.tmp(n, f"part{i}", tuple(s), x.dtype) for i in range(len(res))]
    b.emit(n, "Split", [x, b.const(n, [1] * len(res), "sizes", np.int64)], parts, axis=a)
    for p, v in zip(parts, res):
        b.emit(n, "Squeeze", [p, b.axes(n, [a])], [v])
    return res


@on_function(F.pad)
def pad(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    pads = b.arg(n, 1, "pad")
    mode = b.arg(n, 2, "mode", "constant")
    value = b.arg(n, 3, "value", None)
    if not isinstance(pads, list | tuple) or not all(isinstance(p, int) for p in pads) or len(pads) % 2:
        raise Unsupported("traced padding")
    r = rank(x)
    begin, end = [0] * r, [0] * r
    for k in range(len(pads) // 2):
        a = r - 1 - k
        begin[a], end[a] = pads[2 * k], pads[2 * k + 1]
    y = b.out(n)
    inputs: list[Value | None] = [x, b.const(n, begin + end, "pads", np.int64)]
    if mode == "constant" and value not in (None, 0, 0.0):
        inputs.append(b.const(n, float(value), "value", np.float32))
    b.emit(n, "Pad", inputs, [y], mode=mode)
    return y


@on_module(nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
           nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
           nn.ReplicationPad2d, nn.ReplicationPad3d)  # fmt: skip
def _pad_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.Module)
    if not isinstance(mod, padding._ConstantPadNd | padding._ReflectionPadNd | padding._ReplicationPadNd):
        raise Unsupported(f"padding module {type(mod).__name__}")
    x = tensor_input(b, n)
    pads = list(mod.padding)
    r = rank(x)
    begin, end = [0] * r, [0] * r
    for k in range(len(pads) // 2):
        a = r - 1 - k
        begin[a], end[a] = pads[2 * k], pads[2 * k + 1]
    name = type(mod).__name__
    mode = (
        "reflect"
        if name.startswith("Reflection")
        else "edge"
        if name.startswith("Replication")
        else "constant"
    )
    y = b.out(n)
    inputs: list[Value | None] = [x, b.const(n, begin + end, "pads", np.int64)]
    value = getattr(mod, "value", 0.0)
    if mode == "constant" and value != 0:
        inputs.append(b.const(n, float(value), "value", np.float32))
    b.emit(n, "Pad", inputs, [y], mode=mode)
    return y


@on_function(F.interpolate, F.upsample)
def _interp(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    return simple(b, n, "Resize", x, mode=str(b.arg(n, 3, "mode", "nearest")))


@on_module(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def _upsample_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Resize", tensor_input(b, n), mode=str(module_of(b, n, nn.Upsample).mode))


def _space_depth(b: Builder, n: fx.Node, op: str, factor: object) -> Value:
    # torch orders the deep side's channels c * r**2 + i * r + j: ONNX's CRD mode. ONNX's SpaceToDepth
    # only has the (i * r + j) * C + c order, so the IR carries a CRD mode of its own for it (the IR
    # is never exported as it stands).
    if not isinstance(factor, int):
        raise Unsupported(f"{op} with a traced block size")
    return simple(b, n, op, tensor_input(b, n), blocksize=factor, mode="CRD")


@on_module(nn.PixelShuffle)
def _pixel_shuffle(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "DepthToSpace", int(module_of(b, n, nn.PixelShuffle).upscale_factor))


@on_module(nn.PixelUnshuffle)
def _pixel_unshuffle(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "SpaceToDepth", int(module_of(b, n, nn.PixelUnshuffle).downscale_factor))


@on_function(F.pixel_shuffle, torch.pixel_shuffle)
def _pixel_shuffle_fn(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "DepthToSpace", b.arg(n, 1, "upscale_factor"))


@on_function(F.pixel_unshuffle, torch.pixel_unshuffle)
def _pixel_unshuffle_fn(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "SpaceToDepth", b.arg(n, 1, "downscale_factor"))
