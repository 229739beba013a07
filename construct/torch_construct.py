"""Lower a shrink plan onto a torch model: a new, physically smaller, trainable ``nn.Module``.

Why FX-graph rewriting and not module surgery: the analysis already maps every FX node to IR nodes,
so every place a size lives is known exactly — a submodule's weights and hyper-parameters, a
``get_attr`` parameter, an integer literal in a ``view``/``split``/slice call, a conv's ``groups``.
Rewriting a deep copy of the traced ``GraphModule`` reaches all of them the same way for every
architecture; module surgery would have to re-discover, per model, which Python code computes sizes.

Steps: deep-copy the traced graph module and load the weights of ``model`` by FQN; slice every
parameter and buffer by the plan (tied parameters stay one object); write the plan's new attribute
values and shape literals back into FX arguments or leaf-module attributes; replace modules torch
cannot express smaller (``nn.MultiheadAttention`` with fewer heads); refresh derived module fields
(``in_channels``, ``normalized_shape`` ...); recompile.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from construct.torch_modules import PrunedMultiheadAttention
from construct.torch_renorm import lower_counts
from construct.torch_zeros import model_tensors, removed_from_zeros
from frontends.torch_meta import LitSite, TorchMeta
from graphcore import training_notes
from graphcore.errors import ZigraphError
from graphcore.groups import PruneAnalysis
from graphcore.shrink import ShrinkPlan, plan

__all__ = ["lower", "to_torch", "torch_plan"]


def _meta(analysis: PruneAnalysis) -> TorchMeta:
    tm = analysis.graph.meta.get("torch")
    if not isinstance(tm, TorchMeta):
        raise ZigraphError(
            "to_torch needs an analysis of a torch model (frontends.load(module, example_inputs))"
        )
    return tm


def torch_plan(model: nn.Module, analysis: PruneAnalysis, removed: Any = None) -> ShrinkPlan:
    """The shrink plan for ``removed`` ZIG ids, or for the ZIGs that are exactly zero in ``model``."""
    if removed is None:
        removed = removed_from_zeros(model, analysis)
    return plan(analysis, np.asarray(list(removed), dtype=np.int64))


def to_torch(model: nn.Module, analysis: PruneAnalysis, removed: Any = None) -> fx.GraphModule:
    """A smaller module equal to ``model`` with the removed ZIGs zeroed; ``model`` is not modified.

    ``removed``: ZIG ids; by default the ZIGs whose trainable slices in ``model`` are exactly zero
    (then a warning with the numbers when the optimizer training ``model`` fell short of its target).
    """
    if removed is None:
        training_notes.warn_if_unreached(model)
    return lower(model, analysis, torch_plan(model, analysis, removed))


def lower(
    model: nn.Module,
    analysis: PruneAnalysis,
    p: ShrinkPlan,
    skip: Collection[str] = frozenset(),
    edit: Callable[[fx.GraphModule], None] | None = None,
) -> fx.GraphModule:
    """Apply shrink plan ``p`` to a copy of the traced module carrying ``model``'s weights.

    ``skip``: IR nodes that erasing deletes whole (they get no updates); ``edit`` runs on the copy once
    the plan is written and before the module is finished (training switches, derived fields, recompile)
    — erasing deletes its nodes there, while FX node names still match the trace.
    """
    tm = _meta(analysis)
    small = _clone(tm.gm, model, p, tm)
    replaced = {n for kind, n, _ in tm.fixups if kind == "mha"}
    nodes = {n.name: n for n in small.graph.nodes}
    ir_nodes = {n.name: n for n in analysis.graph.nodes}
    for name, upd in p.node_updates.items():
        ir = ir_nodes.get(name)
        if ir is None or ir.origin in replaced or name in skip:
            continue
        _apply_update(small, nodes, tm, name, upd)
    for (node_name, index), fresh in p.operand_rewrites.items():
        ir = ir_nodes.get(node_name)
        if ir is None or ir.origin in replaced or node_name in skip:
            continue
        _apply_sites(small, nodes, tm.operand_sites.get((node_name, index)), fresh)
    for key, new in p.literal_rewrites.items():
        if len(key) == 4 and key[2] in skip:
            continue
        site_list = tm.sites.get(key[0])
        site = site_list[key[1]] if site_list is not None and key[1] < len(site_list) else None
        if site is not None:
            _write(small, nodes, site, int(new))
    _apply_fixups(small, nodes, tm, p)
    lower_counts(small, nodes, analysis, p, skip)  # statistics keep their original count
    if edit is not None:
        edit(small)
    _restore_training_switches(small)
    _refresh_modules(small)
    small.graph.lint()
    small.recompile()
    small.train(model.training)
    return small


# -- weights ------------------------------------------------------------------------------------------
def _clone(gm: fx.GraphModule, model: nn.Module, p: ShrinkPlan, tm: TorchMeta) -> fx.GraphModule:
    """A deep copy of the traced module whose tensors are ``model``'s, already sliced by the plan.

    The copy is made with a ``deepcopy`` memo that maps every tensor of the traced module to its new
    value, so each weight is copied once, straight into its smaller shape, and tied parameters (one
    object under several names) stay one object.
    """
    src = model_tensors(model)
    names: dict[int, list[str]] = {}
    objs: dict[int, torch.Tensor] = {}
    for fqn, t in model_tensors(gm).items():
        names.setdefault(id(t), []).append(fqn)
        objs[id(t)] = t
    memo: dict[int, Any] = {}
    with torch.no_grad():
        for key, fqns in names.items():
            old = objs[key]
            source = next((src[f] for f in fqns if f in src), old)
            if tuple(source.shape) != tuple(old.shape):
                raise ZigraphError(
                    f"'{fqns[0]}' has shape {tuple(source.shape)} in the model but {tuple(old.shape)} in the "
                    "analysis: pass the model the analysis was made from"
                )
            canon = next((tm.aliases.get(f, f) for f in fqns if tm.aliases.get(f, f) in p.param_keep), None)
            t = source.detach()
            for axis, idx in p.param_keep.get(canon, []) if canon is not None else []:
                t = t.index_select(axis, torch.as_tensor(idx, dtype=torch.long, device=t.device))
            t = t.clone().contiguous()
            is_param = isinstance(old, nn.Parameter)
            memo[key] = nn.Parameter(t, requires_grad=old.requires_grad) if is_param else t
    return copy.deepcopy(gm, memo)


def _owner(root: nn.Module, fqn: str) -> tuple[nn.Module, str]:
    mod_path, _, attr = fqn.rpartition(".")
    return (root.get_submodule(mod_path) if mod_path else root), attr


# -- writing integers back into FX arguments --------------------------------------------------------
def _replace_in(container: Any, path: tuple, value: Any) -> Any:
    """A copy of ``container`` with the element at ``path`` replaced (lists, tuples, slices)."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(container, slice):
        parts = {"start": container.start, "end": container.stop, "step": container.step}
        parts[key] = _replace_in(parts[key], rest, value)
        return slice(parts["start"], parts["end"], parts["step"])
    if isinstance(container, list | tuple):
        items = list(container)
        items[key] = _replace_in(items[key], rest, value)
        return type(container)(items) if isinstance(container, list) else tuple(items)
    if isinstance(container, dict):
        out = dict(container)
        out[key] = _replace_in(out[key], rest, value)
        return out
    if isinstance(container, torch.Size):
        items = list(container)
        items[key] = _replace_in(items[key], rest, value)
        return torch.Size(items)
    raise ZigraphError(f"internal error: cannot rewrite a literal inside a {type(container).__name__}")


