"""Regenerate docs/real_tools.md and README's tools table: ``zigraph`` on the files real tools write.

Why a script: issue 12's evidence is a table, one row per file of tests/real_tools.py (fp16 from
onnxruntime's float16 converter, QDQ / QOperator from ``quantize_static``, ``quantize_dynamic``, the
transformer optimizer's fused ops, old model-zoo graphs, unsorted graphs): does ``zigraph analyze``
succeed, how many parameters does it find prunable, and does ``zigraph prune --sparsity 0.5`` write a
model that keeps at most 90% of the parameters and equals the original with the removed slices zeroed.
Each file runs in its own subprocess (as scripts/onnx_zoo_table.py does) so that a crash or a hang is a
row, not the end of the run; the CLI is called in-process there, so exit codes are the user's.

``--engine DIR`` runs the cases against another checkout's engine (the corpus and this script stay
this checkout's): ``--engine /work/main --save-before`` records the "before" numbers in
docs/real_tools_before.json, which the document then shows beside the current ones.

Run: ``python scripts/real_tools_table.py [--cases a,b] [--cache DIR] [--engine DIR] [--save-before]
[--no-write]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "real_tools.md"
BEFORE = ROOT / "docs" / "real_tools_before.json"
README = ROOT / "README.md"
START, END = "<!-- tools-table:start -->", "<!-- tools-table:end -->"
KIND_ORDER = ["fp16", "QDQ", "QOperator", "dynamic", "fused", "old-zoo", "unsorted", "fp32"]


def corpus():
    """tests/real_tools.py loaded by path: the worker's ``tests`` package may be another checkout's."""
    spec = importlib.util.spec_from_file_location("real_tools", ROOT / "tests" / "real_tools.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_tools"] = module
    spec.loader.exec_module(module)
    return module


def _cli(argv: list[str]) -> tuple[int, str]:
    """``zigraph`` in this process; its exit code and its stderr (stdout is not needed)."""
    from zigraph.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # pragma: no cover - main returns codes; keep a stray exit a row
            code = int(exc.code or 0)
    return int(code), err.getvalue()


def _last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def run_case(name: str, cache: Path) -> dict[str, Any]:
    """Every number of one row: onnxruntime loads it, analyze, prune at 50% with verification."""
    import onnx
    import onnxruntime as ort
    from doc_blocks import engine_version

    rt = corpus()
    case = rt.BY_NAME[name]
    path = rt.build(name, cache)
    row: dict[str, Any] = {"case": name, "kind": case.kind, "tool": case.tool, "engine": engine_version()}
    row["expected_tol"], row["max_kept_expected"] = case.tolerance, case.max_kept
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        row["ort_loads"] = True
    except Exception as exc:  # a corpus file must load; the row says so if it does not
        row["ort_loads"] = False
        row["ort_error"] = _last_line(str(exc))
    original = onnx.load(str(path))
    row["file_params"] = rt.file_params(original)
    with tempfile.TemporaryDirectory(prefix="zigraph-tools-") as tmp:
        rep = Path(tmp) / "analysis.json"
        t = time.perf_counter()
        code, err = _cli(["analyze", str(path), "--json", str(rep)])
        row.update(analyze_exit=code, analyze_s=round(time.perf_counter() - t, 2))
        row["analyze_traceback"] = "Traceback" in err
        if code:
            row["analyze_error"] = _last_line(err)
        if rep.exists():
            a = json.loads(rep.read_text())
            row.update(params_prunable=a["params_prunable"], params_total=a["params_total"],
                       prunable_zigs=a["num_prunable_zigs"], unknown_ops=a["unknown_ops"])  # fmt: skip
        out, prep = Path(tmp) / "small.onnx", Path(tmp) / "prune.json"
        t = time.perf_counter()
        code, err = _cli(["prune", str(path), "--sparsity", "0.5", "-o", str(out), "--report", str(prep)])
        row.update(prune_exit=code, prune_s=round(time.perf_counter() - t, 2))
        row["prune_traceback"] = "Traceback" in err
        if code:
            row["prune_error"] = _last_line(err)
        if prep.exists():
            res = json.loads(prep.read_text()).get("result") or {}
            ver = res.get("verification") or {}
            row.update(zigs_removed=res.get("zigs_removed"), max_rel=ver.get("max_rel"), rtol=ver.get("rtol"),
                       passed=ver.get("passed"), tolerance_why=ver.get("tolerance"))  # fmt: skip
        if out.exists():
            small = onnx.load(str(out))
            row["kept"] = rt.file_params(small) / max(row["file_params"], 1)
            # a written model must be a valid file, whatever its IR version
            invalid = rt.written_validly(small)
            row["valid"] = invalid is None
            if invalid:
                row["invalid_error"] = invalid[:300]
            try:
                import construct

                # Not vacuous: without zeroing the original, the small model must differ from it.
                row["unzeroed_rel"] = construct.verify(str(path), str(out), [], samples=1).max_rel
            except Exception as exc:  # recorded; the row's verdict does not depend on it
                row["unzeroed_error"] = _last_line(f"{type(exc).__name__}: {exc}")
    row["verified"] = verdict(row)
    return row


def verdict(row: dict[str, Any]) -> bool:
    """Issue 12's done for one file: pruned at 50%, verified within the expected tolerance, ≤ 90% kept."""
    return bool(
        row.get("prune_exit") == 0
        and row.get("passed")
        and row.get("max_rel") is not None
        and row["max_rel"] <= row["expected_tol"]
        and row.get("kept", 1.0) <= row["max_kept_expected"]
        and row.get("valid", False)
    )


