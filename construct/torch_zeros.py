"""Which ZIGs a torch model has removed: the ones whose slices are exactly zero.

Any optimizer that writes exact zeros works with construct, because this is the only signal construct
reads. A ZIG counts as removed when every slice it owns on a *trainable* parameter is exactly zero
(buffers such as BatchNorm running statistics never decide); only ZIGs of prunable groups qualify, and a
group always keeps ``min_keep`` channels — when more of its ZIGs are zero, the lowest ids stay (they are
zero, so keeping them changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from graphcore.groups import PruneAnalysis

__all__ = ["model_tensors", "removed_from_zeros", "trainable_arrays", "zero_zigs"]


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by every FQN they are reachable under (tied weights appear twice)."""
    out: dict[str, torch.Tensor] = dict(model.named_buffers(remove_duplicate=False))
    out.update(dict(model.named_parameters(remove_duplicate=False)))
    return out


def _nonzero_along(t: torch.Tensor, axis: int) -> np.ndarray:
    with torch.no_grad():
        flags = t.detach().ne(0).movedim(axis, 0).reshape(t.shape[axis], -1).any(dim=1)
    return flags.cpu().numpy()


def removed_from_zeros(model: nn.Module, analysis: PruneAnalysis) -> np.ndarray:
    """ZIG ids (sorted) whose trainable slices in ``model`` are all exactly zero."""
    tensors = model_tensors(model)
    nz = analysis.num_zigs
    seen = np.zeros(nz, dtype=bool)
    nonzero = np.zeros(nz, dtype=bool)
    for (name, axis), owner in analysis.param_axes.items():
        if not analysis.trainable.get(name):
            continue
        t = tensors.get(name)
        if t is None or t.dim() <= axis or t.shape[axis] != owner.shape[0]:
            continue
        hit = owner >= 0
        seen[owner[hit]] = True
        flags = _nonzero_along(t, axis)
        nonzero[owner[hit & flags]] = True
    zero = seen & ~nonzero
    out: list[np.ndarray] = []
    for g in analysis.groups:
        if not g.prunable:
            continue
        z = g.zig_ids[zero[g.zig_ids]]
        room = g.size - g.min_keep
        if room <= 0:
            continue
        if z.size > room:
            z = z[z.size - room :]
        out.append(z)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def zero_zigs(model: nn.Module, analysis: PruneAnalysis, zig_ids: Iterable[int]) -> None:
    """Write exact zeros into every trainable slice of ``zig_ids`` (what a group optimizer ends with)."""
    tensors = model_tensors(model)
    with torch.no_grad():
        for s in analysis.slices(np.asarray(list(zig_ids), dtype=np.int64).tolist()):
            if not analysis.trainable.get(s.param):
                continue
            t = tensors.get(s.param)
            if t is None:
                continue
            idx = torch.as_tensor(s.indices, dtype=torch.long, device=t.device)
            t.index_fill_(s.axis, idx, 0.0)


def trainable_arrays(model: nn.Module, analysis: PruneAnalysis) -> dict[str, np.ndarray]:
    """The model's trainable parameters that the analysis names, as numpy arrays (``graphcore.select
    .zig_norms`` scores them). CPU float tensors are shared, not copied; bfloat16 is widened exactly."""
    tensors = model_tensors(model)
    out: dict[str, np.ndarray] = {}
    for name, _ in analysis.param_axes:
        t = tensors.get(name)
        if t is None or name in out or not analysis.trainable.get(name):
            continue
        t = t.detach()
        out[name] = (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy()
    return out
