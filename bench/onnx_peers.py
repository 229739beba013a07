"""ONNX pruning side by side in one run: zigraph against onnxsim's ``onnxsim.pruning`` (0.8.x).

On the same files (tests/zoo.py's TorchScript exports of torchvision CNNs and tiny transformers, and
the corpus of tests/real_tools.py: fp16, QDQ, QOperator, dynamic-quantized, fused, old-zoo, unsorted),
each tool prunes at 50%: zigraph with ``zigraph.pipeline.prune`` (one-shot, lowest relative L2 norm),
onnxsim with the structured-pruning function made for the file's format
(``apply_structured_pruning``, ``_qdq``, ``_qoperator``, ``_dynamic_quantize_matmul`` / ``_conv``), as
its documentation tells a user to. For each: did it prune, parameters kept, time (median of
interleaved rounds after a warm-up, both starting from the file on disk), and whether the result
equals the original with the removed channels zeroed.

For zigraph "equal" is its own verification (onnxruntime, removed slices zeroed). onnxsim reports no
removed channels, so they are recovered here from the files: every tensor whose shape changed is
matched slice by slice against the original's (the kept indices, in order), the matching is checked
to reproduce the small tensor exactly, the other slices are zeroed in the original (set to the zero
point for quantized integer weights), and both models run in onnxruntime on the same random inputs.
A tool that removes live channels (channels whose zeroing changes the output) gives "no".

onnxsim is not a zigraph dependency, only of the bench extra: ``pip install -e ".[bench]"``
(bench/README.md; measured with onnxsim 0.8.1).
Run: ``python bench/onnx_peers.py [--files a,b] [--rounds 3] [--cache DIR] [--doc]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # doc_blocks: the generated-doc helpers the scripts share

ZOO = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "resnet50", "bert", "gpt2"]
DEFAULT_CORPUS = [
    "resnet18_fp16", "resnet18_fp16_io", "resnet18_qdq_s8", "resnet18_qdq_u8s8_channel", "resnet18_qop_u8s8",
    "mobilenet_v2_qop_u8u8_channel", "bert_dynamic", "resnet18_dynamic_conv", "bert_fused", "gpt2_fused",
    "squeezenet_ir3", "mnist_constants_ir3", "resnet18_opset9_ir3", "resnet18_shuffled",
    "resnet18_fresh_dedup",
]  # fmt: skip
PEER_FOR_KIND = {
    "QDQ": "apply_structured_pruning_qdq",
    "QOperator": "apply_structured_pruning_qoperator",
}
# Where each quantized-weight op keeps its weight and that weight's zero point (input positions), so
# that zeroing a removed slice of an integer weight means writing its zero point.
WEIGHT_ZERO_POINT = {
    "DequantizeLinear": (0, 2),
    "QLinearConv": (3, 5),
    "QLinearMatMul": (3, 5),
    "QGemm": (3, 5),
    "MatMulInteger": (1, 3),
    "ConvInteger": (1, 3),
}


def peer_function(kind: str, model: onnx.ModelProto) -> str:
    """The onnxsim function a user would call for this file's format."""
    if kind == "dynamic":
        ops = {n.op_type for n in model.graph.node}
        return (
            "apply_structured_pruning_dynamic_quantize_conv"
            if "ConvInteger" in ops
            else "apply_structured_pruning_dynamic_quantize_matmul"
        )
    return PEER_FOR_KIND.get(kind, "apply_structured_pruning")


# --- recovering onnxsim's removed channels ------------------------------------------------------------


def _contains(small: np.ndarray, big: np.ndarray) -> bool:
    """Every value of ``small`` occurs in ``big`` at least as often (a sub-multiset)."""
    vs, cs = np.unique(small, return_counts=True)
    vb, cb = np.unique(big, return_counts=True)
    pos = np.searchsorted(vb, vs)
    if (pos >= len(vb)).any() or not np.array_equal(vb[np.minimum(pos, len(vb) - 1)], vs):
        return False
    return bool((cs <= cb[pos]).all())


