"""Handlers for torch functions, Tensor methods and ``torch.nn`` leaf modules (the ``symbolic_trace`` path).

Every handler reads its FX node's arguments, emits IR nodes with ONNX op names and conventions, and
returns the IR value(s) of the node's result. A handler raises ``Unsupported`` for a variant it cannot
express exactly; the node then becomes an unknown op (which blocks its neighbours) — never a guess.
"""

from __future__ import annotations

import builtins
import math
import operator
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from frontends.torch_lower import (
    INT64_MAX,
    Builder,
    LitSite,
    Unsupported,
    on_function,
    on_method,
    on_module,
)
from graphcore.ir import Value
from graphcore.ops.layout import slice_range

__all__ = ["emit_linear", "emit_sdpa"]


def _mod(b: Builder, n: fx.Node) -> nn.Module:
    return b.gm.get_submodule(str(n.target))


def _x(b: Builder, n: fx.Node, i: int = 0, name: str = "input") -> Value:
    x = b.arg(n, i, name)
    if not isinstance(x, Value) or x.shape is None:
        raise Unsupported("input is not a tensor")
    return x


def _rank(v: Value) -> int:
    assert v.shape is not None
    return len(v.shape)


def _axis(a: int, r: int) -> int:
    if not -r <= a < max(r, 1):
        raise Unsupported("axis out of range")
    return a + r if a < 0 else a


def _shape(v: Value) -> tuple[int, ...]:
    s = v.static_shape
    if s is None:
        raise Unsupported("shape is not static")
    return s


def simple(b: Builder, n: fx.Node, op: str, x: Value, **attrs: Any) -> Value:
    y = b.out(n)
    b.emit(n, op, [x], [y], **attrs)
    return y


# -- activations and identities -----------------------------------------------------------------
_UNARY_MODULES: dict[type, str] = {
    nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.Hardswish: "HardSwish",
    nn.Mish: "Mish", nn.Softsign: "Softsign", nn.SELU: "Selu", nn.Identity: "Identity",
    nn.Dropout: "Identity", nn.Dropout1d: "Identity", nn.Dropout2d: "Identity", nn.Dropout3d: "Identity",
    nn.AlphaDropout: "Identity", nn.FeatureAlphaDropout: "Identity", nn.Softplus: "Softplus",
}  # fmt: skip


def _module_unary(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    x = _x(b, n)
    op = next(v for k, v in _UNARY_MODULES.items() if isinstance(mod, k))
    if op == "Softplus" and (getattr(mod, "beta", 1) != 1):
        raise Unsupported("Softplus with beta")
    return simple(b, n, op, x)


on_module(*_UNARY_MODULES)(_module_unary)


@on_module(nn.GELU)
def _gelu_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Gelu", _x(b, n), approximate=_mod(b, n).approximate)


@on_module(nn.LeakyReLU)
def _leaky_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "LeakyRelu", _x(b, n), alpha=float(_mod(b, n).negative_slope))


@on_module(nn.ELU, nn.CELU)
def _elu_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    return simple(b, n, "Elu" if isinstance(mod, nn.ELU) else "Celu", _x(b, n), alpha=float(mod.alpha))


@on_module(nn.Hardsigmoid)
def _hsig_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "HardSigmoid", _x(b, n), alpha=1.0 / 6, beta=0.5)


@on_module(nn.Hardtanh)  # ReLU6 is a Hardtanh
def _hardtanh_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    return simple(b, n, "Clip", _x(b, n), min=float(mod.min_val), max=float(mod.max_val))


def emit_silu(b: Builder, n: fx.Node, x: Value) -> Value:
    """SiLU as ONNX spells it: Sigmoid then Mul (x · σ(x) is zero where x is)."""
    y = b.out(n)
    s = b.tmp(n, "sigmoid", _shape(x), x.dtype)
    b.emit(n, "Sigmoid", [x], [s])
    b.emit(n, "Mul", [x, s], [y])
    return y


@on_module(nn.SiLU)
def _silu_mod(b: Builder, n: fx.Node) -> Value:
    return emit_silu(b, n, _x(b, n))


@on_function(F.silu)
@on_method("silu")
def _silu_fn(b: Builder, n: fx.Node) -> Value:
    return emit_silu(b, n, _x(b, n))


def _unary_fn(op: str, **attrs: Any):
    def h(b: Builder, n: fx.Node) -> Value:
        return simple(b, n, op, _x(b, n), **attrs)

    return h


for _op, _targets, _methods in [
    ("Relu", [torch.relu, torch.relu_, F.relu, F.relu_], ["relu", "relu_"]),
    ("Sigmoid", [torch.sigmoid, F.sigmoid], ["sigmoid", "sigmoid_"]),
    ("Tanh", [torch.tanh, F.tanh], ["tanh", "tanh_"]),
    ("HardSwish", [F.hardswish], []),
    ("Mish", [F.mish], []),
    ("Exp", [torch.exp], ["exp"]),
    ("Log", [torch.log], ["log"]),
    ("Sqrt", [torch.sqrt], ["sqrt"]),
    ("Abs", [torch.abs], ["abs"]),
    ("Neg", [torch.neg, operator.neg], ["neg"]),
    ("Erf", [torch.erf], ["erf"]),
    ("Sin", [torch.sin], ["sin"]),
    ("Cos", [torch.cos], ["cos"]),
    ("Reciprocal", [torch.reciprocal], ["reciprocal"]),
    ("Floor", [torch.floor], ["floor"]),
    ("Ceil", [torch.ceil], ["ceil"]),
    ("Sign", [torch.sign], ["sign"]),
    ("Softsign", [F.softsign], []),
    ("Identity", [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                  F.feature_alpha_dropout, torch.dropout, torch.clone, torch.detach,
                  "torchvision.ops.stochastic_depth.stochastic_depth"],
     ["contiguous", "clone", "detach", "cpu", "cuda", "requires_grad_", "dropout"]),
]:  # fmt: skip
    _h = _unary_fn(_op)
    on_function(*_targets)(_h)
    on_method(*_methods)(_h)


@on_function(torch.rsqrt)
@on_method("rsqrt")
def _rsqrt(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    root = b.tmp(n, "sqrt", _shape(x), x.dtype)
    b.emit(n, "Sqrt", [x], [root])
    return simple(b, n, "Reciprocal", root)


@on_function(F.gelu)
@on_method("gelu")
def _gelu_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Gelu", _x(b, n), approximate=b.arg(n, 1, "approximate", "none"))


@on_function(F.leaky_relu)
def _leaky_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "LeakyRelu", _x(b, n), alpha=float(b.arg(n, 1, "negative_slope", 0.01)))


