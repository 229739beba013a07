"""One self-contained HTML page of an analysis (``--html``): the graph coloured by node group (prune mode)
or removal structure (erase mode), a sortable table of the groups, search, and after ``prune``/``erase``
what was removed and whether the result verified.

Everything the page needs is inlined (the vendored Cytoscape.js and cytoscape-dagre in
``zigraph/vendor``, the page script and style in ``zigraph/templates``, the data as JSON), so opening it
makes no network request. Big graphs stay responsive because the page only lays out what is expanded:
operators are nested in clusters (module paths from the operator or parameter names, or runs of the
topological order when names say nothing) and a cluster is drawn as one box until it is opened.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphcore.groups import PruneAnalysis
from graphcore.ir import Graph, Node
from graphcore.report import Report, write_json_atomic

__all__ = ["build_html", "view_data", "write_html"]

_HERE = Path(__file__).parent
VENDOR = _HERE / "vendor"
TEMPLATES = _HERE / "templates"
LIBRARIES = ("cytoscape-3.35.0.min.js", "cytoscape-dagre-4.0.1.min.js")
MAX_ITEMS = 40
"""At most this many boxes or operators directly inside one cluster: wider ones are split into runs."""


def write_html(
    path: str | os.PathLike, graph: Graph, report: Report, analysis: PruneAnalysis | None = None
) -> None:
    """Write the page for ``report`` (with ``graph``, the analysed model) to ``path`` atomically.

    Without ``analysis`` the graph is analysed again in the report's mode for the exact parameter slices
    of every group; when that analysis does not give the report's groups, slices are listed per axis only.
    """
    if analysis is None:
        import graphcore

        analysis = graphcore.analyze(graph, mode=report.mode)
    write_json_atomic(path, build_html(graph, report, analysis))


def build_html(graph: Graph, report: Report, analysis: PruneAnalysis | None = None) -> str:
    data = view_data(graph, report, analysis)
    page = (TEMPLATES / "html_view.html").read_text(encoding="utf-8")
    scripts = "\n".join(_script(VENDOR / name) for name in LIBRARIES)
    parts = {
        "TITLE": _escape_text(f"zigraph: {report.model.name} ({report.mode})"),
        "STYLE": (TEMPLATES / "html_view.css").read_text(encoding="utf-8"),
        "LIBRARIES": scripts,
        "DATA": _json_for_script(data),
        "APP": _script(TEMPLATES / "html_view.js"),
    }
    # One pass, so that text brought in by one part (a node called "{{APP}}") is never substituted.
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts.get(m.group(1), m.group(0)), page)


def _script(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if "</script" in text.lower():
        raise ValueError(f"{path.name} cannot be inlined: it contains '</script'")
    return text


def _escape_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json_for_script(data: Any) -> str:
    # Inside <script type="application/json"> only "</" could end the element early.
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


# -- the data the page reads ------------------------------------------------------------------


def view_data(graph: Graph, report: Report, analysis: PruneAnalysis | None = None) -> dict[str, Any]:
    """Everything the page shows, as compact JSON-able lists (operators and groups refer to each other
    by position)."""
    from graphcore.ops import rule_for

    nodes = graph.nodes
    index = {n.name: i for i, n in enumerate(nodes)}
    params: list[str] = []
    param_index: dict[str, int] = {}
    node_rows: list[list[Any]] = []
    node_params: list[list[str]] = []
    for n in nodes:
        mine: list[int] = []
        for v in n.inputs:
            if v is not None and v.is_param:
                if v.name not in param_index:
                    param_index[v.name] = len(params)
                    params.append(v.name)
                mine.append(param_index[v.name])
        unknown = rule_for(n) is None
        node_rows.append([n.name, f"{n.domain}::{n.op}" if n.domain else n.op, mine, 1 if unknown else 0])
        node_params.append([params[p] for p in mine])
    edges = sorted(
        {(index[v.producer.name], j) for j, n in enumerate(nodes) for v in n.inputs
         if v is not None and v.producer is not None and v.producer.name in index}
    )  # fmt: skip
    tree = _cluster_tree(nodes, _module_paths(nodes, index))
    slices = _group_slices(analysis, report)
    groups = _group_rows(report, index, slices)
    colour = _node_colours(report, groups, node_params)
    result = report.result.model_dump(mode="json") if report.result is not None else None
    removed = None
    if report.removed is not None:
        removed = {
            "slices": len(report.removed),
            "params": len({s.param for s in report.removed}),
            "indices": sum(len(s.indices) for s in report.removed),
        }
    summary = report.model_dump(mode="json", exclude={"groups", "removed", "result"})
    return {
        "mode": report.mode,
        "summary": summary,
        "nodes": node_rows,
        "params": params,
        "edges": edges,
        "clusters": tree.rows(),
        "node_cluster": tree.node_cluster,
        "groups": groups,
        "colour": colour,
        "result": result,
        "removed": removed,
    }


def _module_paths(nodes: list[Node], index: dict[str, int]) -> list[tuple[str, ...]]:
    """A module path per operator: its name split on '/' (torch.onnx's scoped names), else the path of
    its first named parameter ("layer1.0.conv1.weight" -> layer1/0/conv1), else the module of its latest
    producer (an Add after a residual branch belongs with the branch, not with the stream's first op)."""
    paths: list[tuple[str, ...]] = []
    from_param: list[bool] = []
    for n in nodes:
        if "/" in n.name:
            paths.append(tuple(p for p in n.name.split("/")[:-1] if p))
            from_param.append(False)
            continue
        named = next(
            (v.name for v in n.inputs if v is not None and v.is_param and "." in v.name
             and not v.name.startswith(("onnx::", "val_"))),
            None,
        )  # fmt: skip
        if named is not None:
            paths.append(tuple(named.split(".")[:-1]))
            from_param.append(True)
            continue
        prod = max(
            (index[v.producer.name] for v in n.inputs
             if v is not None and v.producer is not None and v.producer.name in index),
            default=None,
        )  # fmt: skip
        if prod is None or prod >= len(paths):
            paths.append(())
        else:
            p = paths[prod]
            paths.append(p[:-1] if from_param[prod] and p else p)
        from_param.append(False)
    return paths


@dataclass
class _Cluster:
    label: str
    parent: int
    children: list[int] = field(default_factory=list)  # clusters
    members: list[int] = field(default_factory=list)  # operators
    first: int = 1 << 62  # topological position of its first operator
    size: int = 0  # operators inside, nested ones included


class _Tree:
    """Clusters of operators: 0 is the root (always open); ``node_cluster[i]`` holds operator i."""

    def __init__(self) -> None:
        self.clusters: list[_Cluster] = [_Cluster("", -1)]
        self.node_cluster: list[int] = []

    def add(self, label: str, parent: int) -> int:
        self.clusters.append(_Cluster(label, parent))
        self.clusters[parent].children.append(len(self.clusters) - 1)
        return len(self.clusters) - 1

    def rows(self) -> list[list[Any]]:
        return [[c.label, c.parent, c.size] for c in self.clusters]


def _cluster_tree(nodes: list[Node], paths: list[tuple[str, ...]]) -> _Tree:
    raw = _Tree()
    by_path: dict[tuple[str, ...], int] = {(): 0}
    for i, path in enumerate(paths):
        cid = 0
        for depth in range(1, len(path) + 1):
            key = path[:depth]
            if key not in by_path:
                by_path[key] = raw.add(path[depth - 1], cid)
            cid = by_path[key]
        raw.clusters[cid].members.append(i)
    for cid in range(len(raw.clusters) - 1, -1, -1):  # children have larger ids than their parent
        c = raw.clusters[cid]
        c.first = min([*c.members, *(raw.clusters[k].first for k in c.children)], default=c.first)
    out = _Tree()
    out.node_cluster = [0] * len(nodes)
    _copy(raw, 0, out, 0)
    for cid in range(len(out.clusters) - 1, 0, -1):
        c = out.clusters[cid]
        c.size += len(c.members)
        out.clusters[c.parent].size += c.size
    out.clusters[0].size += len(out.clusters[0].members)
    return out


def _copy(raw: _Tree, rid: int, out: _Tree, oid: int) -> None:
    """Copy cluster ``rid`` of ``raw`` into ``out``'s cluster ``oid``: chains of one-child clusters are
    merged ("layer1/0"), clusters of a single operator dissolve into their parent, and more than
    ``MAX_ITEMS`` items are split into runs of the topological order."""
    c = raw.clusters[rid]
    items: list[tuple[int, str, int, str]] = []  # (first position, "c"/"n", id, label prefix)
    for k in c.children:
        kid, label = k, raw.clusters[k].label
        while not raw.clusters[kid].members and len(raw.clusters[kid].children) == 1:
            kid = raw.clusters[kid].children[0]
            label += "/" + raw.clusters[kid].label
        kc = raw.clusters[kid]
        if len(kc.members) == 1 and not kc.children:
            items.append((kc.members[0], "n", kc.members[0], ""))
        else:
            items.append((kc.first, "c", kid, label))
    items.extend((m, "n", m, "") for m in c.members)
    items.sort()
    _place(raw, items, out, oid)


def _place(raw: _Tree, items: list[tuple[int, str, int, str]], out: _Tree, oid: int) -> None:
    if len(items) > MAX_ITEMS:
        per = MAX_ITEMS ** max(1, math.ceil(math.log(len(items), MAX_ITEMS)) - 1)
        for start in range(0, len(items), per):
            run = items[start : start + per]
            label = f"{_item_label(run[0])} … {_item_label(run[-1])} ({len(run)})"
            _place(raw, run, out, out.add(label, oid))
        return
    for _, kind, ident, label in items:
        if kind == "n":
            out.clusters[oid].members.append(ident)
            out.node_cluster[ident] = oid
        else:
            _copy(raw, ident, out, out.add(label, oid))


def _item_label(item: tuple[int, str, int, str]) -> str:
    return item[3] if item[1] == "c" else f"#{item[0]}"


def _ranges(indices: np.ndarray) -> str:
    """Sorted indices as runs: "0-63, 128-191"."""
    if indices.size == 0:
        return ""
    if int(indices[-1]) - int(indices[0]) + 1 == indices.size:
        return f"{indices[0]}-{indices[-1]}" if indices.size > 1 else f"{indices[0]}"
    breaks = np.nonzero(np.diff(indices) != 1)[0]
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]])
    runs = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts.tolist(), ends.tolist())]
    if len(runs) > 12:
        runs = [*runs[:12], f"… {len(runs) - 12} more runs"]
    return ", ".join(runs)


