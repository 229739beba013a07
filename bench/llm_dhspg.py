"""A tiny LLaMA trained with DHSPG on the Python standard library's sources, then built physically smaller.

The corpus is already on the machine: the byte-level text of the top-level ``*.py`` modules of the running
interpreter's standard library (``sysconfig.get_paths()["stdlib"]``), split by file into training and
validation with a seeded shuffle of the sorted file list, so validation text is never trained on. Nothing is
downloaded. The model is ``transformers.LlamaForCausalLM`` from a config (random init, 256-byte vocabulary,
tied embeddings).

Two runs with the same initial weights, the same batches, the same steps and the same learning-rate schedule:
the dense model with ``torch.optim.AdamW``, and the DHSPG model with ``optimizers.get("dhspg")(...,
variant="adamw")`` (the same first-order rule) whose pruning window zeroes whole zero-invariant groups. The
DHSPG model is then built physically smaller with ``construct.to_torch`` (and, when ``construct.to_hf``
exists, as a ``LlamaForCausalLM`` that goes through ``save_pretrained``/``from_pretrained``), checked against
the trained model (whose removed groups are exactly zero) at <= 1e-4, and both models' validation
perplexities are compared. Which groups are prunable is whatever ``graphcore.analyze`` finds: as the engine
learns more transformer groups (hidden size, head dimensions) the bench uses them without a change here.

``python bench/llm_dhspg.py`` (about 10-15 minutes on one thread) prints the table and writes it into
``docs/llm_training.md`` between its markers; ``--quick`` is a short smoke run that writes nothing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import random
import re
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # doc_blocks: the generated-doc helpers the scripts share

DOC = ROOT / "docs" / "llm_training.md"
START, END = "<!-- llm-dhspg:start -->", "<!-- llm-dhspg:end -->"
VOCAB = 256  # bytes
UNIFORM = {
    True: "DHSPG with G_R made uniform across layers (the same count per layer for each kind of group)",
    False: "DHSPG as is (counts per layer may differ)",
}


# -- the corpus -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Training and validation bytes (uint8 tensors), which files went where, and a digest of both."""

    train: torch.Tensor
    val: torch.Tensor
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    root: str
    sha256: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(root: str | Path | None = None, val_fraction: float = 0.1, seed: int = 0) -> Corpus:
    """The top-level ``*.py`` files of ``root`` (the standard library by default), split by file.

    Files are sorted by name, shuffled with ``random.Random(seed)``, the first ``val_fraction`` of them
    (at least one) is validation; each side is the concatenation of its files in name order, each
    followed by a newline. The same interpreter and seed give the same bytes (``sha256`` says which).
    """
    folder = Path(root) if root is not None else stdlib_root()
    files = sorted(p for p in folder.glob("*.py") if p.is_file())
    if len(files) < 2:
        raise SystemExit(f"error: need at least two .py files under {folder}, found {len(files)}")
    order = list(files)
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    val, train = sorted(order[:n_val]), sorted(order[n_val:])

    def cat(paths: list[Path]) -> bytes:
        return b"".join(p.read_bytes() + b"\n" for p in paths)

    tr, va = cat(train), cat(val)
    digest = hashlib.sha256(tr + b"\0" + va).hexdigest()
    as_tensor = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8)  # noqa: E731
    return Corpus(as_tensor(tr), as_tensor(va), tuple(p.name for p in train), tuple(p.name for p in val),
                  str(folder), digest)  # fmt: skip


