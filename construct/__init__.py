"""construct: lower a pruned analysis to a smaller ONNX model or torch module, and prove it equal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from construct.erase_zeros import erased_structures
from construct.onnx_construct import prune_onnx, save_onnx, zero_slices, zig_norms
from construct.onnx_erase import erase_onnx
from construct.verify import DEFAULT_RTOL, VerifyReport, compare_models
from graphcore.erase import EraseAnalysis
from graphcore.errors import ZigraphError
from graphcore.groups import ParamSlice, PruneAnalysis

__all__ = [
    "DEFAULT_RTOL",
    "VerifyReport",
    "erase_onnx",
    "erased_structures",
    "prune_onnx",
    "save_onnx",
    "to_onnx",
    "to_torch",
    "verify",
    "zig_norms",
]


def _read(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    from frontends.onnx_frontend import read_onnx

    return read_onnx(model)


def _as_slices(removed: Any) -> list[ParamSlice]:
    out = []
    for r in removed or []:
        if isinstance(r, ParamSlice):
            out.append(r)
        elif isinstance(r, dict):
            try:
                out.append(ParamSlice(str(r["param"]), int(r["axis"]), tuple(int(i) for i in r["indices"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise ZigraphError(f"a removed entry must have param, axis and indices ({exc})") from None
        else:
            raise ZigraphError(f"cannot read removed slice {r!r}")
    return out


def verify(
    full: str | os.PathLike | onnx.ModelProto,
    small: str | os.PathLike | onnx.ModelProto,
    removed: Any = None,
    samples: int = 3,
    rtol: float | None = None,
    seed: int = 0,
    small_ours: bool = True,
) -> VerifyReport:
    """Zero ``removed`` (slices of the full model's tensors) and compare with ``small`` in onnxruntime,
    within ``rtol`` or, by default, the tolerance the model's dtype calls for (``construct.tolerance``).
    ``small_ours``: see ``compare_models`` (False when the user hands in the small model)."""
    full_model, base = _read(full)
    small_model, small_base = _read(small)
    if base is not None and small_base is not None:  # two files: past 2 GB, one session at a time
        from construct.verify_files import verify_big_files

        rep = verify_big_files(
            full_model, base, full, small, _as_slices(removed), samples, rtol, seed, small_ours
        )
        if rep is not None:
            return rep
    zeroed = zero_slices(full_model, base, _as_slices(removed))
    from construct.onnx_construct import _internalize

    _internalize(small_model, small_base)
    return compare_models(zeroed, small_model, samples=samples, rtol=rtol, seed=seed, small_ours=small_ours)


def to_torch(model: Any, analysis: PruneAnalysis, removed: Any = None) -> Any:
    """A physically smaller ``nn.Module``; removed groups are found from exact zeros.

    For an erasing analysis (``mode == "erase"``) ``removed`` are structure ids and the module loses
    whole operators (``construct.erase_torch``); otherwise ZIG ids and it loses channels.
    """
    if analysis.mode == "erase":
        from construct.erase_torch import erase_torch

        if not isinstance(analysis, EraseAnalysis):
            raise ZigraphError("an erasing analysis comes from graphcore.analyze(graph, mode='erase')")

        return erase_torch(model, analysis, removed)
    from construct.torch_construct import to_torch as _to_torch

    return _to_torch(model, analysis, removed)


def to_onnx(small: Any, example_inputs: Any, path: str | os.PathLike, **kwargs: Any) -> Any:
    """Export a torch module to ONNX and verify the export in onnxruntime."""
    from construct.torch_export import to_onnx as _to_onnx

    return _to_onnx(small, example_inputs, path, **kwargs)