def _worker(args: argparse.Namespace) -> int:
    try:
        row = run_case(args.one, Path(args.cache))
    except Exception as exc:  # the parent records it as an error row with this message
        row = {"case": args.one, "error": _last_line(f"{type(exc).__name__}: {exc}")}
    Path(args.result).write_text(json.dumps(row))
    return 0


def run_in_subprocess(name: str, cache: Path, engine: Path, timeout: int) -> dict[str, Any]:
    """One case in a fresh interpreter whose engine (graphcore, construct, zigraph...) is ``engine``'s."""
    with tempfile.TemporaryDirectory(prefix="zigraph-tools-row-") as tmp:
        result = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--result", str(result),
               "--cache", str(cache), "--engine", str(engine)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(engine)}
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=engine, env=env)
        except subprocess.TimeoutExpired:
            return {"case": name, "error": f"timed out after {timeout} s"}
        if result.exists():
            row = json.loads(result.read_text())
        else:
            row = {"case": name, "error": f"exit {proc.returncode}: {_last_line(proc.stderr or proc.stdout)}"}
        row["wall_s"] = round(time.perf_counter() - t, 1)
        return row


# --- tables -------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _sci(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


def _why(r: dict[str, Any]) -> str:
    """The one-line reason a row did not verify."""
    if "error" in r:
        return r["error"]
    if r.get("analyze_exit"):
        return f"analyze exit {r['analyze_exit']}: {r.get('analyze_error', '')}"
    if r.get("prune_exit") not in (0, 1):
        return f"prune exit {r['prune_exit']}: {r.get('prune_error', '')}"
    if not r.get("passed"):
        return f"verification failed: max rel err {_sci(r.get('max_rel'))} > rtol {_sci(r.get('rtol'))}"
    if r["max_rel"] > r["expected_tol"]:
        return f"max rel err {_sci(r['max_rel'])} above the expected {r['expected_tol']:g}"
    if r.get("kept", 1.0) > r["max_kept_expected"]:
        return f"keeps {_pct(r.get('kept'))} (nothing or little found prunable)"
    if not r.get("valid"):
        return f"written back invalid: {r.get('invalid_error', '')}"
    return ""


def _cell(text: str) -> str:
    """Table-safe, and without the cache folder in file names (they differ from machine to machine)."""
    return re.sub(r"/\S*/(\S+\.onnx)", r"\1", text).replace("|", "\\|")


def compact_table(rows: list[dict[str, Any]]) -> str:
    head = "| file | what wrote it | prunable params | kept % at 50% | max rel err | tolerance | verified |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | | | | | | ✗ ({_cell(r['error'][:80])}) |")
            continue
        found = r.get("params_prunable")
        lines.append(
            f"| {r['case']} | {_cell(r['tool'])} | {'—' if found is None else f'{found:,}'} "
            f"| {_pct(r.get('kept'))} | {_sci(r.get('max_rel'))} | {_sci(r.get('rtol'))} "
            f"| {'✓' if r['verified'] else '✗'} |"
        )
    return "\n".join(lines)


