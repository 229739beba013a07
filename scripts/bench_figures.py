"""Regenerate docs/benchmarks.md (and README.md's bench block) from one run of the benches.

Why: the README states speed and latency ratios; they must come from one run on one machine, with the
machine named, not be copied by hand from separate runs. This script runs ``bench/analysis_speed.py``
and ``bench/ort_latency.py`` (each writes its numbers as JSON), renders the figures as markdown tables,
and replaces README.md's block between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` when the
markers exist.

Run: ``PYTHONPATH=/tmp/tp_site python scripts/bench_figures.py [--quick]`` (``--tp-site DIR`` does the
same as that PYTHONPATH: where a bench-only Torch-Pruning was unpacked; without it the peer column is
skipped). ``--render-only`` rebuilds the documents from the JSON of the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from doc_blocks import replace_marked_block

from graphcore.report import write_json_atomic as _write_atomic  # writes any text atomically

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zigraph" / "bench"


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was when we started."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu, "cores": os.cpu_count(), "load": load, "python": platform.python_version()}


def run_bench(script: str, out: Path, quick: bool, env: dict[str, str], extra: list[str]) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / script),
        "--json",
        str(out),
        *(["--quick"] if quick else []),
        *extra,
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def _f(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def analysis_section(data: dict[str, Any], torch_data: dict[str, Any] | None = None) -> list[str]:
    out = ["## Analysis speed (`bench/analysis_speed.py`)", ""]
    real = data.get("real", [])
    if real:
        peer = any("peer" in r for r in real)
        out += [
            "From an already parsed `ModelProto` to the report (`frontends.load(proto)` +",
            "`graphcore.analyze` + `report()`) against Torch-Pruning's",
            "`DependencyGraph().build_dependency(model, example_inputs)` on the same torchvision model,",
            "its traced forward pass included; interleaved",
            "rounds after a warm-up of each side, medians, seconds. The peer runs with torch's default",
            "thread pool and with one thread and is credited with the faster (*thr*): on a busy machine",
            "its pool's threads wait on each other at every operator, which once inflated its time 20×",
            '(that run gave the README\'s former "25.6×" for ResNet-50). *agree*: its two',
            "measurements within 1.5× of each other. *validate* is the checks and `onnx.checker`; *shapes*",
            "is ONNX shape inference; *to_ir* + *analyze* is zigraph's own code; *CPU ratio* compares",
            "process CPU time, *best ratio* the fastest round of each side. Target: ratio ≥ 10×.",
            "",
            "| model | nodes | from file | parsed | validate | shapes | to_ir | analyze | Torch-Pruning "
            "| thr | agree | ratio | CPU ratio | best ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in real:
            o = r["ours"]
            has = "peer" in r
            tp = _f(r["peer"], 3) if has else "—"
            thr = str(r.get("peer_threads", "—"))
            agree = ("yes" if r.get("peer_agree") else "**no**") if has else "—"
            ratios = " | ".join(
                f"{r[k]:.1f}×" if k in r else "—" for k in ("ratio", "ratio_cpu", "ratio_min")
            )
            out.append(
                f"| {r['model']} | {o['nodes']:.0f} | {_f(r['from_file'], 3)} | {_f(o['total'], 3)} "
                f"| {_f(o['validate'], 3)} | {_f(o['shape_inference'], 3)} | {_f(o['to_ir'], 3)} "
                f"| {_f(o['analyze'], 3)} | {tp} | {thr} | {agree} | {ratios} |"
            )
        if not peer:
            out += ["", "Torch-Pruning was not importable in this run: no peer column."]
        out.append("")
    if torch_data:
        out += [
            "From torch (`bench/torch_analysis_speed.py`): `load_torch(module, example)` + `analyze` +",
            "`report()`, the trace included, against the same `build_dependency`, interleaved, medians",
            "in milliseconds, the peer as above; *CPU ratio* and *best ratio* as above. Target: ratio ≥ 2×.",
            "",
            "| model | zigraph ms | Torch-Pruning ms | thr | agree | ratio | CPU ratio | best ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in torch_data.items():
            has = "peer" in r
            extra = " | ".join(f"{r[k]:.1f}×" if k in r else "—" for k in ("ratio_cpu", "ratio_min"))
            out.append(
                f"| {name} | {1000 * r['ours']:.0f} | {1000 * r['peer']:.0f} | {r['peer_threads']} "
                f"| {'yes' if r['peer_agree'] else '**no**'} | {r['ratio']:.1f}× | {extra} |"
                if has
                else f"| {name} | {1000 * r['ours']:.0f} | — | — | — | — | — | — |"
            )
        out.append("")
    synth = data.get("synthetic", [])
    if synth:
        out += [
            "Synthetic deep graphs built with `onnx.helper` (`conv`: residual Conv/BN/Relu/Add blocks,",
            "8 channels; `mlp`: MatMul/Add/Relu chains), each size run in a fresh process once per round,",
            "the rounds interleaved; each row is the round with the median CPU time (*CPU range*: the",
            "fastest and slowest rounds), its peak RSS the worst round's; phases in wall",
            "seconds. *growth* is the CPU time over the 10× smaller graph's (target ≤ 11×, linear; CPU",
            "time is what other load on the machine does not inflate), *wall growth* the same in wall",
            "time; *peak RSS* is the process's high-water mark (the model itself included); *heap* is",
            "the Python heap peak of load + analyze (tracemalloc). Target at 100k nodes: ≤ 10 s, ≤ 1 GiB.",
            "",
            "| family | nodes | wall s | CPU s | validate | shapes | to_ir | analyze | growth | wall growth "
            "| µs/node (CPU) | peak RSS MiB | heap MiB | CPU range s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in synth:
            if "error" in r:
                out.append(f"| {r['family']} | {r['nodes']} | FAILED: {r['error']} |||||||||||")
                continue
            g = f"{r['growth']:.1f}×" if "growth" in r else ""
            ge = f"{r['growth_wall']:.1f}×" if "growth_wall" in r else ""
            heap = f"{r['py_heap_peak_mib']:.0f}" if "py_heap_peak_mib" in r else "—"
            out.append(
                f"| {r['family']} | {r['nodes']} | {_f(r['total'])} | {_f(r['cpu'])} | {_f(r['validate'])} "
                f"| {_f(r['shape_inference'])} | {_f(r['to_ir'])} | {_f(r['analyze'])} | {g} | {ge} "
                f"| {1e6 * r['cpu'] / r['nodes']:.0f} | {r['peak_rss_mib']:.0f} | {heap} "
                f"| {_f(r.get('cpu_min', r['cpu']))}–{_f(r.get('cpu_max', r['cpu']))} |"
            )
        out.append("")
    llama = data.get("llama") or {}
    if llama and "error" not in llama:
        out += [
            "LLaMA-7B-shaped ONNX (`tests/llama_shaped.py`: 32 layers, hidden 4096, 32 heads, MLP 11008,",
            "vocab 32000, RMSNorm, rotary) with its weights as external data in a sparse file never",
            "written; load + analyze + report from the path in a fresh process (median of the rounds).",
            "No weight byte is read: `tests/test_analysis_scale.py` runs the same builder, smaller,",
            "on a data file of zero bytes. Target: ≤ 2 s, ≤ 300 MiB. The worker imports onnx and the",
            "engine before its clock starts (the synthetic workers too); that took"
            f" {llama.get('import_s', float('nan')):.2f} s in this run, most of it onnx's `ml_dtypes`.",
            "",
            "| nodes | parameters | external data GiB | wall s | CPU s | peak RSS MiB | groups | prunable "
            "| MLP groups | attention groups (head dims) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {llama['nodes']} | {llama['params'] / 1e9:.2f} B | {llama['data_gib']:.1f} "
            f"| {_f(llama['total'])} | {_f(llama['cpu'])} | {llama['peak_rss_mib']:.0f} "
            f"| {llama['groups']} | {llama['prunable']} "
            f"| {llama['mlp_groups']} | {llama['head_groups']} |",
            "",
        ]
    out += [f"- {v}" for v in data.get("verdict", [])]
    return [*out, ""]


def latency_section(data: dict[str, Any]) -> list[str]:
    """bench/ort_latency.py's own rendering, between its markers (``ort_latency.py --doc`` rewrites it)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import ort_latency

    return [ort_latency.START, *ort_latency.render_section(data), ort_latency.END, ""]


