"""Terminal summaries of reports: short, aligned, and honest about what is not prunable.

Each ``*_view`` is a rich renderable (coloured on a terminal, see ``zigraph.console``); each ``format_*``
is the same as plain text. The ``key        value`` lines keep a fixed layout that scripts and tests
grep; scripts that want the numbers should read ``--json`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from graphcore.report import EraseResult, GroupReport, PruneResult, Report, VerifyReport
from zigraph.console import plain_text

__all__ = [
    "erase_summary_view",
    "erase_view",
    "format_erase",
    "format_erase_summary",
    "format_prune",
    "format_summary",
    "human",
    "prune_view",
    "summary_view",
    "verify_view",
]


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _facts(rows: Sequence[tuple[str, RenderableType]]) -> Table:
    """``key        value`` lines: the key column is 10 wide and one space apart, as scripts grep them."""
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(min_width=10, no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _table(*columns: tuple[str, str]) -> Table:
    """A borderless table whose rows start with their first cell (``^\\s*ID\\s`` finds a row)."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 2, 0, 0))
    for title, justify in columns:
        table.add_column(title, justify=justify, no_wrap=justify == "right")  # type: ignore[arg-type]
    return table


def _flag(ok: bool) -> Text:
    return Text("yes", style="green") if ok else Text("no", style="yellow")


def summary_view(report: Report, max_groups: int = 12) -> Group:
    """``zigraph analyze``: the model in numbers, then the largest node groups, prunable or why not."""
    facts: list[tuple[str, RenderableType]] = [
        ("model", f"{report.model.name} ({report.model.format}, opset {report.model.opset}), "
                  f"{report.num_nodes} nodes"),
        ("kinds", ", ".join(f"{k} {v}" for k, v in sorted(report.vertex_kinds.items()))),
        ("params", f"{human(report.params_total)} total, {human(report.params_prunable)} in prunable groups "
                   f"({100.0 * report.params_prunable / max(report.params_total, 1):.1f}%)"),
        ("flops", human(report.flops_total)),
        ("groups", f"{report.num_groups} node groups, {report.num_prunable_groups} prunable; "
                   f"{report.num_zigs} ZIGs, {report.num_prunable_zigs} prunable"),
    ]  # fmt: skip
    if report.unknown_ops:
        facts.append(("unknown", ", ".join(f"{k} ×{v}" for k, v in sorted(report.unknown_ops.items()))))
    table = _table(
        ("id", "right"), ("size", "right"), ("params", "right"), ("prunable", "left"),
        ("first parameter / reason", "left"),
    )  # fmt: skip
    for g in report.groups[:max_groups]:
        first = g.params[0].name if g.params else "-"
        tail = Text(first) if g.prunable else Text(f"{first} — ").append(str(g.reason), style="dim")
        table.add_row(str(g.id), str(g.size), human(g.num_params), _flag(g.prunable), tail)
    parts: list[RenderableType] = [_facts(facts), "", table]
    if len(report.groups) > max_groups:
        parts.append(f"   … {len(report.groups) - max_groups} more groups (--groups N or --json for all)")
    return Group(*parts)


def format_summary(report: Report, max_groups: int = 12) -> str:
    """:func:`summary_view` as plain text."""
    return plain_text(summary_view(report, max_groups))


def prune_view(report: Report) -> Table:
    """``zigraph prune``: how much went, where the model is, and whether it verified."""
    r = report.result
    if not isinstance(r, PruneResult):
        raise ValueError("format_prune needs the report of a prune run (its result is missing)")
    return _facts([
        ("pruned", f"{r.zigs_removed} of {report.num_prunable_zigs} prunable ZIGs ({r.criterion})"),
        ("params", _kept(r.params_before, r.params_after)),
        ("output", r.output or Text("not written: the pruned model did not verify", style="red")),
        _verified(r.verification, r.unverified),
    ])  # fmt: skip


def format_prune(report: Report) -> str:
    """:func:`prune_view` as plain text."""
    return plain_text(prune_view(report))


def _verified(ver: VerifyReport | None, unverified: str | None = None) -> tuple[str, RenderableType]:
    if unverified:
        return "verified", Text(f"NO: cannot verify on this machine: {unverified}", style="bold red")
    if ver is None:
        return "verified", "no (--no-verify)"
    status = Text("PASSED", style="bold green") if ver.passed else Text("FAILED", style="bold red")
    return "verified", status.append(
        f" in onnxruntime: max abs error {ver.max_abs:.2e}, max relative error {ver.max_rel:.2e} "
        f"(tolerance {ver.rtol:g})"
        + (
            f"; {ver.method}, peak memory {ver.peak_memory_mb:.0f} MB"
            if ver.method and ver.peak_memory_mb
            else ""
        ),
        style="default",
    )


def verify_view(rep: VerifyReport) -> Text:
    """``zigraph verify``: one line, PASSED or FAILED with the errors that decided it."""
    status = Text("PASSED", style="bold green") if rep.passed else Text("FAILED", style="bold red")
    return (
        Text("verification ")
        .append(status)
        .append(
            f": max abs error {rep.max_abs:.3e}, max relative error {rep.max_rel:.3e} "
            f"(tolerance {rep.rtol:g}, {rep.samples} samples)"
        )
    )


