"""The README's coverage table: which model families zigraph analyzes, prunes exactly from ONNX and from
torch, and round-trips as Hugging Face models — regenerated, never typed.

Per family (tiny configurations, random weights, Hugging Face models with their task head so the hidden
size can shrink — docs/coverage.md says why; torchvision models at their real size):

- analyze: the torch module traces (keyword-free, positional example input) and analyzes;
- ONNX: the module exported with TorchScript (eager attention, then dynamo, when that fails),
  ``zigraph prune`` at 50% of the prunable ZIGs, verified in onnxruntime against the zeroed original
  (``zigraph.pipeline.prune_model``);
- torch: ``zigraph.prune_check`` at 50% (L2), the small module against the zeroed original in torch;
- HF round trip: uniform selection over the kinds the config can hold (``construct.to_hf.hf_kinds``),
  ``to_hf`` → ``save_pretrained`` → ``from_pretrained``, equal to the zeroed original at 1e-4;
- kept %: parameters of the torch-pruned model over the original's; max error: the worst relative
  error of the columns that ran.

A failure is a ✗ with its reason (the first line of the exception), never a crash of the script.
Results are cached per family in a JSON file (``--cache``; ``--fresh`` recomputes), so the table can be
rebuilt family by family on a small machine (``--families bert,gpt2``). Writes the short table between
``<!-- coverage:start -->``/``<!-- coverage:end -->`` in README.md and the full one in docs/coverage.md.

    python bench/coverage.py                      # every family (about 10 min on 2 cores)
    python bench/coverage.py --families llama     # one row, merged into the cached others
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from doc_blocks import engine_version, replace_marked_block  # noqa: E402

from graphcore.report import write_json_atomic  # noqa: E402

README = ROOT / "README.md"
DOC = ROOT / "docs" / "coverage.md"
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"
RTOL = 1e-4
SPARSITY = 0.5
# torchvision: a representative set (plain residual, depthwise, squeeze-excite, transformer); the
# ONNX zoo table above (scripts/onnx_zoo_table.py) covers all 23 classification models from ONNX.
TORCHVISION = ["resnet18", "mobilenet_v3_small"]
HF = ["bert", "roberta", "gpt2", "llama", "qwen2", "mistral", "phi3", "vit", "swin", "whisper_encoder",
      "t5_encoder"]  # fmt: skip
FAMILIES = [*TORCHVISION, *HF]


def _hf_model(name: str) -> tuple[Any, Any]:
    """A tiny random model of the family and its positional example input."""
    import torch
    import transformers as t

    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    dec = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    gqa = dict(dec, num_key_value_heads=2, use_cache=False)
    if name == "bert":
        return t.BertForMaskedLM(t.BertConfig(**dec)), ids
    if name == "roberta":
        return t.RobertaForMaskedLM(t.RobertaConfig(**dec)), ids + 2  # ids 0/1 are padding/start tokens
    if name == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                        use_cache=False)), ids  # fmt: skip
    if name == "llama":
        return t.LlamaForCausalLM(t.LlamaConfig(**gqa)), ids
    if name == "qwen2":
        return t.Qwen2ForCausalLM(t.Qwen2Config(**gqa)), ids
    if name == "mistral":
        return t.MistralForCausalLM(t.MistralConfig(**gqa, sliding_window=None)), ids
    if name == "phi3":
        return t.Phi3ForCausalLM(t.Phi3Config(**gqa, pad_token_id=0)), ids
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    if name == "vit":
        cfg = t.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, num_labels=10)  # fmt: skip
        return t.ViTForImageClassification(cfg), pixels
    if name == "swin":
        cfg = t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                           window_size=4, num_labels=10)  # fmt: skip
        return t.SwinForImageClassification(cfg), pixels
    if name == "whisper_encoder":
        cfg = t.WhisperConfig(
            vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
            d_model=32, encoder_layers=2, encoder_attention_heads=4, decoder_layers=1,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
            max_source_positions=16, max_target_positions=16, num_labels=10,
        )  # fmt: skip
        feats = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(0))
        return t.WhisperForAudioClassification(cfg), feats
    if name == "t5_encoder":
        cfg = t.T5Config(
            vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, num_labels=10
        )
        return t.T5ForTokenClassification(cfg), ids
    raise KeyError(name)


def build(name: str) -> tuple[Any, Any]:
    """(model with random weights in eval mode, example input)."""
    import torch

    from tests.test_hf_roundtrip import randomized

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    if name in TORCHVISION:
        from tests.zoo import torchvision_model

        return torchvision_model(name), torch.randn(
            1, 3, 224, 224, generator=torch.Generator().manual_seed(0)
        )
    model, x = _hf_model(name)
    return randomized(model), x


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _cell(row: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one column; its numbers or its failure go into ``row`` (``key`` ✓/✗, ``key_why``)."""
    t = time.perf_counter()
    try:
        out = fn()
        row.update(out)
        row[key] = bool(out.get(f"{key}_ok", True))
    except Exception as exc:  # every failure is a ✗ with its reason, never a crash
        row[key], row[f"{key}_why"] = False, _reason(exc)
    row[f"{key}_s"] = round(time.perf_counter() - t, 2)