def batches(data: torch.Tensor, batch: int, seq: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless random windows of ``seq + 1`` bytes (int64, ``[batch, seq + 1]``), the same for a seed."""
    gen = torch.Generator().manual_seed(seed)
    span = torch.arange(seq + 1)
    while True:
        start = torch.randint(0, len(data) - seq - 1, (batch, 1), generator=gen)
        yield data[start + span].long()


def val_batches(data: torch.Tensor, batch: int, seq: int, max_tokens: int) -> list[torch.Tensor]:
    """Consecutive non-overlapping windows of the validation text, whole batches of ``batch`` only."""
    n = min(max_tokens // seq, (len(data) - 1) // seq) // batch * batch
    if n == 0:
        raise SystemExit(f"error: the validation text ({len(data)} bytes) is shorter than one batch")
    span = torch.arange(seq + 1)
    windows = data[(torch.arange(n) * seq)[:, None] + span].long()
    return list(windows.split(batch))


# -- the model and its training ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    ffn: int = 512
    seq: int = 64
    batch: int = 8
    eval_batch: int = 8
    steps: int = 400
    lr: float = 3e-3
    weight_decay: float = 0.01
    sparsity: float = 0.75
    tolerance: float = 0.05
    warmup: float = 0.15  # DHSPG's warm-up (partition step), a share of the steps
    window: float = 0.35  # its pruning window, a share of the steps
    periods: int = 5
    lmbda: float = 1e-2
    epsilon: float = 0.0
    eval_tokens: int = 32768
    seed: int = 0
    uniform: bool = True  # the same count per layer for each kind of group (what a HF config can hold)


def make_model(s: Settings) -> torch.nn.Module:
    """A LLaMA-style causal LM from a config: random weights, byte vocabulary, tied embeddings."""
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads, intermediate_size=s.ffn, max_position_embeddings=s.seq,
        tie_word_embeddings=True, use_cache=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(s.seed)
    return transformers.LlamaForCausalLM(cfg)


def logits_of(out: Any) -> torch.Tensor:
    """The logits of an HF output, of the constructed module's output, or of a plain tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    from construct.torch_verify import flat_outputs

    return flat_outputs(out)[0]


def lr_schedule(steps: int) -> Callable[[int], float]:
    """Linear warm-up over 5% of the steps, then cosine down to 10% of the peak: the same for both runs."""
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


def loss_on(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits = logits_of(model(x[:, :-1]))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1))


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, corpus: Corpus, s: Settings, desc: str,
          quiet: bool = False) -> tuple[float, list[float]]:  # fmt: skip
    """``s.steps`` steps on the seeded batches with the shared schedule; (seconds, losses)."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(s.steps))
    data = batches(corpus.train, s.batch, s.seq, s.seed)
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(s.steps):
        loss = loss_on(model, next(data))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        if not quiet and (step + 1) % max(1, s.steps // 10) == 0:
            avg = sum(losses[-20:]) / len(losses[-20:])
            print(f"  {desc} step {step + 1}/{s.steps}: loss {avg:.3f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)  # fmt: skip
    return time.perf_counter() - t0, losses


@torch.no_grad()
def perplexity(model: torch.nn.Module, val: list[torch.Tensor]) -> float:
    """exp of the mean next-byte cross entropy over the validation windows."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for x in val:
        logits = logits_of(model(x[:, :-1])).float()
        total += float(
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        )
        count += x[:, 1:].numel()
    model.train(was)
    return math.exp(total / count)


