"""The one table that says what each operator does to channels.

A rule is found by (domain, op). Every pass — analysis, construct, the report — asks this table; no pass
special-cases an op name. Users add rules for their own ops with ``register_op``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphcore.channels import ChannelGraph
from graphcore.ir import Node

__all__ = ["KINDS", "OpRule", "register_op", "rule_for", "rules"]

KINDS = ("stem", "joint", "accessory", "shape", "unknown")

Relate = Callable[[ChannelGraph, Node], None]
Shrink = Callable[[Node, Any], dict]


@dataclass(frozen=True)
class OpRule:
    """How one operator moves channels.

    ``relate`` links, pins and tracks zeros for one node. ``kind`` is the vertex kind (or a function of
    the node, e.g. MatMul is a stem with a constant weight and a joint between two activations).
    ``zero_preserving`` documents f(0) = 0 for elementwise ops. ``shrink`` recomputes what a smaller
    model needs beyond sliced tensors (Conv ``group``, Split sizes, Slice bounds) from a
    ``graphcore.shrink.ShrinkPlan``: it returns ``{"attrs": {...}, "inputs": {index: array}}``.
    """

    op: str
    relate: Relate
    kind: str | Callable[[Node], str] = "accessory"
    domain: str = ""
    zero_preserving: bool | None = None
    shape_operands: tuple[int, ...] = ()
    doc: str = ""
    shrink: Shrink | None = None

    def kind_of(self, node: Node) -> str:
        return self.kind(node) if callable(self.kind) else self.kind


_RULES: dict[tuple[str, str], OpRule] = {}


def register_op(
    op: str,
    relate: Relate,
    *,
    kind: str | Callable[[Node], str] = "accessory",
    domain: str = "",
    zero_preserving: bool | None = None,
    shape_operands: tuple[int, ...] = (),
    doc: str = "",
    shrink: Shrink | None = None,
    replace: bool = False,
) -> OpRule:
    """Declare how ``op`` (in ``domain``) moves channels. Re-declaring needs ``replace=True``."""
    key = (_norm_domain(domain), op)
    if key in _RULES and not replace:
        raise ValueError(f"op {op!r} in domain {domain!r} is already declared")
    if not callable(kind) and kind not in KINDS:
        raise ValueError(f"unknown vertex kind {kind!r}; expected one of {KINDS}")
    rule = OpRule(op, relate, kind, _norm_domain(domain), zero_preserving, shape_operands, doc, shrink)
    _RULES[key] = rule
    return rule


def rule_for(node: Node) -> OpRule | None:
    return _RULES.get((_norm_domain(node.domain), node.op))


def rules() -> dict[tuple[str, str], OpRule]:
    return dict(_RULES)


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain
