"""Does a pruned model actually run faster? onnxruntime latency of full vs 50%-pruned models.

Fewer parameters only matter if the runtime gets faster, so this bench times what a user deploys:
ResNet-50 and MobileNetV2 (the dynamo ONNX exports of tests/zoo.py, random weights), a BERT-base-shaped
encoder (12 layers, hidden 768, 12 heads, MLP 3072, sequence 128) and a smaller LLaMA-shaped decoder
(8 layers, hidden 512, 8 heads, MLP 1408), both built from ``transformers`` configs with random weights
and exported with ``torch.onnx.export``. Each is pruned by ``zigraph.pipeline.prune_model`` at sparsity
0.5 (the job of ``zigraph prune --sparsity 0.5``; every pruned model is verified in onnxruntime before
it is timed) twice: with the default selection (``--multiple auto``: every group keeps a width its
ops' kernels like, graphcore/widths.py) and with ``--multiple 1`` (no rounding: the selection as it was
before the default rounded, kept for comparison).

Timing: every session gets identical options (CPU provider, all graph optimizations, sequential
execution), once with one intra-op thread and once with onnxruntime's default thread count. After a
warm-up of every session, rounds run the full model and each pruned one back to back, in an order that
rotates every round, so a busy machine slows all of them alike; the median per model is reported as
pruned / full. For the convolutional models the bench also counts how many convolutions onnxruntime
runs in its blocked NCHWc layout (the cause of ragged widths' slowness) in each model.

Targets (issue 14): ResNet-50 and MobileNetV2 ≤ 0.6, BERT-base-shaped ≤ 0.7 with the default selection,
1 thread and default threads.

Run: ``python bench/ort_latency.py [--models ...] [--runs N] [--quick] [--json PATH]``; ``--doc``
rewrites its section of docs/benchmarks.md from ``--json``'s file (``scripts/bench_figures.py`` renders
the same section with ``render_section``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CNNS = ("resnet50", "mobilenet_v2")
TRANSFORMERS: dict[str, tuple[str, dict[str, int], int]] = {
    # name: (family, config, sequence length)
    "bert_base": ("bert", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                           "intermediate_size": 3072, "vocab_size": 30522,
                           "max_position_embeddings": 512}, 128),
    "llama_small": ("llama", {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
                              "num_key_value_heads": 8, "intermediate_size": 1408, "vocab_size": 8000,
                              "max_position_embeddings": 256}, 128),
}  # fmt: skip
MODELS = (*CNNS, *TRANSFORMERS)
TARGET = {"resnet50": 0.6, "mobilenet_v2": 0.6, "bert_base": 0.7}
# (label, --multiple): the default first; "1" is the unrounded selection, for comparison.
VARIANTS = (("default", None), ("--multiple 1", 1))
THREADS = (("1 thread", 1), ("default", 0))
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- ort-latency:start -->", "<!-- ort-latency:end -->"
README_LINE = "- onnxruntime latency, "
AFTER = "The digits comparison"  # the paragraph that follows this section in docs/benchmarks.md


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zigraph" / "bench"


def export_transformer(name: str, folder: Path) -> Path:
    """A transformer of the shape in ``TRANSFORMERS`` with random weights, exported once per cache."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    path = folder / f"{name}.ts.onnx"
    if path.exists():
        return path
    family, kwargs, seq = TRANSFORMERS[name]
    cls, cfg = (BertModel, BertConfig) if family == "bert" else (LlamaModel, LlamaConfig)
    config = cfg(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    inner = cls(config).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=ids).last_hidden_state

    ids = torch.randint(0, kwargs["vocab_size"], (1, seq))
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(LastHidden(inner).eval(), (ids,), str(tmp), dynamo=False, opset_version=17,
                      input_names=["ids"])  # fmt: skip
    tmp.replace(path)
    return path


def model_file(name: str, cache: Path) -> Path:
    if name in TRANSFORMERS:
        return export_transformer(name, cache)
    from tests.zoo import export

    return export(name, cache, dynamo=True)


