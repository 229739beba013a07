"""Lower an erasing plan onto a torch model: a new, physically smaller, trainable ``nn.Module``.

The torch frontend names every IR node after the FX node it came from (``node.origin``) and every FX
node's IR value after the FX node, so the plan maps back onto a copy of the traced ``GraphModule``:
a bypassed joint's uses read the FX operand that survives, a Concat's tensor list loses the erased
branches, the FX nodes of erased operators are deleted together with what only fed them, and then the
submodules and parameters nothing calls any more. A parameter still read by a surviving node (shared
weights) stays, because only unreferenced attributes are deleted.

The copy and the channel slicing of Concat consumers are the pruning lowering's
(``torch_construct.lower``); this module only adds the FX edit it runs before finishing the module.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from construct.erase_zeros import erased_structures
from construct.torch_construct import lower
from construct.torch_zeros import model_tensors
from graphcore.erase import EraseAnalysis, ErasePlan
from graphcore.errors import ZigraphError
from graphcore.groups import ParamSlice
from graphcore.ir import Graph, Node
from graphcore.shrink import plan as shrink_plan

__all__ = ["erase_torch", "zeroed_by_slices"]

_CATS = (
    torch.cat,
    torch.concat,
    torch.concatenate,
    torch.ops.aten.cat.default,
    torch.ops.aten.concat.default,
)
_INPLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}  # fmt: skip


def erase_torch(
    model: nn.Module, analysis: EraseAnalysis, erased: Iterable[int] | None = None
) -> fx.GraphModule:
    """A smaller module equal to ``model`` with the structures ``erased`` zeroed; ``model`` is not modified.

    ``erased``: structure ids; by default the structures whose variables are all exactly zero in ``model``.
    """
    if erased is None:
        erased = erased_structures(model, analysis)
    ep = analysis.plan(list(erased))
    gone = set(ep.removed_nodes) | set(ep.bypass)
    prune = analysis.prune
    if prune is None:
        raise ZigraphError("this erasing analysis has no channel map; build it with graphcore.analyze")
    sp = shrink_plan(prune, ep.removed_zigs, erased_nodes=gone)
    graph: Graph = analysis.graph
    return lower(model, prune, sp, skip=gone, edit=lambda gm: _erase_fx(gm, graph, ep, gone))


def zeroed_by_slices(model: nn.Module, removed: Iterable[ParamSlice]) -> nn.Module:
    """A deep copy of ``model`` with exactly the ``removed`` slices (``ErasePlan.removed``) set to zero:
    the reference an erased module must equal."""
    z = copy.deepcopy(model)
    tensors = model_tensors(z)
    with torch.no_grad():
        for s in removed:
            t = tensors.get(s.param)
            if t is None:
                raise ZigraphError(f"removed slice names '{s.param}', which is not a tensor of the model")
            idx = torch.as_tensor(s.indices, dtype=torch.long, device=t.device)
            t.index_fill_(s.axis, idx, 0.0)
    return z


# -- the FX edit ---------------------------------------------------------------------------------------
def _erase_fx(gm: fx.GraphModule, graph: Graph, ep: ErasePlan, gone: set[str]) -> None:
    fxg = gm.graph
    nodes = {n.name: n for n in fxg.nodes}
    ir = {n.name: n for n in graph.nodes}
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    for joint in sorted(ep.bypass, key=lambda j: order[j]):  # graph order: a chain resolves by itself
        _bypass(nodes, ir[joint], ep.bypass[joint], ep.bypass)
    for joint, positions in ep.drop_inputs.items():
        _drop_inputs(nodes, ir[joint], set(positions))
    doomed = _doomed(graph, gone, nodes)
    traced = {n.origin for n in graph.nodes if isinstance(n.origin, str)}
    erased_attrs = _delete(fxg, doomed, traced)
    left = [n for n in fxg.nodes if n.name in doomed]
    if left:
        users = ", ".join(sorted(u.name for u in left[0].users))
        raise ZigraphError(f"internal error: erased FX node '{left[0].name}' is still used by {users}")
    gm.delete_all_unused_submodules()
    _delete_unused_attrs(gm, erased_attrs)


def _doomed(graph: Graph, gone: set[str], nodes: dict[str, fx.Node]) -> set[str]:
    """FX nodes that go: the IR node computing the FX node's value goes (or, for a node of several
    values, all its IR nodes with outputs). Output-less IR nodes (``PinAxes``, which only record a
    constraint of a surviving reshape) decide nothing; constants and shape arithmetic the plan leaves
    are deleted later if nothing reads them."""
    by_fx: dict[str, list[Node]] = {}
    for n in graph.nodes:
        if isinstance(n.origin, str) and n.origin in nodes:
            by_fx.setdefault(n.origin, []).append(n)
    out = set()
    for name, irs in by_fx.items():
        main = [n for n in irs if any(v.name == name for v in n.outputs)]  # computes the FX node's value
        real = main or [n for n in irs if n.outputs] or irs
        if all(n.name in gone for n in real):
            out.add(name)
    return out


def _fx_node(nodes: dict[str, fx.Node], joint: Node) -> fx.Node:
    f = nodes.get(joint.origin) if isinstance(joint.origin, str) else None
    if f is None or joint.outputs[0].name != f.name:
        raise ZigraphError(
            f"cannot erase: joint '{joint.name}' is not a whole FX operation of the traced module"
        )
    return f


def _operands(f: fx.Node) -> tuple[list[fx.Node], Any]:
    """The tensor operands of a joint in the order the frontend read them, and how to rebuild the
    Concat list (``None`` for other joints)."""
    if f.op == "call_function" and f.target in _CATS:
        in_args = bool(f.args)
        items = f.args[0] if in_args else f.kwargs.get("tensors")
        if not isinstance(items, list | tuple):
            raise ZigraphError(f"cannot erase: the tensors of '{f.name}' are not a list")
        return [x for x in items if isinstance(x, fx.Node)], ("args" if in_args else "kwargs")
    found: list[fx.Node] = []
    for a in [*f.args, *f.kwargs.values()]:
        if isinstance(a, fx.Node):
            found.append(a)
    return found, None


def _bypass(nodes: dict[str, fx.Node], joint: Node, value: str, bypass: dict[str, str]) -> None:
    """Every use of the joint's FX node reads the FX operand at the position of the surviving input."""
    f = _fx_node(nodes, joint)
    ops, _ = _operands(f)
    if len(ops) != len(joint.inputs):
        raise ZigraphError(f"cannot erase: joint '{joint.name}' has operands the trace does not show")
    pos = _position(joint, value, bypass)
    src = joint.inputs[pos]
    if src is not None and src.producer is not None and src.producer.origin == joint.origin:
        raise ZigraphError(f"cannot erase: the surviving input of '{joint.name}' is computed inside it")
    keep = ops[pos]
    if f.op == "call_method" and str(f.target).endswith("_") and isinstance(f.args[0], fx.Node):
        # In place: later readers of the mutated operand saw the joint's result.
        mutated = f.args[0]
        after = False
        for n in list(f.graph.nodes):
            if n is f:
                after = True
            elif after and mutated in n.all_input_nodes and mutated is not keep:
                n.replace_input_with(mutated, keep)
    for u in list(f.users):
        _not_in_place(u)
    f.replace_all_uses_with(keep)


