"""Selection uniform across layers: every group of one kind loses the same count of ZIGs.

Why: a Hugging Face config holds one width per kind (``intermediate_size``, ``num_attention_heads``)
for all layers, so a pruned model is loadable with ``from_pretrained`` only when every layer kept the
same count (``construct.to_hf``). The kind of a group is found from its parameter names alone — the
layer index is any all-digit name component — never from the model's name. Kept apart from
``graphcore.select`` (the default rule); this builds on ``select_zigs``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import numpy as np

from graphcore.groups import NodeGroup, PruneAnalysis
from graphcore.select import select_zigs

__all__ = ["group_kind", "select_uniform", "uniform_kinds"]

_LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


def group_kind(group: NodeGroup) -> tuple:
    """What a node group is, up to its layer: its parameter axes with every numeric name component
    (``layers.3.mlp``, ``h.3.attn``) replaced by ``*``, plus its size. Groups of the same kind in
    different layers (the MLP width of each block) must keep the same count to fit one config field."""
    params = sorted({(_LAYER_INDEX.sub("*", name.split("@")[0]), axis) for name, axis in group.params})
    return (group.size, tuple(params))


def uniform_kinds(analysis: PruneAnalysis) -> dict[tuple, list[NodeGroup]]:
    """The prunable groups by ``group_kind``."""
    out: dict[tuple, list[NodeGroup]] = {}
    for g in analysis.prunable_groups:
        out.setdefault(group_kind(g), []).append(g)
    return out


def select_uniform(
    analysis: PruneAnalysis,
    sparsity: float,
    scores: np.ndarray | None = None,
    criterion: str = "l2",
    seed: int | None = 0,
    kinds: Collection[tuple] | None = None,
) -> np.ndarray:
    """Like ``select_zigs``, but every group of one kind (``group_kind``) loses the same count.

    The count per kind is the mean of what ``select_zigs`` takes from that kind's groups (rounded, and
    at most ``size - min_keep``): the same allocation across kinds, made uniform across layers. Inside
    a group the lowest-scored ZIGs go (for ``random``, a seeded draw). ``kinds``: only these kinds are
    pruned (those a Hugging Face config can express, ``construct.to_hf.hf_kinds``); a mapping gives
    each kind a step, and its count is rounded down to a multiple of it (a config that accepts only
    some widths: ``hidden_size`` a multiple of the head count). Kinds left out stay whole, e.g. the
    hidden size under a LayerNorm when the target is a Hugging Face round trip.
    """
    # multiple=1: the counts per kind are rounded below, to each kind's step; rounding the base selection
    # per group first would give back a kind's whole share when its groups drew just under a multiple
    base = select_zigs(analysis, sparsity, scores=scores, criterion=criterion, seed=seed, multiple=1)
    taken = np.bincount(analysis.zig_group[base], minlength=len(analysis.groups))
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for kind, groups in uniform_kinds(analysis).items():
        if kinds is not None and kind not in kinds:
            continue
        room = min(g.size - g.min_keep for g in groups)
        count = min(int(np.floor(np.mean([taken[g.id] for g in groups]) + 0.5)), room)  # half up
        if isinstance(kinds, Mapping):
            count -= count % max(int(kinds[kind]), 1)
        if count <= 0:
            continue
        for g in groups:
            ids = np.asarray(g.zig_ids, dtype=np.int64)
            if criterion == "random" or scores is None:
                order = ids[rng.permutation(ids.size)]
            else:
                order = ids[np.argsort(scores[ids], kind="stable")]
            chosen.append(order[:count])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)
