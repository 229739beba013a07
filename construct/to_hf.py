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
import math
from collections.abc import Collection, Iterable, Mapping
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

__all__ = ["hf_config_for", "hf_kinds", "non_uniform", "norm_fix", "to_hf"]

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
    state = model.state_dict(keep_vars=True)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    aliases: dict[int, list[str]] = {}  # a tied tensor under several names (T5's shared embedding)
    for k, v in state.items():
        aliases.setdefault(id(v), []).append(k)
    for name, axes in p.param_keep.items():
        base = name.split("@")[0]
        if base not in shapes:
            continue
        s = list(shapes[base])
        for axis, kept in axes:
            s[axis] = int(np.asarray(kept).size)
        for k in aliases[id(state[base])]:
            shapes[k] = tuple(s)
    return shapes


def _norms(model: nn.Module) -> dict[str, tuple[str, float]]:
    """Normalization modules with a 1-D weight: name → ("layernorm" | "rmsnorm", epsilon). RMSNorm is
    ``nn.RMSNorm`` or a Hugging Face RMSNorm (a ``variance_epsilon`` and no mean); anything else that
    shrinks is left to the run check in ``to_hf``."""
    out: dict[str, tuple[str, float]] = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.ndim != 1:
            continue
        if isinstance(m, nn.LayerNorm):
            out[name] = ("layernorm", float(m.eps))
        elif isinstance(m, nn.RMSNorm) and m.eps is not None:
            out[name] = ("rmsnorm", float(m.eps))
        elif isinstance(getattr(m, "variance_epsilon", None), float):
            out[name] = ("rmsnorm", float(m.variance_epsilon))
    return out


def norm_fix(model: nn.Module, target: Mapping[str, tuple]) -> tuple[dict[str, float], dict[str, float]]:
    """What a config needs when the hidden size shrank under the model's norms (docs/hidden_size.md):
    RMSNorm over d of the original D channels is exact with ``eps * D / d`` and its weight times
    ``sqrt(D / d)``, so (config float fields → new value, weight key → factor). A LayerNorm over a
    shrunk width keeps mean and variance over the original D (``WideLayerNorm``), which no config
    field expresses: ZigraphError naming it."""
    cfg = _config(model)
    fields: dict[str, float] = {}
    scale: dict[str, float] = {}
    for name, (kind, eps) in _norms(model).items():
        key = f"{name}.weight" if name else "weight"
        orig = tuple(model.state_dict()[key].shape)
        new = tuple(target.get(key, orig))
        if new == orig:
            continue
        if kind == "layernorm":
            raise ZigraphError(
                f"{type(model).__name__}: LayerNorm {name!r} normalizes over the pruned hidden size "
                f"({orig[0]} -> {new[0]}); the pruned model keeps its mean and variance over the original "
                f"{orig[0]} (WideLayerNorm), which no Hugging Face config expresses. Leave the hidden size "
                "whole for a round trip (select_uniform(..., kinds=hf_kinds(model, analysis))), or keep "
                "the pruned model as a torch module / ONNX"
            )
        ratio = orig[0] / new[0]
        eps_fields = [k for k, v in cfg.to_dict().items() if "eps" in k and isinstance(v, float) and v == eps]
        if not eps_fields:
            raise ZigraphError(
                f"{type(model).__name__}: RMSNorm {name!r} shrank ({orig[0]} -> {new[0]}) but no config "
                f"field holds its epsilon {eps:g} to become eps * {orig[0]}/{new[0]}"
            )
        for k in eps_fields:
            if k in fields and not math.isclose(fields[k], eps * ratio, rel_tol=1e-12):
                raise ZigraphError(
                    f"{type(model).__name__}: norms sharing {k!r} shrank by different ratios; one config "
                    "epsilon cannot hold both"
                )
            fields[k] = eps * ratio
        scale[key] = math.sqrt(ratio)
    return fields, scale


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
    """The first config of ``type(model)`` whose parameters have the ``target`` shapes, or ZigraphError.

    ``kept``: original size → kept size of each pruned kind of group (candidate field values).
    """
    return next(iter(hf_configs(model, target, kept)))