def readme_block(speed: dict[str, Any], lat: dict[str, Any], info: dict[str, Any]) -> str:
    """A few lines: the ratios the issues set targets for."""
    lines = []
    real = [r for r in speed.get("real", []) if "ratio" in r]
    if real:
        parts = ", ".join(f"{r['model']} {r['ratio']:.1f}×" for r in real)
        lines.append(
            f"- Analysis from a parsed ONNX model to the report vs Torch-Pruning's `build_dependency` "
            f"(target ≥ 10×): {parts}."
        )
    torch_rows = [(n, r) for n, r in speed.get("torch", {}).items() if "ratio" in r]
    if torch_rows:
        parts = ", ".join(f"{n} {r['ratio']:.1f}×" for n, r in torch_rows)
        lines.append(f"- The same from torch, trace included (target ≥ 2×): {parts}.")
    grows = [r for r in speed.get("synthetic", []) if "growth" in r]
    if grows:
        worst = max(r["growth"] for r in grows)
        big = max((r for r in speed["synthetic"] if "error" not in r), key=lambda r: r["nodes"])
        lines.append(
            f"- Growth per 10× nodes (CPU time, target ≤ 11×): at most {worst:.1f}×; {big['nodes']:,} nodes "
            f"in {big['cpu']:.1f} s CPU, peak RSS {big['peak_rss_mib']:.0f} MiB."
        )
    llama = speed.get("llama") or {}
    if llama and "error" not in llama:
        lines.append(
            f"- LLaMA-7B-shaped ONNX, weights external and never read: {llama['total']:.1f} s "
            f"({llama['cpu']:.1f} s CPU), peak RSS {llama['peak_rss_mib']:.0f} MiB."
        )
    sys.path.insert(0, str(ROOT / "bench"))
    import ort_latency

    if lat.get("rows"):
        lines += ort_latency.readme_lines(lat)
    else:
        lines += _kept_readme_lines(ort_latency.README_LINE)
    kept = "" if lat.get("rows") else " (the latency lines: from their own run, not rerun)"
    lines.append(f"- Measured on {info['cpu']} ({info['cores']} cores), {info['date']}{kept}.")
    return "\n".join(lines)


