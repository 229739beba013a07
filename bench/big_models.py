"""Models past protobuf's 2 GB: ``zigraph prune --sparsity 0.5`` on LLaMA-shaped ONNX files whose weights
are external data, timed and measured as a user would run it (the CLI in a child process).

Two files (``tests/llama_shaped.py``, without rotary): four layers of the 7B shape (1.07e9 parameters,
4.3 GB, random weights), pruned with verification; and the full 7B shape (6.7e9 parameters, 27 GB, a sparse
file of zeros: it costs no disk, and reads cost no disk either, so its time is a lower bound on a real
file's), pruned with ``--no-verify`` and, optionally, with verification, which on a machine without 27 GB to
spare must say plainly that it cannot verify (exit 4). For each run: wall time, the child's CPU time,
its peak resident memory (``os.wait4``'s ``ru_maxrss``), the output's size; the output is then checked
by path with ``onnx.checker`` and (when it fits) loaded and run in onnxruntime. The machine's load
average is recorded too: this machine is shared, and wall time under load is not CPU time.

Run: ``python bench/big_models.py [--only 1b|7b] [--verify-7b] [--dir DIR] [--keep] [--json PATH]``;
figures go into docs/benchmarks.md between the ``big-models`` markers; the measured runs are kept in
``bench/results/big_models_*.json`` (``--from-json`` rewrites the docs from them without rerunning).
Big files are deleted after measuring unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- big-models:start -->", "<!-- big-models:end -->"


def _size(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes on disk) of a model and its data file."""
    files = [path, path.with_name(path.name + ".data")]
    st = [f.stat() for f in files if f.exists()]
    return sum(s.st_size for s in st), sum(s.st_blocks * 512 for s in st)


def run_child(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; its wall time, CPU time and peak RSS (this child's own, from ``wait4``)."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out_text = proc.stdout.read().decode() if proc.stdout else ""
    err_text = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit": proc.returncode,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),
        "load_before": round(load, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "stdout": out_text[-2000:],
        "stderr": err_text[-2000:],
    }


def check_output(out: Path, run_it: bool) -> dict[str, Any]:
    """``onnx.checker`` by path (it reads the data file's layout too); onnxruntime loads and runs it."""
    import numpy as np
    import onnx

    res: dict[str, Any] = {}
    onnx.checker.check_model(str(out))
    res["checker"] = "passed"
    if run_it:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"input_ids": np.array([[1, 2, 3]], np.int64)})[0]
        res["onnxruntime"] = f"loads and runs (logits {list(y.shape)})"
        del sess
    else:
        res["onnxruntime"] = "not loaded here (too big to load next to the bench)"
    return res


def bench(
    name: str, shape: Any, fill: str, folder: Path, runs: list[list[str]], keep: bool, reuse: bool = False
) -> dict:
    from tests.llama_shaped import build_llama, remove

    model = folder / f"{name}.onnx"
    t0 = time.perf_counter()
    if not (reuse and model.exists() and model.with_name(model.name + ".data").exists()):
        build_llama(model, shape, data=fill, rotary=False)
    from doc_blocks import engine_version

    entry: dict[str, Any] = {
        "engine": engine_version(),
        "model": name,
        "params": shape.params,
        "fill": fill,
        "build_s": round(time.perf_counter() - t0, 1),
        "size_gb": round(_size(model)[0] / 1e9, 2),
        "runs": [],
    }
    try:
        for extra in runs:
            out = folder / "out" / f"{name}_pruned.onnx"
            report = folder / "out" / f"{name}_report.json"
            cmd = [sys.executable, "-m", "zigraph", "prune", str(model), "--sparsity", "0.5", "-o", str(out)]
            run = run_child([*cmd, "--report", str(report), "-q", *extra])
            run["flags"] = " ".join(extra) or "(verify)"
            if report.exists():
                result = json.loads(report.read_text()).get("result", {})
                run["params_after"] = result.get("params_after")
                run["verification"] = result.get("verification")
                run["unverified"] = result.get("unverified")
            if out.exists():
                apparent, disk = _size(out)
                run["output_gb"] = round(apparent / 1e9, 2)
                run["output_on_disk_gb"] = round(disk / 1e9, 2)
                run.update(check_output(out, run_it=apparent < 4e9))
                remove(out)
            if report.exists():
                report.unlink()
            run["ratio_peak_to_size"] = round(run["peak_rss_gb"] * 1024**3 / (entry["size_gb"] * 1e9), 2)
            entry["runs"].append(run)
            (folder / f"{name}_partial.json").write_text(json.dumps(entry, indent=1))  # survives a kill
            print(json.dumps({k: v for k, v in run.items() if k not in ("stdout",)}, indent=1), flush=True)
    finally:
        if not keep:
            remove(model)
    return entry