def hf_configs(model: nn.Module, target: Mapping[str, tuple], kept: Mapping[int, int] | None = None) -> Any:
    """Every candidate config giving the ``target`` shapes, fewest changed fields first (shapes can
    be ambiguous: 4 heads of 4 or 2 heads of 8 — ``to_hf`` runs each until one computes the same);
    ZigraphError when there is none."""
    cfg = _config(model)
    cls = type(model)
    orig = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if dict(target) == orig:
        yield copy.deepcopy(cfg)
        return
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
    base = _pin_head_dim(cls, cfg, base, orig)
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
    options = _relevant(cls, cfg, base, options, orig, target, set(kept or {}))
    tries, found = 0, False
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
                    found = True
                    yield cand
    if found:
        return
    bad = next((k for k in orig if tuple(target[k]) != orig[k]), "?")
    tried = ", ".join(key for key, _ in options) or "none"
    raise ZigraphError(
        f"{cls.__name__}: no config expresses the pruned shapes (e.g. {bad}: {orig.get(bad)} -> "
        f"{target.get(bad)}); fields tried: {tried}. Prune only kinds the config can hold (construct.to_hf."
        "hf_kinds), or keep the pruned model as a torch module / ONNX"
    )


def _pin_head_dim(cls: type, cfg: Any, base: dict, orig: Mapping[str, tuple]) -> dict:
    """A per-head width the config derives (Qwen2: ``hidden_size // num_attention_heads``) written out
    at its original value when the class accepts it: a shrunk hidden size must not move it (4 heads
    of 4 build the shapes of 2 heads of 8 but compute something else)."""
    width, heads = base.get("hidden_size"), base.get("num_attention_heads")
    if not (isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads == 0):
        return base
    for key in PINNABLE:
        if base.get(key) is None:
            cand = {**base, key: width // heads}
            try:
                if _shapes_of(cls, type(cfg).from_dict(cand)) == dict(orig):
                    base = cand
            except Exception:  # the config class validates its fields
                continue
    return base


def _relevant(
    cls: type,
    cfg: Any,
    base: dict,
    options: list[tuple[str, list[int]]],
    orig: Mapping,
    target: Mapping,
    kinds: Collection[int] = (),
) -> list[tuple[str, list[int]]]:
    """The candidate values that, changed alone, change no parameter the pruning keeps (the search
    then combines few); ``head_dim`` pins a derived width and is always a candidate."""
    shrinking = {k for k, s in orig.items() if tuple(target.get(k, s)) != s}
    out = []
    for key, vals in options:
        if key in PINNABLE:
            out.append((key, vals))
            continue
        keep = []
        # a derived per-head width pinned to one of its candidates is part of "alone": a hidden size
        # that shrinks also shrinks a derived head_dim (Qwen2's q/k/v biases), which the pin undoes
        pins: list[dict[str, int]] = [{}] + [{pk: pv} for pk, pvs in options if pk in PINNABLE for pv in pvs]
        for v in vals:
            for pin in pins:
                try:
                    shapes = _shapes_of(cls, type(cfg).from_dict({**base, **pin, key: v}))
                except Exception:  # the config class validates its fields
                    continue
                if shapes is None or set(shapes) != set(orig):
                    continue
                if pin and shapes == _pinned_shapes(cls, cfg, base, pin):
                    continue  # the pin alone did it
                changed = {k for k in orig if shapes[k] != orig[k]}
                # a count of a pruned kind may change nothing alone (1 head of 8 needs
                # num_attention_heads and head_dim together); else it must change a pruned parameter
                if changed <= shrinking and (changed or base[key] in kinds):
                    keep.append(v)
                    break
        if keep:
            out.append((key, keep))
    return out


def _pinned_shapes(cls: type, cfg: Any, base: dict, pin: dict) -> dict[str, tuple] | None:
    try:
        return _shapes_of(cls, type(cfg).from_dict({**base, **pin}))
    except Exception:  # the config class validates its fields
        return None


def _kept_sizes(analysis: PruneAnalysis, removed: np.ndarray) -> dict[int, int]:
    taken = np.bincount(analysis.zig_group[removed], minlength=len(analysis.groups))
    out: dict[int, int] = {}
    for g in analysis.prunable_groups:
        if taken[g.id]:
            out[g.size] = g.size - int(taken[g.id])
    return out


def hf_kinds(model: nn.Module, analysis: PruneAnalysis, max_step: int = 8) -> dict[tuple, int]:
    """The kinds of groups (``graphcore.uniform.group_kind``) a config of ``type(model)`` can shrink,
    each with its step: the fewest ZIGs per group whose removal finds a config (checked on the meta
    device). A config may accept only some counts (``hidden_size`` a multiple of the head count:
    step 4 for 4 heads), so ``select_uniform(kinds=...)`` removes a multiple of the step. Hidden sizes
    under a LayerNorm are never a kind here (``norm_fix``)."""
    out: dict[tuple, int] = {}
    for kind, groups in uniform_kinds(analysis).items():
        room = min(g.size - g.min_keep for g in groups)
        for step in range(1, min(room, max_step) + 1):
            removed = np.array(sorted(int(z) for g in groups for z in g.zig_ids[:step]), dtype=np.int64)
            target = _target_shapes(model, analysis, removed)
            try:
                norm_fix(model, target)
                hf_config_for(model, target, _kept_sizes(analysis, removed))
            except ZigraphError as exc:
                if "LayerNorm" in str(exc):
                    break  # no count of a LayerNorm's width is expressible
                continue
            out[kind] = step
            break
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
        shape = tuple(d if isinstance(d, int) else 1 for d in (v.shape or ()))
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
    if small is None:
        small = to_torch(model, analysis, ids)
    try:
        dtype = next(model.parameters()).dtype
    except StopIteration:
        dtype = torch.float32
    fields, scale = norm_fix(model, target)
    worst: float | None = None
    unsaved: list[str] = []
    for new_cfg in _configs_or_why(model, analysis, target, ids):
        for k, v in fields.items():
            setattr(new_cfg, k, v)
        hf = type(model)(new_cfg).to(dtype)
        state = _state_for(model, small, hf.state_dict().keys())
        for k, f in scale.items():
            state[k] = state[k] * f
        hf.load_state_dict(state, strict=True)
        hf.train(model.training)
        err = _error(hf, small, analysis, seed)
        if err <= RTOL:
            return hf
        worst = err if worst is None else min(worst, err)
        unsaved = unsaved or _unsaved_buffers(model, hf)
    hint = (
        f"; these buffers are not saved by save_pretrained and differ from what the config derives: "
        f"{', '.join(unsaved[:3])}"
        if unsaved
        else ""
    )
    raise ZigraphError(
        f"{type(model).__name__}: the configs {type(cfg).__name__} that build the pruned shapes compute "
        f"something else (max relative error {worst:.2e}){hint}; keep it as a torch module / ONNX"
        f"{_dims_hint(analysis)}"
    )


def _dims_hint(analysis: PruneAnalysis) -> str:
    """Why pruned head dimensions are no config (empty for an analysis with whole heads)."""
    if getattr(analysis, "attention", "dims") != "dims":
        return ""
    return (
        ". If attention head dimensions were pruned: a Hugging Face config has one head_dim for "
        "queries/keys and values/outputs, and derives the rotary frequencies and the softmax scale from "
        "it, while the pruned model keeps the original ones; analyze with attention='heads' "
        "(--attention heads) to prune whole heads for a round trip"
    )


def _configs_or_why(
    model: nn.Module, analysis: PruneAnalysis, target: Mapping[str, tuple], ids: np.ndarray
) -> Any:
    """``hf_configs``; when none fits, the error says why head dimensions cannot be a config."""
    try:
        yield from hf_configs(model, target, _kept_sizes(analysis, ids))
    except ZigraphError as exc:
        raise ZigraphError(f"{exc}{_dims_hint(analysis)}") from None


def _unsaved_buffers(model: nn.Module, hf: nn.Module) -> list[str]:
    """Non-persistent buffers of ``model`` (rotary ``inv_freq``) whose values a model built from the
    config does not reproduce: no checkpoint can carry them."""
    fresh = dict(hf.named_buffers())
    out = []
    for mod_name, m in model.named_modules():
        for b in sorted(getattr(m, "_non_persistent_buffers_set", ())):
            name = f"{mod_name}.{b}" if mod_name else b
            mine, theirs = getattr(m, b, None), fresh.get(name)
            if (
                isinstance(mine, torch.Tensor)
                and isinstance(theirs, torch.Tensor)
                and mine.shape == theirs.shape
            ) and not torch.equal(mine.to(theirs.dtype), theirs):
                out.append(name)
    return out


def _error(hf: nn.Module, small: nn.Module, analysis: PruneAnalysis, seed: int) -> float:
    """Max relative error of ``hf`` against the pruned module on random inputs of the traced shapes."""
    args, kwargs = _example_call(hf, analysis, seed)

    def run(m: nn.Module) -> list[np.ndarray]:
        if not kwargs:
            return run_torch(m, args)
        return run_torch(_Kw(m, list(kwargs)), (*args, *kwargs.values()))

    return compare_outputs([run(small)], [run(hf)], RTOL).max_rel


class _Kw(nn.Module):
    """Calls ``inner`` with the trailing positional inputs passed by name (for ``run_torch``)."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self, *xs: torch.Tensor) -> Any:
        n = len(xs) - len(self.names)
        return self.inner(*xs[:n], **dict(zip(self.names, xs[n:])))
