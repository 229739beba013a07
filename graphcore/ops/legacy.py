"""One form for operands that older ONNX opsets spell as attributes.

Squeeze/Unsqueeze and Reduce* ``axes``, Slice ``starts``/``ends``/``axes``, Split ``split``, Clip
``min``/``max`` and Pad ``pads``/``value`` became operands in later opsets. Each op declares which
(``OpRule.legacy_attrs``); this pass turns such an attribute into a constant operand, so a rule reads
operands only. Construct writes a rewritten operand back as the attribute for a model of an older opset.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from graphcore.ir import Graph, Node
from graphcore.ops.registry import LegacyAttr, rule_for

__all__ = ["legacy_attr_at", "lift_legacy_attrs"]


def lift_legacy_attrs(graph: Graph, nodes: Iterable[Node] | None = None) -> None:
    """Replace every declared legacy attribute of ``nodes`` (default: all) by a constant operand."""
    for node in list(graph.nodes if nodes is None else nodes):
        rule = rule_for(node)
        for legacy in rule.legacy_attrs if rule is not None else ():
            if legacy.name in node.attrs and node.input(legacy.index) is None:
                _lift(graph, node, legacy)


def legacy_attr_at(node: Node, index: int, opset: int | None) -> str | None:
    """The attribute that spells operand ``index`` of ``node`` in ``opset``, if that opset uses one."""
    rule = rule_for(node)
    for legacy in rule.legacy_attrs if rule is not None else ():
        if legacy.index == index and opset is not None and opset < legacy.since:
            return legacy.name
    return None


def _lift(graph: Graph, node: Node, legacy: LegacyAttr) -> None:
    value = node.attrs.pop(legacy.name)
    x = node.input(0)
    dtype = legacy.dtype or (x.dtype if x is not None and x.dtype else None) or "float32"
    try:
        arr = np.asarray(value, dtype=dtype)
    except TypeError:  # a dtype numpy cannot hold (bfloat16): the value is what a rule reads
        arr = np.asarray(value, dtype=np.float32)
    name = f"{node.name}::{legacy.name}"
    k = 0
    while name in graph.values:
        k += 1
        name = f"{node.name}::{legacy.name}{k}"
    graph.set_input(node, legacy.index, graph.value(name, shape=arr.shape, dtype=arr.dtype.name, const=arr))