def _kept_readme_lines(prefix: str) -> list[str]:
    """README bench-block lines of a bench not rerun this time (``--only analysis``), kept as they are."""
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    i, j = text.find(START), text.find(END)
    block = text[i:j] if 0 <= i < j else ""
    return [line for line in block.splitlines() if line.startswith(prefix)]


def _kept_doc_section(title: str, stop: str) -> list[str]:
    """A section of the current docs/benchmarks.md from ``title`` up to ``stop``, kept as it is."""
    old = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    i = old.find(title)
    j = old.find(stop, i) if i >= 0 else -1
    return [*old[i:j].rstrip("\n").splitlines(), ""] if 0 <= i < j else []


PEERS_START, PEERS_END = "<!-- onnx-peers:start -->", "<!-- onnx-peers:end -->"
# sections other benches write into docs/benchmarks.md themselves (their --doc option)
KEPT = [
    (PEERS_START, PEERS_END),  # bench/onnx_peers.py
    ("<!-- optimizer-step:start -->", "<!-- optimizer-step:end -->"),  # bench/optimizer_step.py
]


def kept_sections() -> list[str]:
    """Sections other benches write into docs/benchmarks.md (their ``--doc``), kept as they are."""
    if not DOC.exists():
        return []
    old = DOC.read_text(encoding="utf-8")
    out = []
    for start, end in KEPT:
        i, j = old.find(start), old.find(end)
        if 0 <= i < j:
            out += [old[i : j + len(end)], ""]
    return out


def render(cache: Path) -> str:
    speed = json.loads((cache / "analysis_speed.json").read_text())
    torch_json = cache / "torch_analysis_speed.json"
    speed["torch"] = json.loads(torch_json.read_text()) if torch_json.exists() else {}
    lat_json = cache / "ort_latency.json"
    lat = json.loads(lat_json.read_text()) if lat_json.exists() else {}
    info = json.loads((cache / "machine.json").read_text())
    latency = (
        latency_section(lat)
        if lat
        else _kept_doc_section("## onnxruntime latency", "The digits comparison with Torch-Pruning")
    )
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Generated by `python scripts/bench_figures.py` (`--quick` for a short run; see",
            "[bench/README.md](../bench/README.md)). Do not edit by hand. Every ratio is measured side by",
            "side in one run on one machine:",
            f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, load average {info['load']:.1f}",
            f"when the run started{', quick run' if info.get('quick') else ''}, {info['date']}.",
            "",
            *analysis_section(speed, speed["torch"]),
            *latency,
            "The digits comparison with Torch-Pruning (one training run vs prune + fine-tune) is in",
            "[digits_vs_torch_pruning.md](digits_vs_torch_pruning.md).",
            "",
            *kept_sections(),
        ]
    )
    _write_atomic(DOC, text)
    if replace_marked_block(README, START, END, readme_block(speed, lat, info)):
        print(f"updated {README.name} between {START} and {END}")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short versions of both benches")
    p.add_argument("--tp-site", help="folder with a bench-only torch_pruning, put on PYTHONPATH")
    p.add_argument("--cache", default=str(default_cache()), help="exports and the runs' JSON live here")
    p.add_argument("--render-only", action="store_true", help="rebuild the documents from the last run")
    p.add_argument(
        "--only",
        choices=("analysis",),
        help="run only the analysis benches (ONNX and torch); the latency figures are kept from the last run",
    )
    args = p.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        env = dict(os.environ)
        if args.tp_site:
            env["PYTHONPATH"] = os.pathsep.join(x for x in (args.tp_site, env.get("PYTHONPATH")) if x)
        info = {**machine(), "date": time.strftime("%Y-%m-%d"), "quick": args.quick}
        extra = ["--cache", str(cache)]
        run_bench("analysis_speed.py", cache / "analysis_speed.json", args.quick, env, extra)
        run_bench("torch_analysis_speed.py", cache / "torch_analysis_speed.json", args.quick, env, [])
        if args.only != "analysis":
            run_bench("ort_latency.py", cache / "ort_latency.json", args.quick, env, extra)
        (cache / "machine.json").write_text(json.dumps(info))
    print(render(cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