def kept_indices(orig: np.ndarray, small: np.ndarray) -> list[np.ndarray] | None:
    """Per axis, the original indices the small tensor kept (in order); None when no in-order matching
    of slices reproduces the small tensor exactly."""
    if orig.ndim != small.ndim:
        return None
    keep = [np.arange(n) for n in orig.shape]
    for axis, (n, m) in enumerate(zip(orig.shape, small.shape)):
        if n == m:
            continue
        if m > n:
            return None
        found, i = [], 0
        for j in range(m):
            s = np.take(small, j, axis=axis)
            while i < n and not _contains(s, np.take(orig, i, axis=axis)):
                i += 1
            if i == n:
                return None
            found.append(i)
            i += 1
        keep[axis] = np.array(found)
    if not np.array_equal(orig[np.ix_(*keep)], small):
        return None
    return keep


def _zero_points(model: onnx.ModelProto) -> dict[str, str]:
    out = {}
    for node in model.graph.node:
        where = WEIGHT_ZERO_POINT.get(node.op_type)
        if where and len(node.input) > where[1] and node.input[where[1]]:
            out[node.input[where[0]]] = node.input[where[1]]
    return out


def zeroed_like(orig: onnx.ModelProto, small: onnx.ModelProto) -> tuple[onnx.ModelProto | None, int, str]:
    """The original with every slice the small model dropped set to zero (to the zero point for an
    integer weight); the number of tensors that shrank; why it could not be built, if it could not."""
    inits = {n: numpy_helper.to_array(t) for n, t in _fixed_tensors(orig).items()}
    after = {n: numpy_helper.to_array(t) for n, t in _fixed_tensors(small).items()}
    zps = _zero_points(orig)
    new = {}
    changed = 0
    for name, a in inits.items():
        b = after.get(name)
        if b is None or b.shape == a.shape:
            continue
        keep = kept_indices(a, b)
        if keep is None:
            return None, changed, f"cannot match the slices of '{name}' {a.shape} -> {b.shape}"
        changed += 1
        z = a.copy()
        for axis, k in enumerate(keep):
            gone = np.setdiff1d(np.arange(a.shape[axis]), k)
            if not gone.size:
                continue
            idx: list[Any] = [slice(None)] * a.ndim
            idx[axis] = gone
            fill: Any = 0
            if np.issubdtype(a.dtype, np.integer) and name in zps and zps[name] in inits:
                zp = inits[zps[name]]
                if zp.size == 1:
                    fill = zp.reshape(())
                elif zp.ndim == 1 and zp.shape[0] == a.shape[axis]:
                    fill = zp[gone].reshape([-1 if d == axis else 1 for d in range(a.ndim)])
                else:  # a per-axis zero point on another axis: broadcast it over the removed slice
                    shape = [a.shape[d] if d == 0 else 1 for d in range(a.ndim)]
                    fill = np.broadcast_to(zp.reshape(shape), a.shape)[tuple(idx)]
            z[tuple(idx)] = fill
        new[name] = z
    model = onnx.ModelProto()
    model.CopyFrom(orig)
    for name, t in _fixed_tensors(model).items():
        if name in new:
            t.CopyFrom(numpy_helper.from_array(new[name].astype(inits[name].dtype), t.name))
    return model, changed, ""