def markdown(entries: list[dict]) -> str:
    from doc_blocks import engine_version

    engines = sorted({e.get("engine", "") for e in entries} - {""}) or [engine_version()]
    lines = [
        f"Generated by `python bench/big_models.py` ({', '.join(engines)}, {os.cpu_count()} CPUs, shared "
        "machine: the load average is the machine's, wall time under load is not CPU time).",
        "",
        "| model | params | size | run | exit | wall | CPU | peak RSS | peak / size | output | verified |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        for r in e["runs"]:
            ver = r.get("verification")
            if r.get("unverified"):
                said = f"not verified, said plainly: {r['unverified']}"
            elif ver:
                verdict = "passed" if ver["passed"] else "FAILED"
                said = f"{verdict} (max rel {ver['max_rel']:.1e}, {ver.get('method', '')})"
            else:
                said = "—"
            out = f"{r['output_gb']} GB" if "output_gb" in r else "none"
            lines.append(
                f"| {e['model']} ({e['fill']}) | {e['params'] / 1e9:.2f}e9 | {e['size_gb']} GB "
                f"| `{r['flags']}` | {r['exit']} | {r['wall_s']} s (load {r['load_before']}) "
                f"| {r['cpu_s']} s | "
                f"{r['peak_rss_gb']} GiB | {r['ratio_peak_to_size']}× | {out} | {said} |"
            )
    lines += ["", "Targets (issue 16):", ""]
    for e in entries:
        for r in e["runs"]:
            wall, cpu = r["wall_s"], r["cpu_s"]
            limit, mem = (120, 1.3 * e["size_gb"] * 1e9 / 1024**3) if e["params"] < 2e9 else (600, 4.0)

            def met(ok: bool) -> str:
                return "met" if ok else "NOT met"

            lines.append(
                f"- {e['model']} `{r['flags']}`: time ≤ {limit} s — wall {met(wall <= limit)} "
                f"({wall} s at load {r['load_before']}–{r['load_after']}), CPU {met(cpu <= limit)} "
                f"({cpu} s); peak ≤ {mem:.1f} GiB — {met(r['peak_rss_gb'] <= mem)} ({r['peak_rss_gb']} GiB)."
            )
    lines += [
        "",
        "Every written output passed `onnx.checker.check_model` by path; outputs under 4 GB were loaded and "
        "run in onnxruntime by the bench. The 7B file is sparse (zeros): reading it costs no disk.",
    ]
    return "\n".join(lines)


def main() -> int:
    from tests.llama_shaped import LlamaShape

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["1b", "7b", "none"], default=None)
    ap.add_argument("--verify-7b", action="store_true", help="also run the 7B file with verification")
    ap.add_argument("--dir", default="/tmp/zigraph-big")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="use a model already built in --dir")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--from-json", nargs="+", default=None, help="only rewrite the docs from saved entries")
    args = ap.parse_args()
    folder = Path(args.dir)
    entries = []
    if args.from_json:
        for p in args.from_json:
            data = json.loads(Path(p).read_text())
            entries.extend(data if isinstance(data, list) else [data])
        args.only = "none"
    if args.only in (None, "1b"):
        entries.append(
            bench("llama_4_layers", LlamaShape(layers=4), "random", folder, [[]], args.keep, args.reuse)
        )
    if args.only in (None, "7b"):
        # Every weight of the sparse file is 0, so every L2 norm ties and the ranking would empty whichever
        # group comes first; random removal spreads over all groups as a trained model's norms do, so the
        # output (and the bytes written) is the size a real 7B gives.
        rand = ["--criterion", "random"]
        runs = [["--no-verify", *rand]] + ([rand] if args.verify_7b else [])
        entries.append(
            bench("llama_7b", LlamaShape(layers=32), "sparse", folder, runs, args.keep, args.reuse)
        )
    if args.json:
        Path(args.json).write_text(json.dumps(entries, indent=1))
    if not args.no_docs:
        from doc_blocks import replace_marked_block

        body = markdown(entries)
        if not replace_marked_block(DOC, START, END, body):
            with DOC.open("a", encoding="utf-8") as f:
                f.write(f"\n## Models past 2 GB (external data)\n\n{START}\n{body}\n{END}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