def first_output(model: Any) -> Any:
    """``model(x)[0]`` as a plain tensor (the TorchScript ONNX exporter wants tensor outputs)."""
    import torch

    class First(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.m(x)
            return out if isinstance(out, torch.Tensor) else out[0]

    return First().eval()


def export_onnx(model: Any, x: Any, path: Path) -> str:
    """Export with TorchScript; when that fails, with eager attention (the same function, written
    without the ops TorchScript lacks, e.g. ``aten::diff`` in SDPA masks), then with dynamo. Returns
    which one wrote the file; the last failure propagates."""
    import copy

    import torch

    def eager() -> Any:
        m = copy.deepcopy(model)
        m.config._attn_implementation = "eager"
        return m

    tries = [("torchscript", lambda: model)]
    if hasattr(model, "config"):
        tries.append(("torchscript, eager attention", eager))
    for i, (name, get) in enumerate(tries):
        try:
            torch.onnx.export(first_output(get()), (x,), str(path), dynamo=False, opset_version=17)
            return name
        except Exception:  # the next exporter gets its turn
            if i == len(tries) - 1:
                break
    torch.onnx.export(
        first_output(model), (x,), str(path), dynamo=True, opset_version=18, external_data=False
    )
    return "dynamo"


def run_family(name: str) -> dict[str, Any]:
    """Every column of one row."""
    import torch

    import graphcore
    from frontends.torch_frontend import load_torch

    row: dict[str, Any] = {"family": name, "engine": engine_version()}
    try:
        model, x = build(name)
    except Exception as exc:
        row.update(analyze=False, analyze_why=_reason(exc))
        return row
    row["params"] = sum(p.numel() for p in model.parameters())
    state: dict[str, Any] = {}

    def analyze() -> dict[str, Any]:
        state["analysis"] = a = graphcore.analyze(load_torch(model, (x,)))
        return {"zigs": int(a.num_zigs), "prunable_zigs": int(a.prunable_zig_ids().size)}

    def from_torch() -> dict[str, Any]:
        from zigraph.prune_check import prune_check

        r = prune_check(model, (x,), sparsity=SPARSITY, criterion="l2")
        return {"torch_ok": r.torch_rel <= RTOL and r.removed_zigs > 0, "torch_rel": r.torch_rel,
                "kept": r.kept, "removed": r.removed_zigs}  # fmt: skip

    def from_onnx() -> dict[str, Any]:
        import frontends
        from zigraph.pipeline import LoadedModel, prune_model

        with tempfile.TemporaryDirectory(prefix="zigraph-coverage-") as tmp:
            path = Path(tmp) / f"{name}.onnx"
            exporter = export_onnx(copy.deepcopy(model), x, path)  # exporting may leave state behind
            rep = prune_model(
                LoadedModel(frontends.load(str(path)), source=str(path)), SPARSITY, Path(tmp) / "s.onnx"
            )
        res, ver = rep["result"], rep["result"]["verification"]
        kept = res["params_after"] / max(res["params_before"], 1)
        ok = bool(ver["passed"]) and res["zigs_removed"] > 0
        return {"onnx_ok": ok, "onnx_rel": ver["max_rel"], "onnx_kept": kept, "exporter": exporter}

    def hf_round_trip() -> dict[str, Any]:
        from construct.to_hf import hf_kinds, to_hf
        from construct.torch_verify import zeroed_copy
        from graphcore.uniform import select_uniform

        if not hasattr(model, "save_pretrained"):
            raise ValueError("not a Hugging Face model")
        a = state["analysis"]
        kinds = hf_kinds(model, a)
        if not kinds:
            raise ValueError("no kind of group the config can hold")
        chosen = select_uniform(a, SPARSITY, criterion="random", kinds=kinds)
        zeroed = zeroed_copy(model, a, chosen)
        hf = to_hf(zeroed, a, chosen)
        with tempfile.TemporaryDirectory(prefix="zigraph-coverage-hf-") as tmp:
            hf.save_pretrained(tmp)
            loaded = type(model).from_pretrained(tmp).eval()
        with torch.no_grad():
            got, ref, orig = loaded(x)[0], zeroed(x)[0], model(x)[0]
        rel = float((got - ref).abs().max() / ref.abs().max())
        differs = float((got - orig).abs().max() / orig.abs().max()) > RTOL  # the check can fail
        kept = sum(p.numel() for p in loaded.parameters()) / row["params"]
        return {"hf_ok": rel <= RTOL and differs, "hf_rel": rel, "hf_kept": kept, "hf_kinds": len(kinds)}

    _cell(row, "analyze", analyze)
    if not row["analyze"]:
        return row
    _cell(row, "torch", from_torch)
    _cell(row, "onnx", from_onnx)
    if name in TORCHVISION:
        row["hf"], row["hf_why"] = None, "not a Hugging Face model"
    else:
        _cell(row, "hf", hf_round_trip)
    errs = [row[k] for k in ("onnx_rel", "torch_rel", "hf_rel") if isinstance(row.get(k), float)]
    row["max_rel"] = max(errs) if errs else None
    return row


def _mark(v: Any) -> str:
    return "—" if v is None else ("✓" if v else "✗")


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, float) else "—"


