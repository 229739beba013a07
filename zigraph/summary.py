"""Terminal summaries of reports: short, aligned, and honest about what is not prunable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from graphcore.report import EraseResult, GroupReport, PruneResult, Report, VerifyReport

__all__ = ["format_erase", "format_erase_summary", "format_prune", "format_summary", "human"]


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def format_summary(report: Report, max_groups: int = 12) -> str:
    lines = [
        f"model      {report.model.name} ({report.model.format}, opset {report.model.opset}), "
        f"{report.num_nodes} nodes",
        "kinds      " + ", ".join(f"{k} {v}" for k, v in sorted(report.vertex_kinds.items())),
        f"params     {human(report.params_total)} total, {human(report.params_prunable)} in prunable groups "
        f"({100.0 * report.params_prunable / max(report.params_total, 1):.1f}%)",
        f"flops      {human(report.flops_total)}",
        f"groups     {report.num_groups} node groups, {report.num_prunable_groups} prunable; "
        f"{report.num_zigs} ZIGs, {report.num_prunable_zigs} prunable",
    ]
    if report.unknown_ops:
        lines.append("unknown    " + ", ".join(f"{k} ×{v}" for k, v in sorted(report.unknown_ops.items())))
    lines.append("")
    lines.append(f"{'id':>4}  {'size':>5}  {'params':>8}  {'prunable':<8}  first parameter / reason")
    for g in report.groups[:max_groups]:
        first = g.params[0].name if g.params else "-"
        tail = first if g.prunable else f"{first} — {g.reason}"
        lines.append(
            f"{g.id:>4}  {g.size:>5}  {human(g.num_params):>8}  {'yes' if g.prunable else 'no':<8}  {tail}"
        )
    if len(report.groups) > max_groups:
        lines.append(f"   … {len(report.groups) - max_groups} more groups (--groups N or --json for all)")
    return "\n".join(lines)


def format_prune(report: Report) -> str:
    r = report.result
    if not isinstance(r, PruneResult):
        raise ValueError("format_prune needs the report of a prune run (its result is missing)")
    before, after = r.params_before, r.params_after
    lines = [
        f"pruned     {r.zigs_removed} of {report.num_prunable_zigs} prunable ZIGs ({r.criterion})",
        f"params     {human(before)} -> {human(after)} ({100.0 * after / max(before, 1):.1f}% kept)",
        f"output     {r.output or 'not written: the pruned model did not verify'}",
    ]
    lines.extend(_verified(r.verification))
    return "\n".join(lines)


def _verified(ver: VerifyReport | None) -> list[str]:
    if ver is None:
        return ["verified   no (--no-verify)"]
    status = "PASSED" if ver.passed else "FAILED"
    return [
        f"verified   {status} in onnxruntime: max abs error {ver.max_abs:.2e}, "
        f"max relative error {ver.max_rel:.2e} (tolerance {ver.rtol:g})"
    ]


def _kept(before: int, after: int) -> str:
    return f"{human(before)} -> {human(after)} ({100.0 * after / max(before, 1):.1f}% kept)"


def format_erase(report: Report) -> str:
    """What ``zigraph erase`` did, and — when it erased less than asked — why."""
    r = report.result
    if not isinstance(r, EraseResult):
        raise ValueError("format_erase needs the report of an erase run (its result is missing)")
    ids = ", ".join(str(i) for i in r.structures_erased[:24])
    more = f", … {len(r.structures_erased) - 24} more" if len(r.structures_erased) > 24 else ""
    lines = [
        f"erased     {len(r.structures_erased)} of {r.structures_erasable} erasable structures "
        f"(smallest norm first){': ' + ids + more if ids else ''}",
    ]
    if r.note:
        lines.append(f"note       {r.note}")
    lines += [
        f"operators  {r.nodes_removed} removed",
        f"params     {_kept(r.params_before, r.params_after)}",
    ]
    if r.flops_after >= 0:
        lines.append(f"flops      {_kept(r.flops_before, r.flops_after)}")
    lines.append(f"output     {r.output or 'not written: the erased model did not verify'}")
    lines.extend(_verified(r.verification))
    return "\n".join(lines)


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


def format_erase_summary(
    report: Report, ops: Mapping[int, Sequence[str]] | None = None, max_structures: int = 40
) -> str:
    """The removal structures as a tree: a structure sits under the one whose erasure also removes it.

    ``ops`` gives the operator types of each structure's own segment (the report names nodes, not their
    types); the nodes that die with a structure are counted after them.
    """
    groups = {g.id: g for g in report.groups}
    erasable = [g for g in report.groups if g.prunable]
    in_erasable = sum(g.num_params for g in erasable if g.parent is None or g.parent not in groups)
    lines = [
        f"model      {report.model.name} ({report.model.format}, opset {report.model.opset}), "
        f"{report.num_nodes} nodes",
        f"params     {human(report.params_total)} total",
        f"flops      {human(report.flops_total)}",
        f"structures {len(report.groups)} removal structures, {len(erasable)} erasable; "
        f"{human(in_erasable)} params in outermost erasable ones",
    ]
    if report.unknown_ops:
        lines.append("unknown    " + ", ".join(f"{k} ×{v}" for k, v in sorted(report.unknown_ops.items())))
    if not report.groups:
        lines.append("\nnothing to erase: no branch joins an Add or a Concat with another live input")
        return "\n".join(lines)
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
    width = max(4, *(len(first) for first, _ in rows))
    lines.append("")
    lines.append(
        f"{'id':<{width}}{'params':>8}{'FLOPs':>10}  {'erasable':<8}  operators (+ those that die with it)"
    )
    for first, g in rows:
        own = list((ops or {}).get(g.id, []))
        tail = _ops_text(own)
        if own and len(g.nodes) > len(own):
            tail += f" (+{len(g.nodes) - len(own)})"
        if not g.prunable:
            tail = f"{tail} — {g.reason or 'not erasable'}" if tail else (g.reason or "not erasable")
        flag = "yes" if g.prunable else "no"
        lines.append(f"{first:<{width}}{human(g.num_params):>8}{human(g.flops):>10}  {flag:<8}  {tail}")
    if len(rows) < len(report.groups):
        lines.append(f"   … {len(report.groups) - len(rows)} more structures (--groups N or --json for all)")
    return "\n".join(lines)