def params(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding/LM head counts once, as ``model.parameters()`` yields it)."""
    return sum(p.numel() for p in model.parameters())


_LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


def uniform_kinds(analysis: Any) -> dict[tuple, list[Any]]:
    """The prunable node groups by kind: the same parameter axes up to the layer index, and the same size.

    ``graphcore.uniform.uniform_kinds`` where the engine has it (the rule ``construct.to_hf`` checks);
    the same rule otherwise."""
    try:
        from graphcore.uniform import uniform_kinds as engine_kinds  # type: ignore[import-not-found]
    except ImportError:
        out: dict[tuple, list[Any]] = {}
        for g in analysis.prunable_groups:
            axes = sorted({(_LAYER_INDEX.sub("*", n.split("@")[0]), a) for n, a in g.params})
            out.setdefault((g.size, tuple(axes)), []).append(g)
        return out
    return dict(engine_kinds(analysis))


def expressible_kinds(model: torch.nn.Module, analysis: Any) -> tuple[list[tuple], dict[str, str]]:
    """The kinds of groups to make uniform, and why the others are left whole.

    A Hugging Face config holds one width per kind for all layers (``intermediate_size``, the head
    counts), so only a uniform result can go back to the same class through ``from_pretrained``:
    DHSPG's ``uniform=`` option gives every layer the same count per kind. Where the engine has
    ``construct.to_hf``, a kind is made uniform only when removing one ZIG from each of its groups
    comes back from ``to_hf`` (which checks the rebuilt class against ``to_torch``); the others are
    left whole and reported (``left_whole``)."""
    kinds = uniform_kinds(analysis)
    left_whole: dict[str, str] = {}
    try:  # only the kinds to_hf expresses exactly, where the engine has it
        from construct.to_hf import to_hf  # type: ignore[import-not-found]
    except ImportError:
        to_hf = None
    if to_hf is not None:
        import numpy as np

        from graphcore.errors import ZigraphError

        for kind, gs in list(kinds.items()):
            probe = np.array(sorted(int(g.zig_ids[0]) for g in gs), dtype=np.int64)
            try:  # one ZIG out of every group of the kind: built, then checked against to_torch
                to_hf(model, analysis, probe)
            except ZigraphError as exc:
                left_whole[str(kind[1][0][0])] = str(exc).splitlines()[0][:160]
                del kinds[kind]
    return list(kinds), left_whole


def dhspg(model: torch.nn.Module, analysis: Any, s: Settings) -> tuple[torch.optim.Optimizer, dict[str, str]]:
    """DHSPG (AdamW variant) on the bench's settings, with ``s.uniform`` its ``uniform=`` selection;
    and the kinds left whole, with why."""
    import optimizers

    kinds, left_whole = expressible_kinds(model, analysis) if s.uniform else ([], {})
    opt = optimizers.get("dhspg")(
        model, analysis, variant="adamw", lr=s.lr, weight_decay=s.weight_decay,
        target_group_sparsity=s.sparsity, tolerance_group_sparsity=s.tolerance,
        start_pruning_steps=int(s.warmup * s.steps), pruning_steps=max(1, int(s.window * s.steps)),
        pruning_periods=s.periods, lmbda=s.lmbda, epsilon=s.epsilon, uniform=kinds if s.uniform else False,
    )  # fmt: skip
    return opt, left_whole


def analyze(model: torch.nn.Module, s: Settings) -> Any:
    """The prune analysis of ``model`` traced at the validation batch shape (the shape the constructed
    module runs at)."""
    import graphcore
    from frontends.torch_frontend import load_torch

    ids = torch.zeros(s.eval_batch, s.seq, dtype=torch.long)
    was = model.training
    model.eval()
    try:
        return graphcore.analyze(load_torch(model, (ids,)))
    finally:
        model.train(was)


# -- what was removed, by kind of group -------------------------------------------------------------------


def group_kind(group: Any) -> str:
    """A label for a node group: the modules of its parameters with layer numbers folded (``layers.N``)."""
    mods = sorted({re.sub(r"\.\d+\.", ".N.", name).rsplit(".", 1)[0] for name, _ in group.params})
    short = [m.replace("model.layers.N.", "") for m in mods]
    if any("mlp" in m for m in short) and not any("attn" in m for m in short):
        return "MLP width"
    if all("attn" in m for m in short):
        return "attention"
    return "hidden / other"


def removed_by_kind(analysis: Any, removed: Any) -> dict[str, tuple[int, int, int]]:
    """kind -> (node groups, ZIGs removed, ZIGs in those groups), over the prunable groups."""
    import numpy as np

    gone = set(int(z) for z in np.asarray(removed).ravel())
    out: dict[str, list[int]] = {}
    for g in analysis.prunable_groups:
        row = out.setdefault(group_kind(g), [0, 0, 0])
        row[0] += 1
        row[1] += sum(1 for z in g.zig_ids if int(z) in gone)
        row[2] += len(g.zig_ids)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def is_uniform(analysis: Any, removed: Any) -> bool:
    """Every group of one kind lost the same number of ZIGs (what a HF config can express)."""
    import numpy as np

    per_group = np.bincount(
        analysis.zig_group[np.asarray(removed, dtype=np.int64)], minlength=len(analysis.groups)
    )
    return all(len({int(per_group[g.id]) for g in gs}) == 1 for gs in uniform_kinds(analysis).values())


# -- the run -------------------------------------------------------------------------------------------------


@dataclass
class Result:
    settings: Settings
    corpus: Corpus
    dense_params: int
    pruned_params: int
    dense_ppl: float
    dhspg_ppl: float  # the trained DHSPG model itself (its removed groups are exact zeros)
    pruned_ppl: float  # the constructed small module
    equiv_rel: float  # small module vs trained DHSPG model
    perturbed_rel: float  # small module vs the trained model with its zeros perturbed: must be large
    dense_s: float
    dhspg_s: float
    analyze_s: float
    construct_s: float
    removed_zigs: int
    prunable_zigs: int
    kinds: dict[str, tuple[int, int, int]]
    uniform: bool
    hf: dict[str, Any] = field(default_factory=dict)
    left_whole: dict[str, str] = field(default_factory=dict)  # kinds to_hf cannot express: why
    total_s: float = 0.0  # the whole run: corpus, both trainings, analysis, construct, every check

    @property
    def kept(self) -> float:
        return self.pruned_params / self.dense_params

    @property
    def ppl_ratio(self) -> float:
        return self.pruned_ppl / self.dense_ppl


def perturbed_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every exactly-zero entry replaced by small noise: what the small module must NOT equal,
    so that the equivalence check can fail."""
    m = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            zero = p == 0
            if zero.any():
                p[zero] = 0.05 * torch.randn(int(zero.sum()), generator=gen)
    return m


