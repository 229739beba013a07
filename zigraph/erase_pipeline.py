"""``zigraph erase``: one-shot erasing of whole removal structures, verified, written atomically.

load → ``analyze(mode="erase")`` → rank erasable structures by norm → ``analysis.select`` (the one
selection rule, so the result is always valid) → construct → verify → publish. Only composition lives
here; every step is a function of graphcore or construct.

Errors: bad input raises ``ZigraphError`` (exit 2); anything else that goes wrong after the model has
loaded is a bug in zigraph and raises ``InternalError`` naming the model and the stage (exit 3), so a
bug is never disguised as bad input.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphcore.errors import InternalError, ModelLoadError, ZigraphError
from graphcore.groups import ParamSlice
from graphcore.report import EraseResult, Report, VerifyReport
from zigraph.pipeline import LoadedModel, _onnx_params, publish_if_verified, staged_path, verify_written
from zigraph.pipeline import stage as _stage

__all__ = ["InternalError", "NothingToErase", "erase", "erase_order", "structure_scores"]


class NothingToErase(ZigraphError):
    """The model has no erasable removal structure: there is nothing to write."""


def structure_scores(analysis: Any, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """One score per structure: the L2 norm of its variables divided by sqrt(their element count).

    Dividing by sqrt(numel) makes a wide block and a thin one comparable (the root-mean-square of their
    weights); a structure with no variables in ``arrays`` scores 0.
    """
    n = len(analysis.structures)
    sq = np.zeros(n, dtype=np.float64)
    numel = np.zeros(n, dtype=np.float64)
    for s in analysis.structures:
        for name in s.params:
            arr = arrays.get(name)
            if arr is None:
                continue
            a = np.asarray(arr, dtype=np.float64)
            sq[s.id] += float(np.square(a).sum())
            numel[s.id] += a.size
    return np.sqrt(sq) / np.sqrt(np.maximum(numel, 1.0))


def erase_order(analysis: Any, scores: np.ndarray) -> list[int]:
    """Erasable structure ids, most redundant (smallest score) first, ties by id."""
    ids = np.array([s.id for s in analysis.structures if s.erasable], dtype=np.int64)
    if ids.size == 0:
        return []
    return [int(i) for i in ids[np.argsort(scores[ids], kind="stable")]]


def _structure_arrays(loaded: LoadedModel, analysis: Any) -> dict[str, np.ndarray]:
    """The variables of the erasable structures, and nothing else (a large model reads only these)."""
    names = {p for s in analysis.structures if s.erasable for p in s.params}
    if loaded.module is not None:
        from construct.torch_zeros import model_tensors

        tensors = model_tensors(loaded.module)
        return {n: tensors[n].detach().float().cpu().numpy() for n in names if n in tensors}
    from construct.onnx_construct import _param_arrays

    return _param_arrays(loaded.graph, names)


def _nothing_to_erase(analysis: Any, source: str) -> NothingToErase:
    model = source or analysis.graph.name
    if not analysis.structures:
        why = "no branch joins an Add or a Concat that has another live input (a plain chain)"
    else:
        reasons: dict[str, int] = {}
        for s in analysis.structures:
            reasons[s.reason or "not erasable"] = reasons.get(s.reason or "not erasable", 0) + 1
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:2]
        why = f"{len(analysis.structures)} structures, none erasable: " + "; ".join(
            f"{k} ({v})" for k, v in top
        )
    return NothingToErase(f"nothing to erase in {model}: {why}; no output written")


def _shortfall_note(sparsity: float, requested: int, erased: int, erasable: int) -> str | None:
    if requested == 0 and sparsity > 0:
        return f"{sparsity:g} of {erasable} erasable structures rounds to none; nothing was erased"
    if erased >= requested:
        return None
    return (
        f"asked for {requested} of {erasable} erasable structures; {erased} is the most that keeps the "
        "network valid (erasing any other would cut an output off its inputs)"
    )


@dataclass
class _Built:
    params_before: int
    params_after: int
    verification: VerifyReport | None


def erase(
    loaded: LoadedModel,
    sparsity: float,
    out: str | os.PathLike,
    seed: int = 0,
    verify: bool = True,
    samples: int = 3,
) -> Report:
    """Erase ``round(sparsity × erasable structures)`` structures, smallest norm first, to ``out``.

    Returns the erase-mode report with ``removed`` (every parameter slice that vanished, over the original
    names) and ``result`` (an ``EraseResult``). Raises ``NothingToErase`` when the model has no erasable
    structure (nothing is written). The output is published only once verified.
    """
    import graphcore

    if not 0.0 <= sparsity <= 1.0:
        raise ZigraphError(f"sparsity must be in [0, 1], got {sparsity}")
    source = loaded.source or loaded.graph.name
    t0 = time.perf_counter()
    with _stage("analysing", source):  # an AnalysisError is the model's (exit 2), anything else ours
        analysis = graphcore.analyze(loaded.graph, mode="erase")
    erasable = [s.id for s in analysis.structures if s.erasable]
    if not erasable:
        raise _nothing_to_erase(analysis, source)
    with _stage("ranking the structures of", source):
        order = erase_order(analysis, structure_scores(analysis, _structure_arrays(loaded, analysis)))
        requested = round(sparsity * len(erasable))
        erased = sorted(analysis.select(order, requested)) if requested else []
        gone = analysis.erased_by(erased)  # with the structures nested in them
        plan = analysis.plan(erased)
    target = Path(out)
    staged = staged_path(target)
    try:
        with _stage("constructing the erased model of", source):
            built = _build(
                loaded, analysis, erased, plan, (staged, target.name + ".data"), verify, samples, seed
            )
        output = publish_if_verified(staged, target, built.verification)
        with _stage("measuring the erased model of", source):
            flops_after = _flops(output or None, analysis.flops_total, plan)
    finally:
        if staged.exists():
            staged.unlink()
    result = EraseResult(
        structures_erased=sorted(gone),
        structures_requested=requested,
        structures_erasable=len(erasable),
        note=_shortfall_note(sparsity, requested, len(gone), len(erasable)),
        nodes_removed=len(plan.removed_nodes),
        params_before=built.params_before,
        params_after=built.params_after,
        flops_before=int(analysis.flops_total),
        flops_after=flops_after,
        verification=built.verification,
        output=output,
        sparsity=sparsity,
        criterion="norm",
        seed=seed,
        seconds=round(time.perf_counter() - t0, 3),
    )
    removed: list[ParamSlice] = list(plan.removed)
    return analysis.report(removed).model_copy(update={"result": result})


def _flops(path: str | None, before: int, plan: Any) -> int:
    """FLOPs of the written model, counted by the analysis of the file itself (-1 when not written)."""
    if path is None:
        return -1
    import frontends
    import graphcore

    if not plan.erased:
        return int(before)
    try:
        written = frontends.load(path)
    except ModelLoadError as exc:  # the file is ours: not loading is our bug, never the user's input
        raise InternalError(f"the written model does not load ({exc})") from None
    return int(graphcore.analyze(written).flops_total)


def _build(
    loaded: LoadedModel,
    analysis: Any,
    erased: Sequence[int],
    plan: Any,
    where: tuple[Path, str],
    verify: bool,
    samples: int,
    seed: int,
) -> _Built:
    import construct

    out, data_name = where  # the staged path, and the name its external data gets once published
    if loaded.module is None:
        small = _erase_onnx(analysis, erased)
        construct.save_onnx(small, out, data_name=data_name)
        verification = verify_written(loaded, out, plan.removed, samples, seed) if verify else None
        return _Built(_onnx_params(loaded.graph.meta["model"]), _onnx_params(small), verification)

    from construct.erase_torch import zeroed_by_slices

    zeroed = zeroed_by_slices(loaded.module, plan.removed).eval()
    small_module = construct.to_torch(zeroed, analysis, list(erased))
    # The small ONNX model, run in onnxruntime, against the zeroed full torch model.
    report = construct.to_onnx(
        small_module, loaded.example_inputs, out, verify=verify, samples=samples, seed=seed, reference=zeroed
    )
    return _Built(
        _numel(loaded.module),
        _numel(small_module),
        report if verify else None,
    )


def _erase_onnx(analysis: Any, erased: Sequence[int]) -> Any:
    """The smaller ONNX model (construct's erasing lowering)."""
    import construct

    return construct.erase_onnx(None, analysis, list(erased))


def _numel(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))
