"""Tracing a torch module into an FX graph with a static shape on every node.

Why two tracers: ``torch.fx.symbolic_trace`` costs tens of milliseconds and keeps the user's module
hierarchy (``call_module`` nodes whose targets are the parameter FQN prefixes), but it cannot follow
Python control flow on traced values. ``torch.export.export(strict=False)`` follows far more code (it
runs the Python with fake tensors) at ~0.5 s; its graph is ATen-level. The fast path goes first.

Why shapes come from the meta device: a real forward pass costs seconds on a CPU for ViT-B or
DenseNet, while running the same FX graph on ``meta`` tensors costs one Python dispatch per node. The
parameters are swapped for meta copies only for the duration of the run (the stateless
reparametrization torch's ``functional_call`` uses) and restored in a ``finally``. When the meta run
fails (an op without a meta kernel, a CPU tensor created inside ``forward``), one real forward under
``torch.no_grad()`` in eval mode gives the shapes instead.

Keyword inputs (``input_ids=..., attention_mask=...``, as Hugging Face models take them) need no
wrapper: torch.export takes them as they are; for torch.fx they are bound to the forward signature and
passed by position (unnamed parameters in between get their defaults). Outputs that are tuples, dicts or
dataclasses (Hugging Face's ``ModelOutput``) are flattened by torch's pytree, and every leaf keeps its
path as a name (``last_hidden_state``, ``past_key_values.0.1``): ``TraceResult.output_names``.

Tracing happens with every submodule in eval mode (the inference graph: what is exported and verified);
the training flags are restored afterwards, so the user's module is unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

from graphcore.errors import ModelLoadError

__all__ = ["Opaque", "SizeMeta", "TensorMeta", "TraceResult", "eval_mode", "positional", "trace"]


@dataclass(frozen=True)
class TensorMeta:
    """Static shape and dtype of a tensor an FX node produced."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class SizeMeta:
    """A ``torch.Size`` an FX node produced (``x.shape``, ``x.size()``)."""

    dims: tuple[int, ...]


@dataclass(frozen=True)
class Opaque:
    """A Python object that is neither a tensor nor a plain literal (a module, a generator ...)."""

    type_name: str