def hf_round_trip(model: torch.nn.Module, analysis: Any, val: list[torch.Tensor]) -> dict[str, Any]:
    """Through ``construct.to_hf`` (when the engine has it): save_pretrained, from_pretrained, compare.

    Returns {} when the engine has no ``to_hf``; otherwise the class, the reloaded parameters and the
    worst relative logit error against the trained model, or the reason it could not be expressed."""
    try:
        from construct.to_hf import to_hf  # type: ignore[import-not-found]
    except ImportError:
        return {}
    from construct.torch_verify import verify_torch

    try:
        hf_small = to_hf(model, analysis)
    except Exception as exc:  # a non-uniform result has no config: report why, the torch module still exists
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    with tempfile.TemporaryDirectory() as tmp:
        hf_small.save_pretrained(tmp)
        reloaded = type(hf_small).from_pretrained(tmp).eval()
    rep = verify_torch(model, reloaded, [(x[:, :-1],) for x in val[:2]])
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    config = {k: getattr(reloaded.config, k) for k in keys if hasattr(reloaded.config, k)}
    return {
        "class": type(reloaded).__name__,
        "params": params(reloaded),
        "rel": rep.max_rel,
        "config": config,
    }


def run(s: Settings, quiet: bool = False, corpus: Corpus | None = None) -> Result:
    """Both trainings, the construction and every measurement of the table."""
    import construct
    import optimizers
    from construct.torch_verify import verify_torch

    warnings.simplefilter("ignore")
    start = time.perf_counter()
    corpus = corpus or load_corpus(seed=s.seed)
    val = val_batches(corpus.val, s.eval_batch, s.seq, s.eval_tokens)
    init = make_model(s)

    dense = copy.deepcopy(init)
    opt = torch.optim.AdamW(dense.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    dense_s, _ = train(dense, opt, corpus, s, "dense", quiet)
    dense_ppl = perplexity(dense, val)

    model = copy.deepcopy(init)
    t0 = time.perf_counter()
    analysis = analyze(model, s)
    analyze_s = time.perf_counter() - t0
    opt, left_whole = dhspg(model, analysis, s)
    dhspg_s, _ = train(model, opt, corpus, s, "DHSPG", quiet)
    model.eval()
    removed = optimizers.removed_zigs(model, analysis)
    t0 = time.perf_counter()
    small = construct.to_torch(model, analysis)
    construct_s = time.perf_counter() - t0
    samples = [(x[:, :-1],) for x in val[:3]]
    equiv = verify_torch(model, small, samples).max_rel
    perturbed = verify_torch(perturbed_copy(model), small, samples).max_rel
    r = Result(
        settings=s, corpus=corpus, dense_params=params(init), pruned_params=params(small),
        dense_ppl=dense_ppl, dhspg_ppl=perplexity(model, val), pruned_ppl=perplexity(small, val),
        equiv_rel=equiv, perturbed_rel=perturbed, dense_s=dense_s, dhspg_s=dhspg_s, analyze_s=analyze_s,
        construct_s=construct_s, removed_zigs=len(removed),
        prunable_zigs=int(analysis.prunable_zig_ids().size),
        kinds=removed_by_kind(analysis, removed), uniform=is_uniform(analysis, removed),
        hf=hf_round_trip(model, analysis, val), left_whole=left_whole,
    )  # fmt: skip
    r.total_s = time.perf_counter() - start
    return r


# -- the report ----------------------------------------------------------------------------------------------


def table(r: Result) -> str:
    rows = [
        ("dense (AdamW)", r.dense_params, 1.0, r.dense_ppl, f"{r.dense_s:.0f}"),
        ("DHSPG, trained (zeros in place)", r.dense_params, 1.0, r.dhspg_ppl, f"{r.dhspg_s:.0f}"),
        ("DHSPG, constructed (`to_torch`)", r.pruned_params, r.kept, r.pruned_ppl,
         f"+{r.analyze_s:.0f} analyze, +{r.construct_s:.1f} construct"),
    ]  # fmt: skip
    if r.hf and "params" in r.hf:
        rows.append((f"DHSPG, `to_hf` → `from_pretrained` ({r.hf['class']})", r.hf["params"],
                     r.hf["params"] / r.dense_params, float("nan"), ""))  # fmt: skip
    out = [
        "| model | parameters | kept | validation perplexity | train s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, n, kept, ppl, sec in rows:
        p = "—" if math.isnan(ppl) else f"{ppl:.3f}"
        out.append(f"| {name} | {n:,} | {100 * kept:.1f}% | {p} | {sec} |")
    return "\n".join(out)


def summary(r: Result) -> list[str]:
    s = r.settings
    lines = [
        f"- parameters kept: **{100 * r.kept:.1f}%** ({r.pruned_params:,} of {r.dense_params:,}, tied "
        f"embedding/LM head included) — goal ≤ 50%: {'met' if r.kept <= 0.5 else 'NOT met'}",
        f"- validation perplexity, pruned / dense: **{r.ppl_ratio:.3f}** ({r.pruned_ppl:.3f} vs "
        f"{r.dense_ppl:.3f}) — goal ≤ 1.10: {'met' if r.ppl_ratio <= 1.10 else 'NOT met'}",
        f"- constructed module vs the trained model (removed groups exactly zero): max relative logit "
        f"error {r.equiv_rel:.1e} (≤ 1e-4); the same module vs the trained model with its zeros perturbed: "
        f"{r.perturbed_rel:.1e} (the check can fail)",
        f"- wall time: {r.total_s:.0f} s for the whole bench (dense training {r.dense_s:.0f} s, DHSPG "
        f"training {r.dhspg_s:.0f} s, analysis {r.analyze_s:.0f} s, construct {r.construct_s:.1f} s)",
        f"- zero-invariant groups removed: {r.removed_zigs} of {r.prunable_zigs} prunable (target "
        f"{s.sparsity:g}); by kind: "
        + "; ".join(
            f"{k}: {rem} of {tot} ZIGs in {n} groups" for k, (n, rem, tot) in sorted(r.kinds.items())
        ),
    ]
    lines.append(f"- selection: {UNIFORM[s.uniform]}; result uniform: {'yes' if r.uniform else 'no'}")
    for kind, why in sorted(r.left_whole.items()):
        lines.append(f"- left whole for the `from_pretrained` round trip: `{kind}` and its group — {why}")
    if r.hf.get("error"):
        lines.append(f"- `construct.to_hf`: not expressible as a config — {r.hf['error']}")
    elif r.hf:
        lines.append(f"- `construct.to_hf` → `save_pretrained` → `{r.hf['class']}.from_pretrained`: "
                     f"max relative logit error {r.hf['rel']:.1e}; config {r.hf['config']}")  # fmt: skip
    else:
        lines.append("- `construct.to_hf`: not in this engine yet (no `from_pretrained` round trip measured)")
    return lines


def settings_line(r: Result) -> str:
    s, c = r.settings, r.corpus
    return (
        f"Model: `LlamaForCausalLM`, hidden {s.hidden}, {s.layers} layers, {s.heads} heads ({s.kv_heads} "
        f"key/value), MLP {s.ffn}, vocabulary {VOCAB} bytes, tied embeddings. Corpus: the "
        f"{len(c.train_files)} + {len(c.val_files)} top-level `.py` files of Python "
        f"{sys.version_info.major}.{sys.version_info.minor}'s standard library, {len(c.train):,} training "
        f"and {len(c.val):,} validation bytes (split by file, seed {s.seed}; sha256 {c.sha256[:12]}). "
        f"Training: {s.steps} steps of {s.batch}×{s.seq} bytes, AdamW rule (lr {s.lr:g}, weight decay "
        f"{s.weight_decay:g}, gradient clip 1.0), 5% linear warm-up then cosine to 10%, identical for both "
        "runs. "
        f"DHSPG: target group sparsity {s.sparsity:g}, τ {s.tolerance:g}, partition at step "
        f"{int(s.warmup * s.steps)}, pruning window {int(s.window * s.steps)} steps in {s.periods} periods, "
        f"λ {s.lmbda:g}, ε {s.epsilon:g}. Validation perplexity over the first {s.eval_tokens:,} validation "
        "bytes."
    )


def report(r: Result) -> str:
    import platform

    from doc_blocks import engine_version

    return "\n".join([
        settings_line(r), "",
        f"zigraph at {engine_version()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}.", "",
        table(r), "", *summary(r),
    ])  # fmt: skip


def write_doc(text: str) -> None:
    from doc_blocks import replace_marked_block

    if not replace_marked_block(DOC, START, END, text):
        raise SystemExit(f"error: {DOC} has no {START} … {END} block")


def parse(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    d = Settings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="a short smoke run (few steps, small eval); writes no doc"
    )
    ap.add_argument("--steps", type=int, default=None, help=f"training steps per run (default {d.steps})")
    ap.add_argument("--sparsity", type=float, default=d.sparsity, help="DHSPG target group sparsity")
    ap.add_argument("--tolerance", type=float, default=d.tolerance, help="DHSPG τ (candidate surplus)")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--lmbda", type=float, default=d.lmbda)
    ap.add_argument("--epsilon", type=float, default=d.epsilon)
    ap.add_argument("--warmup", type=float, default=d.warmup, help="DHSPG warm-up, share of the steps")
    ap.add_argument("--window", type=float, default=d.window, help="DHSPG pruning window, share of the steps")
    ap.add_argument("--periods", type=int, default=d.periods)
    ap.add_argument("--hidden", type=int, default=d.hidden)
    ap.add_argument("--layers", type=int, default=d.layers)
    ap.add_argument("--heads", type=int, default=d.heads)
    ap.add_argument("--kv-heads", type=int, default=d.kv_heads)
    ap.add_argument("--ffn", type=int, default=d.ffn)
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--seq", type=int, default=d.seq)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--no-uniform", action="store_true", help="DHSPG unchanged (counts per layer may differ)")
    ap.add_argument("--json", default=None, help="also write the numbers and the report text to this file")
    ap.add_argument("--doc-from", default=None, help="write the report of an earlier --json run into the doc")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not rewrite docs/llm_training.md")
    a = ap.parse_args(argv)
    steps = a.steps if a.steps is not None else (40 if a.quick else d.steps)
    s = Settings(
        hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn, seq=a.seq,
        batch=a.batch, eval_batch=d.eval_batch, steps=steps, lr=a.lr, weight_decay=d.weight_decay,
        sparsity=a.sparsity, tolerance=a.tolerance, warmup=a.warmup, window=a.window, periods=a.periods,
        lmbda=a.lmbda, epsilon=a.epsilon, eval_tokens=4096 if a.quick else d.eval_tokens, seed=a.seed,
        uniform=not a.no_uniform,
    )  # fmt: skip
    return s, a


def main(argv: list[str] | None = None) -> int:
    s, a = parse(argv)
    if a.doc_from:
        write_doc(json.loads(Path(a.doc_from).read_text(encoding="utf-8"))["report"])
        print(f"wrote {DOC.relative_to(ROOT)} from {a.doc_from}")
        return 0
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    r = run(s)
    text = report(r)
    print()
    print(text)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if a.json:
        from graphcore.report import write_json_atomic

        numbers = {k: v for k, v in vars(r).items() if isinstance(v, int | float | bool | dict)}
        numbers["settings"] = dataclasses.asdict(s)
        write_json_atomic(Path(a.json), json.dumps({"report": text, **numbers}, indent=1, default=str))
    if not (a.quick or a.no_doc):
        write_doc(text)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