def _write(small: fx.GraphModule, nodes: dict[str, fx.Node], site: LitSite, value: int) -> None:
    node = nodes[site.node]
    where, rest = site.path[0], site.path[1:]
    if where == "args":
        node.args = _replace_in(tuple(node.args), rest, value)
    elif where == "kwargs":
        node.kwargs = _replace_in(dict(node.kwargs), rest, value)
    elif where == "module":
        mod = small.get_submodule(str(node.target))
        attr = rest[0]
        setattr(mod, attr, _replace_in(getattr(mod, attr), rest[1:], value))
    else:
        raise ZigraphError(f"internal error: unknown literal site {site.path}")


def _apply_sites(
    small: fx.GraphModule, nodes: dict[str, fx.Node], sites: list[LitSite | None] | None, fresh: np.ndarray
) -> None:
    """Write the elements of a rewritten operand that came from FX literals (run-time sizes follow)."""
    if sites is None:
        return
    for site, new in zip(sites, np.asarray(fresh).reshape(-1).tolist()):
        if site is not None and int(new) != site.value and site.value not in (-1, 0):
            _write(small, nodes, site, int(new))


def _apply_update(
    small: fx.GraphModule, nodes: dict[str, fx.Node], tm: TorchMeta, name: str, upd: dict
) -> None:
    for attr, val in upd.get("attrs", {}).items():
        where = tm.attr_sites.get((name, attr))
        if where is not None:
            fx_name, path = where
            _write(small, nodes, LitSite(fx_name, path, -2), int(val))
        elif attr == "split" and name in tm.splits:
            _rewrite_split(nodes[tm.splits[name]["fx"]], tm.splits[name], [int(s) for s in val])
    for index, arr in upd.get("inputs", {}).items():
        if name in tm.splits and index == 1:
            _rewrite_split(nodes[tm.splits[name]["fx"]], tm.splits[name], [int(s) for s in np.asarray(arr)])
        else:
            _apply_sites(small, nodes, tm.operand_sites.get((name, index)), arr)


def _rewrite_split(node: fx.Node, info: dict, sizes: list[int]) -> None:
    """split/chunk with new, possibly unequal, sizes: always an explicit list of sizes."""
    x = node.args[0]
    axis = int(info["axis"])
    if node.op == "call_method":
        node.target = "split"
        node.args = (x, sizes)
        node.kwargs = {"dim": axis}
    elif isinstance(node.target, torch._ops.OpOverload):
        node.target = torch.ops.aten.split_with_sizes.default
        node.args = (x, sizes, axis)
        node.kwargs = {}
    else:
        node.target = torch.split
        node.args = (x, sizes)
        node.kwargs = {"dim": axis}


