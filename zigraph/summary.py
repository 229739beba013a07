"""Terminal summaries of reports: short, aligned, and honest about what is not prunable."""

from __future__ import annotations

from graphcore.report import Report

__all__ = ["format_prune", "format_summary", "human"]


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
    if r is None:
        raise ValueError("format_prune needs the report of a prune run (its result is missing)")
    before, after = r.params_before, r.params_after
    lines = [
        f"pruned     {r.zigs_removed} of {report.num_prunable_zigs} prunable ZIGs ({r.criterion})",
        f"params     {human(before)} -> {human(after)} ({100.0 * after / max(before, 1):.1f}% kept)",
        f"output     {r.output or 'not written: the pruned model did not verify'}",
    ]
    ver = r.verification
    if ver is None:
        lines.append("verified   no (--no-verify)")
    else:
        status = "PASSED" if ver.passed else "FAILED"
        lines.append(
            f"verified   {status} in onnxruntime: max abs error {ver.max_abs:.2e}, "
            f"max relative error {ver.max_rel:.2e} (tolerance {ver.rtol:g})"
        )
    return "\n".join(lines)
