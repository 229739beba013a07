"""Shape-value tracking: follow the small integer tensors that exports use to compute shapes.

Real exports compute Reshape targets, Expand shapes and masks with Shape → Gather → Unsqueeze → Concat
chains. Each element of such a tensor is tracked as an ``Entry``: a literal (with the constant it can be
rewritten in), a runtime copy of some axis's size, or a computed expression. Movement ops keep the
provenance; arithmetic keeps the value when it is known but pins the axes it read, because a pruned size
would silently change its result. What each op computes is its ``fold`` hook in ``graphcore/ops``.
"""

from __future__ import annotations

import numpy as np

from graphcore.channels import ChannelGraph
from graphcore.ir import Node, Value
from graphcore.ops.registry import OpRule

__all__ = ["fold_literals", "fold_node"]


def fold_node(ctx: ChannelGraph, node: Node, rule: OpRule | None) -> None:
    """Compute the output entries of ``node`` when its tracked inputs allow it. ``rule``: the node's
    rule (``rule_for``), which the caller has looked up already."""
    if rule is not None and rule.fold is not None and node.outputs:
        ins = [ctx.get_entries(v, node, i) for i, v in enumerate(node.inputs)]
        out = rule.fold(ctx, node, ins)
        if out is not None:
            ctx.set_entries(node.outputs[0], out, scalar=node.outputs[0].rank == 0)
            return
    fold_literals(ctx, node, rule)


# -- literal folding ----------------------------------------------------------------------------------
# Exports build some constant operands with a small subgraph of movement ops on literals alone: the
# TorchScript ``F.pad`` writes its pads as Concat → Reshape(-1, 2) → Slice(step -1) → Transpose →
# Reshape(-1) → Cast. Entries track 1-D values only, so such a chain is evaluated here, once, with
# numpy (each op's ``literal`` hook). Only literals are folded (no runtime size, no trainable weight):
# the result does not change when the model is pruned, so a rule may read it like any constant.

_LITERAL_LIMIT = 4096


def _literal(ctx: ChannelGraph, v: Value | None) -> np.ndarray | None:
    if v is None or v.const is None or v.trainable or v.const.size > _LITERAL_LIMIT:
        return None
    entries = ctx.entries.get(v.name)
    if entries is not None and any(e.kind != "lit" for e in entries):
        return None  # a runtime size or an expression of one: it must keep its provenance
    return np.asarray(v.const)


def fold_literals(ctx: ChannelGraph, node: Node, rule: OpRule | None) -> None:
    """Evaluate ``node`` (whose rule is ``rule``) when every operand is a small literal and its op
    declares a ``literal`` hook."""
    if rule is None or rule.literal is None or len(node.outputs) != 1 or node.outputs[0].const is not None:
        return
    if not node.inputs:
        return
    xs = [_literal(ctx, v) for v in node.inputs]
    if any(a is None and v is not None for a, v in zip(xs, node.inputs)):
        return
    try:
        with np.errstate(all="ignore"):
            out = rule.literal(ctx, node, xs)
    except (ValueError, IndexError, TypeError, OverflowError):
        return  # a malformed operand: the op's rule judges the node as it stands
    if out is not None and out.size <= _LITERAL_LIMIT:
        node.outputs[0].const = np.asarray(out)
