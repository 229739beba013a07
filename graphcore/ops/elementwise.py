"""Elementwise operators: activations (with their f(0) fact) and broadcasting arithmetic.

Every op here declares ``at_zero``: what it makes of an all-zero input. The channel rules read it from the
declaration (a zeroed channel stays zero only through an op with f(0) = 0; one that blows up at 0 pins
the channel), and ``tests/test_op_table.py`` checks it against the ONNX reference evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Node, Value
from graphcore.ops.common import (
    all_zero,
    any_zero,
    broadcast,
    data_zero,
    identity,
    is_zero,
    never,
    operand_values,
)
from graphcore.ops.registry import AtZero, ErasedInput, LegacyAttr, ZeroWhen, register_op, rule_for
from graphcore.ops.shape import broadcast_shape, same_shape

# op -> f(0). Ops with f(0) != 0 are still exact to prune (consumers drop the channel with its zeroed
# weights); they only stop a channel from being zero where a reduction needs it to be. Where f(0) is
# infinite or undefined (``blows_up``) a zeroed channel would turn into inf/NaN, and inf × 0 = NaN
# poisons every consumer, so such channels are never removable.
UNARY: dict[str, AtZero] = {
    "Relu": "zero", "LeakyRelu": "zero", "Elu": "zero", "Selu": "zero", "Celu": "zero", "Gelu": "zero",
    "Tanh": "zero", "Sigmoid": "nonzero", "HardSigmoid": "nonzero", "HardSwish": "zero",
    "Softplus": "nonzero", "Softsign": "zero", "Mish": "zero", "ThresholdedRelu": "zero", "Shrink": "zero",
    "Abs": "zero", "Neg": "zero", "Sqrt": "zero", "Exp": "nonzero", "Log": "blows_up", "Erf": "zero",
    "Sin": "zero", "Cos": "nonzero", "Tan": "zero", "Asin": "zero", "Acos": "nonzero", "Atan": "zero",
    "Sinh": "zero", "Cosh": "nonzero", "Asinh": "zero", "Acosh": "blows_up", "Atanh": "zero",
    "Sign": "zero", "Floor": "zero", "Ceil": "zero", "Round": "zero", "Reciprocal": "blows_up",
    "Identity": "zero", "Cast": "zero", "CastLike": "zero", "Dropout": "zero", "Not": "nonzero",
    "IsNaN": "zero", "IsInf": "zero", "BitwiseNot": "nonzero",
}  # fmt: skip


def _f0(node: Node) -> AtZero | None:
    """The f(0) fact this node's own declaration gives."""
    rule = rule_for(node)
    return None if rule is None else rule.at_zero_of(node)


def _pin_where_zero(ctx: ChannelGraph, v: Value | None, node: Node, what: str) -> None:
    for a in range(len(v.shape) if v is not None and v.shape is not None else 0):
        if ctx.slot(v, a) is not None and ctx.zero(v, a).any():
            ctx.pin(v, a, f"{node.op} of a zeroed channel is {what}")


def unary(ctx: ChannelGraph, node: Node) -> None:
    """One input, same shape out; zeros follow the declared f(0)."""
    x = node.input(0)
    f0 = _f0(node)
    if f0 == "blows_up":
        _pin_where_zero(ctx, x, node, "infinite")
    identity(ctx, x, node.outputs[0], f0 == "zero")
    for extra in node.outputs[1:]:  # Dropout's mask
        identity(ctx, x, extra, False)
    for i in range(1, len(node.inputs)):  # Dropout ratio, CastLike's type-only operand
        ctx.handled(i)
        v = node.input(i)
        for a in range((v.rank or 0) if v is not None else 0):
            ctx.touch(v, a)


def _scalar(v: Value | None) -> float | None:
    return None if v is None or v.const is None else float(v.const)


def _clip_at_zero(node: Node) -> AtZero:
    """f(0) = 0 when min <= 0 <= max. A bound not given is open; a bound computed at run time may be
    above zero (or below), so the zero is never assumed through it."""
    if any(v is not None and v.const is None for v in node.inputs[1:3]):
        return "nonzero"
    lo, hi = _scalar(node.input(1)), _scalar(node.input(2))
    inside = (lo is None or lo <= 0.0) and (hi is None or hi >= 0.0)
    return "zero" if inside else "nonzero"


def _clip(ctx: ChannelGraph, node: Node) -> None:
    ctx.handled(1)
    ctx.handled(2)
    identity(ctx, node.input(0), node.outputs[0], _f0(node) == "zero")


