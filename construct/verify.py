"""The proof: onnxruntime runs the zeroed full model and the small model on the same random inputs."""

from __future__ import annotations

import numpy as np
import onnx

from construct.quant_zero import exact_integer_products
from construct.runnable import bf16_tensors, float_io, widen_bf16
from construct.tolerance import BF16_RTOL, FP32_RTOL, model_tolerance
from graphcore.errors import InternalError, ZigraphError
from graphcore.report import OutputError, VerifyReport  # the report's schema; verification fills it

__all__ = ["OutputError", "VerifyReport", "compare_models", "random_inputs"]

DEFAULT_RTOL = FP32_RTOL  # the fp32 rule; compare_models picks the model's own (construct.tolerance)
MAX_INPUT_ELEMENTS = 1 << 28


def _session(model: onnx.ModelProto, what: str = "the model", ours: bool = False):
    """An onnxruntime session; a model that does not load is bad input, or our bug when ``ours``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 4  # fatal only: a failure is reported once, as our own one-line error
    try:
        model = exact_integer_products(model)  # onnxruntime's uint8 x int8 kernel saturates pairs of products
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        msg = f"onnxruntime cannot load {what} ({lines[0][:300] if lines else type(exc).__name__})"
        raise (InternalError(msg) if ours else ZigraphError(msg)) from None


def _index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Integer inputs used as Gather indices (token ids) must stay below the table size."""
    sizes = {t.name: list(t.dims) for t in model.graph.initializer}
    follow = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten"}
    producers_of: dict[str, list[onnx.NodeProto]] = {}
    for pn in model.graph.node:
        for i in pn.input:
            producers_of.setdefault(i, []).append(pn)
    bounds: dict[str, int] = {}
    for inp in model.graph.input:
        frontier = [inp.name]
        seen = set()
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for pn in producers_of.get(name, []):
                if pn.op_type == "Gather" and len(pn.input) > 1 and pn.input[1] == name:
                    dims = sizes.get(pn.input[0])
                    axis = next((a.i for a in pn.attribute if a.name == "axis"), 0)
                    if dims and -len(dims) <= axis < len(dims):  # else the model is not valid
                        b = dims[axis]
                        bounds[inp.name] = min(bounds.get(inp.name, b), b)
                elif pn.op_type in follow:
                    frontier.extend(pn.output)
    return bounds


def random_inputs(
    model: onnx.ModelProto, rng: np.random.Generator, dim_default: int = 2
) -> dict[str, np.ndarray]:
    from onnx import helper

    inits = {t.name for t in model.graph.initializer}
    bounds = _index_bounds(model)
    feeds: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else dim_default for d in tt.shape.dim]
        if len(shape) > 32:  # numpy arrays have at most 64 axes; no real input has more than a few
            raise ZigraphError(
                f"input '{inp.name}' has {len(shape)} axes; too many to verify with random data"
            )
        if int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_ELEMENTS:
            raise ZigraphError(f"input '{inp.name}' of shape {shape} is too large to verify with random data")
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            high = bounds.get(inp.name, 2)
            feeds[inp.name] = rng.integers(0, max(high, 1), shape).astype(dtype)
    return feeds


def _run(session, feeds: dict[str, np.ndarray], what: str, ours: bool = False) -> list:
    """One inference; an onnxruntime failure (a shape the graph cannot take) is one clear error: the
    input's, or our bug when the model is ``ours`` (the full model ran on the same feeds)."""
    try:
        return session.run(None, feeds)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        msg = f"onnxruntime cannot run {what} ({lines[0][:300] if lines else type(exc).__name__})"
        raise (InternalError(msg) if ours else ZigraphError(msg)) from None