@dataclass
class TraceResult:
    """An FX graph module plus the runtime description of every node's result."""

    gm: fx.GraphModule
    meta: dict[fx.Node, Any]
    tracer: str  # "symbolic_trace" or "export"
    shape_source: str  # "meta", "real" or "export"
    inputs: tuple = ()  # the positional inputs the graph's placeholders take, in order
    output_names: list[tuple[str, fx.Node]] | None = None  # each output leaf's pytree path and node


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each training flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield
    finally:
        for m, f in flags:
            m.training = f


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def describe(obj: Any) -> Any:
    """A static, tensor-free description of a runtime value."""
    if isinstance(obj, torch.Tensor):
        return TensorMeta(tuple(int(d) for d in obj.shape), dtype_name(obj.dtype))
    if isinstance(obj, torch.Size):
        return SizeMeta(tuple(int(d) for d in obj))
    if isinstance(obj, bool | int | float | str | type(None) | torch.dtype | torch.device | slice):
        return obj
    if isinstance(obj, torch.SymInt):
        try:
            return int(obj)
        except Exception:  # an unbacked size: nothing static to record
            return Opaque("SymInt")
    if isinstance(obj, tuple | list):
        return (
            type(obj)(describe(x) for x in obj) if not hasattr(obj, "_fields") else tuple(map(describe, obj))
        )
    if isinstance(obj, dict):
        return {k: describe(v) for k, v in obj.items()}
    return Opaque(type(obj).__name__)


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps a description (never the tensors) of each node's result."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.meta: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.meta[n] = describe(out)
        return out


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty_like(x, device="meta")
    if isinstance(x, tuple | list):
        return type(x)(_to_meta(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    return x


def _record_meta(gm: fx.GraphModule, inputs: tuple) -> dict[fx.Node, Any]:
    from torch.nn.utils.stateless import _reparametrize_module

    tensors = {
        k: torch.empty_like(v, device="meta")
        for k, v in [*gm.named_parameters(remove_duplicate=False), *gm.named_buffers(remove_duplicate=False)]
    }
    rec = _Recorder(gm)
    with _reparametrize_module(gm, tensors, tie_weights=True), torch.no_grad():
        rec.run(*_to_meta(inputs))
    return rec.meta


def _record_real(gm: fx.GraphModule, inputs: tuple) -> dict[fx.Node, Any]:
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(*inputs)
    return rec.meta


def _blocker(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


def trace(
    module: nn.Module, inputs: tuple, *, kwargs: Mapping[str, Any] | None = None, allow_export: bool = True
) -> TraceResult:
    """Trace ``module`` (fast path first, then torch.export); raises ModelLoadError naming the blocker.

    ``kwargs``: keyword inputs, passed to ``forward`` by name.
    """
    name = type(module).__name__
    kw = dict(kwargs or {})
    with eval_mode(module):
        fast = _trace_fx(module, inputs, kw)
        if isinstance(fast, TraceResult):
            return fast
        if not allow_export:
            raise ModelLoadError(f"{name}: torch.fx cannot trace it ({_blocker(fast)})")
        try:
            return _trace_export(module, inputs, kw)
        except Exception as exc:
            raise ModelLoadError(
                f"{name}: cannot be traced: torch.fx stops at {_blocker(fast)!r}; "
                f"torch.export stops at {_blocker(exc)!r}"
            ) from None


def positional(module: nn.Module, inputs: tuple, kwargs: Mapping[str, Any]) -> tuple:
    """``inputs`` and ``kwargs`` as one positional tuple for ``module.forward`` (defaults in between).

    Raises ``TypeError`` when the signature does not take them that way (a ``**kwargs`` catch-all).
    """
    if not kwargs:
        return tuple(inputs)
    sig = inspect.signature(module.forward)
    bound = sig.bind(*inputs, **kwargs)
    params = list(sig.parameters.values())
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(k not in {p.name for p in named} for k in bound.arguments):
        raise TypeError("keyword inputs outside the positional parameters")
    last = max(i for i, p in enumerate(named) if p.name in bound.arguments)
    out = []
    for p in named[: last + 1]:
        if p.name in bound.arguments:
            out.append(bound.arguments[p.name])
        elif p.default is not p.empty:
            out.append(p.default)
        else:
            raise TypeError(f"no value for {p.name!r}")
    return tuple(out)


def _leaf_name(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts) or "output"


def _named_leaves(structure: Any) -> list[tuple[str, fx.Node]]:
    """Every fx node among the leaves of an output structure, with its pytree path as a name."""
    leaves, _ = pytree.tree_flatten_with_path(structure)
    return [(_leaf_name(path), leaf) for path, leaf in leaves if isinstance(leaf, fx.Node)]


def _output_node(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in reversed(gm.graph.nodes) if n.op == "output")


def _trace_fx(module: nn.Module, inputs: tuple, kwargs: Mapping[str, Any]) -> TraceResult | Exception:
    """``symbolic_trace`` and the shape of every node, or the exception that stopped either."""
    try:
        args = positional(module, inputs, kwargs)
        gm = fx.symbolic_trace(module)
        names = _named_leaves(_output_node(gm).args[0])
    except Exception as exc:  # any tracer failure moves on to the next tracer
        return exc
    try:
        return TraceResult(gm, _record_meta(gm, args), "symbolic_trace", "meta", args, names)
    except Exception:  # ops without meta kernels: one real forward instead
        try:
            return TraceResult(gm, _record_real(gm, args), "symbolic_trace", "real", args, names)
        except Exception as exc:
            return exc


def _trace_export(module: nn.Module, inputs: tuple, kwargs: Mapping[str, Any]) -> TraceResult:
    ep = torch.export.export(module, tuple(inputs), kwargs=dict(kwargs) or None, strict=False)
    gm = ep.module()
    meta: dict[fx.Node, Any] = {}
    for n in gm.graph.nodes:
        if "val" in n.meta:
            meta[n] = describe(n.meta["val"])
        elif n.op == "get_attr":
            meta[n] = describe(_get_attr(gm, str(n.target)))
        else:
            meta[n] = None
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    flat = pytree.tree_leaves((tuple(inputs), dict(kwargs)))
    for n, x in zip(placeholders, flat):
        if meta.get(n) is None:
            meta[n] = describe(x)
    out = _output_node(gm).args[0]
    names: list[tuple[str, fx.Node]] | None = None
    spec = ep.call_spec.out_spec
    if spec is not None and isinstance(out, tuple | list) and spec.num_leaves == len(out):
        # the exported graph returns the flat leaves; the spec knows the paths of the original structure
        paths = [_leaf_name(p) for p, _ in pytree.tree_flatten_with_path(spec.unflatten(list(out)))[0]]
        names = [(nm, x) for nm, x in zip(paths, out) if isinstance(x, fx.Node)]
    return TraceResult(gm, meta, "export", "export", tuple(flat), names)


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