def _binary(mode: str) -> Callable[[ChannelGraph, Node], None]:
    """Broadcasting arithmetic; ``mode`` says which zero operands make the output zero (see
    ``broadcast``). An op that blows up at 0 (Div, Mod) pins its divisor's zeroed channels."""

    def relate(ctx: ChannelGraph, node: Node) -> None:
        if _f0(node) == "blows_up" and len(node.inputs) > 1:
            _pin_where_zero(ctx, node.input(1), node, "a division by zero")
        broadcast(ctx, node.inputs, node.outputs[0], mode)

    return relate


def _pow_at_zero(node: Node) -> AtZero:
    """0 ** e is 0 for a positive constant exponent and 1 for e = 0; a negative or unknown exponent
    is treated as blowing up."""
    e = node.input(1)
    if e is None or e.const is None or e.const.size != 1:
        return "blows_up"
    exponent = float(e.const)
    return "zero" if exponent > 0 else "nonzero" if exponent == 0 else "blows_up"


def _pow(ctx: ChannelGraph, node: Node) -> None:
    f0 = _f0(node)
    if f0 == "blows_up":
        _pin_where_zero(ctx, node.input(0), node, "infinite for a non-positive exponent")
    broadcast(ctx, node.inputs, node.outputs[0], "first" if f0 == "zero" else "none")


def _binary_kind(node: Node) -> str:
    live = [v for v in node.inputs if v is not None and not (v.is_param or v.const is not None)]
    return "joint" if len(live) >= 2 else "accessory"


# -- shape arithmetic (see graphcore/fold.py) ------------------------------------------------------------


def _copy(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    if ins and ins[0] is not None:
        ctx.handled(0)
        return list(ins[0])
    return None


def _arith(fn: Callable[[int, int], int]) -> Callable[..., list[Entry] | None]:
    def fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
        if len(ins) < 2:
            return None
        a, b = ins[0], ins[1]
        if a is None or b is None or (len(a) != len(b) and 1 not in (len(a), len(b))):
            return None
        out = []
        for k in range(max(len(a), len(b))):
            ea, eb = a[k if len(a) > 1 else 0], b[k if len(b) > 1 else 0]
            refs = ea.sources() + eb.sources()
            val = None
            if ea.value is not None and eb.value is not None:
                try:
                    val = int(fn(ea.value, eb.value))
                except (ZeroDivisionError, OverflowError):
                    val = None
            if not refs and ea.kind == "lit" and eb.kind == "lit" and val is not None:
                out.append(Entry.lit(val))
            else:
                out.append(Entry("expr", val, refs=refs))
        return out

    return fold


def _truncating_div(a: int, b: int) -> int:
    if not b:
        raise ZeroDivisionError
    return int(a / b)


def _sign_op(fn: Callable[[int], int]) -> Callable[..., list[Entry] | None]:
    def fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
        if not ins or ins[0] is None:
            return None
        return [Entry("expr", None if e.value is None else fn(e.value), refs=e.sources()) for e in ins[0]]

    return fold


def _where_fold(ctx: ChannelGraph, node: Node, ins: list[list[Entry] | None]) -> list[Entry] | None:
    if len(ins) < 3:
        return None
    c, a, b = ins[0], ins[1], ins[2]
    if c is None or a is None or b is None:
        return None
    out = []
    for k in range(max(len(c), len(a), len(b))):
        ec, ea, eb = (e[k if len(e) > 1 else 0] for e in (c, a, b))
        refs = ec.sources() + ea.sources() + eb.sources()
        val = None
        if ec.value is not None:
            pick = ea if ec.value else eb
            val = pick.value
            if not ec.sources() and ec.kind == "lit":
                out.append(pick)
                continue
        out.append(Entry("expr", val, refs=refs))
    return out


# -- literal evaluation (see graphcore/fold.py) ------------------------------------------------------------

_CAST = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
         10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}  # fmt: skip


def _first(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray | None]:
    def literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
        x = xs[0] if xs else None
        return None if x is None else fn(x)

    return literal


def _cast_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    x = xs[0] if xs else None
    to = _CAST.get(int(node.attr("to", 0)))
    return None if x is None or to is None else x.astype(to)


