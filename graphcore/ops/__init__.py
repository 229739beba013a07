"""The op semantics table: importing this package declares every built-in operator once."""

from graphcore.ops import elementwise, indexing, layout, normalize, stems  # noqa: F401  (declarations)
from graphcore.ops.registry import KINDS, OpRule, register_op, rule_for, rules

__all__ = ["KINDS", "OpRule", "register_op", "rule_for", "rules"]