@on_function(F.elu)
def _elu_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Elu", _x(b, n), alpha=float(b.arg(n, 1, "alpha", 1.0)))


@on_function(F.hardsigmoid)
def _hsig_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "HardSigmoid", _x(b, n), alpha=1.0 / 6, beta=0.5)


@on_function(F.softplus)
def _softplus_fn(b: Builder, n: fx.Node) -> Value:
    if b.arg(n, 1, "beta", 1) != 1:
        raise Unsupported("Softplus with beta")
    return simple(b, n, "Softplus", _x(b, n))


@on_function(F.relu6)
def _relu6_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Clip", _x(b, n), min=0.0, max=6.0)


@on_function(F.hardtanh)
def _hardtanh_fn(b: Builder, n: fx.Node) -> Value:
    lo, hi = b.arg(n, 1, "min_val", -1.0), b.arg(n, 2, "max_val", 1.0)
    return simple(b, n, "Clip", _x(b, n), min=float(lo), max=float(hi))


@on_function(torch.clamp, torch.clip)
@on_method("clamp", "clip", "clamp_")
def _clamp(b: Builder, n: fx.Node) -> Value:
    lo, hi = b.arg(n, 1, "min", None), b.arg(n, 2, "max", None)
    if isinstance(lo, Value) or isinstance(hi, Value):
        raise Unsupported("clamp with tensor bounds")
    attrs = {}
    if lo is not None:
        attrs["min"] = float(lo)
    if hi is not None:
        attrs["max"] = float(hi)
    return simple(b, n, "Clip", _x(b, n), **attrs)