def compare_models(
    full: onnx.ModelProto,
    small: onnx.ModelProto,
    samples: int = 3,
    rtol: float | None = None,
    seed: int = 0,
    small_ours: bool = True,
) -> VerifyReport:
    """Run both models on ``samples`` random inputs and compare every output.

    ``rtol`` (relative to each output's largest magnitude) defaults to the tolerance the models' dtype
    calls for (``construct.tolerance.model_tolerance``: fp32 1e-4, looser for fp16, bf16 and quantized
    models); the report says which and why. A given ``rtol`` wins.

    ``small_ours``: ``small`` was built by zigraph, so a small model that does not load or run where the
    full one does, or has other outputs, is zigraph's bug (``InternalError``); False for a small model
    the user hands in (``zigraph verify``), where it is bad input."""
    chosen = None
    if rtol is None:
        chosen = model_tolerance(full, small)
        tol, why = chosen.rtol, chosen.why
    else:
        tol, why = float(rtol), f"tolerance {rtol:g} given by the user (--rtol)"
    bad = InternalError if small_ours else ZigraphError
    full, small = float_io(full), float_io(small)
    try:
        a = _session(full)
    except ZigraphError:
        if not bf16_tensors(full):
            raise
        # onnxruntime's CPU provider computes almost nothing in bf16: run both models widened exactly
        # to float32 (same graph, same values); the slicing is then checked at fp32's tolerance.
        full, small = widen_bf16(full), widen_bf16(small)
        a = _session(full)
        if chosen is not None and chosen.rtol == BF16_RTOL:
            tol = FP32_RTOL
            why = (
                "bfloat16 model run widened exactly to float32 (onnxruntime's CPU provider has no "
                "bfloat16 kernels for its operators): fp32 tolerance"
            )
    b = _session(small, "the pruned model", small_ours)
    names = [o.name for o in a.get_outputs()]
    if names != [o.name for o in b.get_outputs()]:
        raise bad("the two models do not have the same outputs")
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(samples):
        feeds = random_inputs(full, rng)
        pairs.append((_run(a, feeds, "the model"), _run(b, feeds, "the pruned model", small_ours)))
    return _report(names, pairs, samples, tol, why, bad)


def _report(
    names: list[str], pairs: list[tuple[list, list]], samples: int, tol: float, why: str | None, bad: type
) -> VerifyReport:
    """The worst error of each output over the samples' (full, small) outputs, against ``tol``."""
    worst: dict[str, list[float]] = {n: [0.0, 0.0, 0.0] for n in names}
    for ra, rb in pairs:
        for n, x, y in zip(names, ra, rb):
            x = np.asarray(x)
            y = np.asarray(y)
            if x.shape != y.shape:
                raise bad(f"output '{n}' changed shape: {x.shape} -> {y.shape}")
            if x.dtype.kind not in "fc":
                err = float(np.abs(x.astype(np.int64) - y.astype(np.int64)).max()) if x.size else 0.0
                scale = 1.0
            else:
                xf, yf = x.astype(np.float64), y.astype(np.float64)
                # Equal values (equal infinities included: inf - inf is nan) and NaN in both agree.
                same = (xf == yf) | (np.isnan(xf) & np.isnan(yf))
                diff = np.where(same, 0.0, np.abs(xf - yf))
                err = float(np.nan_to_num(diff, nan=np.inf).max()) if x.size else 0.0
                finite = np.abs(xf[np.isfinite(xf)])  # the scale of an output that also holds inf or nan
                scale = float(finite.max()) if finite.size else 0.0
            w = worst[n]
            w[0] = max(w[0], err)
            w[2] = max(w[2], scale)
    outs = []
    for n in names:
        err, _, scale = worst[n]
        rel = err / max(scale, 1e-12) if err > 0 else 0.0
        outs.append(OutputError(name=n, max_abs=err, max_rel=rel, scale=scale))
    max_abs = max((o.max_abs for o in outs), default=0.0)
    max_rel = max((o.max_rel for o in outs), default=0.0)
    return VerifyReport(
        passed=bool(max_rel <= tol),
        samples=samples,
        rtol=tol,
        max_abs=max_abs,
        max_rel=max_rel,
        outputs=outs,
        tolerance=why,
    )


class NotVerifiable(Exception):
    """Verification was asked for but cannot run on this machine (the reason is the message): the model
    is then reported as written and NOT verified, never as verified."""


SEQUENTIAL = "one model at a time, weights read from files"


