"""One-shot pruning of a torch model, measured: the numbers of the torch zoo table and its tests.

A composition of the packages (load → analyze → select → zero → ``to_torch`` → verify, and optionally
``to_onnx`` → onnxruntime); it lives on the top floor because no single package owns the whole job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import graphcore
from construct.torch_construct import to_torch
from construct.torch_export import to_onnx
from construct.torch_verify import verify_torch, zeroed_copy
from construct.torch_zeros import trainable_arrays
from frontends.torch_frontend import example_tuple, load_torch
from graphcore.groups import PruneAnalysis
from graphcore.select import relative_scores, select_zigs, zig_norms

__all__ = ["PruneCheck", "prune_check"]


@dataclass
class PruneCheck:
    """Sizes before and after, the worst relative errors, and what the timings were."""

    params_before: int
    params_after: int
    kept: float
    removed_zigs: int
    prunable_zigs: int
    torch_rel: float
    load_analyze_ms: float
    construct_ms: float
    small: nn.Module = field(repr=False)
    analysis: PruneAnalysis = field(repr=False)
    ort_rel: float | None = None


def prune_check(
    model: nn.Module,
    example_inputs: Any,
    sparsity: float = 0.5,
    criterion: str = "l2",
    seed: int = 0,
    onnx_path: str | None = None,
    samples: int = 2,
    multiple: int | None = None,
) -> PruneCheck:
    """One-shot prune ``model`` and measure it.

    Selects ``sparsity`` of the prunable ZIGs (lowest relative L2 norm, or random), zeroes them in a
    copy, builds the small module, and compares it with the zeroed copy in torch and — with
    ``onnx_path`` — in onnxruntime after exporting the small module there.
    """
    inputs = example_tuple(example_inputs)
    t0 = time.perf_counter()
    analysis = graphcore.analyze(load_torch(model, inputs))
    load_ms = 1000 * (time.perf_counter() - t0)
    scores = (
        relative_scores(analysis, zig_norms(analysis, trainable_arrays(model, analysis)))
        if criterion == "l2"
        else None
    )
    chosen = select_zigs(analysis, sparsity, scores=scores, criterion=criterion, seed=seed, multiple=multiple)
    zeroed = zeroed_copy(model, analysis, chosen)
    t1 = time.perf_counter()
    small = to_torch(zeroed, analysis)
    construct_ms = 1000 * (time.perf_counter() - t1)
    gen = torch.Generator().manual_seed(seed)
    batches = [inputs] + [
        tuple(torch.randn(x.shape, generator=gen) if x.is_floating_point() else x for x in inputs)
        for _ in range(max(samples - 1, 0))
    ]
    rep = verify_torch(zeroed, small, batches)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in small.parameters())
    out = PruneCheck(
        params_before=before,
        params_after=after,
        kept=after / max(before, 1),
        removed_zigs=int(chosen.size),
        prunable_zigs=int(analysis.prunable_zig_ids().size),
        torch_rel=rep.max_rel,
        load_analyze_ms=load_ms,
        construct_ms=construct_ms,
        small=small,
        analysis=analysis,
    )
    if onnx_path is not None:
        ort = to_onnx(small, inputs, onnx_path, reference=zeroed, samples=samples, seed=seed)
        out.ort_rel = ort.max_rel if ort is not None else None
    return out
