"""The op semantics table: importing this package declares every built-in operator once."""

from graphcore.ops import (  # noqa: F401  (each module declares its family)
    contrib,
    contrib_attention,
    contrib_stems,
    elementwise,
    indexing,
    joins,
    layout,
    normalize,
    quant,
    resample,
    sizes,
    stems,
    torch_extra,
)
from graphcore.ops.legacy import legacy_attr_at, lift_legacy_attrs
from graphcore.ops.quant import mark_quantized_weights
from graphcore.ops.registry import (
    KINDS,
    Contraction,
    ErasedInput,
    LegacyAttr,
    OpRule,
    QuantOperand,
    declarations_for,
    output_is_zero,
    register_op,
    register_rule,
    rule_for,
    rules,
)

__all__ = [
    "KINDS",
    "Contraction",
    "ErasedInput",
    "LegacyAttr",
    "OpRule",
    "QuantOperand",
    "declarations_for",
    "legacy_attr_at",
    "lift_legacy_attrs",
    "mark_quantized_weights",
    "output_is_zero",
    "register_op",
    "register_rule",
    "rule_for",
    "rules",
]
