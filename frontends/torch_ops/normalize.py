"""Handlers of normalizations, pooling, softmax and reductions: where statistics or sums cross an axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from frontends.torch_lower import Builder, Handler, Unsupported, on_function, on_method, on_module
from frontends.torch_ops.common import module_of, norm_axis, rank, shape_of, simple, tensor_input
from frontends.torch_ops.elementwise import binary
from graphcore.ir import Value

__all__ = ["emit_batchnorm"]


# -- normalization --------------------------------------------------------------------------------
def emit_batchnorm(
    b: Builder,
    n: fx.Node,
    x: Value,
    w: Value | None,
    bias: Value | None,
    mean: Value | None,
    var: Value | None,
    eps: float,
    y: Value | None = None,
) -> Value:
    if rank(x) < 2:
        raise Unsupported("BatchNorm of a rank < 2 tensor")
    y = y or b.out(n)
    b.emit(n, "BatchNormalization", [x, w, bias, mean, var], [y], epsilon=float(eps))
    return y


@on_module(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def _bn_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.modules.batchnorm._BatchNorm)
    x = tensor_input(b, n)
    w, bias, mean, var = (
        b.module_param(n, mod, a) for a in ("weight", "bias", "running_mean", "running_var")
    )
    return emit_batchnorm(b, n, x, w, bias, mean, var, eps=mod.eps)


@on_function(F.batch_norm)
def _bn_fn(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    mean, var = b.arg(n, 1, "running_mean"), b.arg(n, 2, "running_var")
    w, bias = b.arg(n, 3, "weight", None), b.arg(n, 4, "bias", None)
    return emit_batchnorm(b, n, x, w, bias, mean, var, eps=b.arg(n, 7, "eps", 1e-5))


@on_module(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _in_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.modules.instancenorm._InstanceNorm)
    if mod.track_running_stats:
        raise Unsupported("InstanceNorm with running stats")
    x = tensor_input(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    return simple_norm(b, n, "InstanceNormalization", [x, w, bias], epsilon=float(mod.eps))


def simple_norm(b: Builder, n: fx.Node, op: str, inputs: list[Value | None], **attrs: Any) -> Value:
    y = b.out(n)
    b.emit(n, op, inputs, [y], **attrs)
    return y


def emit_layernorm(
    b: Builder,
    n: fx.Node,
    x: Value,
    normalized: Sequence[int],
    w: Value | None,
    bias: Value | None,
    eps: float,
) -> Value:
    k = len(normalized)
    return simple_norm(b, n, "LayerNormalization", [x, w, bias], axis=-k, epsilon=float(eps))


@on_module(nn.LayerNorm)
def _ln_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.LayerNorm)
    x = tensor_input(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    return emit_layernorm(b, n, x, tuple(mod.normalized_shape), w, bias, mod.eps)


@on_function(F.layer_norm)
def _ln_fn(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    shape = b.static_ints(b.arg(n, 1, "normalized_shape"))
    w, bias = b.arg(n, 2, "weight", None), b.arg(n, 3, "bias", None)
    return emit_layernorm(b, n, x, shape, w, bias, b.arg(n, 4, "eps", 1e-5))


def _rms_eps(eps: Any, x: Value) -> float:
    """torch's RMSNorm without eps uses the machine epsilon of the input's dtype."""
    if isinstance(eps, int | float):
        return float(eps)
    dtype = getattr(torch, x.dtype or "float32", torch.float32)
    return float(torch.finfo(dtype).eps) if dtype.is_floating_point else float(torch.finfo().eps)


if hasattr(nn, "RMSNorm"):

    @on_module(nn.RMSNorm)
    def _rms_mod(b: Builder, n: fx.Node) -> Value:
        mod = module_of(b, n, nn.RMSNorm)
        x = tensor_input(b, n)
        w = b.module_param(n, mod, "weight")
        k = len(tuple(mod.normalized_shape))
        return simple_norm(b, n, "RMSNormalization", [x, w], axis=-k, epsilon=_rms_eps(mod.eps, x))


if hasattr(F, "rms_norm"):

    @on_function(F.rms_norm)
    def _rms_fn(b: Builder, n: fx.Node) -> Value:
        x = tensor_input(b, n)
        shape = b.static_ints(b.arg(n, 1, "normalized_shape"))
        w = b.arg(n, 2, "weight", None)
        eps = _rms_eps(b.arg(n, 3, "eps", None), x)
        return simple_norm(b, n, "RMSNormalization", [x, w], axis=-len(shape), epsilon=eps)


def emit_groupnorm(
    b: Builder,
    n: fx.Node,
    x: Value,
    groups: int,
    w: Value | None,
    bias: Value | None,
    eps: float,
    path: tuple | None,
) -> Value:
    y = simple_norm(b, n, "GroupNormalization", [x, w, bias], num_groups=int(groups), epsilon=float(eps))
    assert y.producer is not None
    b.attr_site(y.producer, "num_groups", n, path)
    return y


@on_module(nn.GroupNorm)
def _gn_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.GroupNorm)
    x = tensor_input(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    return emit_groupnorm(b, n, x, mod.num_groups, w, bias, mod.eps, ("module", "num_groups"))


@on_function(F.group_norm)
def _gn_fn(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    g = b.arg(n, 1, "num_groups")
    if not isinstance(g, int):
        raise Unsupported("traced group count")
    w, bias = b.arg(n, 2, "weight", None), b.arg(n, 3, "bias", None)
    return emit_groupnorm(b, n, x, g, w, bias, b.arg(n, 4, "eps", 1e-5), b.path(n, 1, "num_groups"))


@on_function(F.normalize)
def _normalize(b: Builder, n: fx.Node) -> Value:
    # x / max(||x||_p, eps), written out as its ONNX export is: a zeroed channel adds nothing to the
    # norm, so it is removable (ONNX's LpNormalization has no eps, and the rule blocks it).
    x = tensor_input(b, n)
    p, dim = b.arg(n, 1, "p", 2.0), b.static_int(b.arg(n, 2, "dim", 1))
    eps = b.arg(n, 3, "eps", 1e-12)
    axis = norm_axis(dim, rank(x))
    if p not in (1, 2) or not isinstance(eps, int | float) or not eps > 0:
        return simple(b, n, "LpNormalization", x, axis=axis, p=int(p))
    shape = list(shape_of(x))
    shape[axis] = 1
    norm = b.tmp(n, "norm", tuple(shape), x.dtype)
    b.emit(n, "ReduceL2" if p == 2 else "ReduceL1", [x, b.axes(n, [axis])], [norm], keepdims=1)
    floor = b.tmp(n, "floor", tuple(shape), x.dtype)
    b.emit(n, "Clip", [norm, b.const(n, float(eps), "eps", np.float32)], [floor])
    y = b.out(n)
    b.emit(n, "Div", [x, floor], [y])
    return y


@on_function(torch.linalg.vector_norm)
def _vector_norm(b: Builder, n: fx.Node) -> Value:
    """``linalg.vector_norm(x, ord, dim, keepdim)`` (ConvNeXt V2's global response normalization) for
    ord 1 and 2: ReduceL1/ReduceL2, as ONNX exports it. Other orders (inf, 0, fractional) and a ``dtype``
    stay unsupported rather than guessed."""
    x = tensor_input(b, n)
    p = b.arg(n, 1, "ord", 2)
    dim = b.arg(n, 2, "dim", None)
    keep = bool(b.arg(n, 3, "keepdim", False))
    if p not in (1, 2) or b.arg(n, 4, "dtype", None) is not None:
        raise Unsupported(f"vector_norm of order {p!r} or with a dtype")
    r = rank(x)
    axes = list(range(r)) if dim is None else [norm_axis(a, r) for a in b.static_ints(dim)]
    y = b.out(n)
    b.emit(n, "ReduceL2" if p == 2 else "ReduceL1", [x, b.axes(n, axes)], [y], keepdims=int(keep))
    return y


# -- pooling ---------------------------------------------------------------------------------------
def _pool(b: Builder, n: fx.Node, x: Value, op: str, nsp: int, **attrs: Any) -> Any:
    if rank(x) != nsp + 2:
        raise Unsupported("unbatched pooling input")
    res = b.make(n.name, b.meta.get(n))
    outs = [res] if isinstance(res, Value) else list(res)
    if not all(isinstance(o, Value) for o in outs):
        raise Unsupported("pooling result")
    b.emit(n, op, [x], outs, **attrs)
    return res


def _spatial(mod_or_name: Any) -> int:
    name = mod_or_name if isinstance(mod_or_name, str) else type(mod_or_name).__name__
    for d in (1, 2, 3):
        if f"{d}d" in name:
            return d
    raise Unsupported("pool dimensionality")


def _ones(size: Any) -> bool:
    if size is None:
        return False
    sizes = size if isinstance(size, list | tuple) else [size]
    return all(s == 1 for s in sizes)


@on_module(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
           nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d)  # fmt: skip
def _pool_mod(b: Builder, n: fx.Node) -> Any:
    mod = module_of(b, n, nn.Module)
    x = tensor_input(b, n)
    name = type(mod).__name__
    nsp = _spatial(name)
    if name.startswith("Adaptive"):
        glob = _ones(mod.output_size)
        kind = "Max" if "Max" in name else "Average"
        op = f"Global{kind}Pool" if glob and not getattr(mod, "return_indices", False) else f"{kind}Pool"
        return _pool(b, n, x, op, nsp, output_size=str(mod.output_size))
    op = {"Max": "MaxPool", "Avg": "AveragePool", "LPP": "LpPool"}[name[:3]]
    return _pool(b, n, x, op, nsp)


def _pool_fn(op: str, nsp: int, adaptive: bool = False) -> Handler:
    def h(b: Builder, n: fx.Node) -> Any:
        x = tensor_input(b, n)
        if adaptive:
            size = b.arg(n, 1, "output_size")
            if _ones(size) and op != "MaxPool" and not b.arg(n, 2, "return_indices", False):
                return _pool(b, n, x, "GlobalAveragePool", nsp)
        return _pool(b, n, x, op, nsp)

    return h


for _d in (1, 2, 3):
    on_function(getattr(F, f"max_pool{_d}d"), getattr(F, f"max_pool{_d}d_with_indices"),
                getattr(torch, f"max_pool{_d}d", None))(_pool_fn("MaxPool", _d))  # fmt: skip
    on_function(getattr(F, f"avg_pool{_d}d"), getattr(torch, f"avg_pool{_d}d", None))(
        _pool_fn("AveragePool", _d)
    )
    on_function(getattr(F, f"adaptive_avg_pool{_d}d"), getattr(torch, f"adaptive_avg_pool{_d}d", None))(
        _pool_fn("AveragePool", _d, adaptive=True)
    )
    on_function(getattr(F, f"adaptive_max_pool{_d}d"), getattr(F, f"adaptive_max_pool{_d}d_with_indices"))(
        _pool_fn("MaxPool", _d, adaptive=True)
    )


# -- softmax and reductions ------------------------------------------------------------------------
def _softmax(op: str) -> Handler:
    def h(b: Builder, n: fx.Node) -> Value:
        x = tensor_input(b, n)
        if n.op == "call_module":
            dim = module_of(b, n, nn.Module).dim
        else:
            dim = b.arg(n, 1, "dim", None)
        if dim is None:
            raise Unsupported("softmax without dim")
        return simple(b, n, op, x, axis=norm_axis(b.static_int(dim), rank(x)))

    return h


on_module(nn.Softmax)(_softmax("Softmax"))
on_module(nn.LogSoftmax)(_softmax("LogSoftmax"))
on_function(F.softmax, torch.softmax)(_softmax("Softmax"))
on_function(F.log_softmax, torch.log_softmax)(_softmax("LogSoftmax"))
on_method("softmax")(_softmax("Softmax"))
on_method("log_softmax")(_softmax("LogSoftmax"))


def _reduce(op: str, arg_op: str | None = None) -> Handler:
    def h(b: Builder, n: fx.Node) -> Any:
        x = tensor_input(b, n)
        r = rank(x)
        dim = b.arg(n, 1, "dim", None)
        keep = bool(b.arg(n, 2, "keepdim", False))
        if isinstance(dim, Value) and dim.rank is not None and dim.rank > 0 and arg_op is not None:
            raise Unsupported("elementwise max/min with a tensor")
        if isinstance(dim, Value) and arg_op is not None and (dim.dtype or "").startswith("float"):
            raise Unsupported("elementwise max/min")
        axes = list(range(r)) if dim is None else [norm_axis(a, r) for a in b.static_ints(dim)]
        res = b.make(n.name, b.meta.get(n))
        if isinstance(res, tuple | list):  # max(x, dim) -> (values, indices)
            if arg_op is None or len(res) != 2 or len(axes) != 1:
                raise Unsupported("reduction result")
            b.emit(n, op, [x, b.axes(n, axes)], [res[0]], keepdims=int(keep))
            b.emit(n, arg_op, [x], [res[1]], axis=axes[0], keepdims=int(keep))
            return res
        if not isinstance(res, Value):
            raise Unsupported("reduction result")
        b.emit(n, op, [x, b.axes(n, axes)], [res], keepdims=int(keep))
        return res

    return h


on_function(torch.mean)(_reduce("ReduceMean"))
on_method("mean")(_reduce("ReduceMean"))
on_function(torch.sum)(_reduce("ReduceSum"))
on_method("sum")(_reduce("ReduceSum"))
on_function(torch.amax)(_reduce("ReduceMax"))
on_method("amax")(_reduce("ReduceMax"))
on_function(torch.amin)(_reduce("ReduceMin"))
on_method("amin")(_reduce("ReduceMin"))


def _maxmin(op: str, elem: str, arg_op: str) -> Handler:
    """``max(x, dim)`` reduces; ``max(x, y)`` of two tensors is elementwise."""
    red = _reduce(op, arg_op)
    elementwise = binary(elem)

    def h(b: Builder, n: fx.Node) -> Any:
        other = b.arg(n, 1, "dim", None)
        if isinstance(other, Value) and other.rank is not None and other.rank > 0:
            return elementwise(b, n)
        return red(b, n)

    return h


on_function(torch.max)(_maxmin("ReduceMax", "Max", "ArgMax"))
on_method("max")(_maxmin("ReduceMax", "Max", "ArgMax"))
on_function(torch.min)(_maxmin("ReduceMin", "Min", "ArgMin"))
on_method("min")(_maxmin("ReduceMin", "Min", "ArgMin"))
