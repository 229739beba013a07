"""Frontends: turn a torch module or an ONNX model into the framework-neutral graphcore IR."""

from __future__ import annotations

import os
from typing import Any

from graphcore.errors import ModelLoadError
from graphcore.ir import Graph

__all__ = ["load"]


def load(model: Any, example_inputs: Any = None) -> Graph:
    """Load ``model``: a path to an ``.onnx`` file, an ``onnx.ModelProto``, or an ``nn.Module``.

    A torch module needs ``example_inputs`` (a tensor or a tuple of tensors).
    """
    if isinstance(model, str | os.PathLike):
        from frontends.onnx_frontend import load_onnx

        return load_onnx(model)
    try:
        import onnx

        if isinstance(model, onnx.ModelProto):
            from frontends.onnx_frontend import load_onnx

            return load_onnx(model)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            from frontends.torch_frontend import load_torch

            if example_inputs is None:
                raise ModelLoadError("a torch model needs example_inputs (a tensor or a tuple of tensors)")
            return load_torch(model, example_inputs)
    except ImportError:  # pragma: no cover
        pass
    raise ModelLoadError(
        f"cannot load a {type(model).__name__}: pass a path to an .onnx file, an onnx.ModelProto "
        "or a torch.nn.Module with example inputs"
    )
