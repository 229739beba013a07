"""Export a (small) torch module to ONNX and prove the export in onnxruntime.

``to_onnx`` uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``), writes the file
atomically (a temporary file in the same folder, then a rename) and, by default, runs the ONNX model in
onnxruntime on the example inputs and on further random inputs of the same shapes, comparing with the
torch module (or with ``reference``: e.g. the original model with the removed ZIGs zeroed).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from construct.torch_verify import compare_outputs, run_torch
from construct.verify import DEFAULT_RTOL, VerifyReport
from frontends.torch_frontend import eval_mode, example_tuple
from graphcore.errors import InternalError, ZigraphError

__all__ = ["export_onnx", "run_onnx", "to_onnx"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter narrates its steps on stdout and its optimizer logs warnings: keep them off."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_onnx(
    module: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    optimize: bool = True,
    external_data: bool | None = None,
) -> None:
    """``torch.onnx.export`` with the dynamo exporter in eval mode, written atomically to ``path``.

    ``external_data`` (None: when the weights pass 2 GB, torch's own rule) writes the weights to
    ``<name>.data`` beside ``path``. The exporter saves into a private folder beside ``path`` under the
    final names (``construct.external_write.StagedOutput``), so the data file's name in the model is
    the published one, and both are published by rename; anything else the exporter might write there is
    refused rather than published."""
    from construct.external_write import StagedOutput

    inputs = example_tuple(example_inputs)
    with StagedOutput(path) as staged:
        try:
            with eval_mode(module), torch.no_grad(), _quiet():
                program = torch.onnx.export(module, inputs, dynamo=True, optimize=optimize, verbose=False)
            if program is None:
                raise ZigraphError("torch.onnx.export returned no program")
            program.save(str(staged.model), external_data=external_data)
        except ZigraphError:
            raise
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0][:300]
            raise ZigraphError(f"ONNX export failed ({type(exc).__name__}: {first})") from None
        written = {p.name for p in staged.dir.iterdir()}
        if not written <= {staged.model.name, staged.data.name}:
            raise InternalError(f"the ONNX exporter wrote unexpected files: {sorted(written)}")
        staged.publish()


def _random_like(inputs: tuple, rng: np.random.Generator) -> tuple:
    out = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            out.append(torch.from_numpy(rng.standard_normal(tuple(x.shape)).astype(np.float32)).to(x.dtype))
        elif isinstance(x, torch.Tensor):
            high = int(x.max()) + 1 if x.numel() else 1
            out.append(torch.from_numpy(rng.integers(0, max(high, 1), tuple(x.shape))).to(x.dtype))
        else:
            out.append(x)
    return tuple(out)


def run_onnx(path: str | os.PathLike, inputs: tuple) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    if len(names) != len(tensors):
        raise ZigraphError(f"the ONNX model takes {len(names)} inputs, {len(tensors)} tensors were given")
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)}
    return [np.asarray(o) for o in sess.run(None, feeds)]


def to_onnx(
    small: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    verify: bool = True,
    samples: int = 3,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
    reference: nn.Module | None = None,
    optimize: bool = True,
    external_data: bool | None = None,
) -> VerifyReport | None:
    """Export ``small`` to ``path``; verify it in onnxruntime against ``reference`` (default: ``small``).

    Returns the verification report (None with ``verify=False``); ``report.passed`` says whether the
    largest relative error is within ``rtol``. ``external_data``: see ``export_onnx`` (by default past
    2 GB); the check then reads the model by path, as onnxruntime and ``onnx.checker`` both can.
    """
    inputs = example_tuple(example_inputs)
    export_onnx(small, inputs, path, optimize=optimize, external_data=external_data)
    if not verify:
        return None
    onnx.checker.check_model(str(path))
    rng = np.random.default_rng(seed)
    batches = [inputs] + [_random_like(inputs, rng) for _ in range(max(samples - 1, 0))]
    ref = reference if reference is not None else small
    return compare_outputs([run_torch(ref, b) for b in batches], [run_onnx(path, b) for b in batches], rtol)
