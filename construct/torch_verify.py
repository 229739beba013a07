"""Checking a torch pruning: the small module against the original with the removed ZIGs zeroed.

The relative error follows ``construct.verify``: the largest absolute difference of an output divided by
the largest absolute value of the reference output (its scale), worst over outputs and samples.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from construct.torch_zeros import zero_zigs
from construct.verify import DEFAULT_RTOL, OutputError, VerifyReport
from graphcore.groups import PruneAnalysis

__all__ = [
    "compare_outputs",
    "flat_outputs",
    "randomize_",
    "run_torch",
    "verify_torch",
    "zeroed_copy",
]


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) model output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flat_outputs(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in flat_outputs(v)]
    return []


def compare_outputs(
    reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], rtol: float = DEFAULT_RTOL
) -> VerifyReport:
    """Per-sample lists of output arrays → the worst absolute and scale-relative error per output."""
    n_out = len(reference[0]) if reference else 0
    worst = [[0.0, 0.0] for _ in range(n_out)]
    for ref, cand in zip(reference, candidate):
        if len(ref) != len(cand):
            raise ValueError(f"{len(ref)} reference outputs but {len(cand)} outputs to check")
        for k, (x, y) in enumerate(zip(ref, cand)):
            x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            if x64.shape != y64.shape:
                raise ValueError(f"output {k} changed shape: {x64.shape} -> {y64.shape}")
            if x64.size:
                worst[k][0] = max(worst[k][0], float(np.abs(x64 - y64).max()))
                worst[k][1] = max(worst[k][1], float(np.abs(x64).max()))
    outs = [
        OutputError(name=f"output_{k}", max_abs=a, max_rel=(a / max(s, 1e-12) if a > 0 else 0.0), scale=s)
        for k, (a, s) in enumerate(worst)
    ]
    max_rel = max((o.max_rel for o in outs), default=0.0)
    return VerifyReport(
        passed=bool(max_rel <= rtol),
        samples=len(reference),
        rtol=rtol,
        max_abs=max((o.max_abs for o in outs), default=0.0),
        max_rel=max_rel,
        outputs=outs,
    )


def run_torch(model: nn.Module, inputs: tuple) -> list[np.ndarray]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [t.detach().float().cpu().numpy() for t in flat_outputs(model(*inputs))]
    finally:
        model.train(was)


def zeroed_copy(model: nn.Module, analysis: PruneAnalysis, zig_ids: Iterable[int]) -> nn.Module:
    """A deep copy of ``model`` with the trainable slices of ``zig_ids`` set to exactly zero."""
    z = copy.deepcopy(model)
    zero_zigs(z, analysis, zig_ids)
    return z


def verify_torch(
    reference: nn.Module,
    small: nn.Module,
    inputs: tuple | list[tuple],
    rtol: float = DEFAULT_RTOL,
) -> VerifyReport:
    """Run both modules (eval mode, no grad) on the inputs and compare every output.

    ``inputs``: a tensor, a tuple of positional inputs, or a list of such (one per sample).
    """
    if isinstance(inputs, torch.Tensor):
        batches: list[tuple] = [(inputs,)]
    elif isinstance(inputs, list):
        batches = [(b,) if isinstance(b, torch.Tensor) else tuple(b) for b in inputs]
    else:
        batches = [tuple(inputs)]
    ref = [run_torch(reference, x) for x in batches]
    return compare_outputs(ref, [run_torch(small, x) for x in batches], rtol)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every tensor a non-degenerate random value (in place), so that equality checks bite.

    Fresh torchvision models zero-initialise some heads and set layer scales to 1e-6, which would make
    a pruned model "equal" for trivial reasons. Vector-like tensors (norm scales, layer scales, tokens)
    get U(0.5, 1.5); biases and running means N(0, 0.1²); running variances U(0.5, 1.5); matrices keep
    their init unless it is constant or tiny, in which case they get N(0, 1/fan_in).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.is_floating_point() or t.numel() == 0:
                continue
            leaf = name.rsplit(".", 1)[-1]
            vector_like = sum(1 for d in t.shape if d != 1) <= 1
            if leaf == "running_mean" or "bias" in leaf:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif leaf == "running_var" or vector_like:
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif bool((t == t.reshape(-1)[0]).all()) or float(t.abs().max()) < 1e-3:
                t.copy_(torch.randn(t.shape, generator=gen) / max(1, t[0].numel()) ** 0.5)
    return model