def _group_slices(analysis: PruneAnalysis | None, report: Report) -> dict[int, list[list[Any]]] | None:
    """Per group id: [param, axis, index runs, count] for every parameter axis the group owns elements of,
    in one pass over the analysis's ownership arrays; None when the analysis is not the report's."""
    if analysis is None or len(analysis.groups) != len(report.groups):
        return None
    if any(g.id != r.id or list(g.nodes) != list(r.nodes) for g, r in zip(analysis.groups, report.groups)):
        return None
    zig_group = np.asarray(analysis.zig_group, dtype=np.int64)
    out: dict[int, list[list[Any]]] = {g.id: [] for g in analysis.groups}
    for (name, axis), owner in analysis.param_axes.items():
        owner = np.asarray(owner, dtype=np.int64)
        hit = np.nonzero(owner >= 0)[0]
        if hit.size == 0:
            continue
        grp = zig_group[owner[hit]]
        if grp[0] == grp[-1] and (grp == grp[0]).all():  # the common case: one group owns the axis
            runs = [(int(grp[0]), hit)]
        else:
            order = np.argsort(grp, kind="stable")
            grp, hit = grp[order], hit[order]
            cuts = np.nonzero(np.diff(grp))[0] + 1
            runs = [(int(g[0]), np.sort(i)) for g, i in zip(np.split(grp, cuts), np.split(hit, cuts))]
        for pos, idx in runs:
            if pos < len(analysis.groups):
                out[analysis.groups[pos].id].append([name, int(axis), _ranges(idx), int(idx.size), idx])
    return out


