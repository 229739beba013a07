"""End-to-end jobs the CLI runs: load → analyze → choose → construct → verify → write.

Only composition lives here; every step is a function of frontends, graphcore or construct.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphcore.errors import InternalError, ModelLoadError, ZigraphError
from graphcore.groups import ParamSlice, PruneAnalysis
from graphcore.ir import Graph
from graphcore.report import PruneResult, Report, VerifyReport

__all__ = ["LoadedModel", "load_model", "prune", "prune_model", "report_json", "stage", "verify_written"]


@dataclass
class LoadedModel:
    """A model in the IR, with the torch module and its example inputs when it came from torch."""

    graph: Graph
    module: Any = None
    example_inputs: Any = None
    source: str = ""


def load_model(spec: str, input_shapes: list[tuple[int, ...]] | None = None) -> LoadedModel:
    """``spec`` is an .onnx path or ``package.module:factory`` (then ``input_shapes`` is required)."""
    import frontends

    if _is_torch_spec(spec):
        from zigraph.extras import require

        require("torch", f"loading the torch model {spec}")
        from frontends.torch_frontend import load_factory

        module, inputs = load_factory(spec, input_shapes or [])
        return LoadedModel(frontends.load(module, inputs), module, inputs, spec)
    return LoadedModel(frontends.load(spec), source=spec)


@contextmanager
def stage(what: str, model: str) -> Iterator[None]:
    """Errors inside a job's stage, classified once for every command (exit codes in zigraph.cli).

    A ``ZigraphError`` is the input's (exit 2) and passes unchanged. Anything else is zigraph's own
    failure: an ``InternalError`` gets the stage and the model named, any other exception becomes one
    (exit 3, asking for a bug report), so a bug is never disguised as bad input.
    """
    try:
        yield
    except InternalError as exc:
        if exc.stage is None:
            exc.stage, exc.model = what, model
        raise
    except (ZigraphError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise InternalError(f"{type(exc).__name__}: {msg}", what, model) from exc


def verify_written(
    loaded: LoadedModel, written: Path, removed: list[ParamSlice], samples: int, seed: int = 0
) -> VerifyReport:
    """Verify the model zigraph wrote at ``written`` (its staged file) against the loaded model with
    ``removed`` zeroed, in onnxruntime, at the tolerance of the model's dtype.

    The written file is ours: when it does not even load, that is zigraph's bug (``InternalError``),
    and the message must not name the staged file as if it were the user's bad input.
    """
    import construct

    full = loaded.graph.meta["model"] if loaded.graph.meta.get("base_dir") is None else loaded.source
    with stage("verifying the model written for", loaded.source or loaded.graph.name):
        try:
            return construct.verify(full, written, removed, samples=samples, seed=seed)
        except ModelLoadError as exc:
            text = str(exc)
            if not text.startswith(f"{written}:"):
                raise
            raise InternalError(f"the written model does not load:{text[len(str(written)) + 1 :]}") from None


def _is_torch_spec(spec: str) -> bool:
    if spec.endswith(".onnx") or os.path.exists(spec):
        return False
    head, sep, tail = spec.partition(":")
    return bool(
        sep and head and tail and all(p.isidentifier() for p in head.split(".")) and tail.isidentifier()
    )


def prune(
    loaded: LoadedModel,
    sparsity: float,
    out: str | os.PathLike,
    criterion: str = "l2",
    seed: int = 0,
    verify: bool = True,
    samples: int = 3,
    multiple: int | None = None,
    uniform: bool = False,
    big: BigOptions | None = None,
) -> Report:
    """One-shot pruning to ``out`` (.onnx); the report with ``removed`` and ``result`` filled in.

    ``uniform``: the same count per layer for each kind of group (``graphcore.uniform``), as a
    Hugging Face config needs (``construct.to_hf``). ``big``: external data and the bounded check
    (``BigOptions``; defaults decide by the model's size)."""
    import construct
    import graphcore
    from graphcore.select import relative_scores, select_zigs

    t0 = time.perf_counter()
    source = loaded.source or loaded.graph.name
    with stage("analysing", source):  # an AnalysisError is the model's (exit 2), anything else ours
        analysis = graphcore.analyze(loaded.graph)
    with stage("ranking the channel groups of", source):
        arrays = None
        if loaded.module is not None:
            from construct.torch_zeros import trainable_arrays

            arrays = trainable_arrays(loaded.module, analysis)
        norms = construct.zig_norms(analysis, arrays)
        scores = relative_scores(analysis, norms)
    if uniform:
        from graphcore.uniform import select_uniform

        if multiple is not None and multiple > 1:
            raise ZigraphError("--uniform and --multiple cannot be combined")
        chosen = select_uniform(analysis, sparsity, scores, criterion=criterion, seed=seed)
    else:
        chosen = select_zigs(analysis, sparsity, scores, criterion=criterion, seed=seed, multiple=multiple)
    target = Path(out)
    # Written under a temporary name and published only once verified: a run that fails for any
    # reason, or a model that does not verify, leaves nothing at ``target``.
    if loaded.module is None:
        built, output = _prune_onnx_job(
            loaded, analysis, chosen, target, verify, samples, seed, big or BigOptions()
        )
    else:
        staged = staged_path(target)
        try:
            with stage("constructing the pruned model of", source):
                built = _prune_staged(
                    loaded, analysis, chosen, staged, target.name + ".data", verify, samples
                )
            output = publish_if_verified(staged, target, built.verification)
        finally:
            if staged.exists():
                staged.unlink()
    result = PruneResult(
        zigs_removed=len(chosen),
        params_before=built.params_before,
        params_after=built.params_after,
        verification=built.verification,
        output=output,
        unverified=built.unverified,
        sparsity=sparsity,
        criterion=criterion,
        seed=seed,
        multiple=multiple,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return analysis.report(built.removed).model_copy(update={"result": result})


def prune_model(
    loaded: LoadedModel, sparsity: float, out: str | os.PathLike, **options: Any
) -> dict[str, Any]:
    """``prune`` (same options) as JSON data: the report exactly as ``zigraph prune --report`` writes it."""
    return prune(loaded, sparsity, out, **options).model_dump()


@dataclass
class _Built:
    """What building and checking the small model gave, before it is published."""

    removed: list[ParamSlice]
    params_before: int
    params_after: int
    verification: VerifyReport | None
    unverified: str | None = None


@dataclass
class BigOptions:
    """Models past protobuf's 2 GB. ``external``: write the output's weights as external data (None:
    when the input stores more than ``threshold`` bytes of weights). ``verify_dim``: the size of every
    symbolic input dimension in the check (batch, sequence length). ``verify_memory``: bytes the check
    may use (None: what the machine has available)."""

    external: bool | None = None
    threshold: int = 1_800_000_000
    verify_dim: int = 2
    verify_memory: int | None = None


def _input_files(loaded: LoadedModel) -> set[Path]:
    """The input model's own files, which an output must never replace."""
    from construct.external_write import external_files

    out = external_files(loaded.graph.meta["model"], loaded.graph.meta.get("base_dir"))
    if loaded.source and Path(loaded.source).exists():
        out.add(Path(loaded.source).resolve())
    return out


def _prune_onnx_job(
    loaded: LoadedModel,
    analysis: PruneAnalysis,
    chosen: np.ndarray,
    target: Path,
    verify: bool,
    samples: int,
    seed: int,
    big: BigOptions,
) -> tuple[_Built, str | None]:
    """Build into a private folder beside ``target`` (the weights streamed to our own data file when
    the model is big), verify there, publish by rename; anything else leaves nothing behind."""
    import construct
    from construct.external_write import StagedOutput, stored_bytes, write_proto
    from construct.verify_files import NotVerifiable, verify_streamed

    source = loaded.source or loaded.graph.name
    model, base = loaded.graph.meta["model"], loaded.graph.meta.get("base_dir")
    with StagedOutput(target, inputs=_input_files(loaded)) as staged:
        stream = big.external if big.external is not None else stored_bytes(model) > big.threshold
        with stage("constructing the pruned model of", source):
            sink = staged.writer() if stream else None
            try:
                small, plan = construct.prune_onnx(analysis, chosen, sink)
                if sink is not None:
                    sink.seal(small)
            finally:
                if sink is not None:
                    sink.abort()
            write_proto(small, staged.model)
            params_after = _onnx_params(small)
            del small
        verification, unverified = None, None
        if verify and stream:
            with stage("verifying the model written for", source):
                try:
                    verification = verify_streamed(
                        model, base, loaded.source, staged.model, plan.removed, staged.dir, samples, seed,
                        big.verify_dim, big.verify_memory,
                    )  # fmt: skip
                except NotVerifiable as exc:
                    unverified = str(exc)
        elif verify:
            verification = verify_written(loaded, staged.model, plan.removed, samples)
        built = _Built(plan.removed, _onnx_params(model), params_after, verification, unverified)
        output = None
        if verification is None or verification.passed:
            staged.publish()
            output = str(target)
    return built, output


def _prune_staged(
    loaded: LoadedModel,
    analysis: PruneAnalysis,
    chosen: np.ndarray,
    out: Path,
    data_name: str,
    verify: bool,
    samples: int,
) -> _Built:
    import construct

    if loaded.module is None:
        small, plan = construct.prune_onnx(analysis, chosen)
        construct.save_onnx(small, out, data_name=data_name)
        verification = verify_written(loaded, out, plan.removed, samples) if verify else None
        return _Built(
            plan.removed, _onnx_params(loaded.graph.meta["model"]), _onnx_params(small), verification
        )

    from construct.torch_verify import zeroed_copy
    from graphcore.shrink import plan as make_plan

    removed = make_plan(analysis, chosen).removed
    zeroed = zeroed_copy(loaded.module, analysis, chosen).eval()
    small_module = construct.to_torch(zeroed, analysis)
    # The small ONNX model, run in onnxruntime, against the zeroed full torch model.
    torch_report = construct.to_onnx(
        small_module, loaded.example_inputs, out, verify=verify, samples=samples, reference=zeroed
    )
    return _Built(
        removed,
        int(sum(p.numel() for p in loaded.module.parameters())),
        int(sum(p.numel() for p in small_module.parameters())),
        torch_report if verify else None,
    )


def staged_path(target: Path) -> Path:
    """Where a job writes its model before it is verified (beside ``target``, so publishing is a rename)."""
    return target.with_name(f".zigraph-staged-{os.getpid()}-{target.name}")


def publish_if_verified(staged: Path, target: Path, verification: VerifyReport | None) -> str | None:
    """Rename the staged model to ``target`` unless it failed verification; then no model is left at
    ``target``, nor the external data written for it. Returns the published path or None."""
    if verification is None or verification.passed:
        os.replace(staged, target)
        return str(target)
    data = target.with_name(target.name + ".data")
    if data.exists() and not target.exists():
        data.unlink()
    return None


def _onnx_params(model: onnx.ModelProto) -> int:
    return int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer))


def report_json(report: Report) -> str:
    """The JSON text of ``zigraph prune --report``."""
    return json.dumps(report.model_dump(), indent=2) + "\n"


def ensure_sparsity(value: str, whole: bool = False) -> float:
    """``--sparsity`` as a number in [0, 1) — or [0, 1] with ``whole``: erasing every structure is a
    request (it erases the most that stays valid), pruning every channel of a group is not."""
    span = "[0, 1]" if whole else "[0, 1)"
    try:
        f = float(value)
    except ValueError:
        raise ZigraphError(f"--sparsity must be a number in {span}, got {value!r}") from None
    if not (0.0 <= f <= 1.0 if whole else 0.0 <= f < 1.0):
        raise ZigraphError(f"--sparsity must be in {span}, got {f}")
    return f