def _fixed_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every tensor the file fixes, by the value name it defines: initializers and ``Constant`` values
    (old zoo files keep their weights in Constant nodes, and a peer may cut those too)."""
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for att in node.attribute:
                if att.name == "value":
                    out[node.output[0]] = att.t
    return out


# --- one file -------------------------------------------------------------------------------------------


def _zigraph(path: Path, out: Path, verify: bool) -> dict[str, Any]:
    from zigraph.pipeline import load_model, prune

    report = prune(load_model(str(path)), 0.5, out, verify=verify, samples=2)
    ver = report.result.verification if report.result else None
    return {"zigs": report.result.zigs_removed if report.result else 0, "ver": ver}


def _onnxsim(fn: str, path: Path) -> onnx.ModelProto:
    from onnxsim import pruning

    return getattr(pruning, fn)(str(path), sparsity=0.5)


def _loads(model: onnx.ModelProto) -> tuple[bool, str]:
    """Whether onnxruntime loads ``model`` and runs it once on random inputs; why not, in one line."""
    import onnxruntime as ort

    from construct.verify import random_inputs

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        sess.run(None, random_inputs(model, np.random.default_rng(0)))
        return True, ""
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return False, text.split(" : ")[-1].strip()[:120]


def _compare(full: onnx.ModelProto, small: onnx.ModelProto, rtol: float) -> tuple[float, bool]:
    import construct

    rep = construct.compare_models(full, small, samples=2, rtol=rtol)
    return rep.max_rel, bool(rep.passed)


def run_file(name: str, kind: str, path: Path, rounds: int, tol: float) -> dict[str, Any]:
    from doc_blocks import engine_version

    from tests.real_tools import file_params

    orig = onnx.load(str(path))
    before = file_params(orig)
    fn = peer_function(kind, orig)
    row: dict[str, Any] = {
        "engine": engine_version(),
        "file": name,
        "kind": kind,
        "peer_function": fn,
        "params": before,
        "tolerance": tol,
    }
    with tempfile.TemporaryDirectory(prefix="zigraph-peers-") as tmp:
        out = Path(tmp) / "zigraph.onnx"
        # zigraph: the pruned model and its own verification (the proof it equals the zeroed original)
        try:
            z = _zigraph(path, out, verify=True)
            ver = z["ver"]
            row["zigraph_pruned"] = z["zigs"] > 0 and out.exists()
            row["zigraph_kept"] = file_params(onnx.load(str(out))) / before if out.exists() else None
            row["zigraph_equal"] = bool(ver and ver.passed and ver.max_rel <= tol)
            row["zigraph_max_rel"] = ver.max_rel if ver else None
        except Exception as exc:
            row["zigraph_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"
        # onnxsim: its model, then the removed channels recovered and zeroed in the original
        try:
            small = _onnxsim(fn, path)
            after = file_params(small)
            row["onnxsim_kept"] = after / before
            zeroed, changed, why = zeroed_like(orig, small)
            row["onnxsim_pruned"] = changed > 0
            row["onnxsim_loads"], load_error = _loads(small)
            if changed and not row["onnxsim_loads"]:
                row["onnxsim_equal"], row["onnxsim_why"] = (
                    None,
                    f"onnxruntime cannot run it: {load_error[:70]}",
                )
            elif changed and zeroed is not None:
                row["onnxsim_max_rel"], row["onnxsim_equal"] = _compare(zeroed, small, tol)
                row["onnxsim_unzeroed_rel"] = _compare(orig, small, tol)[0]
            elif changed:
                row["onnxsim_equal"], row["onnxsim_why"] = None, why
        except Exception as exc:
            row["onnxsim_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"
        # time: a warm-up of each, then interleaved rounds (both start from the file on disk)
        ok_z, ok_p = "zigraph_error" not in row, "onnxsim_error" not in row
        tz: list[float] = []
        tp: list[float] = []
        for r in range(rounds + 1):
            if ok_z:
                t = time.perf_counter()
                _zigraph(path, Path(tmp) / "t.onnx", verify=False)
                if r:
                    tz.append(time.perf_counter() - t)
            if ok_p:
                t = time.perf_counter()
                _onnxsim(fn, path)
                if r:
                    tp.append(time.perf_counter() - t)
        row["zigraph_s"] = statistics.median(tz) if tz else None
        row["onnxsim_s"] = statistics.median(tp) if tp else None
    return row


def files(cache: Path, zoo: list[str], corpus: list[str]) -> list[tuple[str, str, Path, float]]:
    from tests.real_tools import BY_NAME, FP32_TOL, build
    from tests.zoo import export

    for sub in ("zoo", "real_tools"):  # a first run on a fresh machine has no cache yet
        (cache / sub).mkdir(parents=True, exist_ok=True)
    out = [(f"{m} (zoo)", "fp32", export(m, cache / "zoo", dynamo=False), FP32_TOL) for m in zoo]
    for name in corpus:
        case = BY_NAME[name]
        out.append((name, case.kind, build(name, cache / "real_tools"), case.tolerance))
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _yes(v: Any) -> str:
    return {True: "yes", False: "**no**", None: "—"}[v]


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| file | onnxsim function | zigraph kept | onnxsim kept | zigraph = zeroed original "
            "| onnxsim = zeroed original (max rel err; un-zeroed) | zigraph s | onnxsim s "
            "| onnxsim / zigraph time |")  # fmt: skip
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        zk = r.get("zigraph_error") or (_pct(r.get("zigraph_kept")) if r.get("zigraph_pruned") else "nothing")
        pk = r.get("onnxsim_error") or (_pct(r.get("onnxsim_kept")) if r.get("onnxsim_pruned") else "nothing")
        ze = _yes(r.get("zigraph_equal")) if r.get("zigraph_pruned") else "—"
        if not r.get("onnxsim_pruned"):
            pe = "—"
        elif r.get("onnxsim_equal") is None:
            pe = f"not checked: {r.get('onnxsim_why', '')}"
        else:
            pe = f"{_yes(r['onnxsim_equal'])} ({r['onnxsim_max_rel']:.1e}; {r['onnxsim_unzeroed_rel']:.1e})"
            if r["onnxsim_equal"] and r["onnxsim_unzeroed_rel"] <= 10 * r["onnxsim_max_rel"]:
                pe += " weak: the un-zeroed original is within 10× of it"
        zs, ps = r.get("zigraph_s"), r.get("onnxsim_s")
        ratio = f"{ps / zs:.2f}×" if zs and ps else "—"
        lines.append(
            f"| {r['file']} | `{r['peer_function'].replace('apply_structured_pruning', 'asp')}` | "
            f"{zk.replace('|', '/')} | {pk.replace('|', '/')} | {ze} | {pe} | "
            f"{'—' if zs is None else f'{zs:.2f}'} | {'—' if ps is None else f'{ps:.2f}'} | {ratio} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> list[str]:
    n = len(rows)
    zp = [r for r in rows if r.get("zigraph_pruned")]
    pp = [r for r in rows if r.get("onnxsim_pruned")]
    ze = [r for r in zp if r.get("zigraph_equal")]
    pe = [r for r in pp if r.get("onnxsim_equal")]
    pn = [r["file"] for r in pp if r.get("onnxsim_equal") is False]
    pl = [r["file"] for r in pp if r.get("onnxsim_loads") is False]
    out = [
        f"- zigraph pruned {len(zp)} of {n} files, {len(ze)} of them equal to the zeroed original.",
        f"- onnxsim pruned {len(pp)} of {n} files, {len(pe)} of them equal to the zeroed original.",
    ]
    z_none = [r["file"] for r in rows if not r.get("zigraph_pruned")]
    p_none = [r["file"] for r in rows if not r.get("onnxsim_pruned")]
    if z_none:
        out.append(f"- zigraph found nothing to prune in: {', '.join(z_none)}.")
    if p_none:
        out.append(f"- onnxsim found nothing to prune in: {', '.join(p_none)}.")
    both_kept = [r for r in zp if r.get("onnxsim_pruned") and r.get("onnxsim_kept") and r.get("zigraph_kept")]
    if both_kept:
        zk = statistics.median(r["zigraph_kept"] for r in both_kept)
        pk = statistics.median(r["onnxsim_kept"] for r in both_kept)
        out.append(
            f"- where both prune ({len(both_kept)} files), median parameters kept: zigraph {_pct(zk)}, "
            f"onnxsim {_pct(pk)} (same sparsity 0.5: onnxsim cuts only the channels of its matched "
            "producer→consumer chains)."
        )
    if pn:
        out.append(f"- onnxsim removed live channels (not equal to the zeroed original) in: {', '.join(pn)}.")
    if pl:
        out.append(f"- onnxsim wrote a model onnxruntime cannot load or run for: {', '.join(pl)}.")
    both = [r for r in rows if r.get("zigraph_s") and r.get("onnxsim_s")]
    if both:
        ratios = [r["onnxsim_s"] / r["zigraph_s"] for r in both]
        out.append(
            "- time, onnxsim / zigraph (median of interleaved rounds): "
            f"median {statistics.median(ratios):.2f}×, "
            f"range {min(ratios):.2f}× to {max(ratios):.2f}× (zigraph's time is load + analysis + "
            "construction, without its verification)."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    from tests.real_tools import default_cache

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", default=",".join(ZOO), help="tests/zoo.py models (TorchScript export, 224×224)")
    p.add_argument(
        "--files", default=",".join(DEFAULT_CORPUS), help="tests/real_tools.py cases ('all': every)"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cache", default=str(default_cache().parent / "peers"))
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--from-json", help="render rows saved by --json instead of running")
    p.add_argument("--doc", action="store_true", help="write the section 'ONNX peers' of docs/benchmarks.md")
    args = p.parse_args(argv)
    try:
        import onnxsim
    except ImportError:
        p.error("onnxsim is not installed: pip install -e '.[bench]' (or onnxsim==0.8.1)")
    from tests.real_tools import CASES

    corpus = [c.name for c in CASES] if args.files == "all" else [f for f in args.files.split(",") if f]
    zoo = [m for m in args.zoo.split(",") if m]
    cache = Path(args.cache)
    rows = json.loads(Path(args.from_json).read_text()) if args.from_json else []
    for name, kind, path, tol in [] if args.from_json else files(cache, zoo, corpus):
        t = time.perf_counter()
        rows.append(run_file(name, kind, path, args.rounds, tol))
        r = rows[-1]
        print(f"{name}: zigraph {_pct(r.get('zigraph_kept'))} onnxsim {_pct(r.get('onnxsim_kept'))} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    print(f"\nonnxsim {onnxsim.__version__}, {args.rounds} rounds after a warm-up\n")
    print(table(rows))
    print()
    print("\n".join(summary(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    if args.doc:
        write_section(rows, onnxsim.__version__, args.rounds)
        print(f"wrote the section between {PEERS_START} and {PEERS_END} of {DOC}")
    return 0


DOC = ROOT / "docs" / "benchmarks.md"
INTRO = (
    "Generated by `python bench/onnx_peers.py --doc`; do not edit by hand. zigraph "
    "(`zigraph.pipeline.prune`, one-shot at 50% of the prunable ZIGs) against onnxsim's structured "
    "pruning at sparsity 0.5 (the function for the file's format; `asp` = `apply_structured_pruning`) on "
    "the same files: the zoo's TorchScript exports at 224×224 (tests/zoo.py) and the real-tools corpus "
    "(tests/real_tools.py). *kept* counts every tensor the file fixes. *= zeroed original*: zigraph's "
    "own verification; for onnxsim the removed channels are recovered from the tensors' shapes and "
    "values, zeroed in the original (zero point for integer weights), and both models run in onnxruntime "
    "on the same random inputs (max rel err; then the un-zeroed original's error, which shows whether the "
    "check can fail). *s*: median of {rounds} interleaved rounds after a warm-up, both from the file on "
    "disk (zigraph: load, analysis, construction; its verification is not timed)."
)
PEERS_START, PEERS_END = "<!-- onnx-peers:start -->", "<!-- onnx-peers:end -->"


def write_section(rows: list[dict[str, Any]], version: str, rounds: int) -> None:
    """Put the section between its markers in docs/benchmarks.md (appended the first time);
    scripts/bench_figures.py keeps it when it regenerates the rest of the file."""
    import platform

    import onnxruntime
    from doc_blocks import replace_marked_block

    from graphcore.report import write_json_atomic

    body = "\n".join(
        [
            PEERS_START,
            "## ONNX peers (`bench/onnx_peers.py`)",
            "",
            textwrap.fill(INTRO.format(rounds=rounds), 100),
            "",
            f"zigraph at {', '.join(sorted({str(r.get('engine', '?')) for r in rows}))}; "
            f"onnxsim {version}, onnxruntime {onnxruntime.__version__}, "
            f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}.",
            "",
            *summary(rows),
            "",
            table(rows),
            PEERS_END,
        ]
    )
    inner = body[len(PEERS_START) + 1 : -len(PEERS_END) - 1]
    if not replace_marked_block(DOC, PEERS_START, PEERS_END, inner):  # the first time: appended
        old = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        write_json_atomic(DOC, old.rstrip("\n") + "\n\n" + body + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
