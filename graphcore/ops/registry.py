"""The one table that says what each operator does: to channels, to shapes, to literals, and what it costs.

A rule is found by (domain, op). Every pass — shape filling, folding, analysis, cost, construct, the report
— asks this table for the hook it needs; no pass special-cases an op name. Users add rules for their own
ops with ``register_op``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Dim, Node, Value

__all__ = [
    "AT_ZERO",
    "KINDS",
    "AtZero",
    "Contraction",
    "ErasedInput",
    "LegacyAttr",
    "OpRule",
    "QuantOperand",
    "Quantized",
    "Renorm",
    "ShrinkView",
    "WidthMultiple",
    "ZeroWhen",
    "declarations_for",
    "output_is_zero",
    "register_op",
    "register_rule",
    "renorm_of",
    "rule_for",
    "rules",
]

KINDS = ("stem", "joint", "accessory", "shape", "unknown")
AtZero = Literal["zero", "nonzero", "blows_up"]
AT_ZERO: tuple[AtZero, ...] = ("zero", "nonzero", "blows_up")


class ShrinkView(Protocol):
    """What a ``shrink`` hook reads of a ``graphcore.shrink.ShrinkPlan``."""

    def kept(self, v: Value | None, axis: int) -> np.ndarray | None: ...

    def new_shape(self, v: Value) -> tuple[Dim, ...]: ...


Relate = Callable[[ChannelGraph, Node], None]
Shrink = Callable[[Node, ShrinkView], dict[str, Any]]
Shape = Callable[[ChannelGraph, Node], tuple[Dim, ...] | None]
Fold = Callable[[ChannelGraph, Node, list[list[Entry] | None]], list[Entry] | None]
LiteralEval = Callable[[ChannelGraph, Node, list[np.ndarray | None]], np.ndarray | None]
Cost = Callable[[Node], int]
ZeroWhen = Callable[[Node, Sequence[bool]], bool]
Contraction = Callable[[Node], tuple[int, int] | None]
WidthMultiple = int | Callable[[Node], int]
ErasedInput = Literal["drop", "cut"]


@dataclass(frozen=True)
class QuantOperand:
    """Operand ``data`` holds integers ``q`` that stand for the real numbers ``(q - zero_point) * scale``.

    ``scale`` and ``zero_point`` are operand indices (``zero_point`` None: the zero point is 0, as for
    an absent one or an int32 bias). ``axis`` is the data axis they run along (None: one for the whole
    tensor); ``block`` > 0: each scale covers ``block`` consecutive indices of that axis. Real zero is
    the zero point, so a removed channel of such a weight is set to its zero point, and the scale and
    zero point operands are kept as they are when the reference model is zeroed.
    """

    data: int
    scale: int | None
    zero_point: int | None
    axis: int | None = None
    block: int = 0


Quantized = Callable[[Node], tuple[QuantOperand, ...]]


@dataclass(frozen=True)
class Renorm:
    """A statistic that counts the elements of input 0's ``axes`` (a mean, a LayerNorm, an RMSNorm).

    The analysis lets such an axis shrink only where its removed elements are exactly zero
    (``require_zero``); their sum is then unchanged but their count is not, so construct rewrites the
    node to keep the original count (``docs/hidden_size.md`` derives each form). ``kind``: ``mean``
    (scale the result by d/D), ``layernorm`` (mean and variance over the original count: decompose) or
    ``rmsnorm`` (fold D/d into ``scale`` and ``epsilon``). ``summed``: operands added before the
    statistic (input, skip, bias of the Skip* fusions); ``scale``, ``bias``: operand indices of the
    affine part; ``stats``: outputs holding mean / inverse deviation; ``sum_output``: the output that
    returns the sum of ``summed``; ``epsilon``: the node's epsilon.
    """

    kind: Literal["mean", "layernorm", "rmsnorm"]
    axes: tuple[int, ...]
    summed: tuple[int, ...] = (0,)
    scale: int | None = None
    bias: int | None = None
    stats: tuple[int, ...] = ()
    sum_output: int | None = None
    epsilon: float = 0.0


@dataclass(frozen=True)
class LegacyAttr:
    """An operand that ONNX opsets before ``since`` spell as the attribute ``name``.

    The ONNX frontend lifts such an attribute into operand ``index`` (a constant of ``dtype``, or of
    input 0's dtype when ``dtype`` is None) so that rules read one form; construct writes a rewritten
    operand back as the attribute for a model of an older opset.
    """

    name: str
    index: int
    since: int
    dtype: str | None = "int64"


@dataclass(frozen=True)
class OpRule:
    """Everything the passes know about one operator.

    ``relate`` links, pins and tracks zeros for one node (analysis). ``kind`` is the vertex kind (or a
    function of the node: MatMul is a stem with a constant weight and a joint between two activations).
    ``shape`` gives output 0's shape when ONNX's inference left it unknown. ``fold`` computes the tracked
    entries of a small integer output (shape arithmetic); ``literal`` evaluates the op on small literal
    operands. ``cost`` is its FLOPs. ``at_zero`` says what an elementwise op makes of an all-zero input
    (``zero``, ``nonzero`` or ``blows_up`` to inf/NaN; a function of the node where attributes or
    operands decide): zero tracking and erasing read it through ``zero_at_zero``. ``legacy_attrs`` are
    operands older opsets spell as attributes. ``shrink`` recomputes what a smaller model needs beyond
    sliced tensors (Conv ``group``, Split sizes, Slice bounds) from a ``graphcore.shrink.ShrinkPlan``:
    it returns ``{"attrs": {...}, "inputs": {index: array}, "drop_attrs": [...]}``.
    ``zero_when`` answers the erasing question: given which operands are entirely zero (a missing
    optional operand counts as zero), is the output exactly zero and finite? A Conv is zero when its
    weight is (and its bias is zero or absent), a BatchNormalization when its scale and bias are; an op
    that declares nothing falls back to ``at_zero`` (zero when every operand is zero and f(0) = 0), and
    an op that declares neither is never assumed zero. ``erased_input`` says what a joint does when one
    of its inputs is erased: ``drop`` (a sum: the term goes, valid when the others already have the
    output's shape) or ``cut`` (a concatenation along ``axis``: the input's block of channels goes, and
    its consumers lose those input channels); a joint that declares neither (a product, a gate) never
    loses an input. ``contraction`` gives, for a stem, ``(weight operand, weight axis)`` when the stem
    sums its input 0's channel axis against that axis of the weight (so zero input channels contribute
    nothing and can be cut from the weight), or None for this node. ``quantized`` lists the operands
    that hold quantized integers (``QuantOperand``): their zero is the zero point, which the frontend
    (a weight read only there is a parameter that can be zeroed) and construct (the zeroed reference
    fills a removed slice with its zero point) read. ``renorm`` says, for a statistic that counts
    the elements of an axis it may shrink (``Renorm``), how construct keeps the original count.
    ``width_multiple`` is the channel count this op's
    kernels run fastest at a multiple of (onnxruntime's blocked NCHWc convolutions need multiples of
    their block, 8 with AVX2), on the channel axes it computes over: the default selection
    (``graphcore.widths``) rounds every group's kept width to the largest multiple its ops declare.
    """

    op: str
    relate: Relate
    kind: str | Callable[[Node], str] = "accessory"
    domain: str = ""
    shape: Shape | None = None
    fold: Fold | None = None
    literal: LiteralEval | None = None
    cost: Cost | None = None
    at_zero: AtZero | Callable[[Node], AtZero] | None = None
    legacy_attrs: tuple[LegacyAttr, ...] = ()
    shrink: Shrink | None = None
    zero_when: ZeroWhen | None = None
    erased_input: ErasedInput | None = None
    contraction: Contraction | None = None
    quantized: Quantized | None = None
    renorm: Callable[[Node], Renorm | None] | None = None
    width_multiple: WidthMultiple | None = None

    def kind_of(self, node: Node) -> str:
        return self.kind(node) if callable(self.kind) else self.kind

    def width_multiple_of(self, node: Node) -> int:
        """The kept-width multiple this node's kernels like (1: no preference declared)."""
        m = self.width_multiple(node) if callable(self.width_multiple) else self.width_multiple
        return max(1, int(m or 1))

    def at_zero_of(self, node: Node) -> AtZero | None:
        """f(0) of this node, or None for an op that declares nothing (not elementwise)."""
        return self.at_zero(node) if callable(self.at_zero) else self.at_zero

    def zero_at_zero(self, node: Node) -> bool | None:
        """Is f(0) = 0 for this node (all inputs zero)? None when the op declares nothing."""
        f0 = self.at_zero_of(node)
        return None if f0 is None else f0 == "zero"

    def blows_up_at_zero(self, node: Node) -> bool:
        """Does a zero input make this node infinite or undefined (Log, Reciprocal, a divisor)?"""
        return self.at_zero_of(node) == "blows_up"


