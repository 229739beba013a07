"""Runtime-friendly widths: how many ZIGs of each group the default selection keeps a multiple of.

Why: a pruned model is only faster if its runtime keeps its fast kernels. onnxruntime's CPU convolutions
run in the blocked NCHWc layout only when every channel count is a multiple of the block; MobileNetV2
pruned to ragged widths (15, 41, 67, ...) ran 40 of its 52 convolutions unblocked with 15 layout
reorders around them, at 0.84-0.91 of the full model's latency for 0.28 of its FLOPs, and at 0.35-0.43
once every kept width was a multiple of 8 (bench/ort_latency.py). Which multiple a kernel likes is a
fact about the op, declared once in the op table (``OpRule.width_multiple``); this module turns those
facts into one multiple per group, counted in ZIGs:

- a group's channel multiple is the least common multiple of those declared by the ops that read or
  write its channels (the built-in ones are powers of two: the largest of them);
- a ZIG may span several channels of an axis (a whole attention head spans its head dimension): the
  multiple in ZIGs is ``m / gcd(m, channels per ZIG)``, so a group of 64-wide heads needs no rounding;
- a group too small to keep an aligned width while losing channels (fewer than two multiples) gets 1:
  it is pruned freely, as the user asked for a sparsity.
"""

from __future__ import annotations

from math import gcd, lcm

import numpy as np

from graphcore.errors import ZigraphError
from graphcore.groups import PruneAnalysis
from graphcore.ops import rule_for

__all__ = ["channel_multiples", "group_multiples", "parse_multiple"]


def channel_multiples(analysis: PruneAnalysis) -> np.ndarray:
    """Per group: the least common multiple of the kept-channel multiples its nodes' ops declare."""
    by_name = {n.name: n for n in analysis.graph.nodes}
    out = np.ones(len(analysis.groups), dtype=np.int64)
    for g in analysis.groups:
        for name in g.nodes:
            node = by_name.get(name)
            rule = rule_for(node) if node is not None else None
            if node is not None and rule is not None:
                out[g.id] = lcm(int(out[g.id]), rule.width_multiple_of(node))
    return out


def _channels_per_zig(analysis: PruneAnalysis) -> np.ndarray:
    """Per ZIG: the fewest elements it owns on any one parameter axis (1 where it owns none)."""
    per = np.full(analysis.num_zigs, np.iinfo(np.int64).max, dtype=np.int64)
    for owner in analysis.param_axes.values():
        hit = owner[owner >= 0]
        if hit.size:
            counts = np.bincount(hit, minlength=analysis.num_zigs)
            seen = counts > 0
            per[seen] = np.minimum(per[seen], counts[seen])
    per[per == np.iinfo(np.int64).max] = 1
    return per


def group_multiples(analysis: PruneAnalysis, channels: int | None = None) -> np.ndarray:
    """Per group: keep a multiple of this many ZIGs.

    ``channels=None``: each group's multiple from the op table, by the rule of the module docstring.
    An integer imposes that channel multiple on every group instead (``--multiple N``), converted to
    ZIGs the same way but without the small-group exception: the user asked for it.
    """
    wanted = channel_multiples(analysis) if channels is None else None
    per_zig = _channels_per_zig(analysis)
    out = np.ones(len(analysis.groups), dtype=np.int64)
    for g in analysis.groups:
        m = int(wanted[g.id]) if wanted is not None else channels
        if m is None or m <= 1 or g.size == 0:
            continue
        zigs = m // gcd(m, int(per_zig[g.zig_ids].min()))
        out[g.id] = zigs if channels is not None or g.size >= 2 * zigs else 1
    return out


def parse_multiple(value: str | int | None) -> int | None:
    """``--multiple`` as the selection takes it: ``auto`` (or None) for the op table's per-group
    multiples, else an integer >= 1 imposed on every group (1: no rounding)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise ZigraphError(f"--multiple must be auto or an integer >= 1, got {value!r}") from None
    if n < 1:
        raise ZigraphError(f"--multiple must be auto or an integer >= 1, got {n}")
    return n
