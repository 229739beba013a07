"""Which statistics lose elements in a shrink plan, with their original and new counts.

A mean, LayerNorm or RMSNorm whose normalized axes shrink must keep its original count (the removed
elements were zero, so their sum is unchanged but their number is not). The op table says which nodes
count their elements (``OpRule.renorm``); this module finds those whose axes the plan shrinks, for the
ONNX (``construct/onnx_renorm.py``) and torch (``construct/torch_renorm.py``) lowerings alike.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from graphcore.errors import InternalError
from graphcore.ir import Graph, Node
from graphcore.ops.registry import Renorm, renorm_of
from graphcore.shrink import ShrinkPlan

__all__ = ["Counted", "counted"]


@dataclass(frozen=True)
class Counted:
    """``node`` averages over ``full`` elements in the original model and ``kept`` in the small one."""

    node: Node
    info: Renorm
    full: int
    kept: int


def counted(graph: Graph, p: ShrinkPlan, skip: Collection[str] = frozenset()) -> list[Counted]:
    """The nodes whose statistic loses elements under ``p``, in graph order (``skip``: nodes erased)."""
    out: list[Counted] = []
    for node in graph.nodes:
        if node.name in skip:
            continue
        info = renorm_of(node)
        x = node.input(0)
        if info is None or x is None or x.shape is None:
            continue
        if not any(p.kept(x, a) is not None for a in info.axes):
            continue
        old = [x.shape[a] for a in info.axes]
        new = p.new_shape(x)
        if not all(isinstance(d, int) for d in old):
            raise InternalError(f"{node.label}: a counted axis of unknown size was shrunk")
        full = math.prod([int(d) for d in old if isinstance(d, int)])
        kept = math.prod([int(n) for n in (new[a] for a in info.axes) if isinstance(n, int)])
        if kept != full:
            if kept == 0:
                raise InternalError(f"{node.label}: every element of a normalized axis was removed")
            out.append(Counted(node, info, full, kept))
    return out
