"""Verification of models too big to hold twice in memory: the zeroed full model and the small one run
one after the other, with their weights read from files (onnxruntime maps external data where it can).

It lives apart from ``construct.verify`` (the in-memory check, which ``onnx_construct`` itself uses)
because it reads the full model through ``onnx_construct``'s zeroing: one direction of import each.
"""

from __future__ import annotations

import numpy as np
import onnx

from construct.quant_zero import exact_integer_products
from construct.runnable import bf16_tensors, float_io
from construct.tolerance import model_tolerance
from construct.verify import _report, _run, load_error, random_inputs, session_options
from graphcore.errors import InternalError, ZigraphError
from graphcore.report import VerifyReport


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
    opts = session_options()
    opts.enable_cpu_mem_arena = False  # memory given back when the session goes
    opts.add_session_config_entry("session.disable_prepacking", "1")
    for name, value in (overrides or {}).items():
        opts.add_initializer(name, value)  # used in place: the caller keeps the arrays alive
    try:
        return runnable, ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise load_error(exc, what, ours) from None


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