@on_method("to", "type", "float", "half", "double", "bfloat16", "type_as")
def _to(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    y = b.out(n)
    if y.dtype != x.dtype:
        b.emit(n, "Cast", [x], [y], to=y.dtype)
    else:
        b.emit(n, "Identity", [x], [y])
    return y


# -- arithmetic -----------------------------------------------------------------------------------
def _operands(b: Builder, n: fx.Node) -> tuple[Any, Any]:
    a = b.arg(n, 0, "input")
    c = b.arg(n, 1, "other")
    return a, c


def _as_operand(b: Builder, n: fx.Node, x: Any, other: Any, tag: str) -> Value:
    if isinstance(x, Value):
        return x
    like = other if isinstance(other, Value) else None
    return b.as_value(n, x, like=like, tag=tag)


def _binary(op: str, floor: bool = False):
    def h(b: Builder, n: fx.Node) -> Value:
        a, c = _operands(b, n)
        if not isinstance(a, Value) and not isinstance(c, Value):
            m = b.meta.get(n)  # arithmetic on literals the tracer kept (x.dim() == 4): its value
            if isinstance(m, bool | int | float):
                return m
            raise Unsupported("no tensor operand")
        alpha = n.kwargs.get("alpha", 1) if op in ("Add", "Sub") else 1
        rounding = n.kwargs.get("rounding_mode") if op == "Div" else None
        va = _as_operand(b, n, a, c, "a")
        vc = _as_operand(b, n, c, a, "b")
        if alpha != 1:
            if isinstance(alpha, Value):
                raise Unsupported("traced alpha")
            scaled = b.tmp(n, "alpha", vc.shape or (), vc.dtype)
            b.emit(n, "Mul", [vc, b.as_value(n, alpha, like=vc, tag="alpha_c")], [scaled])
            vc = scaled
        y = b.out(n)
        integer = not (y.dtype or "float").startswith(("float", "bfloat", "complex"))
        if rounding == "trunc" and not integer:
            raise Unsupported("trunc division of tensors")
        if (floor or rounding == "floor") and not integer:
            q = b.tmp(n, "q", y.shape or (), y.dtype)
            b.emit(n, "Div", [va, vc], [q])
            b.emit(n, "Floor", [q], [y])
            return y
        b.emit(n, op, [va, vc], [y])
        return y

    return h


on_function(operator.add, operator.iadd, torch.add)(_binary("Add"))
on_method("add", "add_", "__add__", "__radd__")(_binary("Add"))
on_function(operator.sub, operator.isub, torch.sub, torch.subtract)(_binary("Sub"))
on_method("sub", "sub_", "__sub__")(_binary("Sub"))
on_function(operator.mul, operator.imul, torch.mul, torch.multiply)(_binary("Mul"))
on_method("mul", "mul_", "__mul__", "__rmul__")(_binary("Mul"))
on_function(operator.truediv, operator.itruediv, torch.div, torch.true_divide, torch.divide)(_binary("Div"))
on_method("div", "div_", "__truediv__")(_binary("Div"))
on_function(operator.floordiv, torch.floor_divide)(_binary("Div", floor=True))
on_method("__floordiv__")(_binary("Div", floor=True))
on_function(operator.pow, torch.pow)(_binary("Pow"))
on_method("pow", "__pow__")(_binary("Pow"))
on_function(operator.mod, torch.remainder)(_binary("Mod"))
on_function(torch.maximum)(_binary("Max"))
on_function(torch.minimum)(_binary("Min"))
on_function(operator.eq, torch.eq)(_binary("Equal"))
on_function(operator.lt, torch.lt)(_binary("Less"))
on_function(operator.le, torch.le)(_binary("LessOrEqual"))
on_function(operator.gt, torch.gt)(_binary("Greater"))
on_function(operator.ge, torch.ge)(_binary("GreaterOrEqual"))
on_method("eq")(_binary("Equal"))


@on_function(operator.ne, torch.ne)
@on_method("ne")
def _ne(b: Builder, n: fx.Node) -> Value:
    a, c = _operands(b, n)
    va = _as_operand(b, n, a, c, "a")
    vc = _as_operand(b, n, c, a, "b")
    y = b.out(n)
    e = b.tmp(n, "eq", y.shape or (), "bool")
    b.emit(n, "Equal", [va, vc], [e])
    b.emit(n, "Not", [e], [y])
    return y


@on_function(torch._assert, "torch._assert", "torch.fx._symbolic_trace._assert_is_none")
def _assert(b: Builder, n: fx.Node) -> None:
    return None


# -- linear algebra --------------------------------------------------------------------------------
def emit_linear(b: Builder, n: fx.Node, x: Value, w: Value, bias: Value | None, y: Value) -> Value:
    """``x @ w.T + bias``: Gemm(transB=1) for 2-D inputs, else MatMul with the transposed weight + Add."""
    ws = _shape(w)
    if len(ws) != 2:
        raise Unsupported("linear weight is not 2-D")
    if _rank(x) == 2:
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
    mod = _mod(b, n)
    x = _x(b, n)
    return emit_linear(b, n, x, b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias"), b.out(n))


@on_function(F.linear)
def _linear_fn(b: Builder, n: fx.Node) -> Value:
    x, w, bias = _x(b, n), b.arg(n, 1, "weight"), b.arg(n, 2, "bias", None)
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
    ws = _shape(w)
    xs = _shape(x)
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
    mod = _mod(b, n)
    if len(n.args) + len(n.kwargs) != 1:
        raise Unsupported("ConvTranspose with output_size")
    x = _x(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    assert w is not None
    transpose = isinstance(mod, nn.modules.conv._ConvTransposeNd)
    return emit_conv(b, n, x, w, bias, int(mod.groups), transpose, ("module", "groups"))


def _conv_fn(transpose: bool):
    def h(b: Builder, n: fx.Node) -> Value:
        x, w = _x(b, n), b.arg(n, 1, "weight")
        bias = b.arg(n, 2, "bias", None)
        gi = 6  # conv: (x, w, b, stride, padding, dilation, groups); transposed: output_padding, groups
        groups = b.arg(n, gi, "groups", 1)
        if not isinstance(w, Value) or not isinstance(groups, int):
            raise Unsupported("conv arguments")
        return emit_conv(b, n, x, w, bias, groups, transpose, b.path(n, gi, "groups"))

    return h


on_function(F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d)(_conv_fn(False))
on_function(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)(_conv_fn(True))


# -- normalization --------------------------------------------------------------------------------
def emit_batchnorm(b, n, x, w, bias, mean, var, eps: float, y: Value | None = None) -> Value:
    if _rank(x) < 2:
        raise Unsupported("BatchNorm of a rank < 2 tensor")
    y = y or b.out(n)
    b.emit(n, "BatchNormalization", [x, w, bias, mean, var], [y], epsilon=float(eps))
    return y


@on_module(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def _bn_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    x = _x(b, n)
    p = [b.module_param(n, mod, a) for a in ("weight", "bias", "running_mean", "running_var")]
    return emit_batchnorm(b, n, x, *p, eps=mod.eps)


@on_function(F.batch_norm)
def _bn_fn(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    mean, var = b.arg(n, 1, "running_mean"), b.arg(n, 2, "running_var")
    w, bias = b.arg(n, 3, "weight", None), b.arg(n, 4, "bias", None)
    return emit_batchnorm(b, n, x, w, bias, mean, var, eps=b.arg(n, 7, "eps", 1e-5))


@on_module(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _in_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    if mod.track_running_stats:
        raise Unsupported("InstanceNorm with running stats")
    x = _x(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    return simple_norm(b, n, "InstanceNormalization", [x, w, bias], epsilon=float(mod.eps))


def simple_norm(b: Builder, n: fx.Node, op: str, inputs: list[Value | None], **attrs: Any) -> Value:
    y = b.out(n)
    b.emit(n, op, inputs, [y], **attrs)
    return y


def emit_layernorm(b, n, x, normalized, w, bias, eps) -> Value:
    k = len(normalized)
    return simple_norm(b, n, "LayerNormalization", [x, w, bias], axis=-k, epsilon=float(eps))


@on_module(nn.LayerNorm)
def _ln_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    x = _x(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    return emit_layernorm(b, n, x, tuple(mod.normalized_shape), w, bias, mod.eps)


@on_function(F.layer_norm)
def _ln_fn(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    shape = b.static_ints(b.arg(n, 1, "normalized_shape"))
    w, bias = b.arg(n, 2, "weight", None), b.arg(n, 3, "bias", None)
    return emit_layernorm(b, n, x, shape, w, bias, b.arg(n, 4, "eps", 1e-5))


if hasattr(nn, "RMSNorm"):

    @on_module(nn.RMSNorm)
    def _rms_mod(b: Builder, n: fx.Node) -> Value:
        mod = _mod(b, n)
        x = _x(b, n)
        w = b.module_param(n, mod, "weight")
        k = len(tuple(mod.normalized_shape))
        return simple_norm(b, n, "RMSNormalization", [x, w], axis=-k)


def emit_groupnorm(b, n, x, groups: int, w, bias, eps, path: tuple | None) -> Value:
    y = simple_norm(b, n, "GroupNormalization", [x, w, bias], num_groups=int(groups), epsilon=float(eps))
    assert y.producer is not None
    b.attr_site(y.producer, "num_groups", n, path)
    return y


@on_module(nn.GroupNorm)
def _gn_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    x = _x(b, n)
    w, bias = b.module_param(n, mod, "weight"), b.module_param(n, mod, "bias")
    return emit_groupnorm(b, n, x, mod.num_groups, w, bias, mod.eps, ("module", "num_groups"))


@on_function(F.group_norm)
def _gn_fn(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    g = b.arg(n, 1, "num_groups")
    if not isinstance(g, int):
        raise Unsupported("traced group count")
    w, bias = b.arg(n, 2, "weight", None), b.arg(n, 3, "bias", None)
    return emit_groupnorm(b, n, x, g, w, bias, b.arg(n, 4, "eps", 1e-5), b.path(n, 1, "num_groups"))


@on_function(F.normalize)
def _normalize(b: Builder, n: fx.Node) -> Value:
    # x / max(||x||_p, eps), written out as its ONNX export is: a zeroed channel adds nothing to the
    # norm, so it is removable (ONNX's LpNormalization has no eps, and the rule blocks it).
    x = _x(b, n)
    p, dim = b.arg(n, 1, "p", 2.0), b.static_int(b.arg(n, 2, "dim", 1))
    eps = b.arg(n, 3, "eps", 1e-12)
    axis = _axis(dim, _rank(x))
    if p not in (1, 2) or not isinstance(eps, int | float) or not eps > 0:
        return simple(b, n, "LpNormalization", x, axis=axis, p=int(p))
    shape = list(_shape(x))
    shape[axis] = 1
    norm = b.tmp(n, "norm", tuple(shape), x.dtype)
    b.emit(n, "ReduceL2" if p == 2 else "ReduceL1", [x], [norm], axes=[axis], keepdims=1)
    floor = b.tmp(n, "floor", tuple(shape), x.dtype)
    b.emit(n, "Clip", [norm, b.const(n, float(eps), "eps", np.float32)], [floor])
    y = b.out(n)
    b.emit(n, "Div", [x, floor], [y])
    return y


@on_module(nn.Embedding)
def _embedding_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    idx = _x(b, n)
    w = b.module_param(n, mod, "weight")
    y = b.out(n)
    b.emit(n, "Gather", [w, idx], [y], axis=0)
    return y


@on_function(F.embedding)
def _embedding_fn(b: Builder, n: fx.Node) -> Value:
    idx, w = _x(b, n), b.arg(n, 1, "weight")
    y = b.out(n)
    b.emit(n, "Gather", [w, idx], [y], axis=0)
    return y


@on_module(nn.PReLU)
def _prelu_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    x = _x(b, n)
    w = b.module_param(n, mod, "weight")
    assert w is not None
    y = b.out(n)
    r = _rank(x)
    if mod.num_parameters == 1 or r < 2:
        b.emit(n, "PRelu", [x, w], [y])
        return y
    slope = b.tmp(n, "slope", (mod.num_parameters, *([1] * (r - 2))), w.dtype)
    b.emit(n, "Unsqueeze", [w], [slope], axes=list(range(1, r - 1)))
    b.emit(n, "PRelu", [x, slope], [y])
    return y


# -- pooling ---------------------------------------------------------------------------------------
def _pool(b: Builder, n: fx.Node, x: Value, op: str, nsp: int, **attrs: Any) -> Any:
    if _rank(x) != nsp + 2:
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
    mod = _mod(b, n)
    x = _x(b, n)
    name = type(mod).__name__
    nsp = _spatial(name)
    if name.startswith("Adaptive"):
        glob = _ones(mod.output_size)
        kind = "Max" if "Max" in name else "Average"
        op = f"Global{kind}Pool" if glob and not getattr(mod, "return_indices", False) else f"{kind}Pool"
        return _pool(b, n, x, op, nsp, output_size=str(mod.output_size))
    op = {"Max": "MaxPool", "Avg": "AveragePool", "LPP": "LpPool"}[name[:3]]
    return _pool(b, n, x, op, nsp)


def _pool_fn(op: str, nsp: int, adaptive: bool = False):
    def h(b: Builder, n: fx.Node) -> Any:
        x = _x(b, n)
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
def _softmax(op: str):
    def h(b: Builder, n: fx.Node) -> Value:
        x = _x(b, n)
        if n.op == "call_module":
            dim = _mod(b, n).dim
        else:
            dim = b.arg(n, 1, "dim", None)
        if dim is None:
            raise Unsupported("softmax without dim")
        return simple(b, n, op, x, axis=_axis(b.static_int(dim), _rank(x)))

    return h


on_module(nn.Softmax)(_softmax("Softmax"))
on_module(nn.LogSoftmax)(_softmax("LogSoftmax"))
on_function(F.softmax, torch.softmax)(_softmax("Softmax"))
on_function(F.log_softmax, torch.log_softmax)(_softmax("LogSoftmax"))
on_method("softmax")(_softmax("Softmax"))
on_method("log_softmax")(_softmax("LogSoftmax"))


def _reduce(op: str, arg_op: str | None = None):
    def h(b: Builder, n: fx.Node) -> Any:
        x = _x(b, n)
        r = _rank(x)
        dim = b.arg(n, 1, "dim", None)
        keep = bool(b.arg(n, 2, "keepdim", False))
        if isinstance(dim, Value) and dim.rank is not None and dim.rank > 0 and arg_op is not None:
            raise Unsupported("elementwise max/min with a tensor")
        if isinstance(dim, Value) and arg_op is not None and (dim.dtype or "").startswith("float"):
            raise Unsupported("elementwise max/min")
        axes = list(range(r)) if dim is None else [_axis(a, r) for a in b.static_ints(dim)]
        res = b.make(n.name, b.meta.get(n))
        if isinstance(res, tuple | list):  # max(x, dim) -> (values, indices)
            if arg_op is None or len(res) != 2 or len(axes) != 1:
                raise Unsupported("reduction result")
            b.emit(n, op, [x], [res[0]], axes=axes, keepdims=int(keep))
            b.emit(n, arg_op, [x], [res[1]], axis=axes[0], keepdims=int(keep))
            return res
        if not isinstance(res, Value):
            raise Unsupported("reduction result")
        b.emit(n, op, [x], [res], axes=axes, keepdims=int(keep))
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


def _maxmin(op: str, elem: str, arg_op: str):
    red = _reduce(op, arg_op)
    binary = _binary(elem)

    def h(b: Builder, n: fx.Node) -> Any:
        other = b.arg(n, 1, "dim", None)
        if isinstance(other, Value) and other.rank is not None and other.rank > 0:
            return binary(b, n)
        return red(b, n)

    return h


on_function(torch.max)(_maxmin("ReduceMax", "Max", "ArgMax"))
on_method("max")(_maxmin("ReduceMax", "Max", "ArgMax"))
on_function(torch.min)(_maxmin("ReduceMin", "Min", "ArgMin"))
on_method("min")(_maxmin("ReduceMin", "Min", "ArgMin"))


# -- shapes and sizes ------------------------------------------------------------------------------
def emit_shape(b: Builder, n: fx.Node, x: Value, out: Value | None = None) -> Value:
    r = _rank(x)
    s = out or b.tmp(n, "shape", (r,), "int64")
    b.emit(n, "Shape", [x], [s])
    b.dims[s.name] = [(x, a) for a in range(r)]
    return s


def emit_pick(b: Builder, n: fx.Node, shape_v: Value, idx: int, out: Value) -> Value:
    """Element ``idx`` of a 1-D shape value (a traced ``x.size(i)``)."""
    k = int(shape_v.shape[0])  # type: ignore[index]
    i = _axis(idx, k)
    b.emit(n, "Gather", [shape_v, b.const(n, i, "idx", np.int64)], [out], axis=0)
    src = b.dims.get(shape_v.name)
    b.dims[out.name] = [src[i] if src else None]
    return out


@on_method("size")
def _size(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    dim = b.arg(n, 1, "dim", None)
    if dim is None:
        return emit_shape(b, n, x, b.out(n))
    s = emit_shape(b, n, x)
    return emit_pick(b, n, s, b.static_int(dim), b.out(n))


@on_method("dim", "ndimension")
def _dim(b: Builder, n: fx.Node) -> int:
    return _rank(_x(b, n))


@on_method("numel")
def _numel(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
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
        return _rank(obj)
    if attr in ("T", "mT"):
        r = _rank(obj)
        perm = list(range(r))[::-1] if attr == "T" else [*range(r - 2), r - 1, r - 2]
        return simple(b, n, "Transpose", obj, perm=perm)
    if attr == "data":
        return simple(b, n, "Identity", obj)
    m = b.meta.get(n)
    if isinstance(m, bool | str | torch.dtype | torch.device) or m is None:
        return m
    raise Unsupported(f"attribute {attr}")


# -- reshapes ----------------------------------------------------------------------------------------
@on_function(torch.reshape)
@on_method("view", "reshape")
def _reshape(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
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
def _reshape_as(b: Builder, n: fx.Node) -> Value:
    x, other = _x(b, n), b.arg(n, 1, "other")
    if not isinstance(other, Value):
        raise Unsupported("view_as a non-tensor")
    y = b.out(n)
    b.emit(n, "Reshape", [x, emit_shape(b, n, other)], [y])
    return y


@on_function(torch.flatten)
@on_method("flatten")
def _flatten_fn(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    start = b.static_int(b.arg(n, 1, "start_dim", 0))
    end = b.static_int(b.arg(n, 2, "end_dim", -1))
    return simple(b, n, "Flatten", x, axis=start, end_axis=end)


@on_module(nn.Flatten)
def _flatten_mod(b: Builder, n: fx.Node) -> Value:
    mod = _mod(b, n)
    return simple(b, n, "Flatten", _x(b, n), axis=mod.start_dim, end_axis=mod.end_dim)


def _unflatten(
    b: Builder, n: fx.Node, x: Value, dim: int, sizes: list[Any], paths: list[tuple | None]
) -> Value:
    y = b.out(n)
    r = _rank(x)
    d = _axis(dim, r)
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
    mod = _mod(b, n)
    sizes = list(mod.unflattened_size)
    return _unflatten(
        b, n, _x(b, n), mod.dim, sizes, [("module", "unflattened_size", k) for k in range(len(sizes))]
    )


@on_function(torch.unflatten)
@on_method("unflatten")
def _unflatten_fn(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    dim = b.static_int(b.arg(n, 1, "dim"))
    sizes, paths = b.varargs(n, 2, "sizes")
    return _unflatten(b, n, x, dim, sizes, paths)


@on_function(torch.permute)
@on_method("permute")
def _permute(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    dims, _ = b.varargs(n, 1, "dims")
    r = _rank(x)
    perm = [_axis(d, r) for d in b.static_ints(dims)]
    return simple(b, n, "Transpose", x, perm=perm)


@on_function(torch.transpose, torch.swapaxes, torch.swapdims)
@on_method("transpose", "swapaxes", "swapdims")
def _transpose(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    r = _rank(x)
    d0, d1 = _axis(b.static_int(b.arg(n, 1, "dim0")), r), _axis(b.static_int(b.arg(n, 2, "dim1")), r)
    perm = list(range(r))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return simple(b, n, "Transpose", x, perm=perm)


@on_function(torch.t)
@on_method("t")
def _t(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    r = _rank(x)
    return simple(b, n, "Transpose", x, perm=list(range(r))[::-1])


@on_function(torch.squeeze)
@on_method("squeeze")
def _squeeze(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    dims, _ = b.varargs(n, 1, "dim")
    r = _rank(x)
    xs = _shape(x)
    axes = [_axis(d, r) for d in b.static_ints(dims)] if dims else [a for a in range(r) if xs[a] == 1]
    axes = [a for a in axes if xs[a] == 1]
    if not axes:
        return simple(b, n, "Identity", x)
    return simple(b, n, "Squeeze", x, axes=axes)


@on_function(torch.unsqueeze)
@on_method("unsqueeze")
def _unsqueeze(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    d = b.static_int(b.arg(n, 1, "dim"))
    return simple(b, n, "Unsqueeze", x, axes=[_axis(d, _rank(x) + 1)])


@on_method("expand")
def _expand(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    elems, paths = b.varargs(n, 1, "size")
    y = b.out(n)
    if len(elems) != _rank(y):
        raise Unsupported("expand size")
    s, sites = b.shape_operand(n, elems, paths, y)
    b.operand(b.emit(n, "Expand", [x, s], [y]), 1, sites)
    return y


@on_method("expand_as")
def _expand_as(b: Builder, n: fx.Node) -> Value:
    x, other = _x(b, n), b.arg(n, 1, "other")
    if not isinstance(other, Value):
        raise Unsupported("expand_as a non-tensor")
    y = b.out(n)
    b.emit(n, "Expand", [x, emit_shape(b, n, other)], [y])
    return y


@on_method("repeat")
def _repeat(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    elems, _ = b.varargs(n, 1, "repeats")
    reps = b.static_ints(elems)
    if len(reps) != _rank(x):
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
    b.emit(n, "Concat", list(xs), [y], axis=_axis(dim, _rank(y)))
    return y


@on_function(torch.stack)
def _stack(b: Builder, n: fx.Node) -> Value:
    xs = b.arg(n, 0, "tensors")
    if not isinstance(xs, list | tuple) or not all(isinstance(v, Value) for v in xs):
        raise Unsupported("stack of non-tensors")
    y = b.out(n)
    d = _axis(b.static_int(b.arg(n, 1, "dim", 0)), _rank(y))
    parts = []
    for i, v in enumerate(xs):
        s = list(_shape(v))
        s.insert(d, 1)
        u = b.tmp(n, f"u{i}", tuple(s), v.dtype)
        b.emit(n, "Unsqueeze", [v], [u], axes=[d])
        parts.append(u)
    b.emit(n, "Concat", parts, [y], axis=d)
    return y


def emit_split(b: Builder, n: fx.Node, x: Value, axis: int, kind: str, size_arg: tuple | None) -> Any:
    res = b.make(n.name, b.meta.get(n))
    if not isinstance(res, tuple | list) or not all(isinstance(v, Value) for v in res):
        raise Unsupported("split result")
    r = _rank(x)
    a = _axis(axis, r)
    sizes = [int(v.shape[a]) for v in res]  # type: ignore[index]
    if sum(sizes) != _shape(x)[a]:
        raise Unsupported("split sizes")
    node = b.emit(n, "Split", [x, b.const(n, sizes, "sizes", np.int64)], list(res), axis=a)
    b.tm.splits[node.name] = {"fx": n.name, "axis": a, "kind": kind, "size_path": size_arg}
    return res


@on_function(torch.split)
@on_method("split")
def _split(b: Builder, n: fx.Node) -> Any:
    x = _x(b, n, 0, "tensor")
    dim = b.static_int(b.arg(n, 2, "dim", 0))
    name = "split_size_or_sections" if n.op == "call_function" else "split_size"
    return emit_split(b, n, x, dim, "split", b.path(n, 1, name))


@on_function(torch.chunk)
@on_method("chunk")
def _chunk(b: Builder, n: fx.Node) -> Any:
    x = _x(b, n)
    dim = b.static_int(b.arg(n, 2, "dim", 0))
    return emit_split(b, n, x, dim, "chunk", b.path(n, 1, "chunks"))


@on_function(torch.unbind)
@on_method("unbind")
def _unbind(b: Builder, n: fx.Node) -> Any:
    x = _x(b, n)
    r = _rank(x)
    a = _axis(b.static_int(b.arg(n, 1, "dim", 0)), r)
    res = b.make(n.name, b.meta.get(n))
    if not isinstance(res, tuple | list):
        raise Unsupported("unbind result")
    s = list(_shape(x))
    s[a] = 1
    parts = [b.tmp(n, f"part{i}", tuple(s), x.dtype) for i in range(len(res))]
    b.emit(n, "Split", [x, b.const(n, [1] * len(res), "sizes", np.int64)], parts, axis=a)
    for p, v in zip(parts, res):
        b.emit(n, "Squeeze", [p], [v], axes=[a])
    return res


# -- indexing ---------------------------------------------------------------------------------------------
@on_function(operator.getitem)
def _getitem(b: Builder, n: fx.Node) -> Any:
    base = b.arg(n, 0)
    idx = b.arg(n, 1)
    if isinstance(base, list | tuple):
        if isinstance(idx, int | slice):
            return base[idx]
        raise Unsupported("index into a sequence")
    if not isinstance(base, Value):
        raise Unsupported("index into a non-tensor")
    if base.dtype == "int64" and base.rank == 1 and base.name in b.dims:
        return _index_shape(b, n, base, idx)
    return _index_tensor(b, n, base, n.args[1], idx)


def _index_shape(b: Builder, n: fx.Node, s: Value, idx: Any) -> Value:
    if isinstance(idx, int):
        return emit_pick(b, n, s, idx, b.out(n))
    if isinstance(idx, slice) and all(isinstance(v, int | None) for v in (idx.start, idx.stop, idx.step)):
        k = int(s.shape[0])  # type: ignore[index]
        picks = list(range(k))[idx]
        y = b.out(n)
        b.emit(n, "Gather", [s, b.const(n, picks, "idx", np.int64)], [y], axis=0)
        src = b.dims.get(s.name)
        b.dims[y.name] = [src[i] if src else None for i in picks]
        return y
    raise Unsupported("index into a shape")


def _index_tensor(b: Builder, n: fx.Node, x: Value, raw_idx: Any, idx: Any) -> Value:
    items = list(idx) if isinstance(idx, tuple) else [idx]
    raw_items = list(raw_idx) if isinstance(raw_idx, tuple) else [raw_idx]
    real = sum(1 for it in items if it is not None and it is not Ellipsis)
    r = _rank(x)
    if real > r or sum(1 for it in items if it is Ellipsis) > 1:
        raise Unsupported("too many indices")
    expanded: list[tuple[Any, tuple | None]] = []
    for k, it in enumerate(items):
        if it is Ellipsis:
            expanded.extend((slice(None), None) for _ in range(r - real))
        else:
            expanded.append((it, ("args", 1, k) if isinstance(raw_idx, tuple) else ("args", 1)))
    expanded.extend((slice(None), None) for _ in range(r - sum(1 for it, _ in expanded if it is not None)))
    del raw_items
    cur = x
    shape = list(_shape(x))
    axis = 0
    gathers: list[tuple[int, Any]] = []
    unsq: list[int] = []
    out_pos = 0
    for it, path in expanded:
        if it is None:
            unsq.append(out_pos)
            out_pos += 1
            continue
        if isinstance(it, slice):
            if not (it.start is None and it.stop is None and it.step is None):
                cur = _emit_slice(b, n, cur, shape, axis, it, path)
            axis += 1
            out_pos += 1
            continue
        if isinstance(it, int) or (
            isinstance(it, Value) and it.rank == 0 and (it.dtype or "").startswith("int")
        ):
            gathers.append((axis, it))
            axis += 1
            continue
        raise Unsupported("advanced indexing")
    final = b.out(n)
    steps: list[tuple[str, dict, Any]] = []
    for a, it in reversed(gathers):
        steps.append(("Gather", {"axis": a}, it))
    if unsq:
        steps.append(("Unsqueeze", {"axes": unsq}, None))
    if not steps and cur is x:
        b.emit(n, "Identity", [x], [final])
        return final
    if not steps:
        _retarget(b, cur, final)
        return final
    for k, (op, attrs, it) in enumerate(steps):
        last = k == len(steps) - 1
        if op == "Gather":
            del shape[attrs["axis"]]
            nxt = final if last else b.tmp(n, "g", tuple(shape), x.dtype)
            ind = it if isinstance(it, Value) else b.const(n, int(it), "index", np.int64)
            b.emit(n, "Gather", [cur, ind], [nxt], **attrs)
        else:
            for p in attrs["axes"]:
                shape.insert(p, 1)
            nxt = final if last else b.tmp(n, "u", tuple(shape), x.dtype)
            b.emit(n, "Unsqueeze", [cur], [nxt], **attrs)
        cur = nxt
    return final


def _retarget(b: Builder, v: Value, final: Value) -> None:
    """Make the last emitted node write ``final`` instead of the temporary ``v``."""
    node = v.producer
    assert node is not None
    node.outputs = [final if o is v else o for o in node.outputs]
    final.producer = node
    del b.graph.values[v.name]


def _emit_slice(
    b: Builder, n: fx.Node, x: Value, shape: list[int], axis: int, sl: slice, path: tuple | None
) -> Value:
    dim = shape[axis]
    start, stop, step = sl.start, sl.stop, sl.step
    if step is not None and not isinstance(step, int):
        raise Unsupported("traced slice step")
    step = 1 if step is None else step
    if step <= 0:
        raise Unsupported("negative slice step")
    vals: list[Value] = []
    sites: list[LitSite | None] = []
    for which, bound, default in (("start", start, 0), ("end", stop, INT64_MAX)):
        site = None
        if bound is None:
            vals.append(b.const(n, [default], which, np.int64))
        elif isinstance(bound, int):
            site = LitSite(n.name, (*path, which), bound) if path is not None else None
            vals.append(b.lit(n, [bound], [site], f"{which}{axis}"))
        elif isinstance(bound, Value) and bound.rank == 0:
            u = b.tmp(n, which, (1,), "int64")
            b.emit(n, "Unsqueeze", [bound], [u], axes=[0])
            vals.append(u)
            b.pin(n, x, [axis], "sliced at a bound computed at run time")
        else:
            raise Unsupported("slice bound")
        sites.append(site)
    lo = start if isinstance(start, int) else (0 if start is None else b.static_int(start))
    hi = stop if isinstance(stop, int) else (INT64_MAX if stop is None else b.static_int(stop))
    size = len(slice_range(lo, hi if hi < INT64_MAX else dim, step, dim))
    shape[axis] = size
    y = b.tmp(n, "slice", tuple(shape), x.dtype)
    node = b.emit(n, "Slice", [x, vals[0], vals[1], b.const(n, [axis], "axes", np.int64),
                               b.const(n, [step], "steps", np.int64)], [y])  # fmt: skip
    b.operand(node, 1, sites[:1])
    b.operand(node, 2, sites[1:])
    return y


@on_function(torch.where)
def _where(b: Builder, n: fx.Node) -> Value:
    cond, a, c = b.arg(n, 0, "condition"), b.arg(n, 1, "input"), b.arg(n, 2, "other")
    if not isinstance(cond, Value):
        raise Unsupported("where condition")
    y = b.out(n)
    va = _as_operand(b, n, a, y, "a")
    vc = _as_operand(b, n, c, y, "b")
    b.emit(n, "Where", [cond, va, vc], [y])
    return y


@on_method("masked_fill", "masked_fill_")
def _masked_fill(b: Builder, n: fx.Node) -> Value:
    x, mask, value = _x(b, n), b.arg(n, 1, "mask"), b.arg(n, 2, "value")
    if not isinstance(mask, Value):
        raise Unsupported("mask")
    y = b.out(n)
    b.emit(n, "Where", [mask, _as_operand(b, n, value, x, "fill"), x], [y])
    return y


def _like(value: float | None):
    def h(b: Builder, n: fx.Node) -> Value:
        x = _x(b, n)
        fill = value if value is not None else b.arg(n, 1, "fill_value")
        if not isinstance(fill, int | float):
            raise Unsupported("fill value")
        y = b.out(n)
        b.emit(n, "ConstantOfShape", [emit_shape(b, n, x)], [y], value=np.array([fill], dtype=np.float32))
        return y

    return h


on_function(torch.zeros_like)(_like(0.0))
on_function(torch.ones_like)(_like(1.0))
on_function(torch.full_like)(_like(None))


@on_function(F.pad)
def _pad(b: Builder, n: fx.Node) -> Value:
    x = _x(b, n)
    pads = b.arg(n, 1, "pad")
    mode = b.arg(n, 2, "mode", "constant")
    value = b.arg(n, 3, "value", None)
    if not isinstance(pads, list | tuple) or not all(isinstance(p, int) for p in pads) or len(pads) % 2:
        raise Unsupported("traced padding")
    r = _rank(x)
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
    mod = _mod(b, n)
    x = _x(b, n)
    pads = list(mod.padding)
    r = _rank(x)
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
    x = _x(b, n)
    return simple(b, n, "Resize", x, mode=str(b.arg(n, 3, "mode", "nearest")))


@on_module(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def _upsample_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Resize", _x(b, n), mode=str(_mod(b, n).mode))


def _space_depth(b: Builder, n: fx.Node, op: str, factor: object) -> Value:
    # torch orders the deep side's channels c * r**2 + i * r + j: ONNX's CRD mode. ONNX's SpaceToDepth
    # only has the (i * r + j) * C + c order, so the IR carries a CRD mode of its own for it (the IR
    # is never exported as it stands).
    if not isinstance(factor, int):
        raise Unsupported(f"{op} with a traced block size")
    return simple(b, n, op, _x(b, n), blocksize=factor, mode="CRD")


@on_module(nn.PixelShuffle)
def _pixel_shuffle(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "DepthToSpace", int(_mod(b, n).upscale_factor))


@on_module(nn.PixelUnshuffle)
def _pixel_unshuffle(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "SpaceToDepth", int(_mod(b, n).downscale_factor))


@on_function(F.pixel_shuffle, torch.pixel_shuffle)
def _pixel_shuffle_fn(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "DepthToSpace", b.arg(n, 1, "upscale_factor"))


@on_function(F.pixel_unshuffle, torch.pixel_unshuffle)
def _pixel_unshuffle_fn(b: Builder, n: fx.Node) -> Value:
    return _space_depth(b, n, "SpaceToDepth", b.arg(n, 1, "downscale_factor"))


@on_module(nn.GLU)
def _glu_mod(b: Builder, n: fx.Node) -> Value:
    return _glu(b, n, _x(b, n), _mod(b, n).dim)


@on_function(F.glu)
def _glu_fn(b: Builder, n: fx.Node) -> Value:
    return _glu(b, n, _x(b, n), b.static_int(b.arg(n, 1, "dim", -1)))


def _glu(b: Builder, n: fx.Node, x: Value, dim: int) -> Value:
    """a · σ(b) over the two halves of ``dim``: the halves are two channel spaces, paired by position."""
    r = _rank(x)
    a = _axis(dim, r)
    s = list(_shape(x))
    if s[a] % 2:
        raise Unsupported("GLU of an odd axis")
    s[a] //= 2
    first, second = b.tmp(n, "a", tuple(s), x.dtype), b.tmp(n, "b", tuple(s), x.dtype)
    b.emit(n, "Split", [x, b.const(n, [s[a], s[a]], "sizes", np.int64)], [first, second], axis=a)
    gate = b.tmp(n, "gate", tuple(s), x.dtype)
    b.emit(n, "Sigmoid", [second], [gate])
    y = b.out(n)
    b.emit(n, "Mul", [first, gate], [y])
    return y


# -- attention ------------------------------------------------------------------------------------------
def emit_sdpa(
    b: Builder,
    n: fx.Node,
    q: Value,
    k: Value,
    v: Value,
    mask: Value | None,
    is_causal: bool,
    scale: float | None,
    y: Value,
    probs: Value | None = None,
) -> Value:
    """softmax(q·kᵀ·scale + mask)·v as MatMul, Mul, Softmax, MatMul; the scale is a constant."""
    qs, ks, vs = _shape(q), _shape(k), _shape(v)
    if len(qs) < 2 or len(ks) != len(qs) or len(vs) != len(qs):
        raise Unsupported("attention ranks")
    r = len(qs)
    e = qs[-1]
    big = tuple(max(a, c) for a, c in zip(qs[:-2], ks[:-2]))
    kt = b.tmp(n, "k_t", (*ks[:-2], ks[-1], ks[-2]), k.dtype)
    b.emit(n, "Transpose", [k], [kt], perm=[*range(r - 2), r - 1, r - 2])
    sshape = (*big, qs[-2], ks[-2])
    scores = b.tmp(n, "scores", sshape, q.dtype)
    b.emit(n, "MatMul", [q, kt], [scores])
    scaled = b.tmp(n, "scaled", sshape, q.dtype)
    sc = scale if scale is not None else 1.0 / math.sqrt(e)
    b.emit(n, "Mul", [scores, b.const(n, sc, "scale", np.float32)], [scaled])
    cur = scaled
    if is_causal:
        causal = np.triu(np.full((qs[-2], ks[-2]), -np.inf, dtype=np.float32), 1)
        masked = b.tmp(n, "causal", sshape, q.dtype)
        b.emit(n, "Add", [cur, b.const(n, causal, "causal_mask")], [masked])
        cur = masked
    if mask is not None:
        masked = b.tmp(n, "masked", sshape, q.dtype)
        if mask.dtype == "bool":
            b.emit(n, "Where", [mask, cur, b.const(n, -np.inf, "neg_inf", np.float32)], [masked])
        else:
            b.emit(n, "Add", [cur, mask], [masked])
        cur = masked
    p = probs or b.tmp(n, "probs", sshape, q.dtype)
    b.emit(n, "Softmax", [cur], [p], axis=r - 1)
    b.emit(n, "MatMul", [p, v], [y])
    if scale is None:
        b.fixup("sdpa_scale", n, q=q.name, axis=r - 1, head_dim=e)
    return y


@on_function(F.scaled_dot_product_attention)
def _sdpa_fn(b: Builder, n: fx.Node) -> Value:
    q, k, v = b.arg(n, 0, "query"), b.arg(n, 1, "key"), b.arg(n, 2, "value")
    mask = b.arg(n, 3, "attn_mask", None)
    if b.arg(n, 4, "dropout_p", 0.0) not in (0, 0.0):
        raise Unsupported("attention dropout")
    if b.arg(n, 7, "enable_gqa", False):
        raise Unsupported("grouped-query attention")
    if not all(isinstance(t, Value) for t in (q, k, v)) or (mask is not None and not isinstance(mask, Value)):
        raise Unsupported("attention operands")
    scale = b.arg(n, 6, "scale", None)
    if scale is not None and not isinstance(scale, float | int):
        raise Unsupported("traced scale")
    return emit_sdpa(b, n, q, k, v, mask, bool(b.arg(n, 5, "is_causal", False)), scale, b.out(n))


@on_module(nn.MultiheadAttention)
def _mha(b: Builder, n: fx.Node) -> Any:
    """nn.MultiheadAttention as projections, head reshapes and SDPA so that heads become channels."""
    mod = _mod(b, n)
    q, k, v = b.arg(n, 0, "query"), b.arg(n, 1, "key"), b.arg(n, 2, "value")
    kpm = b.arg(n, 3, "key_padding_mask", None)
    need_weights = b.arg(n, 4, "need_weights", True)
    mask = b.arg(n, 5, "attn_mask", None)
    average = b.arg(n, 6, "average_attn_weights", True)
    causal = b.arg(n, 7, "is_causal", False)
    if not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn or kpm is not None:
        raise Unsupported("MultiheadAttention variant")
    if causal or (mask is not None and (not isinstance(mask, Value) or mask.rank != 2)):
        raise Unsupported("MultiheadAttention mask")
    if not all(isinstance(t, Value) and t.rank == 3 for t in (q, k, v)):
        raise Unsupported("unbatched MultiheadAttention")
    res = b.make(n.name, b.meta.get(n))
    if not isinstance(res, tuple) or not isinstance(res[0], Value):
        raise Unsupported("MultiheadAttention result")
    h, e = mod.num_heads, mod.embed_dim
    d = e // h
    bf = bool(mod.batch_first)
    w = b.module_param(n, mod, "in_proj_weight")
    bias = b.module_param(n, mod, "in_proj_bias")
    ow = b.tensor_value(f"{n.target}.out_proj.weight", mod.out_proj.weight)
    ob = (
        b.tensor_value(f"{n.target}.out_proj.bias", mod.out_proj.bias)
        if mod.out_proj.bias is not None
        else None
    )
    assert w is not None

    def proj(x: Value, wv: Value, bv: Value | None, tag: str) -> Value:
        xs = _shape(x)
        yv = b.tmp(n, tag, (*xs[:-1], int(wv.shape[0])), x.dtype)  # type: ignore[index]
        return emit_linear(b, n, x, wv, bv, yv)

    if q is k and k is v:
        qkv = proj(q, w, bias, "qkv")
        s = _shape(qkv)
        parts = [b.tmp(n, t, (*s[:-1], e), q.dtype) for t in ("q", "k", "v")]
        b.emit(n, "Split", [qkv, b.const(n, [e, e, e], "qkv_sizes", np.int64)], parts, axis=2)
    else:
        ws = [b.tmp(n, f"w{t}", (e, e), w.dtype) for t in "qkv"]
        b.emit(n, "Split", [w, b.const(n, [e, e, e], "w_sizes", np.int64)], ws, axis=0)
        bs: list[Value | None] = [None, None, None]
        if bias is not None:
            bs = [b.tmp(n, f"b{t}", (e,), bias.dtype) for t in "qkv"]
            b.emit(n, "Split", [bias, b.const(n, [e, e, e], "b_sizes", np.int64)], bs, axis=0)
        parts = [proj(x, wv, bv, t) for x, wv, bv, t in zip((q, k, v), ws, bs, "qkv")]
    heads = []
    for t, p in zip("qkv", parts):
        s = _shape(p)
        split = b.tmp(n, f"{t}_split", (*s[:-1], h, d), p.dtype)
        b.emit(n, "Reshape", [p, b.const(n, [*s[:-1], h, d], f"{t}_shape", np.int64)], [split])
        # [B, L, H, D] (batch_first) or [L, B, H, D] -> [B, H, L, D]
        perm = [0, 2, 1, 3] if bf else [1, 2, 0, 3]
        ss = _shape(split)
        hs = b.tmp(n, f"{t}_heads", tuple(ss[i] for i in perm), p.dtype)
        b.emit(n, "Transpose", [split], [hs], perm=perm)
        heads.append(hs)
    qh, kh, vh = heads
    qs, ks = _shape(qh), _shape(kh)
    att = b.tmp(n, "att", (qs[0], h, qs[2], d), q.dtype)
    probs = b.tmp(n, "probs", (qs[0], h, qs[2], ks[2]), q.dtype)
    emit_sdpa(b, n, qh, kh, vh, mask, False, 1.0 / math.sqrt(d), att, probs)
    perm = [0, 2, 1, 3] if bf else [2, 0, 1, 3]
    back = b.tmp(n, "att_t", tuple(_shape(att)[i] for i in perm), q.dtype)
    b.emit(n, "Transpose", [att], [back], perm=perm)
    bs_ = _shape(back)
    merged = b.tmp(n, "merged", (*bs_[:2], h * d), q.dtype)
    b.emit(n, "Reshape", [back, b.const(n, [*bs_[:2], h * d], "merge_shape", np.int64)], [merged])
    emit_linear(b, n, merged, ow, ob, res[0])
    if need_weights and len(res) > 1 and isinstance(res[1], Value):
        if average:
            b.emit(n, "ReduceMean", [probs], [res[1]], axes=[1], keepdims=0)
        else:
            b.emit(n, "Identity", [probs], [res[1]])
    b.fixup("mha", n, heads=qh.name, head_axis=1, num_heads=h, head_dim=d)
    return res