def _position(joint: Node, value: str, bypass: dict[str, str]) -> int:
    names = [v.name if v is not None else None for v in joint.inputs]
    if value in names:
        return names.index(value)
    for i, v in enumerate(joint.inputs):  # the plan may name the end of a chain of bypassed joints
        cur = v
        while cur is not None and cur.producer is not None and cur.producer.name in bypass:
            if cur.name == value:
                break
            nxt = bypass[cur.producer.name]
            cur = next((x for x in cur.producer.inputs if x is not None and x.name == nxt), None)
        if cur is not None and cur.name == value:
            return i
    raise ZigraphError(f"internal error: '{value}' is no input of joint '{joint.name}'")


def _drop_inputs(nodes: dict[str, fx.Node], joint: Node, drop: set[int]) -> None:
    f = _fx_node(nodes, joint)
    ops, where = _operands(f)
    if where is None or len(ops) != len(joint.inputs):
        raise ZigraphError(f"cannot erase: joint '{joint.name}' is not a torch.cat of a list of tensors")
    kept = [x for i, x in enumerate(ops) if i not in drop]
    if where == "args":
        f.args = (kept, *f.args[1:])
    else:
        f.kwargs = {**f.kwargs, "tensors": kept}


def _not_in_place(n: fx.Node) -> None:
    """A node that wrote into the joint's fresh result would now write into the surviving tensor,
    which other nodes (or the caller) still read: make it compute out of place (same values)."""
    if n.op == "call_module":
        mod = n.graph.owning_module.get_submodule(str(n.target)) if n.graph.owning_module else None
        state = vars(mod) if mod is not None else {}
        if state.get("inplace") is True:  # a plain flag (ReLU, Hardtanh, SiLU, Dropout ...)
            state["inplace"] = False
    elif n.op == "call_method" and str(n.target).endswith("_") and hasattr(torch.Tensor, str(n.target)[:-1]):
        n.target = str(n.target)[:-1]
    elif n.op == "call_function":
        if n.target in _INPLACE_OPERATORS:
            n.target = _INPLACE_OPERATORS[n.target]
        elif _out_of_place(n.target) is not None:
            n.target = _out_of_place(n.target)
        elif n.kwargs.get("inplace") is True:
            n.kwargs = {**n.kwargs, "inplace": False}
        elif n.target in (F.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.silu, F.hardswish) and any(
            a is True for a in n.args[1:]
        ):
            n.args = tuple(False if (i > 0 and a is True) else a for i, a in enumerate(n.args))


