"""torch ``nn.Module`` → graphcore IR.

``load_torch`` traces the module (``torch.fx.symbolic_trace`` first, ``torch.export`` as the fallback,
see ``frontends.torch_trace``), then maps every FX node to canonical IR nodes with ONNX op names
(``frontends.torch_ops`` / ``frontends.torch_aten``). Parameters keep their ``named_parameters()``
FQNs; what construct needs to map a pruning back onto the module is in ``graph.meta["torch"]``, a
``frontends.torch_meta.TorchMeta``.
The user's module is never modified: tracing runs in eval mode and restores every training flag.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from frontends.torch_aten import SHARED  # noqa: F401  (registers every handler: torch_ops, then ATen)
from frontends.torch_lower import Builder
from frontends.torch_trace import eval_mode, trace
from graphcore.errors import ModelLoadError
from graphcore.ir import Graph

__all__ = ["eval_mode", "example_tuple", "load_factory", "load_torch"]


def example_tuple(example_inputs: Any) -> tuple:
    """Normalize example inputs (a tensor, or a tuple/list of them) to a tuple of positional args."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list | tuple):
        return tuple(example_inputs)
    raise ModelLoadError(
        f"example_inputs must be a tensor or a tuple of tensors, not {type(example_inputs).__name__}"
    )


def load_torch(module: nn.Module, example_inputs: Any, *, allow_export: bool = True) -> Graph:
    """Trace ``module`` on ``example_inputs`` into the IR (parameters named by FQN, static shapes)."""
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"expected a torch.nn.Module, got {type(module).__name__}")
    inputs = example_tuple(example_inputs)
    tr = trace(module, inputs, allow_export=allow_export)
    root = module if tr.tracer == "symbolic_trace" else tr.gm
    builder = Builder(tr, name=type(module).__name__, root=root)
    graph = builder.build()
    graph.meta["source"] = f"torch:{type(module).__module__}.{type(module).__qualname__}"
    graph.meta["tracer"] = tr.tracer
    graph.meta["example_shapes"] = [tuple(x.shape) for x in inputs if isinstance(x, torch.Tensor)]
    return graph


def load_factory(spec: str, input_shapes: Sequence[Sequence[int]]) -> tuple[nn.Module, tuple]:
    """``package.module:factory`` → (the module the factory returns, random example inputs).

    Used by the CLI for ``MODEL`` given as a factory; every failure is one clear ModelLoadError line.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ModelLoadError(f"{spec!r}: a torch model is given as 'package.module:factory'")
    mod_name, attr = spec.split(":")
    if not mod_name or not attr:
        raise ModelLoadError(f"{spec!r}: a torch model is given as 'package.module:factory'")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # any import failure is the user's to fix
        raise ModelLoadError(f"{spec}: cannot import {mod_name!r} ({type(exc).__name__}: {exc})") from None
    factory: Any = mod
    try:
        for part in attr.split("."):
            factory = getattr(factory, part)
    except AttributeError:
        raise ModelLoadError(f"{spec}: {mod_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise ModelLoadError(f"{spec}: {attr!r} is not callable")
    if not input_shapes:
        raise ModelLoadError(f"{spec}: a torch model needs --input-shape (e.g. --input-shape 1,3,224,224)")
    shapes: list[tuple[int, ...]] = []
    for s in input_shapes:
        try:
            dims = tuple(int(d) for d in s)
        except (TypeError, ValueError):
            raise ModelLoadError(f"{spec}: input shape {s!r} is not a list of integers") from None
        if not dims or any(d <= 0 for d in dims):
            raise ModelLoadError(f"{spec}: input shape {s!r} must be positive integers")
        shapes.append(dims)
    try:
        model = factory()
    except Exception as exc:
        raise ModelLoadError(f"{spec}: the factory failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    gen = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(*s, generator=gen) for s in shapes)
    return model, inputs