def _kept(before: int, after: int) -> str:
    return f"{human(before)} -> {human(after)} ({100.0 * after / max(before, 1):.1f}% kept)"


def erase_view(report: Report) -> Table:
    """What ``zigraph erase`` did, and — when it erased less than asked — why."""
    r = report.result
    if not isinstance(r, EraseResult):
        raise ValueError("format_erase needs the report of an erase run (its result is missing)")
    ids = ", ".join(str(i) for i in r.structures_erased[:24])
    more = f", … {len(r.structures_erased) - 24} more" if len(r.structures_erased) > 24 else ""
    facts: list[tuple[str, RenderableType]] = [
        ("erased", f"{len(r.structures_erased)} of {r.structures_erasable} erasable structures "
                   f"(smallest norm first){': ' + ids + more if ids else ''}"),
    ]  # fmt: skip
    if r.note:
        facts.append(("note", Text(r.note, style="yellow")))
    facts += [("operators", f"{r.nodes_removed} removed"), ("params", _kept(r.params_before, r.params_after))]
    if r.flops_after >= 0:
        facts.append(("flops", _kept(r.flops_before, r.flops_after)))
    facts.append(("output", r.output or Text("not written: the erased model did not verify", style="red")))
    facts.append(_verified(r.verification))
    return _facts(facts)


def format_erase(report: Report) -> str:
    """:func:`erase_view` as plain text."""
    return plain_text(erase_view(report))


def _ops_text(ops: Sequence[str], width: int = 60) -> str:
    """Op types in order, runs folded (``Conv ×2``), cut to ``width`` characters."""
    runs: list[list] = []
    for op in ops:
        if runs and runs[-1][0] == op:
            runs[-1][1] += 1
        else:
            runs.append([op, 1])
    text = " ".join(op if n == 1 else f"{op}×{n}" for op, n in runs)
    return text if len(text) <= width else text[: width - 1] + "…"


def erase_summary_view(
    report: Report, ops: Mapping[int, Sequence[str]] | None = None, max_structures: int = 40
) -> Group:
    """The removal structures as a tree: a structure sits under the one whose erasure also removes it.

    ``ops`` gives the operator types of each structure's own segment (the report names nodes, not their
    types); the nodes that die with a structure are counted after them.
    """
    groups = {g.id: g for g in report.groups}
    erasable = [g for g in report.groups if g.prunable]
    in_erasable = sum(g.num_params for g in erasable if g.parent is None or g.parent not in groups)
    facts: list[tuple[str, RenderableType]] = [
        ("model", f"{report.model.name} ({report.model.format}, opset {report.model.opset}), "
                  f"{report.num_nodes} nodes"),
        ("params", f"{human(report.params_total)} total"),
        ("flops", human(report.flops_total)),
        ("structures", f"{len(report.groups)} removal structures, {len(erasable)} erasable; "
                       f"{human(in_erasable)} params in outermost erasable ones"),
    ]  # fmt: skip
    if report.unknown_ops:
        facts.append(("unknown", ", ".join(f"{k} ×{v}" for k, v in sorted(report.unknown_ops.items()))))
    if not report.groups:
        return Group(
            _facts(facts), "", "nothing to erase: no branch joins an Add or a Concat with another live input"
        )
    children: dict[int | None, list[GroupReport]] = {}
    for g in report.groups:
        parent = g.parent if g.parent in groups else None
        children.setdefault(parent, []).append(g)
    rows: list[tuple[str, GroupReport]] = []

    def walk(g: GroupReport, prefix: str, last: bool, depth: int) -> None:
        if len(rows) >= max_structures:
            return
        rows.append(((prefix + ("└─ " if last else "├─ ") if depth else "") + str(g.id), g))
        kids = sorted(children.get(g.id, []), key=lambda c: c.id)
        child_prefix = prefix + ("   " if last else "│  ") if depth else ""
        for i, c in enumerate(kids):
            walk(c, child_prefix, i == len(kids) - 1, depth + 1)

    for root in sorted(children.get(None, []), key=lambda c: c.id):
        walk(root, "", True, 0)
    table = _table(
        ("id", "left"), ("params", "right"), ("FLOPs", "right"), ("erasable", "left"),
        ("operators (+ those that die with it)", "left"),
    )  # fmt: skip
    table.columns[0].no_wrap = True
    for first, g in rows:
        own = list((ops or {}).get(g.id, []))
        tail = Text(_ops_text(own))
        if own and len(g.nodes) > len(own):
            tail.append(f" (+{len(g.nodes) - len(own)})")
        if not g.prunable:
            reason = g.reason or "not erasable"
            tail = tail.append(" — ").append(reason, style="dim") if own else Text(reason, style="dim")
        table.add_row(first, human(g.num_params), human(g.flops), _flag(g.prunable), tail)
    parts: list[RenderableType] = [_facts(facts), "", table]
    if len(rows) < len(report.groups):
        parts.append(f"   … {len(report.groups) - len(rows)} more structures (--groups N or --json for all)")
    return Group(*parts)


def format_erase_summary(
    report: Report, ops: Mapping[int, Sequence[str]] | None = None, max_structures: int = 40
) -> str:
    """:func:`erase_summary_view` as plain text."""
    return plain_text(erase_summary_view(report, ops, max_structures))
