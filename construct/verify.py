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


def session_options():
    """The options every check runs with: basic graph optimizations only, fatal-only logging (a
    failure is reported once, as our own one-line error)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 4
    return opts


def load_error(exc: Exception, what: str, ours: bool) -> Exception:
    """A model onnxruntime cannot load is bad input, or our bug when ``ours`` (we wrote it)."""
    lines = str(exc).strip().splitlines()
    msg = f"onnxruntime cannot load {what} ({lines[0][:300] if lines else type(exc).__name__})"
    return InternalError(msg) if ours else ZigraphError(msg)


def _session(model: onnx.ModelProto, what: str = "the model", ours: bool = False):
    """An onnxruntime session of an in-memory model."""
    import onnxruntime as ort

    try:
        model = exact_integer_products(model)  # onnxruntime's uint8 x int8 kernel saturates pairs of products
        return ort.InferenceSession(
            model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise load_error(exc, what, ours) from None


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
