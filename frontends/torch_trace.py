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
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.fx.traceback as fx_traceback
import torch.utils._pytree as pytree
from torch import nn

from frontends.torch_shapes import Abstract, function_rule, module_rule
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
    """An FX graph, the module its targets are read from, and the runtime description of every node's
    result.

    ``root``: for ``symbolic_trace`` the user's module itself (every ``call_module`` / ``get_attr``
    target is a path in it), for ``torch.export`` the exported ``GraphModule``. No ``GraphModule`` is
    made for the fx graph while loading: analysis only walks the graph, and copying the module tree
    into one cost a tenth of DenseNet-121's load; ``graph_module`` makes it when construct asks.
    """

    root: nn.Module
    graph: fx.Graph
    meta: dict[fx.Node, Any]
    tracer: str  # "symbolic_trace" or "export"
    shape_source: str  # "meta", "real" or "export"
    inputs: tuple = ()  # the positional inputs the graph's placeholders take, in order
    output_names: list[tuple[str, fx.Node]] | None = None  # each output leaf's pytree path and node

    def graph_module(self) -> Callable[[], fx.GraphModule]:
        """A maker of the traced program as an ``fx.GraphModule`` (the exported one as it is)."""
        if isinstance(self.root, fx.GraphModule) and self.root.graph is self.graph:
            return functools.partial(_same, self.root)
        return functools.partial(graph_module, self.root, self.graph, type(self.root).__name__)


def _same(gm: fx.GraphModule) -> fx.GraphModule:
    return gm


