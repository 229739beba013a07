"""End-to-end jobs the CLI runs: load → analyze → choose → construct → verify → write.

Only composition lives here; every step is a function of frontends, graphcore or construct.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphcore.errors import ZigraphError

__all__ = ["LoadedModel", "load_model", "prune_model"]


@dataclass
class LoadedModel:
    graph: Any
    module: Any = None
    example_inputs: Any = None
    source: str = ""


def load_model(spec: str, input_shapes: list[tuple[int, ...]] | None = None) -> LoadedModel:
    """``spec`` is an .onnx path or ``package.module:factory`` (then ``input_shapes`` is required)."""
    import frontends

    if _is_torch_spec(spec):
        from frontends.torch_frontend import load_factory

        module, inputs = load_factory(spec, input_shapes or [])
        return LoadedModel(frontends.load(module, inputs), module, inputs, spec)
    return LoadedModel(frontends.load(spec), source=spec)


def _is_torch_spec(spec: str) -> bool:
    if spec.endswith(".onnx") or os.path.exists(spec):
        return False
    head, sep, tail = spec.partition(":")
    return bool(
        sep and head and tail and all(p.isidentifier() for p in head.split(".")) and tail.isidentifier()
    )


def _param_arrays(loaded: LoadedModel) -> dict[str, np.ndarray] | None:
    if loaded.module is None:
        return None
    named = dict(loaded.module.named_parameters())
    return {k: v.detach().cpu().numpy() for k, v in named.items()}


def prune_model(
    loaded: LoadedModel,
    sparsity: float,
    out: str | os.PathLike,
    criterion: str = "l2",
    seed: int = 0,
    verify: bool = True,
    samples: int = 3,
    multiple: int = 1,
) -> dict:
    """One-shot pruning to ``out`` (.onnx); returns the report as a dict (with ``removed``, ``result``)."""
    import construct
    import graphcore
    from graphcore.select import relative_scores, select_zigs

    t0 = time.perf_counter()
    analysis = graphcore.analyze(loaded.graph)
    norms = construct.zig_norms(analysis, _param_arrays(loaded))
    scores = relative_scores(analysis, norms)
    chosen = select_zigs(analysis, sparsity, scores, criterion=criterion, seed=seed, multiple=multiple)
    out = Path(out)
    # Written under a temporary name and published only once verified: a run that fails for any
    # reason, or a model that does not verify, leaves nothing at ``out``.
    staged = out.with_name(f".zigraph-staged-{os.getpid()}-{out.name}")
    try:
        report = _prune_staged(loaded, analysis, chosen, staged, out.name + ".data", verify, samples)
        result = report["result"]
        ver = result.get("verification")
        if ver is None or ver["passed"]:
            os.replace(staged, out)
            result["output"] = str(out)
        else:
            result["output"] = None
            data = out.with_name(out.name + ".data")
            if data.exists() and not out.exists():
                data.unlink()
    finally:
        if staged.exists():
            staged.unlink()
    result.update(sparsity=sparsity, criterion=criterion, seed=seed, multiple=multiple)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _prune_staged(
    loaded: LoadedModel, analysis: Any, chosen: Any, out: Path, data_name: str, verify: bool, samples: int
) -> dict:
    import construct

    torch_report = None
    if loaded.module is None:
        small, plan = construct.prune_onnx(analysis, chosen)
        removed = plan.removed
        construct.save_onnx(small, out, data_name=data_name)
        params_before = _onnx_params(loaded.graph.meta["model"])
        params_after = _onnx_params(small)
    else:
        import torch

        from graphcore.shrink import plan as make_plan

        plan = make_plan(analysis, chosen)
        removed = plan.removed
        zeroed = copy.deepcopy(loaded.module).eval()
        named = dict(zeroed.named_parameters())
        named.update(dict(zeroed.named_buffers()))
        with torch.no_grad():
            for s in removed:
                if s.param in named and analysis.trainable.get(s.param):
                    named[s.param].index_fill_(s.axis, torch.tensor(s.indices, dtype=torch.long), 0.0)
        small_module = construct.to_torch(zeroed, analysis)
        # The small ONNX model, run in onnxruntime, against the zeroed full torch model.
        torch_report = construct.to_onnx(
            small_module, loaded.example_inputs, out, verify=verify, samples=samples, reference=zeroed
        )
        params_before = sum(p.numel() for p in loaded.module.parameters())
        params_after = sum(p.numel() for p in small_module.parameters())
    report = analysis.report(removed).model_dump()
    result: dict[str, Any] = {
        "zigs_removed": len(chosen),
        "params_before": int(params_before),
        "params_after": int(params_after),
    }
    if verify and loaded.module is None:
        full = loaded.graph.meta["model"] if loaded.graph.meta.get("base_dir") is None else loaded.source
        result["verification"] = construct.verify(full, out, removed, samples=samples).model_dump()
    elif verify and torch_report is not None:
        result["verification"] = torch_report.model_dump()
    report["result"] = result
    return report


def _onnx_params(model) -> int:
    return int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer))


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"


def ensure_sparsity(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise ZigraphError(f"--sparsity must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= f < 1.0:
        raise ZigraphError(f"--sparsity must be in [0, 1), got {f}")
    return f