_FOLDS: dict[str, Callable[..., list[Entry] | None]] = {
    "Identity": _copy, "Cast": _copy, "CastLike": _copy,
    "Neg": _sign_op(lambda x: -x), "Abs": _sign_op(abs),
}  # fmt: skip
_LITERALS: dict[str, Callable[..., np.ndarray | None]] = {
    "Identity": _first(lambda x: x), "Cast": _cast_literal,
    "Neg": _first(lambda x: -x), "Abs": _first(np.abs),
}  # fmt: skip

# -- zero_when: a unary op is zero when its data operand is and f(0) = 0; its other operands are settings


def _shrink_zero(node: Node, zero: Sequence[bool]) -> bool:
    """Shrink(0) is 0 - bias when lambd < 0 (0 > lambd): zero only for lambd >= 0 or a zero bias."""
    lambd, bias = float(node.attr("lambd", 0.5)), float(node.attr("bias", 0.0))
    return is_zero(zero, 0) and (lambd >= 0.0 or bias == 0.0)


def _celu_zero(node: Node, zero: Sequence[bool]) -> bool:
    """Celu divides by alpha: alpha = 0 makes Celu(0) = 0 / 0."""
    alpha = float(node.attr("alpha", 1.0))
    return is_zero(zero, 0) and alpha != 0.0 and bool(np.isfinite(alpha))


def _cast_zero(node: Node, zero: Sequence[bool]) -> bool:
    """0 cast to a number or a bool is 0; cast to a string it is the text "0"."""
    to_string = int(node.attr("to", 1)) == 8
    if node.op == "CastLike":
        target = node.input(1)
        to_string = target is not None and (target.dtype or "").startswith(("str", "obj"))
    return is_zero(zero, 0) and not to_string


def _dropout_zero(node: Node, zero: Sequence[bool]) -> bool:
    """Training-mode Dropout scales by 1 / (1 - ratio): a ratio of 1 (outside the spec) gives 0 * inf.
    Inference mode (no or a false training_mode) copies its input."""
    if not is_zero(zero, 0):
        return False
    ratio = operand_values(node, zero, 1)
    if node.input(1) is None or (ratio is not None and bool((ratio < 1.0).all())):
        return True
    training = operand_values(node, zero, 2)
    return node.input(2) is None or (training is not None and not training.any())


_UNARY_ZERO_WHEN: dict[str, ZeroWhen] = {
    "Shrink": _shrink_zero, "Celu": _celu_zero, "Cast": _cast_zero, "CastLike": _cast_zero,
    "Dropout": _dropout_zero,
}  # fmt: skip


def _clip_zero(node: Node, zero: Sequence[bool]) -> bool:
    """Clip(0) = 0 when min <= 0 <= max: a zeroed or absent bound is fine, a constant one is read, a
    computed one may lie on either side of zero."""
    if not is_zero(zero, 0):
        return False
    for i, inside in ((1, lambda b: b <= 0.0), (2, lambda b: b >= 0.0)):
        if node.input(i) is None or is_zero(zero, i):
            continue
        bound = operand_values(node, zero, i)
        if bound is None or not bool(inside(bound.astype(np.float64)).all()):
            return False
    return True


for _op, _zero in UNARY.items():
    register_op(
        _op,
        unary,
        at_zero=_zero,
        shape=same_shape,
        fold=_FOLDS.get(_op),
        literal=_LITERALS.get(_op),
        zero_when=_UNARY_ZERO_WHEN.get(_op, data_zero(0) if _zero == "zero" else never),
    )
register_op(
    "Clip",
    _clip,
    at_zero=_clip_at_zero,
    shape=same_shape,
    legacy_attrs=(LegacyAttr("min", 1, 11, dtype=None), LegacyAttr("max", 2, 11, dtype=None)),
    zero_when=_clip_zero,
)