def _group_rows(
    report: Report, index: dict[str, int], slices: dict[int, list[list[Any]]] | None
) -> list[dict[str, Any]]:
    removed_sets: dict[tuple[str, int], set[int]] = {}
    for s in report.removed or []:
        removed_sets.setdefault((s.param, s.axis), set()).update(s.indices)
    erased: set[int] = set()
    res = report.result
    if res is not None and hasattr(res, "structures_erased"):
        erased = set(res.structures_erased)
    rows = []
    for g in report.groups:
        row: dict[str, Any] = {
            "id": g.id,
            "size": g.size,
            "params": [[p.name, p.axis] for p in g.params],
            "prunable": g.prunable,
            "reason": g.reason,
            "num_params": g.num_params,
            "flops": g.flops,
            "parent": g.parent,
            "nodes": [index[n] for n in g.nodes if n in index],
        }
        group_slices = slices.get(g.id, []) if slices is not None else None
        removed = 0
        if report.mode == "erase":
            removed = 1 if g.id in erased else 0
        elif group_slices:
            name, axis, _, count, idx = group_slices[0]
            gone = removed_sets.get((name, axis), set())
            removed = round(len(gone.intersection(idx.tolist())) * g.size / max(1, count))
        elif removed_sets and g.params:
            removed = len(removed_sets.get((g.params[0].name, g.params[0].axis), ()))
        row["removed"] = removed
        row["slices"] = None if group_slices is None else [s[:4] for s in group_slices]
        rows.append(row)
    return rows


def _node_colours(report: Report, groups: list[dict[str, Any]], node_params: list[list[str]]) -> list[int]:
    """Per operator the position (in ``groups``) of the group that colours it, or -1.

    Prune mode: the group owning axis 0 of the operator's first parameter that has one (the channels it
    produces; a Conv also sits in the group of its input channels), else the first prunable group holding
    it, else the first group. Erase mode: the innermost structure holding it (structures nest by
    ``parent``)."""
    n = len(node_params)
    colour = [-1] * n
    if report.mode == "erase":
        depth = {}
        by_id = {g["id"]: g for g in groups}
        for g in groups:
            d, p, seen = 0, g["parent"], set()
            while p is not None and p in by_id and p not in seen:
                seen.add(p)
                d, p = d + 1, by_id[p]["parent"]
            depth[g["id"]] = d
        best = [-1] * n
        for pos, g in enumerate(groups):
            for i in g["nodes"]:
                if colour[i] < 0 or depth[g["id"]] > best[i]:
                    colour[i], best[i] = pos, depth[g["id"]]
        return colour
    produces: dict[str, int] = {}
    for pos, g in enumerate(groups):
        for name, axis in g["params"]:
            if axis == 0:
                produces.setdefault(name, pos)
    for pos, g in enumerate(groups):
        for i in g["nodes"]:
            if colour[i] < 0 or (g["prunable"] and not groups[colour[i]]["prunable"]):
                colour[i] = pos
    members = [set(g["nodes"]) for g in groups]
    for i, names in enumerate(node_params):
        own = next((produces[p] for p in names if p in produces), None)
        if own is not None and i in members[own]:
            colour[i] = own
    return colour