_RULES: dict[tuple[str, str], OpRule] = {}


def register_op(
    op: str,
    relate: Relate,
    *,
    kind: str | Callable[[Node], str] = "accessory",
    domain: str = "",
    shape: Shape | None = None,
    fold: Fold | None = None,
    literal: LiteralEval | None = None,
    cost: Cost | None = None,
    at_zero: AtZero | Callable[[Node], AtZero] | None = None,
    legacy_attrs: tuple[LegacyAttr, ...] = (),
    shrink: Shrink | None = None,
    zero_when: ZeroWhen | None = None,
    erased_input: ErasedInput | None = None,
    contraction: Contraction | None = None,
    quantized: Quantized | None = None,
    renorm: Callable[[Node], Renorm | None] | None = None,
    width_multiple: WidthMultiple | None = None,
    replace: bool = False,
) -> OpRule:
    """Declare ``op`` (in ``domain``): its channel rule and the hooks the other passes read."""
    rule = OpRule(
        op,
        relate,
        kind,
        _norm_domain(domain),
        shape,
        fold,
        literal,
        cost,
        at_zero,
        legacy_attrs,
        shrink,
        zero_when,
        erased_input,
        contraction,
        quantized,
        renorm,
        width_multiple,
    )
    return register_rule(rule, replace=replace)