def session(path: Path, threads: int, optimized: Path | None = None) -> Any:
    """One CPU session; ``threads=0`` keeps onnxruntime's default intra-op thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def feed_for(sess: Any) -> dict[str, np.ndarray]:
    """A fixed input: token ids below 100 for integer inputs, normal noise for float ones."""
    rng = np.random.default_rng(0)
    feed = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        if "int" in inp.type:
            feed[inp.name] = rng.integers(0, 100, shape).astype(np.int64)
        else:
            feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def time_side_by_side(
    paths: list[Path], threads: int, runs: int, warmup: int, budget_s: float
) -> list[list[float]]:
    """Seconds per run of every model, rounds interleaved (order rotating each round).

    At most ``runs`` rounds, fewer (at least 5) where a round is so slow that ``runs`` would exceed
    ``budget_s``.
    """
    sessions = [session(p, threads) for p in paths]
    feed = feed_for(sessions[0])
    t0 = time.perf_counter()
    for _ in range(warmup):
        for s in sessions:
            s.run(None, feed)
    per_round = (time.perf_counter() - t0) / max(warmup, 1)
    rounds = max(5, min(runs, int(budget_s / max(per_round, 1e-9))))
    times: list[list[float]] = [[] for _ in sessions]
    for r in range(rounds):
        for k in range(len(sessions)):
            i = (k + r) % len(sessions)
            t = time.perf_counter()
            sessions[i].run(None, feed)
            times[i].append(time.perf_counter() - t)
    return times


def nchwc_counts(path: Path, tmp: Path) -> dict[str, int]:
    """Convolutions onnxruntime runs in its blocked NCHWc layout, all convolutions, and layout reorders."""
    import onnx

    opt = tmp / (path.stem + ".ort-opt.onnx")
    session(path, 1, optimized=opt)
    nodes = onnx.load(str(opt), load_external_data=False).graph.node
    opt.unlink()
    conv = [n for n in nodes if n.op_type in ("Conv", "FusedConv")]
    return {
        "conv": len(conv),
        "nchwc": sum(n.domain == "com.microsoft.nchwc" for n in conv),
        "reorders": sum(n.op_type in ("ReorderInput", "ReorderOutput") for n in nodes),
    }


def prune(path: Path, out: Path, sparsity: float, multiple: int | None) -> dict[str, Any]:
    """The one-shot job of ``zigraph prune`` (verified); its result section plus FLOPs kept."""
    import frontends
    import graphcore
    from zigraph.pipeline import LoadedModel, prune_model

    graph = frontends.load(str(path))
    flops = graphcore.analyze(graph).flops_total
    loaded = LoadedModel(graph, source=str(path))
    report = prune_model(loaded, sparsity, out, samples=2, multiple=multiple)
    res = report["result"]
    res["flops_kept"] = graphcore.analyze(frontends.load(str(out))).flops_total / max(flops, 1)
    return res


def bench(models: tuple[str, ...], cache: Path, sparsity: float, runs: int, warmup: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="zigraph-ort-") as tmpdir:
        tmp = Path(tmpdir)
        for name in models:
            full = model_file(name, cache)
            row: dict[str, Any] = {"model": name, "variants": []}
            smalls = []
            for label, multiple in VARIANTS:
                small = tmp / f"{name}.{len(smalls)}.small.onnx"
                res = prune(full, small, sparsity, multiple)
                v: dict[str, Any] = {
                    "variant": label,
                    "params_kept": res["params_after"] / res["params_before"],
                    "flops_kept": res["flops_kept"],
                    "zigs_removed": res["zigs_removed"],
                    "verified": bool(res["verification"]["passed"]),
                    "max_rel": res["verification"]["max_rel"],
                }
                if name in CNNS:
                    v["layout"] = nchwc_counts(small, tmp)
                row["variants"].append(v)
                smalls.append(small)
            if name in CNNS:
                row["layout_full"] = nchwc_counts(full, tmp)
            budget = 40.0 if name in TRANSFORMERS else 20.0
            for label, threads in THREADS:
                times = time_side_by_side([full, *smalls], threads, runs, warmup, budget)
                f = statistics.median(times[0])
                row.setdefault("full_ms", {})[label] = 1e3 * f
                row.setdefault("rounds", {})[label] = len(times[0])
                for v, t in zip(row["variants"], times[1:], strict=True):
                    s = statistics.median(t)
                    v[label] = {"pruned_ms": 1e3 * s, "ratio": s / f}
            for small in smalls:
                small.unlink(missing_ok=True)
                Path(str(small) + ".data").unlink(missing_ok=True)
            rows.append(row)
            print(f"  {name}: done", flush=True)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["model"] not in TARGET:
            continue
        v = r["variants"][0]
        worst = max(v[label]["ratio"] for label, _ in THREADS)
        ok = worst <= TARGET[r["model"]] and v["verified"]
        out.append(
            f"{r['model']}: default selection at most {worst:.2f} of the full model's latency "
            f"(target ≤ {TARGET[r['model']]}): {'MET' if ok else 'NOT MET'}"
        )
    return out


def render_section(data: dict[str, Any]) -> list[str]:
    """The markdown section of docs/benchmarks.md for one run's JSON (also used by bench_figures)."""
    env = data.get("env", {})
    out = [
        "## onnxruntime latency (`bench/ort_latency.py`)",
        "",
        f"onnxruntime {env.get('onnxruntime', '?')} on the CPU ({env.get('cpus', '?')} cores, load average "
        f"{env.get('load', float('nan')):.1f} at the start, {env.get('date', '?')}), batch 1,",
        "identical session options for every model, medians of interleaved rounds (full and pruned",
        "models back to back, order rotating) after a warm-up; pruned with",
        f"`zigraph prune --sparsity {env.get('sparsity', 0.5)}`. *default* is the default selection (each",
        "group keeps a multiple of the width its ops' kernels like: 8 channels for convolutions, 16 for",
        "matrix products); *--multiple 1* is the same ranking without rounding, as the default was",
        "before. *NCHWc convs*: convolutions onnxruntime runs in its blocked layout, of all (layout",
        "reorders in brackets). BERT-base-shaped: 12 layers, hidden 768, 12 heads, MLP 3072, 128 tokens;",
        "LLaMA-shaped: 8 layers, hidden 512, 8 heads, MLP 1408, 128 tokens (random weights; until",
        "hidden-size pruning lands, heads and MLP widths are what is pruned). *ratio* = pruned / full.",
        "",
        "| model | selection | params kept | FLOPs kept | NCHWc convs | threads | rounds | full ms "
        "| pruned ms | ratio | verified |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data.get("rows", []):
        for v in r["variants"]:
            lay = v.get("layout")
            conv = f"{lay['nchwc']}/{lay['conv']} ({lay['reorders']})" if lay else "—"
            ok = "yes" if v["verified"] else "**NO**"
            for label, _ in THREADS:
                out.append(
                    f"| {r['model']} | {v['variant']} | {v['params_kept']:.2f} | {v['flops_kept']:.2f} "
                    f"| {conv} | {label} | {r['rounds'][label]} | {r['full_ms'][label]:.2f} "
                    f"| {v[label]['pruned_ms']:.2f} | {v[label]['ratio']:.2f} | {ok} ({v['max_rel']:.0e}) |"
                )
        if "layout_full" in r:
            lay = r["layout_full"]
            conv = f"{lay['nchwc']}/{lay['conv']} ({lay['reorders']})"
            out.append(f"| {r['model']} | full model | 1.00 | 1.00 | {conv} | | | | | | |")
    out += ["", *[f"- {v}" for v in data.get("verdict", [])], ""]
    return out


def print_rows(rows: list[dict]) -> None:
    for line in render_section({"rows": rows})[13:]:
        print(line)


def readme_lines(data: dict[str, Any]) -> list[str]:
    """The README's bench-block lines for this bench (also used by scripts/bench_figures.py)."""
    out = []
    for r in data.get("rows", []):
        v = r["variants"][0]  # the default selection
        out.append(
            f"{README_LINE}{r['model']} pruned at 50% (`zigraph prune` defaults): "
            f"{v['1 thread']['ratio']:.2f} (1 thread), {v['default']['ratio']:.2f} (default threads) "
            f"of the full model's (measured {data.get('env', {}).get('date', '?')[:10]})."
        )
    return out


def _readme(data: dict[str, Any]) -> None:
    """Swap this bench's lines in README.md's generated bench block, leaving the others."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    i, j = text.find("<!-- bench:start -->"), text.find("<!-- bench:end -->")
    if not 0 <= i < j:
        return
    lines = text[i:j].split("\n")
    at = next((k for k, x in enumerate(lines) if x.startswith(README_LINE)), len(lines) - 1)
    kept = [x for x in lines if not x.startswith(README_LINE)]
    block = "\n".join([*kept[:at], *readme_lines(data), *kept[at:]])
    readme.write_text(text[:i] + block + text[j:], encoding="utf-8")


def write_doc(data: dict[str, Any]) -> None:
    """Replace this bench's marked section of docs/benchmarks.md (appended the first time) and its
    lines in README.md's bench block."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from doc_blocks import replace_marked_block

    _readme(data)
    body = "\n".join(render_section(data)).rstrip()
    if replace_marked_block(DOC, START, END, body):
        return
    # A document from before the markers: its unmarked section (heading up to the next paragraph
    # that is not ours) is replaced, else the section is appended.
    text = DOC.read_text(encoding="utf-8")
    i = text.find(render_section(data)[0])
    j = text.find(AFTER, i)
    block = f"{START}\n{body}\n{END}\n\n"
    text = text[:i] + block + text[j:] if 0 <= i < j else f"{text.rstrip()}\n\n{block}"
    DOC.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--runs", type=int, default=40, help="rounds at most (fewer for slow models)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--quick", action="store_true", help="10 rounds after 2 warm-up rounds")
    p.add_argument("--cache", default=str(default_cache()), help="where the ONNX exports are kept")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--doc", action="store_true", help="rewrite docs/benchmarks.md's section from --json")
    args = p.parse_args(argv)
    if args.doc:
        if not args.json:
            p.error("--doc reads the numbers from --json PATH")
        write_doc(json.loads(Path(args.json).read_text()))
        return 0
    runs, warmup = (10, 2) if args.quick else (args.runs, args.warmup)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.strftime("%Y-%m-%d %H:%M")
    rows = bench(tuple(args.models.split(",")), cache, args.sparsity, runs, warmup)
    verdict = verdicts(rows)
    print_rows(rows)
    print("\n".join(verdict))
    if args.json:
        import onnxruntime as ort

        env = {"onnxruntime": ort.__version__, "cpus": os.cpu_count(), "runs": runs}
        env |= {"sparsity": args.sparsity, "load": load, "date": started}
        Path(args.json).write_text(json.dumps({"rows": rows, "verdict": verdict, "env": env}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
