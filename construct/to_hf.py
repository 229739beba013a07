"""A pruned Hugging Face model that is still a Hugging Face model: same class, updated config.

Why a config search instead of a table per architecture: which config field sizes which parameter
differs between families (``intermediate_size``, ``n_inner``, ``d_ff``; ``head_dim`` stored or
derived), and new families keep arriving. The pruned parameter shapes are known before anything is
built (the shrink plan), so ``to_hf`` asks the model class itself: it instantiates the class on the
``meta`` device (no memory, no weights) with candidate configs and keeps the first whose parameter
shapes equal the pruned ones. Candidates change integer fields whose value is the original size of a
pruned kind of group (64 MLP channels → ``intermediate_size``; 4 heads → ``num_attention_heads``) or an
original parameter size that shrank (32 → ``hidden_size`` when the hidden stream is pruned), fewest
changes first. Whatever the hidden-size and head-dimension passes make prunable follows without edits
here, as long as the class derives its shapes from such fields.

A config holds one width per kind for every layer, so the removal must be uniform across layers
(``graphcore.uniform.select_uniform``); a non-uniform one is refused naming the kind and the counts
per layer (``to_torch`` and ONNX still express it). The weights come from the pruned torch module
(``to_torch``), and the Hugging Face model is run against it on the analysis's input shapes before it
is returned: a config that builds the right shapes but computes something else (a normalization over
another width) is refused, never returned.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from construct.torch_construct import to_torch, torch_plan
from construct.torch_verify import compare_outputs, run_torch
from frontends.torch_frontend import embedding_size
from graphcore.errors import ZigraphError
from graphcore.groups import PruneAnalysis
from graphcore.uniform import uniform_kinds

__all__ = ["hf_config_for", "hf_kinds", "non_uniform", "to_hf"]

MAX_TRIES = 512
# Per-head widths that configs derive (``hidden_size // num_attention_heads``) unless set explicitly.
PINNABLE = ("head_dim",)
RTOL = 1e-4


def _config(model: nn.Module) -> Any:
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "to_dict") or not hasattr(type(model), "from_pretrained"):
        raise ZigraphError(f"{type(model).__name__} is not a Hugging Face model (no config/from_pretrained)")
    return cfg


def _describe_kind(kind: tuple) -> str:
    size, params = kind
    names = sorted({p for p, _ in params})
    return f"{names[0]} ({size} channels{', ...' if len(names) > 1 else ''})"


def non_uniform(analysis: PruneAnalysis, removed: Iterable[int]) -> list[str]:
    """One line per kind of group whose layers lose different counts (empty: uniform)."""
    ids = np.asarray(list(removed), dtype=np.int64)
    taken = np.bincount(analysis.zig_group[ids], minlength=len(analysis.groups)) if ids.size else None
    out = []
    for kind, groups in uniform_kinds(analysis).items():
        counts = [int(taken[g.id]) if taken is not None else 0 for g in groups]
        if len(set(counts)) > 1:
            per = ", ".join(f"{g.params[0][0]}: {c}" for g, c in zip(groups, counts))
            out.append(f"{_describe_kind(kind)} removes different counts per layer ({per})")
    return out


def _target_shapes(model: nn.Module, analysis: PruneAnalysis, removed: np.ndarray) -> dict[str, tuple]:
    """Every state-dict entry's shape once ``removed`` is cut (from the plan: nothing is built)."""
    p = torch_plan(model, analysis, removed)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, axes in p.param_keep.items():
        base = name.split("@")[0]
        if base not in shapes:
            continue
        s = list(shapes[base])
        for axis, kept in axes:
            s[axis] = int(np.asarray(kept).size)
        shapes[base] = tuple(s)
    return shapes