def register_rule(rule: OpRule, *, replace: bool = False) -> OpRule:
    """Put a whole declaration in the table (a test restoring a rule it replaced, a copy with one
    field changed by ``dataclasses.replace``). Re-declaring needs ``replace=True``."""
    key = (_norm_domain(rule.domain), rule.op)
    if key in _RULES and not replace:
        raise ValueError(f"op {rule.op!r} in domain {rule.domain!r} is already declared")
    if not callable(rule.kind) and rule.kind not in KINDS:
        raise ValueError(f"unknown vertex kind {rule.kind!r}; expected one of {KINDS}")
    if not callable(rule.at_zero) and rule.at_zero is not None and rule.at_zero not in AT_ZERO:
        raise ValueError(f"unknown f(0) fact {rule.at_zero!r}; expected one of {AT_ZERO}")
    _RULES[key] = rule
    _DECLARATIONS.clear()
    return rule


def rule_for(node: Node) -> OpRule | None:
    d = node.domain
    return _RULES.get(("" if not d or d == "ai.onnx" else d, node.op))


_DECLARATIONS: dict[tuple[str, str], list[OpRule]] = {}
"""``declarations_for`` per (domain, op), asked several times per node by every pass; emptied whenever
the table changes."""


def declarations_for(node: Node) -> list[OpRule]:
    """The rules a pass may read for ``node``, in order: its own, then — for an op of another domain
    that carries an ONNX op's name (com.microsoft::Gelu) — that ONNX op's, for the hooks (shape, cost)
    its own declaration leaves out. The list is shared: callers never edit it."""
    key = (node.domain, node.op)
    found = _DECLARATIONS.get(key)
    if found is None:
        own = rule_for(node)
        namesake = _RULES.get(("", node.op)) if _norm_domain(node.domain) else None
        found = _DECLARATIONS[key] = [r for r in (own, namesake) if r is not None]
    return found


def output_is_zero(node: Node, zero_inputs: Sequence[bool]) -> bool:
    """Is ``node``'s output exactly zero (and finite) when the operands flagged in ``zero_inputs`` are
    all-zero? Reads ``zero_when``, else ``at_zero``; False for an op the table does not know."""
    flags = [bool(z) or v is None for z, v in zip(zero_inputs, node.inputs, strict=False)]
    flags += [True] * (len(node.inputs) - len(flags))
    for rule in declarations_for(node):
        if rule.zero_when is not None:
            return bool(rule.zero_when(node, flags))
    for rule in declarations_for(node):
        f0 = rule.at_zero_of(node)
        if f0 is not None:
            return f0 == "zero" and all(flags)
    return False


def renorm_of(node: Node) -> Renorm | None:
    """The node's ``Renorm`` (a statistic that must keep its original count when an axis shrinks)."""
    for rule in declarations_for(node):
        if rule.renorm is not None:
            return rule.renorm(node)
    return None


def rules() -> dict[tuple[str, str], OpRule]:
    return dict(_RULES)


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain
