"""torch ``nn.Module`` → graphcore IR.

``load_torch`` traces the module (``torch.fx.symbolic_trace`` first, ``torch.export`` as the fallback,
see ``frontends.torch_trace``), then maps every FX node to canonical IR nodes with ONNX op names
(``frontends.torch_ops`` / ``frontends.torch_aten``). Parameters keep their ``named_parameters()``
FQNs; what construct needs to map a pruning back onto the module is in ``graph.meta["torch"]``, a
``frontends.torch_meta.TorchMeta``.
The user's module is never modified: tracing runs in eval mode and restores every training flag.

Example inputs may be positional (a tensor, a tuple) or keyword (a dict, or ``example_kwargs``), as
Hugging Face models take ``input_ids=``/``attention_mask=``; ``graph.meta["input_names"]`` and
``graph.meta["output_names"]`` (each graph output's pytree path: ``last_hidden_state``) keep the names.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from frontends.input_spec import FLOAT_NAMES, INT_NAMES, InputSpec, parse_input_spec
from frontends.torch_aten import SHARED  # noqa: F401  (registers every handler: torch_ops, then ATen)
from frontends.torch_lower import Builder, opaque_calls
from frontends.torch_trace import eval_mode, trace
from graphcore.errors import ModelLoadError
from graphcore.ir import Graph, Value

__all__ = [
    "InputSpec",
    "embedding_size",
    "eval_mode",
    "example_inputs_for",
    "example_tuple",
    "load_factory",
    "load_torch",
    "parse_input_spec",
]

FLOAT_DTYPES = {name: getattr(torch, name) for name in FLOAT_NAMES}
INT_DTYPES = {name: getattr(torch, name) for name in INT_NAMES}


def embedding_size(module: nn.Module) -> int | None:
    """The bound integer inputs are drawn below: ``config.vocab_size`` when the module has a Hugging
    Face style config, else the ``num_embeddings`` of its first ``nn.Embedding``; None without either.

    Token ids index the token embedding; a smaller table (token types) takes other inputs.
    """
    vocab = getattr(getattr(module, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0:
        return vocab
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            return int(m.num_embeddings)
    return None


def example_inputs_for(module: nn.Module, specs: Sequence[InputSpec], seed: int = 0) -> tuple:
    """Random inputs of the given shapes: floats from N(0, 1), integers in [0, ``embedding_size``)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in specs:
        if s.dtype in INT_DTYPES:
            high = embedding_size(module)
            if high is None:
                raise ModelLoadError(
                    f"integer input {','.join(map(str, s.dims))}:{s.dtype} needs a bound: the model has "
                    "no nn.Embedding and no config.vocab_size"
                )
            out.append(torch.randint(0, high, s.dims, generator=gen, dtype=INT_DTYPES[s.dtype]))
        else:
            out.append(torch.randn(*s.dims, generator=gen).to(FLOAT_DTYPES[s.dtype]))
    return tuple(out)


def example_tuple(example_inputs: Any) -> tuple:
    """Normalize example inputs (a tensor, or a tuple/list of them) to a tuple of positional args."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list | tuple):
        return tuple(example_inputs)
    raise ModelLoadError(
        f"example_inputs must be a tensor or a tuple of tensors, not {type(example_inputs).__name__}"
    )


def load_torch(
    module: nn.Module,
    example_inputs: Any = (),
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    allow_export: bool = True,
) -> Graph:
    """Trace ``module`` on ``example_inputs`` into the IR (parameters named by FQN, static shapes).

    ``example_inputs``: a tensor, a tuple of positional inputs, or a dict of keyword inputs;
    ``example_kwargs``: keyword inputs besides the positional ones (``input_ids=``, ``attention_mask=``).
    """
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"expected a torch.nn.Module, got {type(module).__name__}")
    kwargs = dict(example_kwargs or {})
    if isinstance(example_inputs, Mapping):
        kwargs = {**dict(example_inputs), **kwargs}
        inputs: tuple = ()
    else:
        inputs = example_tuple(example_inputs)
    if not inputs and not kwargs:
        raise ModelLoadError(f"{type(module).__name__}: a torch model needs example inputs")
    tr = trace(module, inputs, kwargs=kwargs, allow_export=allow_export, opaque=opaque_calls)
    builder = Builder(tr, name=type(module).__name__, root=tr.root)
    graph = builder.build()
    graph.meta["source"] = f"torch:{type(module).__module__}.{type(module).__qualname__}"
    graph.meta["tracer"] = tr.tracer
    flat = [*inputs, *kwargs.values()]
    graph.meta["example_shapes"] = [tuple(x.shape) for x in flat if isinstance(x, torch.Tensor)]
    # per graph input: the keyword it was passed by, None when positional (the traced placeholders
    # take their names from the forward signature)
    graph.meta["input_names"] = [v.name if v.name in kwargs else None for v in graph.inputs]
    graph.meta["output_names"] = _output_names(graph, builder, tr.output_names)
    return graph


def _output_names(graph: Graph, builder: Builder, named: Any) -> list[str]:
    """One name per graph output: the pytree path of the output leaf it is (else the value's name)."""
    by_value: dict[str, str] = {}
    for name, node in named or []:
        v = builder.env.get(node)
        if isinstance(v, Value) and v.name not in by_value:
            by_value[v.name] = name
    return [by_value.get(v.name, v.name) for v in graph.outputs]


def load_factory(spec: str, input_shapes: Sequence[Any]) -> tuple[nn.Module, tuple]:
    """``package.module:factory`` → (the module the factory returns, random example inputs).

    ``input_shapes``: one ``InputSpec`` (or a plain shape: float32) per positional input. Integer inputs
    (token ids) are drawn in [0, ``embedding_size(model)``). Used by the CLI for ``MODEL`` given as a
    factory; every failure is one clear ModelLoadError line.
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
        raise ModelLoadError(
            f"{spec}: a torch model needs --input-shape (e.g. --input-shape 1,3,224,224 or 1,8:int64)"
        )
    specs: list[InputSpec] = []
    for s in input_shapes:
        if isinstance(s, InputSpec):
            specs.append(s)
            continue
        try:
            dims = tuple(int(d) for d in s)
        except (TypeError, ValueError):
            raise ModelLoadError(f"{spec}: input shape {s!r} is not a list of integers") from None
        if not dims or any(d <= 0 for d in dims):
            raise ModelLoadError(f"{spec}: input shape {s!r} must be positive integers")
        specs.append(InputSpec(dims))
    try:
        model = factory()
    except Exception as exc:
        raise ModelLoadError(f"{spec}: the factory failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    try:
        inputs = example_inputs_for(model, specs)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec}: {exc}") from None
    return model, inputs
