"""Elementwise operators: activations (with their f(0) = 0 flag) and broadcasting arithmetic."""

from __future__ import annotations

from graphcore.channels import ChannelGraph
from graphcore.ir import Node
from graphcore.ops.common import broadcast, identity
from graphcore.ops.registry import register_op

# op -> f(0) == 0 ?  Ops with f(0) != 0 are still exact to prune (consumers drop the channel with its
# zeroed weights); they only stop a channel from being zero where a reduction needs it to be.
UNARY = {
    "Relu": True, "LeakyRelu": True, "Elu": True, "Selu": True, "Celu": True, "Gelu": True,
    "Tanh": True, "Sigmoid": False, "HardSigmoid": False, "HardSwish": True, "Softplus": False,
    "Softsign": True, "Mish": True, "ThresholdedRelu": True, "Shrink": True, "Abs": True, "Neg": True,
    "Sqrt": True, "Exp": False, "Log": False, "Erf": True, "Sin": True, "Cos": False, "Tan": True,
    "Asin": True, "Acos": False, "Atan": True, "Sinh": True, "Cosh": False, "Asinh": True,
    "Acosh": False, "Atanh": True, "Sign": True, "Floor": True, "Ceil": True, "Round": True,
    "Reciprocal": False, "Identity": True, "Cast": True, "CastLike": True, "Dropout": True,
    "Not": False, "IsNaN": False, "IsInf": False, "BitwiseNot": False,
}  # fmt: skip


# f(0) is infinite or undefined: a zeroed channel would turn into inf/NaN, and inf × 0 = NaN poisons
# every consumer, so such channels are never removable.
BLOWS_UP_AT_ZERO = {"Log", "Reciprocal", "Acosh", "Atanh"}


def _pin_where_zero(ctx: ChannelGraph, v, node: Node, what: str) -> None:
    for a in range(len(v.shape) if v is not None and v.shape is not None else 0):
        if ctx.slot(v, a) is not None and ctx.zero(v, a).any():
            ctx.pin(v, a, f"{node.op} of a zeroed channel is {what}")


def _unary(zero_preserving: bool):
    def relate(ctx: ChannelGraph, node: Node) -> None:
        x = node.input(0)
        if node.op in BLOWS_UP_AT_ZERO:
            _pin_where_zero(ctx, x, node, "infinite")
        identity(ctx, x, node.outputs[0], zero_preserving)
        for extra in node.outputs[1:]:  # Dropout's mask
            identity(ctx, x, extra, False)
        for i in range(1, len(node.inputs)):  # Dropout ratio, CastLike's type-only operand
            ctx.handled(i)
            v = node.input(i)
            for a in range((v.rank or 0) if v is not None else 0):
                ctx.touch(v, a)

    return relate


def _clip(ctx: ChannelGraph, node: Node) -> None:
    lo = node.input(1)
    hi = node.input(2)
    lo_v = lo.const if lo is not None else node.attr("min")
    hi_v = hi.const if hi is not None else node.attr("max")
    zp = (lo_v is None or float(lo_v) <= 0.0) and (hi_v is None or float(hi_v) >= 0.0)
    ctx.handled(1)
    ctx.handled(2)
    identity(ctx, node.input(0), node.outputs[0], zp)


def _binary(mode: str):
    def relate(ctx: ChannelGraph, node: Node) -> None:
        out = node.outputs[0]
        if node.op in ("Div", "Mod") and len(node.inputs) > 1:
            _pin_where_zero(ctx, node.input(1), node, "a division by zero")
        broadcast(ctx, node.inputs, out, mode)

    return relate


def _pow(ctx: ChannelGraph, node: Node) -> None:
    e = node.input(1)
    positive = e is not None and e.const is not None and e.const.size == 1 and float(e.const) > 0
    if not positive:
        _pin_where_zero(ctx, node.input(0), node, "infinite for a non-positive exponent")
    broadcast(ctx, node.inputs, node.outputs[0], "first" if positive else "none")


def _binary_kind(node: Node) -> str:
    live = [v for v in node.inputs if v is not None and not (v.is_param or v.const is not None)]
    return "joint" if len(live) >= 2 else "accessory"


for _op, _zp in UNARY.items():
    register_op(_op, _unary(_zp), zero_preserving=_zp)
register_op("Clip", _clip, zero_preserving=None, doc="f(0)=0 when min <= 0 <= max")

for _op, _mode in {
    "Add": "all", "Sub": "all", "Sum": "all", "Max": "all", "Min": "all", "Mean": "all",
    "Mul": "any", "Div": "first", "PRelu": "first", "Mod": "first", "BitShift": "first",
    "Equal": "none", "Less": "none", "LessOrEqual": "none", "Greater": "none", "GreaterOrEqual": "none",
    "And": "all", "Or": "all", "Xor": "all", "BitwiseAnd": "any", "BitwiseOr": "all", "BitwiseXor": "all",
}.items():  # fmt: skip
    register_op(_op, _binary(_mode), kind=_binary_kind, zero_preserving=_mode in ("all", "any", "first"))

register_op("Pow", _pow, kind=_binary_kind, doc="zero-preserving for a positive constant exponent")


def _where(ctx: ChannelGraph, node: Node) -> None:
    cond, a, b = node.input(0), node.input(1), node.input(2)
    out = node.outputs[0]
    broadcast(ctx, [cond, a, b], out, "none")
    # Where(c, a, b) is zero where both a and b are zero.
    if out.shape is None:
        return
    tmp_a = ctx.zero
    for ax in range(len(out.shape)):
        key = ctx.slot(out, ax)
        if key is None:
            continue
        za = _aligned_zero(ctx, a, out, ax, tmp_a)
        zb = _aligned_zero(ctx, b, out, ax, tmp_a)
        ctx.set_zero(out, ax, za & zb)


def _aligned_zero(ctx, v, out, ax, zero):
    import numpy as np

    key = ctx.slot(out, ax)
    n = ctx.size[key]
    if v is None or v.shape is None:
        return np.zeros(n, bool)
    src = ax - (len(out.shape) - len(v.shape))
    if src < 0 or v.shape[src] != out.shape[ax]:
        return np.zeros(n, bool)
    return np.asarray(zero(v, src), dtype=bool)


register_op("Where", _where, kind=_binary_kind)
