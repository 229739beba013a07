"""Elementwise handlers: activations, identities and casts, arithmetic and comparisons, Where, PReLU, GLU.

Each maps onto the ONNX elementwise op of the same meaning, so the op table's zero-preservation and
broadcasting facts apply unchanged.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from frontends.torch_lower import Builder, Handler, Unsupported, on_function, on_method, on_module
from frontends.torch_ops.common import (
    as_operand,
    clip,
    module_of,
    norm_axis,
    rank,
    shape_of,
    simple,
    tensor_input,
)
from graphcore.ir import Value

__all__ = ["binary", "emit_silu", "to_dtype"]


# -- activations and identities -----------------------------------------------------------------
_UNARY_MODULES: dict[type, str] = {
    nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.Hardswish: "HardSwish",
    nn.Mish: "Mish", nn.Softsign: "Softsign", nn.SELU: "Selu", nn.Identity: "Identity",
    nn.Dropout: "Identity", nn.Dropout1d: "Identity", nn.Dropout2d: "Identity", nn.Dropout3d: "Identity",
    nn.AlphaDropout: "Identity", nn.FeatureAlphaDropout: "Identity", nn.Softplus: "Softplus",
}  # fmt: skip


def _module_unary(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.Module)
    x = tensor_input(b, n)
    op = next(v for k, v in _UNARY_MODULES.items() if isinstance(mod, k))
    if op == "Softplus" and (getattr(mod, "beta", 1) != 1):
        raise Unsupported("Softplus with beta")
    return simple(b, n, op, x)


on_module(*_UNARY_MODULES)(_module_unary)


@on_module(nn.GELU)
def _gelu_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Gelu", tensor_input(b, n), approximate=module_of(b, n, nn.GELU).approximate)


@on_module(nn.LeakyReLU)
def _leaky_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.LeakyReLU)
    return simple(b, n, "LeakyRelu", tensor_input(b, n), alpha=float(mod.negative_slope))


@on_module(nn.ELU)
def _elu_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Elu", tensor_input(b, n), alpha=float(module_of(b, n, nn.ELU).alpha))


@on_module(nn.CELU)
def _celu_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Celu", tensor_input(b, n), alpha=float(module_of(b, n, nn.CELU).alpha))


@on_module(nn.Hardsigmoid)
def _hsig_mod(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "HardSigmoid", tensor_input(b, n), alpha=1.0 / 6, beta=0.5)


@on_module(nn.Hardtanh)  # ReLU6 is a Hardtanh
def _hardtanh_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.Hardtanh)
    return clip(b, n, tensor_input(b, n), float(mod.min_val), float(mod.max_val))


def emit_silu(b: Builder, n: fx.Node, x: Value) -> Value:
    """SiLU as ONNX spells it: Sigmoid then Mul (x · σ(x) is zero where x is)."""
    y = b.out(n)
    s = b.tmp(n, "sigmoid", shape_of(x), x.dtype)
    b.emit(n, "Sigmoid", [x], [s])
    b.emit(n, "Mul", [x, s], [y])
    return y


@on_module(nn.SiLU)
def _silu_mod(b: Builder, n: fx.Node) -> Value:
    return emit_silu(b, n, tensor_input(b, n))


@on_function(F.silu)
@on_method("silu")
def _silu_fn(b: Builder, n: fx.Node) -> Value:
    return emit_silu(b, n, tensor_input(b, n))


def _unary_fn(op: str, **attrs: Any) -> Handler:
    def h(b: Builder, n: fx.Node) -> Value:
        return simple(b, n, op, tensor_input(b, n), **attrs)

    return h


_UNARY_FUNCTIONS: list[tuple[str, list[Any], list[str]]] = [
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
]  # fmt: skip
for _op, _targets, _methods in _UNARY_FUNCTIONS:
    _h = _unary_fn(_op)
    on_function(*_targets)(_h)
    on_method(*_methods)(_h)


@on_function(torch.rsqrt)
@on_method("rsqrt")
def _rsqrt(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
    root = b.tmp(n, "sqrt", shape_of(x), x.dtype)
    b.emit(n, "Sqrt", [x], [root])
    return simple(b, n, "Reciprocal", root)


@on_function(F.gelu)
@on_method("gelu")
def _gelu_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Gelu", tensor_input(b, n), approximate=b.arg(n, 1, "approximate", "none"))


@on_function(F.leaky_relu)
def _leaky_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "LeakyRelu", tensor_input(b, n), alpha=float(b.arg(n, 1, "negative_slope", 0.01)))


@on_function(F.elu)
def _elu_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "Elu", tensor_input(b, n), alpha=float(b.arg(n, 1, "alpha", 1.0)))


@on_function(F.hardsigmoid)
def _hsig_fn(b: Builder, n: fx.Node) -> Value:
    return simple(b, n, "HardSigmoid", tensor_input(b, n), alpha=1.0 / 6, beta=0.5)


@on_function(F.softplus)
def _softplus_fn(b: Builder, n: fx.Node) -> Value:
    if b.arg(n, 1, "beta", 1) != 1:
        raise Unsupported("Softplus with beta")
    return simple(b, n, "Softplus", tensor_input(b, n))


@on_function(F.relu6)
def _relu6_fn(b: Builder, n: fx.Node) -> Value:
    return clip(b, n, tensor_input(b, n), 0.0, 6.0)


@on_function(F.hardtanh)
def _hardtanh_fn(b: Builder, n: fx.Node) -> Value:
    lo, hi = b.arg(n, 1, "min_val", -1.0), b.arg(n, 2, "max_val", 1.0)
    return clip(b, n, tensor_input(b, n), float(lo), float(hi))


@on_function(torch.clamp, torch.clip)
@on_method("clamp", "clip", "clamp_")
def _clamp(b: Builder, n: fx.Node) -> Value:
    lo, hi = b.arg(n, 1, "min", None), b.arg(n, 2, "max", None)
    if isinstance(lo, Value) or isinstance(hi, Value):
        raise Unsupported("clamp with tensor bounds")
    x = tensor_input(b, n)
    return clip(b, n, x, None if lo is None else float(lo), None if hi is None else float(hi))


@on_method("to", "type", "float", "half", "double", "bfloat16", "type_as")
def to_dtype(b: Builder, n: fx.Node) -> Value:
    x = tensor_input(b, n)
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


def binary(op: str, floor: bool = False) -> Handler:
    """The handler of a two-operand op; ``floor`` rounds a float quotient down (``//``)."""

    def h(b: Builder, n: fx.Node) -> Value | int | float:
        a, c = _operands(b, n)
        if not isinstance(a, Value) and not isinstance(c, Value):
            m = b.meta.get(n)  # arithmetic on literals the tracer kept (x.dim() == 4): its value
            if isinstance(m, bool | int | float):
                return m
            raise Unsupported("no tensor operand")
        alpha = n.kwargs.get("alpha", 1) if op in ("Add", "Sub") else 1
        rounding = n.kwargs.get("rounding_mode") if op == "Div" else None
        va = as_operand(b, n, a, c, "a")
        vc = as_operand(b, n, c, a, "b")
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


on_function(operator.add, operator.iadd, torch.add)(binary("Add"))
on_method("add", "add_", "__add__", "__radd__")(binary("Add"))
on_function(operator.sub, operator.isub, torch.sub, torch.subtract)(binary("Sub"))
on_method("sub", "sub_", "__sub__")(binary("Sub"))
on_function(operator.mul, operator.imul, torch.mul, torch.multiply)(binary("Mul"))
on_method("mul", "mul_", "__mul__", "__rmul__")(binary("Mul"))
on_function(operator.truediv, operator.itruediv, torch.div, torch.true_divide, torch.divide)(binary("Div"))
on_method("div", "div_", "__truediv__")(binary("Div"))
on_function(operator.floordiv, torch.floor_divide)(binary("Div", floor=True))
on_method("__floordiv__")(binary("Div", floor=True))
on_function(operator.pow, torch.pow)(binary("Pow"))
on_method("pow", "__pow__")(binary("Pow"))
on_function(operator.mod, torch.remainder)(binary("Mod"))
on_function(torch.maximum)(binary("Max"))
on_function(torch.minimum)(binary("Min"))
on_function(operator.eq, torch.eq)(binary("Equal"))
on_function(operator.lt, torch.lt)(binary("Less"))
on_function(operator.le, torch.le)(binary("LessOrEqual"))
on_function(operator.gt, torch.gt)(binary("Greater"))
on_function(operator.ge, torch.ge)(binary("GreaterOrEqual"))
on_method("eq")(binary("Equal"))


@on_function(operator.ne, torch.ne)
@on_method("ne")
def _ne(b: Builder, n: fx.Node) -> Value:
    a, c = _operands(b, n)
    va = as_operand(b, n, a, c, "a")
    vc = as_operand(b, n, c, a, "b")
    y = b.out(n)
    e = b.tmp(n, "eq", y.shape or (), "bool")
    b.emit(n, "Equal", [va, vc], [e])
    b.emit(n, "Not", [e], [y])
    return y


@on_function(torch._assert, "torch._assert", "torch.fx._symbolic_trace._assert_is_none")
def _assert(b: Builder, n: fx.Node) -> None:
    return None


@on_module(nn.PReLU)
def _prelu_mod(b: Builder, n: fx.Node) -> Value:
    mod = module_of(b, n, nn.PReLU)
    x = tensor_input(b, n)
    w = b.module_param(n, mod, "weight")
    assert w is not None
    y = b.out(n)
    r = rank(x)
    if mod.num_parameters == 1 or r < 2:
        b.emit(n, "PRelu", [x, w], [y])
        return y
    slope = b.tmp(n, "slope", (mod.num_parameters, *([1] * (r - 2))), w.dtype)
    b.emit(n, "Unsqueeze", [w, b.axes(n, range(1, r - 1))], [slope])
    b.emit(n, "PRelu", [x, slope], [y])
    return y


@on_function(torch.where)
def _where(b: Builder, n: fx.Node) -> Value:
    cond, a, c = b.arg(n, 0, "condition"), b.arg(n, 1, "input"), b.arg(n, 2, "other")
    if not isinstance(cond, Value):
        raise Unsupported("where condition")
    y = b.out(n)
    va = as_operand(b, n, a, y, "a")
    vc = as_operand(b, n, c, y, "b")
    b.emit(n, "Where", [cond, va, vc], [y])
    return y


@on_method("masked_fill", "masked_fill_")
def _masked_fill(b: Builder, n: fx.Node) -> Value:
    x, mask, value = tensor_input(b, n), b.arg(n, 1, "mask"), b.arg(n, 2, "value")
    if not isinstance(mask, Value):
        raise Unsupported("mask")
    y = b.out(n)
    b.emit(n, "Where", [mask, as_operand(b, n, value, x, "fill"), x], [y])
    return y


@on_module(nn.GLU)
def _glu_mod(b: Builder, n: fx.Node) -> Value:
    return _glu(b, n, tensor_input(b, n), module_of(b, n, nn.GLU).dim)


@on_function(F.glu)
def _glu_fn(b: Builder, n: fx.Node) -> Value:
    return _glu(b, n, tensor_input(b, n), b.static_int(b.arg(n, 1, "dim", -1)))


def _glu(b: Builder, n: fx.Node, x: Value, dim: int) -> Value:
    """a · σ(b) over the two halves of ``dim``: the halves are two channel spaces, paired by position."""
    r = rank(x)
    a = norm_axis(dim, r)
    s = list(shape_of(x))
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
