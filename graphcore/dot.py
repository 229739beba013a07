"""Graphviz view of the analysis: operators coloured by the node group whose parameters they own."""

from __future__ import annotations

from graphcore.groups import PruneAnalysis
from graphcore.ops import rule_for

__all__ = ["to_dot"]

PALETTE = [
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
    "#bc80bd", "#ccebc5", "#ffed6f", "#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#e5c494",
]  # fmt: skip


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(analysis: PruneAnalysis, include_shape_ops: bool = False) -> str:
    """Prunable groups get a colour, unprunable ones grey, unknown ops red; shape arithmetic is hidden."""
    graph = analysis.graph
    colour: dict[str, str] = {}
    tooltip: dict[str, str] = {}
    for g in analysis.groups:
        c = PALETTE[g.id % len(PALETTE)] if g.prunable else "#d9d9d9"
        for n in g.nodes:
            if n not in colour or (g.prunable and colour[n] == "#d9d9d9"):
                colour[n] = c
                tooltip[n] = f"group {g.id}: {g.size} channels" + ("" if g.prunable else f" — {g.reason}")
    lines = ["digraph zigraph {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontsize=10];']
    shown: set[str] = set()
    for node in graph.nodes:
        rule = rule_for(node)
        kind = rule.kind_of(node) if rule else "unknown"
        if kind == "shape" and not include_shape_ops:
            continue
        fill = "#ff6b6b" if rule is None else colour.get(node.name, "#ffffff")
        tip = tooltip.get(node.name, kind)
        label = f"{node.op}\\n{node.name}"
        lines.append(f"  {_q(node.name)} [label={_q(label)}, fillcolor={_q(fill)}, tooltip={_q(tip)}];")
        shown.add(node.name)
    for node in graph.nodes:
        if node.name not in shown:
            continue
        for v in node.outputs:
            for user, _ in v.consumers:
                if user.name in shown:
                    lines.append(f"  {_q(node.name)} -> {_q(user.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