def available_memory() -> int:
    """Bytes of memory the kernel says a new allocation can get now (``MemAvailable``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def reset_peak_memory() -> bool:
    """Restart the kernel's count of this process's peak resident memory (``VmHWM``); False where it
    cannot (then ``peak_memory_mb`` is the peak since the process started)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process in MB (``VmHWM``, else ``getrusage``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return None


def _file_session(path, what: str, ours: bool = False, overrides: dict | None = None):
    """A session that reads the model's weights from its files (onnxruntime maps external data where it
    can), with weight packing off so the weights are not copied once more. A graph the runner has to
    rewrite first (float16 inputs, uint8 x int8 products) is rewritten weight-free beside the data."""
    import onnxruntime as ort

    from construct.external_write import write_proto

    model = onnx.load(str(path), load_external_data=False)
    runnable = exact_integer_products(float_io(model))
    if runnable is not model and overrides:
        raise InternalError("weights given to onnxruntime directly need a graph it runs as it is")
    if runnable is not model:
        path = path.with_name(f"runnable-{path.name}")
        write_proto(runnable, path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 4
    opts.enable_cpu_mem_arena = False  # memory given back when the session goes
    opts.add_session_config_entry("session.disable_prepacking", "1")
    for name, value in (overrides or {}).items():
        opts.add_initializer(name, value)  # used in place: the caller keeps the arrays alive
    try:
        return runnable, ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        msg = f"onnxruntime cannot load {what} ({lines[0][:300] if lines else type(exc).__name__})"
        raise (InternalError(msg) if ours else ZigraphError(msg)) from None


def compare_files(
    full_path,
    small_path,
    samples: int = 3,
    rtol: float | None = None,
    seed: int = 0,
    dim: int = 2,
    overrides: dict | None = None,
    small_ours: bool = True,
) -> VerifyReport:
    """``compare_models`` for models too big to hold twice: the full model's session runs every sample
    and is closed before the small model's is opened, both reading weights from their files.
    ``dim``: the size given to every symbolic input dimension (batch, sequence length); small values
    shorten the check. ``overrides``: initializer name -> ``OrtValue`` that replaces the file's values
    in the full model's session (its zeroed weights, given without a copy on disk). The report carries
    the method and the peak resident memory."""
    import gc
    from pathlib import Path

    reset_peak_memory()
    full_path, small_path = Path(full_path), Path(small_path)
    full, a = _file_session(full_path, "the model", overrides=overrides)
    if bf16_tensors(full):
        raise NotVerifiable("a bfloat16 model this big cannot be widened to float32 for onnxruntime here")
    chosen = model_tolerance(full, onnx.load(str(small_path), load_external_data=False))
    tol, why = (
        (chosen.rtol, chosen.why)
        if rtol is None
        else (float(rtol), f"tolerance {rtol:g} given by the user (--rtol)")
    )
    names = [o.name for o in a.get_outputs()]
    rng = np.random.default_rng(seed)
    feeds = [random_inputs(full, rng, dim_default=dim) for _ in range(samples)]
    ra = [_run(a, f, "the model") for f in feeds]
    del a
    if overrides:
        overrides.clear()  # the zeroed weights go with the session that used them
    gc.collect()
    _, b = _file_session(small_path, "the pruned model", ours=small_ours)
    bad = InternalError if small_ours else ZigraphError
    if names != [o.name for o in b.get_outputs()]:
        raise bad("the two models do not have the same outputs")
    rb = [_run(b, f, "the pruned model", ours=small_ours) for f in feeds]
    del b
    gc.collect()
    rep = _report(names, list(zip(ra, rb)), samples, tol, why, bad)
    return rep.model_copy(update={"method": SEQUENTIAL, "peak_memory_mb": peak_memory_mb()})


def verify_streamed(
    full: onnx.ModelProto,
    base,
    full_path,
    small_path,
    removed: list,
    scratch,
    samples: int = 3,
    seed: int = 0,
    dim: int = 2,
    memory: int | None = None,
    rtol: float | None = None,
    small_ours: bool = True,
) -> VerifyReport:
    """Verify a model past what memory holds twice (``compare_files``). The zeroed full model is the
    file at ``full_path`` with its zeroed weights handed to onnxruntime in memory (``_zeroed_overrides``),
    or, where that cannot express it (a shared weight sliced per use, a graph the runner must rewrite),
    a copy written one weight at a time as external data into ``scratch`` (a private folder, removed by
    the caller). ``memory``: bytes the check may use (default: what is available now); a full
    model whose weights exceed it, or a disk without room for its zeroed copy, raises
    ``NotVerifiable`` before anything is written."""
    import shutil
    from pathlib import Path

    from construct.external_write import DataWriter, human_bytes, stored_bytes, write_proto
    from construct.onnx_construct import zero_slices

    need = stored_bytes(full)
    limit = available_memory() if memory is None else int(memory)
    if need > limit:
        raise NotVerifiable(
            f"onnxruntime needs the zeroed full model's {human_bytes(need)} of weights in memory and "
            f"{human_bytes(limit)} is available here; verify on a machine with more memory "
            "(or pass --no-verify to skip the check)"
        )
    overrides = _zeroed_overrides(full, base, removed)
    if overrides is not None:
        return compare_files(
            full_path, small_path, samples, rtol, seed, dim, overrides=overrides, small_ours=small_ours
        )
    scratch = Path(scratch)
    free = shutil.disk_usage(scratch).free
    if need * 1.05 > free:
        raise NotVerifiable(
            f"the zeroed full model's copy needs {human_bytes(need)} of disk beside the output and "
            f"{human_bytes(free)} is free"
        )
    data = scratch / "zeroed.onnx.data"
    writer = DataWriter(data, data.name)
    try:
        zeroed = zero_slices(full, base, removed, sink=writer)
        writer.seal(zeroed)
    finally:
        writer.abort()
    write_proto(zeroed, scratch / "zeroed.onnx")
    try:
        return compare_files(
            scratch / "zeroed.onnx", small_path, samples, rtol, seed, dim, small_ours=small_ours
        )
    finally:
        for p in (data, scratch / "zeroed.onnx", scratch / "runnable-zeroed.onnx"):
            p.unlink(missing_ok=True)


def _zeroed_overrides(full: onnx.ModelProto, base, removed: list) -> dict | None:
    """The zeroed weights of the full model as ``OrtValue``s by initializer name (each array read,
    zeroed and kept once), or None where overriding initializers cannot express the zeroed model: a
    removed slice of a weight's alias or of a ``Constant`` node's value, or a graph onnxruntime only
    runs rewritten (float16 inputs, uint8 x int8 products)."""
    import onnxruntime as ort

    from construct.onnx_construct import _zeroed, tensor_array
    from construct.quant_zero import quant_fills
    from frontends.onnx_sources import param_uses

    inits = {t.name: t for t in full.graph.initializer}
    by_param: dict[str, list] = {}
    for sl in removed:
        by_param.setdefault(sl.param, []).append(sl)
    aliases = param_uses(full)
    if any(n in aliases or n not in inits for n in by_param):
        return None
    if exact_integer_products(float_io(full)) is not full or base is None:
        return None
    fills = quant_fills(full, base)
    out = {}
    for name, slices in by_param.items():
        arr = np.ascontiguousarray(_zeroed(tensor_array(inits[name], base), slices, name, fills.get(name)))
        out[name] = ort.OrtValue.ortvalue_from_numpy(np.asarray(arr))
    return out


def verify_big_files(
    full: onnx.ModelProto,
    base,
    full_path,
    small_path,
    removed: list,
    samples: int,
    rtol,
    seed: int,
    small_ours: bool,
) -> VerifyReport | None:
    """``construct.verify`` of two files whose weights pass ``DEFAULT_THRESHOLD``: ``verify_streamed``
    with a private scratch folder; None for smaller models (checked in memory). A model that cannot be
    verified here is a plain error, never a pass."""
    import shutil
    import tempfile

    from construct.external_write import DEFAULT_THRESHOLD, stored_bytes

    if stored_bytes(full) <= DEFAULT_THRESHOLD:
        return None
    scratch = tempfile.mkdtemp(prefix="zigraph-verify-")
    try:
        return verify_streamed(
            full,
            base,
            full_path,
            small_path,
            removed,
            scratch,
            samples,
            seed,
            rtol=rtol,
            small_ours=small_ours,
        )
    except NotVerifiable as exc:
        raise ZigraphError(f"cannot verify on this machine: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
