"""Saving and loading a small torch module without pickling code.

Format ``zigraph.torch/1`` — one file written with ``torch.save`` and read with
``torch.load(weights_only=True)`` (tensors, strings, numbers, lists and dicts only; nothing executes):

* ``format``: ``"zigraph.torch/1"``
* ``graph``: JSON — the FX graph, one entry per node: ``name``, ``op``, ``target`` and ``args`` /
  ``kwargs`` with node references, tuples, slices, dtypes and devices tagged (``{"__node__": name}``,
  ``{"__tuple__": [...]}``, ...). A ``call_function`` target is a name (``"torch.nn.functional:relu"``,
  ``"op:aten.conv2d.default"``) looked up at load time, only inside the packages in ``TRUSTED``.
* ``modules``: JSON — for every leaf module a ``call_module`` node calls: its path, its class (again a
  name inside ``TRUSTED``) and the constructor arguments read back from the module's attributes; at save
  time the class is rebuilt on the meta device and must produce the same parameter names and shapes.
* ``tensors``: JSON — per tensor FQN: ``parameter`` (with ``requires_grad``), ``buffer`` or ``constant``,
  and tied names (``alias_of``).
* ``state``: the tensors themselves, one entry per distinct tensor.
* ``training``: the root module's training flag.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from graphcore.errors import ZigraphError

__all__ = ["FORMAT", "TRUSTED", "load_small", "save_small"]

FORMAT = "zigraph.torch/1"
TRUSTED = ("torch", "torchvision", "operator", "_operator", "builtins", "math", "construct")


# -- names of functions and classes ------------------------------------------------------------------
def _lookup(qual: str) -> Any:
    """``"pkg.mod:attr.attr"`` → the object, only inside TRUSTED packages; ``"op:aten.x.y"`` → ATen op."""
    if qual.startswith("op:"):
        obj: Any = torch.ops
        for part in qual[3:].split("."):
            obj = getattr(obj, part)
        return obj
    mod_path, _, attr = qual.partition(":")
    top = mod_path.split(".")[0]
    if top not in TRUSTED:
        raise ZigraphError(f"refusing to load {qual!r}: {top!r} is not a trusted package")
    try:
        obj = importlib.import_module(mod_path)
    except ImportError:
        obj = importlib.import_module(top)
        for part in mod_path.split(".")[1:]:
            obj = getattr(obj, part)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _name_of(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        name = f"op:{target}"
        if _lookup(name) is target:
            return name
    mod = getattr(target, "__module__", None) or ""
    for attr in (getattr(target, "__name__", None), getattr(target, "__qualname__", None)):
        if not attr:
            continue
        for m in (mod, "torch", "torch.nn.functional"):
            name = f"{m}:{attr}"
            try:
                if _lookup(name) is target:
                    return name
            except Exception:
                continue
    raise ZigraphError(f"cannot save: {target!r} is not a function importable from {', '.join(TRUSTED)}")


# -- arguments ------------------------------------------------------------------------------------------
def _enc(a: Any) -> Any:
    if isinstance(a, fx.Node):
        return {"__node__": a.name}
    if a is None or isinstance(a, bool | int | str):
        return a
    if isinstance(a, float):
        return a if a == a and abs(a) != float("inf") else {"__float__": repr(a)}
    if isinstance(a, torch.Size | tuple):
        return {"__tuple__": [_enc(x) for x in a]}
    if isinstance(a, list):
        return [_enc(x) for x in a]
    if isinstance(a, dict):
        return {"__dict__": [[k, _enc(v)] for k, v in a.items()]}
    if isinstance(a, slice):
        return {"__slice__": [_enc(a.start), _enc(a.stop), _enc(a.step)]}
    if a is Ellipsis:
        return {"__ellipsis__": True}
    if isinstance(a, torch.dtype):
        return {"__dtype__": str(a).replace("torch.", "")}
    if isinstance(a, torch.device):
        return {"__device__": str(a)}
    if isinstance(a, torch.memory_format | torch.layout):
        return {"__torch__": str(a).replace("torch.", "")}
    raise ZigraphError(f"cannot save an argument of type {type(a).__name__}")


def _dec(a: Any, nodes: dict[str, fx.Node]) -> Any:
    if isinstance(a, list):
        return [_dec(x, nodes) for x in a]
    if not isinstance(a, dict):
        return a
    if "__node__" in a:
        return nodes[a["__node__"]]
    if "__tuple__" in a:
        return tuple(_dec(x, nodes) for x in a["__tuple__"])
    if "__dict__" in a:
        return {k: _dec(v, nodes) for k, v in a["__dict__"]}
    if "__slice__" in a:
        return slice(*(_dec(x, nodes) for x in a["__slice__"]))
    if "__ellipsis__" in a:
        return Ellipsis
    if "__float__" in a:
        return float(a["__float__"])
    if "__dtype__" in a:
        return getattr(torch, a["__dtype__"])
    if "__device__" in a:
        return torch.device(a["__device__"])
    if "__torch__" in a:
        return getattr(torch, a["__torch__"])
    raise ZigraphError(f"unknown tagged value {a!r}")


# -- modules ----------------------------------------------------------------------------------------------
def _init_args(mod: nn.Module) -> dict[str, Any]:
    """Constructor arguments read back from same-named attributes (``bias`` tensors become bools)."""
    sig = inspect.signature(type(mod).__init__)
    out: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if name == "self" or name.startswith("_") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in ("device", "dtype"):
            continue
        if hasattr(mod, name):
            v = getattr(mod, name)
            if isinstance(v, torch.Tensor) or (v is None and name == "bias"):
                v = v is not None
            out[name] = v
        elif p.default is p.empty:
            raise ZigraphError(
                f"cannot save {type(mod).__name__}: constructor argument {name!r} is not an attribute"
            )
    return out


def _module_spec(path: str, mod: nn.Module) -> dict[str, Any]:
    cls = type(mod)
    qual = f"{cls.__module__}:{cls.__qualname__}"
    if _lookup(qual) is not cls:
        raise ZigraphError(f"cannot save module {path!r}: class {qual} is not importable")
    init = _init_args(mod)
    with torch.device("meta"):
        probe = cls(**init)
    want = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    if want != got:
        raise ZigraphError(
            f"cannot save module {path!r}: {cls.__name__}(**{init}) does not rebuild its tensors"
        )
    extra = {k: getattr(mod, k) for k in ("training",)}
    return {"path": path, "class": qual, "init": _enc(init), "extra": extra}


def _set_path(root: nn.Module, path: str, mod: nn.Module) -> None:
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(parts[-1], mod)


# -- save / load ---------------------------------------------------------------------------------------------
def save_small(module: fx.GraphModule, path: str | os.PathLike) -> None:
    """Write ``module`` (a GraphModule, e.g. from ``to_torch``) in the ``zigraph.torch/1`` format."""
    if not isinstance(module, fx.GraphModule):
        raise ZigraphError("save_small expects a torch.fx.GraphModule (what construct.to_torch returns)")
    if type(module.graph._codegen) is not fx.graph.CodeGen:
        raise ZigraphError("cannot save a graph module with a custom code generator (a torch.export graph)")
    nodes = []
    modules: list[dict[str, Any]] = []
    seen_mods: set[str] = set()
    for n in module.graph.nodes:
        if n.op == "call_function":
            target: Any = _name_of(n.target)
        else:
            target = str(n.target)
        if n.op == "call_module" and target not in seen_mods:
            seen_mods.add(target)
            modules.append(_module_spec(target, module.get_submodule(target)))
        nodes.append(
            {"name": n.name, "op": n.op, "target": target, "args": _enc(n.args), "kwargs": _enc(n.kwargs)}
        )
    leaf_paths = tuple(f"{p}." for p in seen_mods)
    tensors: dict[str, dict[str, Any]] = {}
    state: dict[str, torch.Tensor] = {}
    first: dict[int, str] = {}
    params = dict(module.named_parameters(remove_duplicate=False))
    buffers = dict(module.named_buffers(remove_duplicate=False))
    for n in module.graph.nodes:
        if n.op == "get_attr":
            obj: Any = module
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor) and str(n.target) not in params and str(n.target) not in buffers:
                buffers[str(n.target)] = obj
                tensors[str(n.target)] = {"kind": "constant"}
    for name, t in [*params.items(), *buffers.items()]:
        info = tensors.setdefault(name, {})
        info.setdefault("kind", "parameter" if name in params else "buffer")
        if name in params:
            info["requires_grad"] = bool(t.requires_grad)
        info["in_module"] = name.startswith(leaf_paths)
        if id(t) in first:
            info["alias_of"] = first[id(t)]
        else:
            first[id(t)] = name
            state[name] = t.detach().cpu()
    payload = {
        "format": FORMAT,
        "graph": json.dumps(nodes),
        "modules": json.dumps(modules),
        "tensors": json.dumps(tensors),
        "state": state,
        "training": bool(module.training),
    }
    target_path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target_path.name}.", dir=target_path.parent or ".")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, target_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_small(path: str | os.PathLike) -> fx.GraphModule:
    """Read a ``zigraph.torch/1`` file back into a trainable GraphModule (no code is unpickled)."""
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise ZigraphError(
            f"{path}: not a readable zigraph torch file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ZigraphError(f"{path}: not a {FORMAT} file")
    root = nn.Module()
    for spec in json.loads(payload["modules"]):
        cls = _lookup(spec["class"])
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ZigraphError(f"{path}: {spec['class']} is not a module class")
        mod = cls(**_dec(spec["init"], {}))
        mod.train(bool(spec.get("extra", {}).get("training", False)))
        _set_path(root, spec["path"], mod)
    state: dict[str, torch.Tensor] = payload["state"]
    made: dict[str, torch.Tensor] = {}
    for name, info in json.loads(payload["tensors"]).items():
        src = info.get("alias_of", name)
        if src not in made:
            t = state[src]
            if info.get("kind") == "parameter":
                t = nn.Parameter(t, requires_grad=bool(info.get("requires_grad", True)))
            made[src] = t
        t = made[src]
        mod_path, _, attr = name.rpartition(".")
        owner = root
        for part in mod_path.split(".") if mod_path else []:
            if not hasattr(owner, part):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        if isinstance(t, nn.Parameter):
            owner.register_parameter(attr, t)
        elif info.get("kind") == "buffer":
            owner.register_buffer(attr, t)
        else:
            setattr(owner, attr, t)
    graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    for spec in json.loads(payload["graph"]):
        target = _lookup(spec["target"]) if spec["op"] == "call_function" else spec["target"]
        node = graph.create_node(
            spec["op"], target, _dec(spec["args"], nodes), _dec(spec["kwargs"], nodes), name=spec["name"]
        )
        nodes[spec["name"]] = node
    gm = fx.GraphModule(root, graph)
    gm.train(bool(payload.get("training", False)))
    for spec in json.loads(payload["modules"]):
        gm.get_submodule(spec["path"]).train(bool(spec.get("extra", {}).get("training", False)))
    return gm