# op -> (zero mode of ``broadcast``, f(0, ..., 0), shape-value fold)
_BINARY: dict[str, tuple[str, AtZero, Callable[..., list[Entry] | None] | None]] = {
    "Add": ("all", "zero", _arith(lambda a, b: a + b)),
    "Sub": ("all", "zero", _arith(lambda a, b: a - b)),
    "Sum": ("all", "zero", None),
    "Max": ("all", "zero", _arith(max)),
    "Min": ("all", "zero", _arith(min)),
    "Mean": ("all", "zero", None),
    "Mul": ("any", "zero", _arith(lambda a, b: a * b)),
    "Div": ("first", "blows_up", _arith(_truncating_div)),
    "PRelu": ("first", "zero", None),
    "Mod": ("first", "blows_up", _arith(lambda a, b: a % b)),
    "BitShift": ("first", "zero", None),
    "Equal": ("none", "nonzero", _arith(lambda a, b: int(a == b))),
    "Less": ("none", "zero", _arith(lambda a, b: int(a < b))),
    "LessOrEqual": ("none", "nonzero", None),
    "Greater": ("none", "zero", _arith(lambda a, b: int(a > b))),
    "GreaterOrEqual": ("none", "nonzero", None),
    "And": ("all", "zero", None),
    "Or": ("all", "zero", None),
    "Xor": ("all", "zero", None),
    "BitwiseAnd": ("any", "zero", None),
    "BitwiseOr": ("all", "zero", None),
    "BitwiseXor": ("all", "zero", None),
}


def _quotient_zero(node: Node, zero: Sequence[bool]) -> bool:
    """0 / b and 0 mod b are 0 for a nonzero b; 0 / 0 is NaN. A zeroed divisor, or a constant one with a
    zero in it, never gives zero; an activation is taken as nonzero, as the model divides by it."""
    if not is_zero(zero, 0) or is_zero(zero, 1):
        return False
    divisor = operand_values(node, zero, 1)
    return divisor is None or bool(np.all(divisor != 0))


# The zero fact per broadcast mode, and where the op knows better than its channel mode: And(0, x) is
# False whatever x is; PRelu and BitShift only scale or shift their first operand.
_MODE_ZERO_WHEN: dict[str, ZeroWhen] = {"all": all_zero, "any": any_zero, "none": never}
_BINARY_ZERO_WHEN: dict[str, ZeroWhen] = {
    "And": any_zero, "Div": _quotient_zero, "Mod": _quotient_zero, "PRelu": data_zero(0),
    "BitShift": data_zero(0),
}  # fmt: skip

# Erasing one input of a sum drops a zero term; every other joint here would see a different value.
_ERASED_INPUT: dict[str, ErasedInput] = {"Add": "drop", "Sum": "drop"}

for _op, (_mode, _zero, _fold) in _BINARY.items():
    register_op(
        _op,
        _binary(_mode),
        kind=_binary_kind,
        at_zero=_zero,
        shape=broadcast_shape,
        fold=_fold,
        zero_when=_BINARY_ZERO_WHEN.get(_op) or _MODE_ZERO_WHEN[_mode],
        erased_input=_ERASED_INPUT.get(_op),
    )


def _pow_zero(node: Node, zero: Sequence[bool]) -> bool:
    """0 ** e is 0 for a positive e; 0 ** 0 is 1 and a negative e gives inf, so the exponent must be a
    constant known to be positive everywhere (a zeroed one is 0)."""
    if not is_zero(zero, 0) or is_zero(zero, 1):
        return False
    e = operand_values(node, zero, 1)
    return e is not None and e.size > 0 and bool((e.astype(np.float64) > 0).all())


register_op("Pow", _pow, kind=_binary_kind, at_zero=_pow_at_zero, shape=broadcast_shape, zero_when=_pow_zero)


def _where(ctx: ChannelGraph, node: Node) -> None:
    """Where(c, a, b) is zero where both a and b are zero."""
    cond, a, b = node.input(0), node.input(1), node.input(2)
    out = node.outputs[0]
    broadcast(ctx, [cond, a, b], out, "none")
    if out.shape is None:
        return
    for ax in range(len(out.shape)):
        key = ctx.slot(out, ax)
        if key is None:
            continue
        za = _aligned_zero(ctx, a, out, ax)
        zb = _aligned_zero(ctx, b, out, ax)
        ctx.set_zero(out, ax, za & zb)


def _aligned_zero(ctx: ChannelGraph, v: Value | None, out: Value, ax: int) -> np.ndarray:
    key = ctx.slot(out, ax)
    assert key is not None and out.shape is not None
    n = ctx.size[key]
    if v is None or v.shape is None:
        return np.zeros(n, bool)
    src = ax - (len(out.shape) - len(v.shape))
    if src < 0 or v.shape[src] != out.shape[ax]:
        return np.zeros(n, bool)
    return np.asarray(ctx.zero(v, src), dtype=bool)


register_op(
    "Where",
    _where,
    kind=_binary_kind,
    at_zero="zero",
    shape=broadcast_shape,
    fold=_where_fold,
    zero_when=data_zero(1, 2),  # both branches; the condition only picks between them
)
