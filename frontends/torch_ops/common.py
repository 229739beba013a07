"""What every handler family shares: reading a tensor operand, axes, static shapes, one-node results."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch.fx as fx
from torch import nn

from frontends.torch_lower import Builder, Unsupported
from graphcore.ir import Value

__all__ = ["as_operand", "clip", "module_of", "norm_axis", "rank", "shape_of", "simple", "tensor_input"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def module_of(b: Builder, n: fx.Node, cls: type[ModuleT]) -> ModuleT:
    """The leaf module a ``call_module`` node calls, as the class its handler was registered for."""
    mod = b.submodule(str(n.target))
    if not isinstance(mod, cls):
        raise Unsupported(f"{type(mod).__name__} is not a {cls.__name__}")
    return mod


def tensor_input(b: Builder, n: fx.Node, i: int = 0, name: str = "input") -> Value:
    x = b.arg(n, i, name)
    if not isinstance(x, Value) or x.shape is None:
        raise Unsupported("input is not a tensor")
    return x


def rank(v: Value) -> int:
    assert v.shape is not None
    return len(v.shape)


def norm_axis(a: int, r: int) -> int:
    """``a`` counted from the front; negative axes count from the back, as in torch."""
    if not -r <= a < max(r, 1):
        raise Unsupported("axis out of range")
    return a + r if a < 0 else a


def shape_of(v: Value) -> tuple[int, ...]:
    s = v.static_shape
    if s is None:
        raise Unsupported("shape is not static")
    return s


def simple(b: Builder, n: fx.Node, op: str, x: Value, **attrs: Any) -> Value:
    """One IR node from ``x`` to the FX node's result."""
    y = b.out(n)
    b.emit(n, op, [x], [y], **attrs)
    return y


def clip(b: Builder, n: fx.Node, x: Value, lo: float | None, hi: float | None) -> Value:
    """``Clip`` of ``x`` to the FX node's result, with its bounds as operands (ONNX since opset 11).

    Rules read operands only. A bound has ``x``'s dtype, as ONNX requires; a missing one is a missing
    operand.
    """
    y = b.out(n)
    inputs: list[Value | None] = [x]
    for k, (bound, tag) in enumerate(((lo, "min"), (hi, "max")), start=1):
        if bound is not None:
            inputs.extend([None] * (k - len(inputs)))
            inputs.append(b.const(n, bound, tag, _dtype_of(x)))
    b.emit(n, "Clip", inputs, [y])
    return y


def _dtype_of(x: Value) -> np.dtype:
    try:
        return np.dtype(x.dtype or "float32")
    except TypeError:  # a dtype numpy cannot hold (bfloat16): the bound's value is what a rule reads
        return np.dtype(np.float32)


def as_operand(b: Builder, n: fx.Node, x: Any, other: Any, tag: str) -> Value:
    """``x`` as a Value: a Python scalar becomes a constant with ``other``'s dtype family."""
    if isinstance(x, Value):
        return x
    like = other if isinstance(other, Value) else None
    return b.as_value(n, x, like=like, tag=tag)