# -- fixups the plan does not cover --------------------------------------------------------------------
def _apply_fixups(small: fx.GraphModule, nodes: dict[str, fx.Node], tm: TorchMeta, p: ShrinkPlan) -> None:
    for kind, fx_name, data in tm.fixups:
        node = nodes[fx_name]
        if kind == "sdpa_scale":
            kept = p.kept_masks.get((data["q"], data["axis"]))
            if kept is not None and int(kept.sum()) != int(data["head_dim"]):
                node.kwargs = {**node.kwargs, "scale": 1.0 / math.sqrt(int(data["head_dim"]))}
        elif kind == "mha":
            mod = small.get_submodule(str(node.target))
            if not isinstance(mod, nn.MultiheadAttention):
                raise ZigraphError(
                    f"internal error: '{node.target}' is not the MultiheadAttention it was traced as"
                )
            heads, qk, v = (_kept(p, data, key) for key in ("heads", "qk_dims", "v_dims"))
            d = int(data["head_dim"])
            changed = mod.in_proj_weight.shape[0] != 3 * int(data["num_heads"]) * d or (
                mod.out_proj.weight.shape[0] != mod.embed_dim or mod.in_proj_weight.shape[1] != mod.embed_dim
            )
            if changed:
                new = PrunedMultiheadAttention.from_module(mod, heads, qk, v, 1.0 / math.sqrt(d))
                parent, attr = _owner(small, str(node.target))
                setattr(parent, attr, new)


def _kept(p: ShrinkPlan, data: dict, key: str) -> int:
    """How many of a traced attention's heads (or head dimensions) survive the plan."""
    name, axis, size = data[key]
    kept = p.kept_masks.get((name, axis))
    return int(kept.sum()) if kept is not None else int(size)


_DROPOUTS = {
    F.dropout: nn.Dropout, F.dropout1d: nn.Dropout1d, F.dropout2d: nn.Dropout2d, F.dropout3d: nn.Dropout3d,
    F.alpha_dropout: nn.AlphaDropout, F.feature_alpha_dropout: nn.FeatureAlphaDropout,
}  # fmt: skip
_STOCHASTIC_DEPTH = "torchvision.ops.stochastic_depth.stochastic_depth"


def _restore_training_switches(small: fx.GraphModule) -> None:
    """Functional dropout / stochastic depth recorded ``training=False`` (the graph is traced in eval
    mode); as modules they follow ``small.train()`` again, so the small model regularizes like the
    original when fine-tuned. Eval-mode results are unchanged."""
    graph = small.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        target = node.target
        qual = f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}"
        if target in _DROPOUTS:
            p, training = _arg(node, 1, "p", 0.5), _arg(node, 2, "training", True)
            if training is not False or not isinstance(p, float | int) or p == 0:
                continue
            module: nn.Module = _DROPOUTS[target](p, _arg(node, 3, "inplace", False))
        elif qual == _STOCHASTIC_DEPTH:
            p, training = _arg(node, 1, "p", None), _arg(node, 3, "training", True)
            if training is not False or not isinstance(p, float | int) or p == 0:
                continue
            from torchvision.ops import StochasticDepth

            module = StochasticDepth(p, _arg(node, 2, "mode", "row"))
        else:
            continue
        name = f"train_{node.name}"
        small.add_submodule(name, module)
        with graph.inserting_before(node):
            new = graph.call_module(name, (node.args[0] if node.args else node.kwargs["input"],))
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    if i < len(node.args):
        return node.args[i]
    return node.kwargs.get(name, default)


def _refresh_modules(small: nn.Module) -> None:
    """Hyper-parameters that torch modules derive from their tensor shapes."""
    for mod in small.modules():
        w = getattr(mod, "weight", None)
        if isinstance(mod, nn.modules.conv._ConvNd):
            shape = mod.weight.shape
            if mod.transposed:
                mod.in_channels, mod.out_channels = int(shape[0]), int(shape[1]) * mod.groups
            else:
                mod.out_channels, mod.in_channels = int(shape[0]), int(shape[1]) * mod.groups
        elif isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = int(mod.weight.shape[0]), int(mod.weight.shape[1])
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            ref = w if w is not None else getattr(mod, "running_mean", None)
            if ref is not None:
                mod.num_features = int(ref.shape[0])
        elif isinstance(mod, nn.LayerNorm) and w is not None:
            mod.normalized_shape = tuple(int(d) for d in w.shape)
        elif isinstance(mod, nn.GroupNorm) and w is not None:
            mod.num_channels = int(w.shape[0])
        elif isinstance(mod, nn.Embedding):
            mod.num_embeddings, mod.embedding_dim = int(mod.weight.shape[0]), int(mod.weight.shape[1])
        elif isinstance(mod, nn.PReLU):
            mod.num_parameters = int(mod.weight.numel())
        elif hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm) and w is not None:
            mod.normalized_shape = tuple(int(d) for d in w.shape)