def _count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "—"


def _err(v: Any) -> str:
    return f"{v:.1e}" if isinstance(v, float) else "—"


def short_table(rows: list[dict[str, Any]]) -> str:
    """The README table: one row per family, ✓/✗ per column, kept % (torch) and the worst error."""
    out = ["| family | analyze | exact prune from ONNX | exact prune from torch | HF round trip "
           "| params kept at 50% | max rel err |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        marks = " | ".join(_mark(r.get(k)) for k in ("analyze", "onnx", "torch", "hf"))
        out.append(f"| {r['family']} | {marks} | {_pct(r.get('kept'))} | {_err(r.get('max_rel'))} |")
    return "\n".join(out)


def full_table(rows: list[dict[str, Any]]) -> str:
    """docs/coverage.md: every number and the reason behind each ✗."""
    out = ["| family | params | prunable ZIGs | ONNX exporter | ONNX kept | ONNX err | torch kept "
           "| torch err | HF kept | HF err | "
           "seconds (analyze / ONNX / torch / HF) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    why = []
    for r in rows:
        secs = " / ".join(str(r.get(f"{k}_s", "—")) for k in ("analyze", "onnx", "torch", "hf"))
        out.append(f"| {r['family']} | {_count(r.get('params'))} | {r.get('prunable_zigs', '—')} | "
                   f"{r.get('exporter', '—')} | "
                   f"{_pct(r.get('onnx_kept'))} | {_err(r.get('onnx_rel'))} | {_pct(r.get('kept'))} | "
                   f"{_err(r.get('torch_rel'))} | {_pct(r.get('hf_kept'))} | {_err(r.get('hf_rel'))} "
                   f"| {secs} |")  # fmt: skip
        for k in ("analyze", "onnx", "torch", "hf"):
            if r.get(f"{k}_why") and r.get(k) is False:
                why.append(f"- **{r['family']}**, {k}: {r[f'{k}_why']}")
    return "\n".join(out) + ("\n\nWhy each ✗:\n\n" + "\n".join(why) if why else "")


NOTES = """\
## What is measured, and why

Each Hugging Face family is built **with its task head** (`BertForMaskedLM`, `RobertaForMaskedLM`,
`GPT2LMHeadModel`, `LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`, `Phi3ForCausalLM`,
`ViTForImageClassification`, `SwinForImageClassification`, `WhisperForAudioClassification` (the encoder
and a classifier), `T5ForTokenClassification`), because that is what users prune. A bare encoder
(`BertModel`, `LlamaModel`) returns its hidden states: a graph output must keep its shape, so the hidden
size could never shrink there and the table would measure heads and MLP widths only (55-75% kept). With
a head, the hidden stream ends in the LM head or the classifier, and hidden-size pruning
(docs/hidden_size.md) and head dimensions (docs/head_dims.md) reach most of the parameters.

The ONNX column exports with opset 17 (TorchScript) or 18 (dynamo), where `LayerNormalization` is one
op the engine lowers exactly; a LayerNorm written out as ReduceMean/Sub/Pow/Sqrt/Div (older opsets)
stays unprunable over its normalized axis by design (the mean over the removed channels is not zero).

The HF round trip uses `select_uniform(kinds=hf_kinds(model, analysis))`: only kinds a config can hold
are pruned, each by a multiple of its step (`hidden_size` a multiple of the head count for LLaMA).
RMSNorm families shrink `hidden_size` with `rms_norm_eps = eps * D / d` and every norm weight times
`sqrt(D / d)`; a LayerNorm over a shrunk hidden size (BERT, RoBERTa, GPT-2, ViT, Swin, Whisper) keeps
its mean and variance over the original width, which no config expresses, so those hidden sizes stay
whole for the round trip (`to_hf` refuses them naming the LayerNorm). Attention head dimensions (the
default channels) are never a config either: HF derives the rotary frequencies and the softmax scale
from its one `head_dim`; analyze with `attention="heads"` for a round trip with whole heads.

Known gaps: **Whisper from torch** keeps the hidden size whole: HF freezes the sinusoidal
`embed_positions` (`requires_grad=False`), the torch frontend treats a frozen tensor as a constant, and
a constant added to the hidden stream makes the first LayerNorm's removed channels nonzero (pinned:
"LayerNormalization normalizes over this axis ... exact only for a channel that is zero there"). The
ONNX export has no frozen tensors, so the same model prunes its hidden size from ONNX. Swin's relative
position bias table (`aten.index.Tensor`) stays unprunable from torch (a few hundred parameters)."""


def write(rows: list[dict[str, Any]], readme: Path = README, doc: Path = DOC) -> None:
    """The short table into README.md's markers and the full page into docs/coverage.md."""
    engines = sorted({r.get("engine", "?") for r in rows})
    stamp = f"_Generated by `python bench/coverage.py` ({', '.join(engines)})._"
    replace_marked_block(readme, START, END, short_table(rows))
    text = (
        "# Coverage by model family\n\n"
        "Tiny configurations with random weights (torchvision models at full size), one-shot pruning of "
        f"{int(100 * SPARSITY)}% of the prunable ZIGs, each result checked against the zeroed original at "
        f"{RTOL:g} relative. How each column is computed: `bench/coverage.py`'s docstring.\n\n"
        f"{stamp}\n\n{START}\n{short_table(rows)}\n{END}\n\n{NOTES}\n\n"
        f"## Every number\n\n{full_table(rows)}\n"
    )
    write_json_atomic(doc, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}"
    )
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "zigraph-coverage.json"))
    ap.add_argument("--fresh", action="store_true", help="recompute cached families")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    wanted = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    cache = Path(args.cache)
    done: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    for name in wanted:
        if name in done and not args.fresh:
            continue
        t = time.perf_counter()
        done[name] = run_family(name)
        print(f"{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        write_json_atomic(cache, json.dumps(done, indent=1))
    rows = [done[f] for f in FAMILIES if f in done]
    print(short_table(rows))
    if not args.no_write:
        write(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