def full_table(rows: list[dict[str, Any]]) -> str:
    head = ("| file | kind | what wrote it | params | prunable params | analyze | prune | kept % "
            "| max rel err | tolerance | un-zeroed rel err | verified | why not |")  # fmt: skip
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | | | | | | | | | | | ✗ | {_cell(r['error'])} |")
            continue
        found = r.get("params_prunable")
        lines.append(
            f"| {r['case']} | {r['kind']} | {_cell(r['tool'])} | {r['file_params']:,} "
            f"| {'—' if found is None else f'{found:,}'} | exit {r.get('analyze_exit')} "
            f"| exit {r.get('prune_exit')} | {_pct(r.get('kept'))} | {_sci(r.get('max_rel'))} "
            f"| {_sci(r.get('rtol'))} | {_sci(r.get('unzeroed_rel'))} | {'✓' if r['verified'] else '✗'} "
            f"| {_cell(_why(r))} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    ok = sum(1 for r in rows if r.get("verified"))
    crashed = [
        r["case"] for r in rows if r.get("analyze_exit", 0) != 0 or r.get("prune_exit", 0) not in (0, 1)
    ]
    tb = [r["case"] for r in rows if r.get("analyze_traceback") or r.get("prune_traceback")]
    out = f"{ok} of {len(rows)} files prune at 50% verified with ≤ 90% of the parameters kept."
    if crashed:
        out += f" analyze/prune exit with an error on: {', '.join(crashed)}."
    if tb:
        out += f" A traceback was printed for: {', '.join(tb)}."
    return out


def ordered(rows: dict[str, dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    return [rows[n] for n in names if n in rows]


def write_doc(rows: list[dict[str, Any]], before: list[dict[str, Any]] | None) -> str:
    import onnxruntime

    engines = sorted({r.get("engine", "?") for r in rows})
    parts = [
        "# ONNX files as real tools write them",
        "",
        "Generated by `python scripts/real_tools_table.py`; do not edit by hand. The files are built by",
        "`tests/real_tools.py` from small random-weight networks (torchvision ResNet-18 / MobileNet-V2 at",
        "64×64, a 2-layer hidden-64 BERT, GPT-2 and LLaMA) with onnxruntime's own tools, and by hand in the",
        "style of the old ONNX model zoo. For each: `zigraph analyze`, then `zigraph prune --sparsity 0.5`",
        "(the report's verification compares the small model with the original whose removed slices are",
        "zeroed, in onnxruntime). *params* count every tensor the file fixes (initializers and `Constant`",
        "values); *kept %* is the small file's count over the original's; *tolerance* is the one the",
        "verification used; *un-zeroed rel err* compares the small model with the original as is (it must",
        "be large, or the check would be vacuous). Verified = prune exit 0, verification passed within the",
        "file's expected tolerance (1e-4 for fp32, 1e-2 for fp16, 1e-2 for int8), ≤ 90% of the parameters",
        "kept, and the written model passes `onnx.checker`.",
        "",
        f"onnxruntime {onnxruntime.__version__}, generated {time.strftime('%Y-%m-%d')}; engine at "
        f"{'; '.join(engines)}.",
        "",
        summary(rows),
        "",
        full_table(rows),
        "",
    ]
    if before:
        old = "; ".join(sorted({r.get("engine", "?") for r in before}))
        parts += [
            "## Before",
            "",
            f"The same corpus on the engine before issue 12 ({old}):",
            "",
            summary(before),
            "",
            full_table(before),
            "",
        ]
    text = "\n".join(parts)
    from graphcore.report import write_json_atomic

    write_json_atomic(DOC, text)
    return text


def update_readme(rows: list[dict[str, Any]]) -> bool:
    from doc_blocks import replace_marked_block

    return replace_marked_block(README, START, END, compact_table(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", help="comma-separated subset of tests/real_tools.py's CASES")
    p.add_argument("--cache", default=None, help="corpus files and raw results live here")
    p.add_argument("--engine", default=str(ROOT), help="checkout whose engine runs the cases")
    p.add_argument("--save-before", action="store_true", help=f"store the rows as {BEFORE.name}")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs and README alone")
    p.add_argument("--rows", metavar="PATH", help="also write the raw rows (JSON) here")
    p.add_argument("--from-rows", metavar="PATH", help="write docs and README from rows saved by --rows")
    p.add_argument("--timeout", type=int, default=900, help="seconds per case")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        sys.path.insert(0, str(Path(args.engine).resolve()))
        return _worker(args)

    sys.path.insert(0, str(ROOT))
    if args.from_rows:
        listed = json.loads(Path(args.from_rows).read_text())
        return _publish(listed)
    rt = corpus()
    cache = Path(args.cache) if args.cache else rt.default_cache()
    names = [c.name for c in rt.CASES]
    wanted = args.cases.split(",") if args.cases else names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        p.error(f"not in tests/real_tools.py: {', '.join(unknown)}")
    for name in wanted:  # built here, with this checkout's tests/zoo.py, whatever the engine
        rt.build(name, cache)
    engine = Path(args.engine).resolve()
    rows: dict[str, dict[str, Any]] = {}
    for name in wanted:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        rows[name] = run_in_subprocess(name, cache, engine, args.timeout)
        r = rows[name]
        print(f"    {'ok' if r.get('verified') else 'NO'} kept {_pct(r.get('kept'))} {_why(r)} "
              f"({r.get('wall_s')} s)", flush=True)  # fmt: skip
    listed = ordered(rows, names)
    print(summary(listed))
    if args.rows:
        Path(args.rows).write_text(json.dumps(listed, indent=1) + "\n")
    if args.save_before:  # a subset of cases updates their rows and keeps the others
        from graphcore.report import write_json_atomic

        old = {r["case"]: r for r in json.loads(BEFORE.read_text())} if BEFORE.exists() else {}
        merged = ordered({**old, **rows}, names)
        write_json_atomic(BEFORE, json.dumps(merged, indent=1) + "\n")
        print(f"wrote {BEFORE}")
        return 0
    if args.no_write:
        print(full_table(listed))
        return 0
    return _publish(listed)


def _publish(listed: list[dict[str, Any]]) -> int:
    before = json.loads(BEFORE.read_text()) if BEFORE.exists() else None
    print(write_doc(listed, before))
    if update_readme(listed):
        print(f"updated {README.name} between {START} and {END}")
    return 0 if all(r.get("verified") for r in listed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
