"""Graphviz view of the analysis: operators coloured by the node group whose parameters they own, or
(erase mode) by the removal structure they belong to, structures nested as clusters."""

from __future__ import annotations

from graphcore.groups import PruneAnalysis
from graphcore.ir import Graph
from graphcore.ops import rule_for

__all__ = ["to_dot"]

PALETTE = [
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
    "#bc80bd", "#ccebc5", "#ffed6f", "#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#e5c494",
]  # fmt: skip


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _close(graph: Graph, shown: set[str], lines: list[str]) -> str:
    """The edges between shown operators, then the end of the digraph: both views end alike."""
    for node in graph.nodes:
        if node.name not in shown:
            continue
        for v in node.outputs:
            for user, _ in v.consumers:
                if user.name in shown:
                    lines.append(f"  {_q(node.name)} -> {_q(user.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(analysis: PruneAnalysis, include_shape_ops: bool = False) -> str:
    """Prunable groups get a colour, unprunable ones grey, unknown ops red; shape arithmetic is hidden."""
    if analysis.mode == "erase":
        return _erase_dot(analysis, include_shape_ops)
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
    return _close(graph, shown, lines)


def _erase_dot(analysis: PruneAnalysis, include_shape_ops: bool) -> str:
    """Removal structures as nested clusters (a child inside the structure whose erasure removes it);
    erasable ones coloured, the others grey with the reason; operators that die with a structure but
    belong to none are dashed."""
    graph = analysis.graph
    structures = list(getattr(analysis, "structures", []))
    owner: dict[str, int] = {}
    for s in structures:
        for n in s.segment:
            owner.setdefault(n, s.id)
    dies: dict[str, int] = {}
    for s in structures:
        for n in s.dies_with:
            if n not in owner:
                dies.setdefault(n, s.id)
    kids: dict[int | None, list[int]] = {}
    ids = {s.id for s in structures}
    for s in structures:
        kids.setdefault(s.parent if s.parent in ids else None, []).append(s.id)
    by_id = {s.id: s for s in structures}
    members: dict[int | None, list[str]] = {}
    shown: set[str] = set()
    node_lines: dict[str, str] = {}
    for node in graph.nodes:
        rule = rule_for(node)
        kind = rule.kind_of(node) if rule else "unknown"
        if kind == "shape" and not include_shape_ops:
            continue
        sid = owner.get(node.name)
        style = "rounded,filled"
        if rule is None:
            fill, tip = "#ff6b6b", "unknown op"
        elif sid is not None:
            s = by_id[sid]
            fill = PALETTE[sid % len(PALETTE)] if s.erasable else "#d9d9d9"
            tip = f"structure {sid}" + ("" if s.erasable else f" — {s.reason}")
        elif node.name in dies:
            fill, tip, style = "#ffffff", f"dies with structure {dies[node.name]}", "rounded,filled,dashed"
        else:
            fill, tip = "#ffffff", kind
        label = f"{node.op}\\n{node.name}"
        attrs = f"label={_q(label)}, fillcolor={_q(fill)}, style={_q(style)}, tooltip={_q(tip)}"
        node_lines[node.name] = f"{_q(node.name)} [{attrs}];"
        members.setdefault(sid, []).append(node.name)
        shown.add(node.name)
    lines = ["digraph zigraph {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontsize=10];']

    def cluster(sid: int, indent: str) -> None:
        s = by_id[sid]
        what = "erasable" if s.erasable else f"not erasable: {s.reason}"
        lines.append(f"{indent}subgraph {_q(f'cluster_s{sid}')} {{")
        lines.append(f"{indent}  label={_q(f'structure {sid} ({what})')}; fontsize=9;")
        lines.append(f"{indent}  style={_q('rounded' if s.erasable else 'rounded,dashed')};")
        for n in members.get(sid, []):
            lines.append(f"{indent}  {node_lines[n]}")
        for child in sorted(kids.get(sid, [])):
            cluster(child, indent + "  ")
        lines.append(f"{indent}}}")

    for root in sorted(kids.get(None, [])):
        cluster(root, "  ")
    for n in members.get(None, []):
        lines.append(f"  {node_lines[n]}")
    return _close(graph, shown, lines)
