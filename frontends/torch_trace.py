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

Tracing happens with every submodule in eval mode (the inference graph: what is exported and verified);
the training flags are restored afterwards, so the user's module is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from graphcore.errors import ModelLoadError

__all__ = ["Opaque", "SizeMeta", "TensorMeta", "TraceResult", "eval_mode", "trace"]


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


def trace(module: nn.Module, inputs: tuple, *, allow_export: bool = True) -> TraceResult:
    """Trace ``module`` (fast path first, then torch.export); raises ModelLoadError naming the blocker."""
    name = type(module).__name__
    with eval_mode(module):
        fast = _trace_fx(module, inputs)
        if isinstance(fast, TraceResult):
            return fast
        if not allow_export:
            raise ModelLoadError(f"{name}: torch.fx cannot trace it ({_blocker(fast)})")
        try:
            return _trace_export(module, inputs)
        except Exception as exc:
            raise ModelLoadError(
                f"{name}: cannot be traced: torch.fx stops at {_blocker(fast)!r}; "
                f"torch.export stops at {_blocker(exc)!r}"
            ) from None


def _trace_fx(module: nn.Module, inputs: tuple) -> TraceResult | Exception:
    """``symbolic_trace`` and the shape of every node, or the exception that stopped either."""
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # any tracer failure moves on to the next tracer
        return exc
    try:
        return TraceResult(gm, _record_meta(gm, inputs), "symbolic_trace", "meta")
    except Exception:  # ops without meta kernels: one real forward instead
        try:
            return TraceResult(gm, _record_real(gm, inputs), "symbolic_trace", "real")
        except Exception as exc:
            return exc


def _trace_export(module: nn.Module, inputs: tuple) -> TraceResult:
    ep = torch.export.export(module, inputs, strict=False)
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
    flat = [x for x in inputs]
    for n, x in zip(placeholders, flat):
        if meta.get(n) is None:
            meta[n] = describe(x)
    return TraceResult(gm, meta, "export", "export")


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