def graph_module(root: nn.Module, graph: fx.Graph, name: str) -> fx.GraphModule:
    """The ``GraphModule`` ``fx.symbolic_trace`` returns for ``graph`` traced from ``root``, made now.

    Its targets are copied from ``root`` as they are now: the same submodule and tensor objects the
    trace saw, unless the module tree was re-assigned in between. ``symbolic_trace`` makes it inside
    ``eval_mode``, so its own training flag is False (the submodules keep theirs)."""
    gm = fx.GraphModule(root, graph, name)
    gm.training = False
    return gm


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each training flag afterwards.

    A module already in eval mode throughout is left alone, and only the flags that changed are
    written back (``module.eval()`` and a write per module cost 3 ms on DenseNet-121)."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        if any(f for _, f in flags):
            module.eval()
        yield
    finally:
        for m, f in flags:
            if m.training is not f:
                m.training = f


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def dtype_name(dtype: torch.dtype) -> str:
    """``float32`` for ``torch.float32`` (kept per dtype: every node and tensor asks)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def describe(obj: Any) -> Any:
    """A static, tensor-free description of a runtime value."""
    if type(obj) is Abstract:  # its tensor once made (a kernel may have changed it in place)
        if obj.made is None:
            return TensorMeta(tuple(map(int, obj.shape)), dtype_name(obj.dtype))
        obj = obj.made
    if isinstance(obj, torch.Tensor):
        return TensorMeta(tuple(map(int, obj.shape)), dtype_name(obj.dtype))
    if isinstance(obj, torch.Size):
        return SizeMeta(tuple(map(int, obj)))
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


FAST_SHAPES = True
"""Read the results of common ops from ``frontends.torch_shapes`` during the meta run (off: every node
runs its meta kernel; the tests compare both)."""


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps a description (never the tensors) of each node's result.

    ``rules``: on meta tensors, take each result ``frontends.torch_shapes`` can build directly from its
    rule instead of running the op's (often Python-decomposed, millisecond) meta kernel. A rule's
    result is an ``Abstract`` (the graph inputs are too): an op that runs its kernel gets each one's
    ``tensor`` instead (``_concrete``), so no ``Abstract`` reaches code outside the rules."""

    def __init__(self, root: nn.Module, graph: fx.Graph | None = None, rules: bool = False) -> None:
        super().__init__(root, garbage_collect_values=True, graph=graph)
        self.meta: dict[fx.Node, Any] = {}
        self.rules = rules
        self.swap: _MetaSwap | None = None

    def run_node(self, n: fx.Node) -> Any:
        # fx's own run_node also enters fx_traceback's "current node" context (twice), which only
        # tracers that re-trace the run read: a third of the remaining per-node cost
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        out = getattr(self, n.op)(n.target, args, kwargs)
        self.meta[n] = describe(out)
        return out

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        mod = self.submodules.get(target)
        if mod is None:
            mod = self.fetch_attr(target)
        if self.rules:
            out = module_rule(mod, args, kwargs)
            if out is not None:
                return out
            args, kwargs = _concrete(args), _concrete(kwargs)
        if self.swap is not None:
            self.swap.module(mod)
        return mod(*args, **kwargs)

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if self.rules:
            out = function_rule(target, args, kwargs)
            if out is not None:
                return out
            args, kwargs = _concrete(args), _concrete(kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if self.rules:
            args, kwargs = _concrete(args), _concrete(kwargs)
        return super().call_method(target, args, kwargs)

    def get_attr(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if self.swap is not None:
            owner, _, name = str(target).rpartition(".")
            self.swap.tensor(self.fetch_attr(owner) if owner else self.module, name)
        return super().get_attr(target, args, kwargs)

    def fetch_attr(self, target: str) -> Any:
        """The attribute at ``target``: one ``getattr`` per path atom (fx's own also asks ``hasattr``
        of each, through ``nn.Module.__getattr__``), the same error when it is missing."""
        obj: Any = self.module
        for atom in target.split("."):
            try:
                obj = getattr(obj, atom)
            except AttributeError:
                return super().fetch_attr(target)
        return obj


def _concrete(x: Any) -> Any:
    """``x`` with every ``Abstract`` in it replaced by its tensor (the containers fx arguments hold)."""
    t = type(x)
    if t is Abstract:
        return x.tensor
    if t is tuple or t is list or t is fx.immutable_collections.immutable_list:
        return t(map(_concrete, x)) if any(_has_abstract(v) for v in x) else x
    if isinstance(x, dict):
        if not any(_has_abstract(v) for v in x.values()):
            return x
        if t is dict:
            return {k: _concrete(v) for k, v in x.items()}
        return fx.node.map_aggregate(x, _concrete_leaf)  # fx's immutable_dict stays one
    if t is slice:
        return slice(_concrete(x.start), _concrete(x.stop), _concrete(x.step))
    if isinstance(x, tuple | list):  # a named tuple, another sequence type: rebuilt as fx rebuilds it
        return fx.node.map_aggregate(x, _concrete_leaf)
    return x


def _concrete_leaf(x: Any) -> Any:
    return x.tensor if type(x) is Abstract else x


def _has_abstract(x: Any) -> bool:
    t = type(x)
    if t is Abstract:
        return True
    if t is tuple or t is list or isinstance(x, tuple | list):
        return any(_has_abstract(v) for v in x)
    if isinstance(x, dict):
        return any(_has_abstract(v) for v in x.values())
    if t is slice:
        return _has_abstract(x.start) or _has_abstract(x.stop) or _has_abstract(x.step)
    return False


class _MetaSwap:
    """Parameters and buffers swapped for empty meta tensors of their shapes as the meta run reaches
    them, and put back by ``restore``; a tensor held under several names (tied weights) gets one meta
    tensor.

    This is the swap torch's ``_reparametrize_module`` makes, but only for the tensors a node reads:
    a ``get_attr``, or a module whose result no rule gives (its whole subtree). Modules a rule answers
    are never swapped (rules read shapes and dtypes, never data), and no per-name path lookup is made:
    swapping all 1,200 tensors of DenseNet-121 up front cost a quarter of its meta run."""

    def __init__(self) -> None:
        self.saved: list[tuple[dict, str, torch.Tensor]] = []
        self.fresh: dict[int, torch.Tensor] = {}
        self.done: set[int] = set()

    def tensor(self, owner: Any, name: str) -> None:
        if not isinstance(owner, nn.Module):
            return
        # a tensor constant ``symbolic_trace`` stored (``_tensor_constant0``) is a plain attribute
        tables: tuple[dict[str, Any], ...] = (owner._parameters, owner._buffers, owner.__dict__)
        for table in tables:
            t = table.get(name)
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            m = self.fresh.get(id(t))
            if m is None:
                m = self.fresh[id(t)] = torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")
            self.saved.append((table, name, t))
            table[name] = m

    def module(self, root: Any) -> None:
        if not isinstance(root, nn.Module) or id(root) in self.done:
            return
        for mod in root.modules():
            if id(mod) in self.done:
                continue
            self.done.add(id(mod))
            for name in [*mod._parameters, *mod._buffers]:
                self.tensor(mod, name)

    def restore(self) -> None:
        for table, name, t in reversed(self.saved):
            table[name] = t
        self.saved.clear()


def _to_meta(x: Any, abstract: bool = False) -> Any:
    """Empty meta tensors of the shapes and dtypes of the tensors in ``x`` (``Abstract`` ones, made
    when first needed, for the fast run)."""
    if isinstance(x, torch.Tensor):
        if abstract:
            return Abstract(tuple(x.shape), x.dtype)
        return torch.empty(tuple(x.shape), dtype=x.dtype, device="meta")
    if isinstance(x, tuple | list):
        return type(x)(_to_meta(v, abstract) for v in x)
    if isinstance(x, dict):
        return {k: _to_meta(v, abstract) for k, v in x.items()}
    return x


def _record_meta(root: nn.Module, inputs: tuple, graph: fx.Graph | None = None) -> dict[fx.Node, Any]:
    """Every node's result on meta tensors: the fast run (rules, tensors swapped as read) first; if
    it fails, the plain run (every op through its kernel, every tensor swapped up front), so whatever
    the plain run records on meta, this does too (a module reading weights outside its own subtree
    meets them swapped there)."""
    if FAST_SHAPES:
        try:
            return _run_meta(root, inputs, fast=True, graph=graph)
        except Exception:  # the plain run decides, and raises what it raises
            pass
    return _run_meta(root, inputs, fast=False, graph=graph)


def _run_meta(
    root: nn.Module, inputs: tuple, fast: bool, graph: fx.Graph | None = None
) -> dict[fx.Node, Any]:
    """One meta run of ``graph`` (default: ``root.graph``, ``root`` a ``GraphModule``) over ``root``."""
    rec = _Recorder(root, graph, rules=fast)
    rec.swap = _MetaSwap()
    if not fast:
        rec.swap.module(root)  # the plain path: every tensor up front
    try:
        with torch.no_grad():
            rec.run(*_to_meta(inputs, abstract=fast))
    finally:
        rec.swap.restore()
    return rec.meta


def _record_real(root: nn.Module, inputs: tuple, graph: fx.Graph | None = None) -> dict[fx.Node, Any]:
    rec = _Recorder(root, graph)
    with torch.no_grad():
        rec.run(*inputs)
    return rec.meta


def _blocker(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


def trace(
    module: nn.Module,
    inputs: tuple,
    *,
    kwargs: Mapping[str, Any] | None = None,
    allow_export: bool = True,
    opaque: Callable[[fx.Graph, Mapping[fx.Node, Any]], Any] | None = None,
) -> TraceResult:
    """Trace ``module`` (fast path first, then torch.export); raises ModelLoadError naming the blocker.

    ``kwargs``: keyword inputs, passed to ``forward`` by name.
    ``opaque``: given the torch.fx graph and its shapes, whether it holds calls the fast path could not
    open (functions registered with ``torch.fx.wrap``); then torch.export, which runs their bodies, is
    tried too and its graph is used when it traces. When it does not, the torch.fx graph stands: its
    opaque calls become unknown ops, which block their channels (conservative, never wrong).
    """
    name = type(module).__name__
    kw = dict(kwargs or {})
    with eval_mode(module):
        fast = _trace_fx(module, inputs, kw)
        if isinstance(fast, TraceResult):
            if allow_export and opaque is not None and opaque(fast.graph, fast.meta):
                try:
                    return _trace_export(module, inputs, kw)
                except Exception:  # any export failure keeps the torch.fx graph
                    return fast
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


def _output_node(graph: fx.Graph) -> fx.Node:
    return next(n for n in reversed(graph.nodes) if n.op == "output")


_PLAIN_ARGS = frozenset({int, float, bool, str, type(None)})
_CALLS = frozenset({"call_function", "call_method", "call_module"})
_ENUMS = (torch.dtype, torch.device, torch.layout, torch.memory_format)
_NOT_SYMBOLIC = frozenset({*_PLAIN_ARGS, *_ENUMS, fx.Node, slice, type(Ellipsis)})


def _no_symbolic(args: Any, kwargs: Any) -> bool:
    """True when no pytree leaf of ``args`` and ``kwargs`` can be a ``SymInt``, ``SymFloat`` or
    ``SymBool``: every leaf is of a type in ``_NOT_SYMBOLIC`` (a leaf of any other type: False)."""
    stack: list[Any] = [args, kwargs]
    while stack:
        a = stack.pop()
        if type(a) in _NOT_SYMBOLIC:
            continue
        if isinstance(a, tuple | list):
            stack.extend(a)
        elif isinstance(a, dict):
            stack.extend(a.values())
        else:
            return False
    return True


class _Proxy(fx.Proxy):
    """The proxy ``_Tracer`` makes: torch's, with a short way to the tracer of a torch function call.

    ``Proxy.__torch_function__`` finds the tracer by mapping a function over every pytree leaf of the
    arguments (``torch.cat`` of a list of 40 proxies: 40 pytree steps, a fifth of DenseNet-121's trace).
    Where the arguments are plain tuples, lists, proxies and Python scalars, ``_tracer_of`` walks them
    directly, and a plain function becomes the ``call_function`` node torch makes (same target, name
    and arguments); anything else (other containers, methods, script and higher-order ops) goes to
    torch's own method."""

    @classmethod
    def __torch_function__(
        cls, orig_method: Any, types: tuple, args: tuple | None = None, kwargs: dict | None = None
    ) -> Any:
        tracer = _tracer_of(cls, args, kwargs)
        if (
            tracer is None
            or isinstance(orig_method, torch._C.ScriptMethod | torch._ops.HigherOrderOperator)
            or torch.overrides.is_tensor_method_or_property(orig_method)
        ):
            return super().__torch_function__(orig_method, types, args, kwargs)
        name = tracer.graph._target_to_str(orig_method.__name__)
        return tracer.create_proxy("call_function", orig_method, args or (), kwargs or {}, name=name)


def _is_magic(name: str) -> bool:
    """``__add__``: ``Graph._target_to_str`` strips the underscores of such a target."""
    return name.startswith("__") and name.endswith("__")


def _tracer_of(cls: type, args: tuple | None, kwargs: dict | None) -> Any:
    """The one tracer of the ``cls`` proxies among ``args`` and ``kwargs``; None when there is none,
    more than one, or a value whose pytree leaves this does not know (torch's method decides then)."""
    found = None
    stack: list[Any] = [*(args or ()), *(kwargs or {}).values()]
    while stack:
        a = stack.pop()
        t = type(a)
        if t is tuple or t is list:
            stack.extend(a)
        elif isinstance(a, fx.Proxy):
            if isinstance(a, cls):  # torch counts the proxies of the class whose method runs
                if found is not None and a.tracer is not found:
                    return None
                found = a.tracer
        elif t not in _PLAIN_ARGS:
            return None
    return found


class _Tracer(fx.Tracer):
    """``fx.Tracer`` with a short way for the arguments nearly every node has.

    ``Tracer.create_arg`` first asks whether an argument is a ``Parameter``, a tensor, a module, a
    named tuple or a registered opaque type, each through ``isinstance`` (``Parameter``'s goes through a
    Python ``__instancecheck__``), before it reaches the table of exact types torch itself answers
    directly (``torch.fx.proxy._create_arg_bypass``). For a Proxy, a plain tuple, list or str-keyed
    dict, and an int, float, bool, str or None all those questions answer no, so this answers as that
    table does and leaves every other type to torch: the same graph, a fifth of the trace time fewer
    on DenseNet-121 (62 ``torch.cat`` of up to 49 operands, each one an argument)."""

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_arg(self, a: Any) -> Any:
        t = type(a)
        if t is _Proxy or t is fx.Proxy:
            return a.node
        if t is tuple:
            return tuple([self.create_arg(x) for x in a])
        if t is list:
            return [self.create_arg(x) for x in a]
        if t in _PLAIN_ARGS:
            return a
        if t is dict and all(type(k) is str for k in a):
            return {k: self.create_arg(v) for k, v in a.items()}
        return super().create_arg(a)

    def create_node(
        self,
        kind: str,
        target: Any,
        args: Any,
        kwargs: Any,
        name: str | None = None,
        type_expr: Any | None = None,
    ) -> fx.Node:
        """Torch's node, whose ``nn_module_stack`` (the module calls it sits in) is copied with
        ``OrderedDict.copy`` instead of ``copy.copy``: the same dict, 15 µs less per node (``copy.copy``
        takes the generic pickle-protocol path for an ``OrderedDict``). A lower-case path target
        (``features.conv0``, every leaf module call) is its own name candidate: ``Graph._target_to_str``
        would snake-case it with a regular expression that finds nothing to change."""
        if name is None and type(target) is str and target == target.lower() and not _is_magic(target):
            name = target
        # ``Graph.create_node`` walks the arguments of every call with pytree to warn about raw
        # ``SymInt`` values (a seventh of DenseNet-121's load, most of it flattening the kwargs dict).
        # Where ``_no_symbolic`` sees there is none, the node is made without arguments and given
        # them through the ``args``/``kwargs`` setters: the same node, users and uses.
        later = (
            kind in _CALLS
            and (args or kwargs)
            and not self.check_mutable_operations
            and _no_symbolic(args, kwargs)
        )
        made_args, made_kwargs = ((), {}) if later else (args, kwargs)
        stack = self.module_stack
        if not stack or fx_traceback.has_preserved_node_meta():
            node = super().create_node(kind, target, made_args, made_kwargs, name, type_expr)
        else:
            self.module_stack = type(stack)()  # empty: torch leaves the key to us
            try:
                node = super().create_node(kind, target, made_args, made_kwargs, name, type_expr)
            finally:
                self.module_stack = stack
            node.meta["nn_module_stack"] = stack.copy()
        if later:
            if args:
                node.args = args
            if kwargs:
                node.kwargs = kwargs
        return node

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Torch's ``Tracer.call_module`` (the scope and module stack every node records, a leaf module
        as one ``call_module`` node) with the scope set and restored in place: torch's
        ``ScopeContextManager`` keeps a ``copy.copy`` of it, 10 µs per module call. A torch whose
        tracer has no per-module call count gets its own method."""
        if not isinstance(getattr(self, "num_calls", None), dict):
            return super().call_module(m, forward, args, kwargs)
        path = self.path_of_module(m)
        scope = self.scope
        before = scope.module_path, scope.module_type
        scope.module_path, scope.module_type = path, type(m)
        try:
            calls = self.num_calls.get(path, 0)
            key = f"{path}@{calls}" if calls > 0 else path
            self.module_stack[key] = (path, type(m))
            self.num_calls[path] = calls + 1
            if not self.is_leaf_module(m, path):
                out = forward(*args, **kwargs)
            else:
                out = self.create_proxy("call_module", path, args, kwargs)
            popped, _ = self.module_stack.popitem(last=True)
            if popped != key:
                raise AssertionError(f"Unexpected key {popped}, expected {key}")
        finally:
            scope.module_path, scope.module_type = before
        return out

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        """A submodule read in ``forward`` (``self.conv1``) is returned as it is, as torch does after
        asking whether it is a ``Parameter`` (a Python ``__instancecheck__``) or a tensor: a module is
        neither."""
        if isinstance(attr_val, nn.Module):
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def symbolic_trace(module: nn.Module) -> fx.Graph:
    """The graph ``torch.fx.symbolic_trace(module)`` records, through ``_Tracer``; its targets are paths
    in ``module`` (``graph_module`` makes the ``GraphModule`` when one is needed)."""
    return _Tracer().trace(module)


def _trace_fx(module: nn.Module, inputs: tuple, kwargs: Mapping[str, Any]) -> TraceResult | Exception:
    """``symbolic_trace`` and the shape of every node, or the exception that stopped either."""
    try:
        args = positional(module, inputs, kwargs)
        graph = symbolic_trace(module)
        names = _named_leaves(_output_node(graph).args[0])
    except Exception as exc:  # any tracer failure moves on to the next tracer
        return exc
    try:
        meta = _record_meta(module, args, graph)
        return TraceResult(module, graph, meta, "symbolic_trace", "meta", args, names)
    except Exception:  # ops without meta kernels: one real forward instead
        try:
            meta = _record_real(module, args, graph)
            return TraceResult(module, graph, meta, "symbolic_trace", "real", args, names)
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
    out = _output_node(gm.graph).args[0]
    names: list[tuple[str, fx.Node]] | None = None
    spec = ep.call_spec.out_spec
    if spec is not None and isinstance(out, tuple | list) and spec.num_leaves == len(out):
        # the exported graph returns the flat leaves; the spec knows the paths of the original structure
        paths = [_leaf_name(p) for p, _ in pytree.tree_flatten_with_path(spec.unflatten(list(out)))[0]]
        names = [(nm, x) for nm, x in zip(paths, out) if isinstance(x, fx.Node)]
    return TraceResult(gm, gm.graph, meta, "export", "export", tuple(flat), names)


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
