"""Which structures a trained model has erased: the ones whose variables are all exactly zero.

The erasing counterpart of ``construct.torch_zeros.removed_from_zeros``: any optimizer that writes exact
zeros (H2SPG, a plugin, a hand edit) works with construct, because this is the only signal it reads.
Zero structures that cannot all go together (every candidate op of a cell zero) are taken in id order
through ``analysis.select``, the one selection rule, so the result is always a valid erasure; a zero
structure left in place computes zeros, which changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from graphcore.erase import EraseAnalysis
from graphcore.errors import ZigraphError

__all__ = ["erased_structures"]


def erased_structures(model_or_arrays: Any, analysis: EraseAnalysis) -> list[int]:
    """Ids of the erasable structures whose variables are all exactly zero, as a valid selection.

    ``model_or_arrays``: a torch ``nn.Module``, a mapping of parameter name → array, an ONNX model
    (path or ``ModelProto``), or None for the model the analysis was made from (ONNX).
    """
    is_zero = _zero_test(model_or_arrays, analysis)
    zero = [
        s.id
        for s in analysis.structures
        if s.erasable and s.params and all(is_zero(name) for name in s.params)
    ]
    return [int(i) for i in analysis.select(zero, len(zero))] if zero else []


def _zero_test(source: Any, analysis: EraseAnalysis) -> Callable[[str], bool]:
    """``name -> bool``: is that parameter all exact zeros (an unknown name never is)."""
    if _is_torch_module(source):
        from construct.torch_zeros import model_tensors

        tensors = model_tensors(source)

        def torch_zero(name: str) -> bool:
            t = tensors.get(name)
            return t is not None and t.numel() > 0 and not bool(t.detach().ne(0).any())

        return torch_zero
    arrays = _arrays(source, analysis)

    def array_zero(name: str) -> bool:
        a = arrays.get(name)
        return a is not None and np.size(a) > 0 and not np.any(np.asarray(a))

    return array_zero


def _is_torch_module(x: Any) -> bool:
    try:
        from torch import nn
    except ImportError:  # an ONNX-only install
        return False
    return isinstance(x, nn.Module)


def _arrays(source: Any, analysis: EraseAnalysis) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    import onnx

    from construct.onnx_construct import _param_arrays

    graph = analysis.graph
    names = {n for s in analysis.structures for n in s.params}
    if source is None:
        if graph.format != "onnx" or "model" not in graph.meta:
            raise ZigraphError("erased_structures needs the model (or its arrays) for a torch analysis")
        return _param_arrays(graph, names)
    if isinstance(source, onnx.ModelProto | str | os.PathLike):
        from construct.onnx_construct import _tensors_by_name, tensor_array
        from frontends.onnx_frontend import read_onnx

        model, base = read_onnx(source)
        return {
            n: tensor_array(t, base) for n, t in _tensors_by_name(model, aliases=True).items() if n in names
        }
    raise ZigraphError(f"cannot read parameters from a {type(source).__name__}")