def _shapes_of(cls: type, cfg: Any) -> dict[str, tuple] | None:
    try:
        with torch.device("meta"):
            m = cls(cfg)
    except Exception:  # a candidate the class rejects (head count not dividing the width ...)
        return None
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def hf_config_for(
    model: nn.Module, target: Mapping[str, tuple], kept: Mapping[int, int] | None = None
) -> Any:
    """The config of ``type(model)`` whose parameters have the ``target`` shapes, or ZigraphError.

    ``kept``: original size → kept size of each pruned kind of group (candidate field values).
    """
    cfg = _config(model)
    cls = type(model)
    orig = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if dict(target) == orig:
        return copy.deepcopy(cfg)
    pairs: dict[int, set[int]] = {}
    for a, b in (kept or {}).items():
        if a != b:
            pairs.setdefault(a, set()).add(b)
    for k, s in orig.items():
        t = target.get(k, s)
        for a, b in zip(s, t):
            if a != b:
                pairs.setdefault(a, set()).add(b)
    base = cfg.to_dict()
    base.pop("pruned_heads", None)
    ints = {k: v for k, v in base.items() if isinstance(v, int) and not isinstance(v, bool)}
    new_sizes = sorted({b for bs in pairs.values() for b in bs})
    options: list[tuple[str, list[int]]] = []
    for key, value in base.items():
        if key.endswith(("_id", "_ids")) or isinstance(value, bool) or not isinstance(value, int | None):
            continue
        if value is None:  # a width derived unless set (GPT-2's n_inner): any new size may be it
            vals = set(new_sizes)
        else:
            vals = set(pairs.get(value, ()))
            # a field counting in multiples of a kind (4 query heads over 2 key/value groups) scales with it
            vals |= {value * b // a for a, b in (kept or {}).items() if 0 < b < a and value % a == 0}
            vals.discard(value)
        if vals:
            options.append((key, sorted(vals)))
    for key in PINNABLE:
        if key not in base or base[key] is None:
            # a per-head width derived from the shrinking fields must be pinned to its original value
            dims = {d // v for d in pairs for v in ints.values() if v > 1 and d % v == 0}
            options.append((key, sorted(dims)))
    options = _relevant(cls, cfg, base, options, orig, target)
    tries = 0
    for n in range(1, len(options) + 1):
        for fields in itertools.combinations(options, n):
            for values in itertools.product(*(vals for _, vals in fields)):
                tries += 1
                if tries > MAX_TRIES:
                    break
                d = dict(base)
                d.update({key: v for (key, _), v in zip(fields, values)})
                try:
                    cand = type(cfg).from_dict(d)
                except Exception:  # the config class validates its fields
                    continue
                if _shapes_of(cls, cand) == {k: tuple(target[k]) for k in orig}:
                    return cand
    bad = next((k for k in orig if tuple(target[k]) != orig[k]), "?")
    fields = ", ".join(key for key, _ in options) or "none"
    raise ZigraphError(
        f"{cls.__name__}: no config expresses the pruned shapes (e.g. {bad}: {orig.get(bad)} -> "
        f"{target.get(bad)}); fields tried: {fields}. Prune only kinds the config can hold (construct.to_hf."
        "hf_kinds), or keep the pruned model as a torch module / ONNX"
    )


def _relevant(
    cls: type, cfg: Any, base: dict, options: list[tuple[str, list[int]]], orig: Mapping, target: Mapping
) -> list[tuple[str, list[int]]]:
    """The candidate values that, changed alone, change only parameters the pruning changes (the
    search then combines few; ``head_dim`` pins a derived width, which alone changes nothing)."""
    shrinking = {k for k, s in orig.items() if tuple(target.get(k, s)) != s}
    out = []
    for key, vals in options:
        if key in PINNABLE:
            out.append((key, vals))
            continue
        keep = []
        for v in vals:
            try:
                shapes = _shapes_of(cls, type(cfg).from_dict({**base, key: v}))
            except Exception:  # the config class validates its fields
                continue
            if shapes is None or set(shapes) != set(orig):
                continue
            changed = {k for k in orig if shapes[k] != orig[k]}
            if changed and changed <= shrinking:
                keep.append(v)
        if keep:
            out.append((key, keep))
    return out


def _kept_sizes(analysis: PruneAnalysis, removed: np.ndarray) -> dict[int, int]:
    taken = np.bincount(analysis.zig_group[removed], minlength=len(analysis.groups))
    out: dict[int, int] = {}
    for g in analysis.prunable_groups:
        if taken[g.id]:
            out[g.size] = g.size - int(taken[g.id])
    return out


def hf_kinds(model: nn.Module, analysis: PruneAnalysis) -> set[tuple]:
    """The kinds of groups (``graphcore.uniform.group_kind``) a config of ``type(model)`` can shrink:
    removing one ZIG from every group of the kind finds a config (checked on the meta device)."""
    out = set()
    for kind, groups in uniform_kinds(analysis).items():
        removed = np.array(sorted(int(g.zig_ids[0]) for g in groups), dtype=np.int64)
        try:
            hf_config_for(model, _target_shapes(model, analysis, removed), _kept_sizes(analysis, removed))
        except ZigraphError:
            continue
        out.add(kind)
    return out


def _state_for(model: nn.Module, small: nn.Module, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """The pruned tensors by the original names; a tied parameter the export keeps under one name
    only is found under its other names."""
    have = small.state_dict()
    aliases: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        aliases.setdefault(id(t), []).append(name)
    by_name = {name: names for names in aliases.values() for name in names}
    out = {}
    for k in keys:
        found = next((n for n in [k, *by_name.get(k, [])] if n in have), None)
        if found is None:
            raise ZigraphError(f"{type(model).__name__}: the pruned module has no tensor {k!r}")
        out[k] = have[found]
    return out


def _example_call(model: nn.Module, analysis: PruneAnalysis, seed: int) -> tuple[tuple, dict]:
    """Random inputs of the analysis's input shapes, positional and keyword as they were traced."""
    names = list(analysis.graph.meta.get("input_names") or [])
    gen = torch.Generator().manual_seed(seed)
    high = embedding_size(model) or 2
    args: list[torch.Tensor] = []
    kwargs: dict[str, torch.Tensor] = {}
    for i, v in enumerate(analysis.graph.inputs):
        shape = tuple(int(d) for d in (v.shape or ()))
        dtype = getattr(torch, str(v.dtype), torch.float32)
        if dtype.is_floating_point:
            x = torch.randn(shape, generator=gen).to(dtype)
        elif dtype == torch.bool:
            x = torch.ones(shape, dtype=torch.bool)
        else:
            x = torch.randint(0, high, shape, generator=gen, dtype=dtype)
        name = names[i] if i < len(names) else None
        if name is None:
            args.append(x)
        else:
            kwargs[name] = x
    return tuple(args), kwargs


def to_hf(
    model: nn.Module,
    analysis: PruneAnalysis,
    removed: Any = None,
    *,
    small: nn.Module | None = None,
    seed: int = 0,
) -> nn.Module:
    """A model of ``type(model)`` with an updated config and the pruned weights.

    ``removed``: ZIG ids (default: the ZIGs exactly zero in ``model``); ``small``: the pruned module
    when already built (``to_torch(model, analysis, removed)``). It must be uniform across layers
    (``graphcore.uniform.select_uniform``) and of kinds the config can hold (``hf_kinds``); otherwise
    ZigraphError says what differs. The result is checked against the pruned module at ``1e-4``
    relative before it is returned; save it with ``save_pretrained``, load it with ``from_pretrained``.
    """
    cfg = _config(model)
    p = torch_plan(model, analysis, removed)
    ids = np.asarray(p.removed_zigs, dtype=np.int64)
    problems = non_uniform(analysis, ids)
    if problems:
        raise ZigraphError(
            f"{type(model).__name__}: a config holds one width per kind for all layers, but "
            + "; ".join(problems)
            + " (select with graphcore.uniform.select_uniform / --uniform)"
        )
    target = _target_shapes(model, analysis, ids)
    new_cfg = hf_config_for(model, target, _kept_sizes(analysis, ids))
    if small is None:
        small = to_torch(model, analysis, ids)
    try:
        dtype = next(model.parameters()).dtype
    except StopIteration:
        dtype = torch.float32
    hf = type(model)(new_cfg).to(dtype)
    hf.load_state_dict(_state_for(model, small, hf.state_dict().keys()), strict=True)
    hf.train(model.training)
    _check(hf, small, analysis, seed, cfg)
    return hf


def _check(hf: nn.Module, small: nn.Module, analysis: PruneAnalysis, seed: int, cfg: Any) -> None:
    args, kwargs = _example_call(hf, analysis, seed)

    def run(m: nn.Module) -> list[np.ndarray]:
        if not kwargs:
            return run_torch(m, args)
        return run_torch(_Kw(m, list(kwargs)), (*args, *kwargs.values()))

    rep = compare_outputs([run(small)], [run(hf)], RTOL)
    if not rep.passed:
        raise ZigraphError(
            f"{type(hf).__name__}: the config {type(cfg).__name__} builds the pruned shapes but computes "
            f"something else (max relative error {rep.max_rel:.2e}); keep it as a torch module / ONNX"
        )


class _Kw(nn.Module):
    """Calls ``inner`` with the trailing positional inputs passed by name (for ``run_torch``)."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self, *xs: torch.Tensor) -> Any:
        n = len(xs) - len(self.names)
        return self.inner(*xs[:n], **dict(zip(self.names, xs[n:])))
