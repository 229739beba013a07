"""FX graph → graphcore IR: the walk, the environment and the helpers every op handler uses.

Each FX node becomes zero or more IR nodes with ONNX operator names and ONNX conventions, so the
op table in ``graphcore.ops`` applies unchanged. What construct needs to map a shrink plan back onto
the FX graph is recorded in a ``TorchMeta`` (``frontends.torch_meta``; ``graph.meta["torch"]``): where
every integer literal that spells a size sits in the FX arguments (an integer literal becomes a const
IR Value named ``lit::<fx node>::<tag>``), which FX node each Split came from, the FX-level fixups the
plan does not cover, and the aliases of tied parameters (they appear once in the IR, under their first
FQN).

Handlers live in ``frontends.torch_ops`` (torch functions, methods, modules; one module per op
family) and ``frontends.torch_aten`` (the ATen ops of a ``torch.export`` graph); they register here
with ``on_function`` / ``on_method`` / ``on_module``, and this module imports neither.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from frontends.torch_meta import LitSite, TorchMeta
from frontends.torch_shapes import module_tensor
from frontends.torch_trace import SizeMeta, TensorMeta, TraceResult, dtype_name
from graphcore.ir import Graph, Node, Value

__all__ = [
    "FUNCTIONS",
    "INT64_MAX",
    "Builder",
    "Handler",
    "Unsupported",
    "function_handler",
    "on_function",
    "on_method",
    "on_module",
    "opaque_calls",
    "static_size",
]

MISSING: Any = object()
INT64_MAX = 2**63 - 1


class Unsupported(Exception):
    """A handler cannot express this node exactly; the node becomes an unknown op instead."""


def static_size(v: Value, axis: int) -> int:
    """The size of ``v`` along ``axis``, which the handler needs as a number."""
    d = None if v.shape is None else v.shape[axis]
    if not isinstance(d, int):
        raise Unsupported("a size is not static")
    return d


Handler = Callable[["Builder", fx.Node], Any]
MODULES: dict[type, Handler] = {}
FUNCTIONS: dict[Any, Handler] = {}
FUNCTIONS_BY_NAME: dict[str, Handler] = {}
METHODS: dict[str, Handler] = {}


def on_module(*types: type) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for t in types:
            MODULES[t] = fn
        return fn

    return deco


def on_function(*targets: Any) -> Callable[[Handler], Handler]:
    """Register for function objects, or for ``"module.qualname"`` strings (no import needed)."""

    def deco(fn: Handler) -> Handler:
        for t in targets:
            if isinstance(t, str):
                FUNCTIONS_BY_NAME[t] = fn
            elif t is not None:
                FUNCTIONS[t] = fn
        return fn

    return deco


def on_method(*names: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for nm in names:
            METHODS[nm] = fn
        return fn

    return deco


def qualname(target: Any) -> str:
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
    return f"{mod}.{name}" if mod else str(name)


def short_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", None) or str(target)
    return str(name).replace("::", ".")


def function_handler(target: Any) -> Handler | None:
    """The handler declared for a ``call_function`` target, by object or by ``module.qualname``."""
    h = FUNCTIONS.get(target)
    if h is None:
        try:
            h = FUNCTIONS_BY_NAME.get(qualname(target))
        except Exception:  # exotic callables have no name to look up
            h = None
    return h


def opaque_calls(graph: fx.Graph, meta: Mapping[fx.Node, Any]) -> list[str]:
    """The Python functions ``graph`` calls as single nodes that no handler declares.

    Why: ``torch.fx.wrap`` (torchvision's swin ``shifted_window_attention``, mvit ``_add_rel_pos``)
    keeps a plain Python function as one opaque ``call_function`` node, which lowers to an unknown op
    that blocks every channel it touches. Its body is ordinary torch code that torch.export traces
    through, so a graph with such calls is worth tracing again with torch.export. Builtins and C
    functions (``operator.getitem``, ``torch.cat``) are not counted: tracing cannot open them; nor is
    a call whose result is a plain Python value (``_call`` keeps that value, nothing is blocked).
    """
    return [
        qualname(n.target)
        for n in graph.nodes
        if n.op == "call_function"
        and isinstance(n.target, types.FunctionType)
        and function_handler(n.target) is None
        and not _is_plain_literal(meta.get(n))
    ]


class Builder:
    """Walks the FX graph once; handlers call back into it to emit IR."""

    def __init__(self, tr: TraceResult, name: str, root: nn.Module | None = None) -> None:
        self.gm = tr.root  # the module the FX targets are paths in (see ``TraceResult``)
        self.fx_graph = tr.graph
        self.meta = tr.meta
        self.graph = Graph(name=name, fmt="torch")
        self.tm = TorchMeta(tr.graph_module(), tr.tracer, tr.shape_source)
        self.graph.meta["torch"] = self.tm
        self.env: dict[fx.Node, Any] = {}
        self.concrete: dict[str, Any] = {}
        self.dims: dict[str, list[tuple[Value, int] | None]] = {}
        self._node_names: set[str] = set()
        self._tmp_count: dict[str, int] = {}
        self.canon: dict[int, str] = {}
        self._mods: dict[str, nn.Module] | None = None
        self._index_tensors(root if root is not None else tr.root)
        self.current: fx.Node | None = None

    # -- parameters ---------------------------------------------------------------------------
    def _index_tensors(self, root: nn.Module) -> None:
        """The canonical FQN of every parameter and buffer, in ``named_parameters`` then
        ``named_buffers`` order (``remove_duplicate=False``), from one walk of the module tree."""
        mods = list(root.named_modules(remove_duplicate=False))
        if root is self.gm:  # the walk ``submodule`` would make
            self._mods = dict(mods)
        for attr, kind in (("_parameters", "parameter"), ("_buffers", "buffer")):
            for prefix, mod in mods:
                for name, t in getattr(mod, attr).items():
                    if t is None:
                        continue
                    fqn = f"{prefix}.{name}" if prefix else name
                    first = self.canon.setdefault(id(t), fqn)
                    self.tm.tensor_kind.setdefault(first, kind)
                    if first != fqn:
                        self.tm.aliases[fqn] = first

    def submodule(self, target: str) -> nn.Module:
        """The module at ``target`` in the traced module (one dict of every path, built on first use:
        ``get_submodule`` walks the path through ``nn.Module.__getattr__`` on every call)."""
        if self._mods is None:
            self._mods = dict(self.gm.named_modules(remove_duplicate=False))
        mod = self._mods.get(target)
        return mod if mod is not None else self.gm.get_submodule(target)

    def tensor_value(self, fqn: str, t: torch.Tensor) -> Value:
        """The IR Value of a parameter, buffer or tensor constant, named by its canonical FQN."""
        name = self.canon.get(id(t), fqn)
        if name != fqn and fqn not in self.tm.aliases:
            self.tm.aliases[fqn] = name
        v = self.graph.values.get(name)
        if v is not None:
            return v
        kind = self.tm.tensor_kind.setdefault(name, "constant")
        trainable = bool(kind == "parameter" and t.requires_grad and t.is_floating_point())
        const = None
        if not t.is_floating_point() and t.numel() <= 64 and t.dim() <= 1 and t.device.type != "meta":
            const = t.detach().cpu().numpy().astype(np.int64)
        return self.graph.value(
            name,
            shape=tuple(map(int, t.shape)),
            dtype=dtype_name(t.dtype),
            is_param=True,
            trainable=trainable,
            const=const,
        )

    def module_param(self, n: fx.Node, mod: nn.Module, attr: str) -> Value | None:
        t = module_tensor(mod, attr)
        if t is None:
            return None
        if not isinstance(t, torch.Tensor):
            raise Unsupported(f"{attr} is not a tensor")
        return self.tensor_value(f"{n.target}.{attr}", t)

    # -- arguments ----------------------------------------------------------------------------
    def conv(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, list):
            return [self.conv(x) for x in a]
        if isinstance(a, tuple):
            return tuple(self.conv(x) for x in a)
        if isinstance(a, dict):
            return {k: self.conv(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(self.conv(a.start), self.conv(a.stop), self.conv(a.step))
        return a

    def arg(self, n: fx.Node, i: int | None, name: str | None = None, default: Any = MISSING) -> Any:
        """Positional ``i`` or keyword ``name`` of ``n``, converted (FX nodes → IR values)."""
        return self.conv(self.raw(n, i, name, default))

    def raw(self, n: fx.Node, i: int | None, name: str | None = None, default: Any = MISSING) -> Any:
        if i is not None and i < len(n.args):
            return n.args[i]
        if name is not None and name in n.kwargs:
            return n.kwargs[name]
        if default is MISSING:
            raise Unsupported(f"missing argument {name or i}")
        return default

    def path(self, n: fx.Node, i: int | None, name: str | None = None) -> tuple | None:
        if i is not None and i < len(n.args):
            return ("args", i)
        if name is not None and name in n.kwargs:
            return ("kwargs", name)
        return None

    def varargs(
        self, n: fx.Node, start: int, name: str | None = None
    ) -> tuple[list[Any], list[tuple | None]]:
        """``f(x, *sizes)`` or ``f(x, sizes)``: the elements and their paths."""
        only = n.args[start] if len(n.args) == start + 1 else None
        if isinstance(only, list | tuple):
            items = list(only)
            return [self.conv(x) for x in items], [("args", start, k) for k in range(len(items))]
        if len(n.args) > start:
            items = list(n.args[start:])
            return [self.conv(x) for x in items], [("args", start + k) for k in range(len(items))]
        if name is not None and name in n.kwargs:
            val = n.kwargs[name]
            if isinstance(val, list | tuple):
                return [self.conv(x) for x in val], [("kwargs", name, k) for k in range(len(val))]
            return [self.conv(val)], [("kwargs", name)]
        return [], []

    def static_int(self, x: Any) -> int:
        """An int the graph structure depends on (an axis, a count): literal or a traced scalar's value."""
        if isinstance(x, bool):
            return int(x)
        if isinstance(x, int):
            return x
        if isinstance(x, Value) and x.name in self.concrete and isinstance(self.concrete[x.name], int):
            return int(self.concrete[x.name])
        raise Unsupported("an integer argument is not static")

    def static_ints(self, xs: Any) -> list[int]:
        if isinstance(xs, list | tuple):
            return [self.static_int(x) for x in xs]
        return [self.static_int(xs)]

    # -- values and nodes ---------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        k = self._tmp_count.get(base, 0)
        name = base
        while name in self.graph.values:
            k += 1
            name = f"{base}::{k}"
        self._tmp_count[base] = k
        return name

    def make(self, name: str, m: Any) -> Any:
        """Values for a node result described by ``m`` (nested tuples become tuples of Values)."""
        if isinstance(m, TensorMeta):
            return self.graph.value(self.fresh(name), shape=m.shape, dtype=m.dtype)
        if isinstance(m, SizeMeta):
            return self.graph.value(self.fresh(name), shape=(len(m.dims),), dtype="int64")
        if isinstance(m, bool):
            v = self.graph.value(self.fresh(name), shape=(), dtype="bool")
            self.concrete[v.name] = m
            return v
        if isinstance(m, int | float):
            v = self.graph.value(
                self.fresh(name), shape=(), dtype="int64" if isinstance(m, int) else "float32"
            )
            self.concrete[v.name] = m
            return v
        if isinstance(m, tuple | list):
            return type(m)(self.make(f"{name}::{i}", x) for i, x in enumerate(m))
        return None

    def out(self, n: fx.Node) -> Value:
        """The single Value ``n`` produces (a tensor, or a scalar of shape arithmetic)."""
        v = self.make(n.name, self.meta.get(n))
        if not isinstance(v, Value):
            raise Unsupported("the node does not produce a single tensor")
        return v

    def tmp(self, n: fx.Node, tag: str, shape: tuple, dtype: str | None = "float32") -> Value:
        return self.graph.value(self.fresh(f"{n.name}::{tag}"), shape=tuple(shape), dtype=dtype)

    def const(self, n: fx.Node, arr: Any, tag: str = "c", dtype: Any = None) -> Value:
        a = np.asarray(arr, dtype=dtype)
        return self.graph.value(self.fresh(f"{n.name}::{tag}"), shape=a.shape, dtype=a.dtype.name, const=a)

    def axes(self, n: fx.Node, axes: Sequence[int]) -> Value:
        """The ``axes`` operand of Squeeze, Unsqueeze and Reduce*: a plain int64 constant.

        Rules read operands only (older ONNX opsets spelled it as an attribute). Pruning changes sizes,
        never which axes an op works on, so this is no ``lit::`` shape literal construct would rewrite.
        """
        return self.const(n, [int(a) for a in axes], "axes", np.int64)

    def emit(
        self,
        n: fx.Node,
        op: str,
        inputs: Sequence[Value | None],
        outputs: Sequence[Value],
        domain: str = "",
        **attrs: Any,
    ) -> Node:
        name = n.name
        k = 0
        while name in self._node_names:
            k += 1
            name = f"{n.name}::{k}"
        self._node_names.add(name)
        for v in inputs:
            if v is not None and not isinstance(v, Value):
                raise Unsupported(f"{op} input is not a tensor")
        node = Node(name=name, op=op, inputs=list(inputs), outputs=list(outputs), attrs=attrs, domain=domain)
        node.origin = n.name
        self.graph.add_node(node)
        return node

    def lit(self, n: fx.Node, values: list[int], sites: list[LitSite | None], tag: str) -> Value:
        """A shape literal from the FX arguments: a Constant construct may rewrite in place."""
        arr = np.asarray(values, dtype=np.int64).reshape(-1)
        v = self.graph.value(self.fresh(f"lit::{n.name}::{tag}"), shape=arr.shape, dtype="int64", const=arr)
        self.emit(n, "Constant", [], [v], value=arr)
        self.tm.sites[v.name] = list(sites)
        return v

    def as_value(self, n: fx.Node, x: Any, like: Value | None = None, tag: str = "s") -> Value:
        """A Python scalar operand as a rank-0 constant (dtype follows the tensor operand)."""
        if isinstance(x, Value):
            return x
        if isinstance(x, bool | int | float):
            if like is not None and (like.dtype or "").startswith(("float", "bfloat")):
                return self.const(n, float(x), tag, dtype=np.float32)
            if isinstance(x, float):
                return self.const(n, x, tag, dtype=np.float32)
            return self.const(n, int(x), tag, dtype=np.int64)
        raise Unsupported(f"operand of type {type(x).__name__}")

    def shape_operand(
        self, n: fx.Node, elems: list[Any], paths: list[tuple | None], out: Value, tag: str = "shape"
    ) -> tuple[Value, list[LitSite | None]]:
        """A 1-D int64 Value spelling ``out``'s shape from literals and traced sizes, with the FX
        site of each element (None for a size read at run time); register it with ``operand``.

        A traced element that is not a plain copy of an axis size (``c // 2``) cannot be rewritten
        when that output axis shrinks, so the axis is pinned.
        """
        pieces: list[Value] = []
        lit_vals: list[int] = []
        lit_sites: list[LitSite | None] = []
        all_sites: list[LitSite | None] = []
        pinned: list[int] = []
        pos = 0

        def flush() -> None:
            if lit_vals:
                pieces.append(self.lit(n, list(lit_vals), list(lit_sites), f"{tag}{pos - len(lit_vals)}"))
                lit_vals.clear()
                lit_sites.clear()

        for x, p in zip(elems, paths):
            if isinstance(x, bool) or x is None:
                raise Unsupported("shape element is not an int")
            if isinstance(x, int):
                site = LitSite(n.name, p, x) if p is not None else None
                lit_vals.append(x)
                lit_sites.append(site)
                all_sites.append(site)
                pos += 1
                continue
            if not isinstance(x, Value) or x.rank not in (0, 1):
                raise Unsupported("shape element is not an int")
            flush()
            k = 1 if x.rank == 0 else static_size(x, 0)
            src = self.dims.get(x.name)
            for j in range(k):
                all_sites.append(None)
                if src is None or src[j] is None:
                    pinned.append(pos + j)
            if x.rank == 0:
                u = self.tmp(n, "u", (1,), "int64")
                self.emit(n, "Unsqueeze", [x, self.axes(n, [0])], [u])
                pieces.append(u)
            else:
                pieces.append(x)
            pos += k
        flush()
        if len(pieces) == 1:
            shape_v = pieces[0]
        else:
            shape_v = self.tmp(n, tag, (pos,), "int64")
            self.emit(n, "Concat", pieces, [shape_v], axis=0)
        if pinned:
            self.pin(n, out, pinned, "its size is computed from other sizes at run time")
        return shape_v, all_sites

    def pin(self, n: fx.Node, v: Value, axes: list[int], reason: str) -> None:
        """Axes that must keep their size because the torch program recomputes it at run time."""
        self.emit(n, "PinAxes", [v], [], domain="zigraph.torch", axes=list(axes), reason=reason)

    def operand(self, node: Node, index: int, sites: list[LitSite | None]) -> None:
        self.tm.operand_sites[(node.name, index)] = list(sites)

    def attr_site(self, node: Node, attr: str, n: fx.Node, path: tuple | None) -> None:
        if path is not None:
            self.tm.attr_sites[(node.name, attr)] = (n.name, path)

    def fixup(self, what: str, n: fx.Node, **data: Any) -> None:
        self.tm.fixups.append((what, n.name, data))

    # -- the walk -------------------------------------------------------------------------------
    def build(self) -> Graph:
        for n in self.fx_graph.nodes:
            self.current = n
            if n.op == "placeholder":
                self.env[n] = self._placeholder(n)
            elif n.op == "get_attr":
                self.env[n] = self._get_attr(n)
            elif n.op == "output":
                self._outputs(n)
            else:
                self.env[n] = self._call(n)
        self.current = None
        return self.graph

    def _placeholder(self, n: fx.Node) -> Any:
        m = self.meta.get(n)
        if isinstance(m, TensorMeta):
            v = self.graph.value(self.fresh(n.name), shape=m.shape, dtype=m.dtype)
            self.graph.inputs.append(v)
            return v
        if isinstance(m, tuple | list) and any(isinstance(x, TensorMeta) for x in m):
            vals = self.make(n.name, m)
            for v in _flatten(vals):
                self.graph.inputs.append(v)
            return vals
        return m

    def _get_attr(self, n: fx.Node) -> Any:
        obj: Any = self.gm
        for part in str(n.target).split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            return self.tensor_value(str(n.target), obj)
        return obj

    def _outputs(self, n: fx.Node) -> None:
        seen: set[str] = set()
        for v in _flatten(self.conv(n.args[0])):
            if isinstance(v, Value) and v.name not in seen:
                seen.add(v.name)
                self.graph.outputs.append(v)

    def handler_for(self, n: fx.Node) -> Handler | None:
        if n.op == "call_module":
            mod = self.submodule(str(n.target))
            for cls in type(mod).__mro__:
                h = MODULES.get(cls)
                if h is not None:
                    return h
            return None
        if n.op == "call_method":
            return METHODS.get(str(n.target))
        return function_handler(n.target)

    def _call(self, n: fx.Node) -> Any:
        h = self.handler_for(n)
        m = self.meta.get(n)
        if h is None and _is_plain_literal(m):
            return m
        if h is None:
            return self.unknown(n)
        mark = self._checkpoint()
        try:
            res = h(self, n)
        except Unsupported as exc:
            self._rollback(mark)
            return self.unknown(n, str(exc))
        target = n.args[0] if n.op == "call_method" and str(n.target).endswith("_") and n.args else None
        if isinstance(target, fx.Node) and isinstance(self.env.get(target), Value) and isinstance(res, Value):
            self.env[target] = res  # in place: later readers of the mutated operand see the result
        return res

    def unknown(self, n: fx.Node, why: str | None = None) -> Any:
        """An op with no declared semantics: it keeps its own name and blocks every axis it touches."""
        inputs: list[Value] = []
        seen: set[str] = set()
        for v in _flatten(self.conv((n.args, dict(n.kwargs)))):
            if isinstance(v, Value) and v.name not in seen:
                seen.add(v.name)
                inputs.append(v)
        if n.op == "call_module":
            mod = self.submodule(str(n.target))
            op = type(mod).__name__
            for pn, t in [*mod.named_parameters(), *mod.named_buffers()]:
                v = self.tensor_value(f"{n.target}.{pn}", t)
                if v.name not in seen:
                    seen.add(v.name)
                    inputs.append(v)
        elif n.op == "call_method":
            op = str(n.target)
        else:
            op = short_name(n.target)
        res = self.make(n.name, self.meta.get(n))
        outs = [v for v in _flatten(res) if isinstance(v, Value)]
        attrs = {"reason": why} if why else {}
        self.emit(n, op, inputs, outs, domain="torch", **attrs)
        return res

    def _checkpoint(self) -> tuple[int, int, int]:
        """Counts only: nodes, Values and fixups are appended (never removed) while a handler runs, so
        what it made is the tail of each (a copy of every Value name per node made the walk quadratic)."""
        return len(self.graph.nodes), len(self.graph.values), len(self.tm.fixups)

    def _rollback(self, mark: tuple[int, int, int]) -> None:
        """Undo a handler that gave up half-way: its nodes, its Values and its bookkeeping."""
        n_nodes, n_values, n_fix = mark
        gone = {node.name for node in self.graph.nodes[n_nodes:]}
        for key in [k for k in self.tm.operand_sites if k[0] in gone]:
            del self.tm.operand_sites[key]
        for akey in [k for k in self.tm.attr_sites if k[0] in gone]:
            del self.tm.attr_sites[akey]
        for skey in [k for k in self.tm.splits if k in gone]:
            del self.tm.splits[skey]
        for node in reversed(self.graph.nodes[n_nodes:]):  # last first: its outputs are read by none
            self.graph.remove_node(node)
            self._node_names.discard(node.name)
        for name in list(self.graph.values)[n_values:]:
            self.graph.remove_value(self.graph.values[name])
            self.tm.sites.pop(name, None)
            self.concrete.pop(name, None)
            self.dims.pop(name, None)
        del self.tm.fixups[n_fix:]


def _flatten(x: Any) -> list[Any]:
    out: list[Any] = []
    stack = [x]
    while stack:
        cur = stack.pop()
        if isinstance(cur, list | tuple):
            stack.extend(reversed(cur))
        elif isinstance(cur, dict):
            stack.extend(reversed(list(cur.values())))
        else:
            out.append(cur)
    return out


def _is_plain_literal(m: Any) -> bool:
    return isinstance(m, bool | str | type(None) | torch.dtype | torch.device)