def _out_of_place(target: Any) -> Any:
    """``torch.relu_`` -> ``torch.relu``, ``F.relu_`` -> ``F.relu``, ``aten.add_.Tensor`` ->
    ``aten.add.Tensor``: the same function without the write (None when there is none)."""
    if isinstance(target, torch._ops.OpOverload):  # torch.export: aten.relu_.default -> aten.relu.default
        ns, _, base = target._schema.name.partition("::")
        if not base.endswith("_") or base.endswith("__"):
            return None
        packet = getattr(getattr(torch.ops, ns, None), base[:-1], None)
        return getattr(packet, target._overloadname, None) if packet is not None else None
    name = getattr(target, "__name__", "")
    if not name.endswith("_") or name.endswith("__"):
        return None
    for home in (torch, F):
        if getattr(home, name, None) is target and callable(getattr(home, name[:-1], None)):
            return getattr(home, name[:-1])
    return None


def _delete(fxg: fx.Graph, doomed: set[str], traced: set[str]) -> set[str]:
    """Erase the ``doomed`` nodes (users first), the unused nodes the frontend mapped to nothing that
    read them (``torch.export``'s ``_assert_tensor_metadata`` checks on an erased tensor), and then
    every pure node that only fed erased ones; returns the ``get_attr`` targets that were erased."""
    attrs: set[str] = set()
    lost_a_user: set[str] = set()
    changed = True
    while changed:
        changed = False
        for n in reversed(list(fxg.nodes)):
            if n.users or n.op in ("placeholder", "output"):
                continue
            checks_doomed = n.name not in traced and any(x.name in doomed for x in n.all_input_nodes)
            if n.name in doomed or checks_doomed or (n.name in lost_a_user and _pure(n)):
                lost_a_user.update(x.name for x in n.all_input_nodes)
                if n.op == "get_attr":
                    attrs.add(str(n.target))
                fxg.erase_node(n)
                changed = True
    return attrs


def _pure(n: fx.Node) -> bool:
    """Safe to delete once unused: no in-place write, no side effect FX knows of."""
    if n.op == "get_attr":
        return True
    if n.op == "call_method" and str(n.target).endswith("_"):
        return False
    if n.op == "call_function" and (
        n.target in _INPLACE_OPERATORS
        or _out_of_place(n.target) is not None
        or n.kwargs.get("inplace") is True
    ):
        return False
    try:
        return not n.is_impure()
    except Exception:
        return False


def _delete_unused_attrs(gm: fx.GraphModule, erased: set[str]) -> None:
    """Parameters and buffers reached through ``get_attr`` by erased nodes only: delete the attribute
    (the tensor object lives on wherever a surviving module or node still holds it)."""
    still = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    called = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    for target in sorted(erased - still):
        owner_path, _, attr = target.rpartition(".")
        if any(owner_path == c or owner_path.startswith(c + ".") for c in called):
            continue
        try:
            owner = gm.get_submodule(owner_path) if owner_path else gm
        except AttributeError:
            continue  # its module is gone already
        if hasattr(owner, attr):
            delattr(owner, attr)
