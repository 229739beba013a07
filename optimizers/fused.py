"""Statistics steps of the group optimizers on the fused CPU kernels (``optimizers/native.py``).

Why a second path: the eager one (``ZigLayout.reduce``, ``cross``, ``scale_``) makes one pass over a
parameter per statistic and per update; :class:`Batch` hands every parameter the kernels take to one
C call per sweep, which does the same arithmetic in two reads of each. They apply to float32 CPU
parameters whose ZIG axes are the leading two of their block shape (conv and linear weights by rows,
columns or both; biases and norms; H2SPG's whole tensors) stepped by SGD without Nesterov;
everything else, and every machine where the kernels cannot be built, keeps the eager path. The
results are the eager path's up to float rounding; their per-ZIG sums are float32, the accumulation
dtype of a float32 layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from optimizers.layout import ParamAxes
from optimizers.native import Kernels, ptr

__all__ = ["Batch", "View", "plain_f32", "sgd_operands", "view_of"]


@dataclass(frozen=True)
class View:
    """A parameter as the kernels see it, ``[n0, n1, b]``, and where the owners of its rows and
    columns sit in the layout's per-index vector (``ZigLayout.at_index``; None: not owned here)."""

    n0: int
    n1: int
    b: int
    row_at: int | None
    col_at: int | None
    uniform: bool  # the whole tensor is one ZIG's: one entry in the per-index vector, one total


def view_of(slot: ParamAxes, start: int) -> View | None:
    """The kernel view of a parameter's slot whose axes start at ``start`` in the layout's
    per-index vector, or None for a layout the kernels do not take."""
    blocks, owned = slot.blocks, slot.owned_pos
    if slot.is_vector:  # a bias, a norm's scale: one entry per index even when one ZIG owns them all
        return View(blocks[0], 1, 1, start, None, False)
    b = blocks[2] if len(blocks) == 3 else 1
    if owned == (0,) and len(blocks) == 2:
        return View(blocks[0], 1, blocks[1], start, None, slot.uniform)
    if owned == (0, 1) and len(blocks) in (2, 3):
        return View(blocks[0], blocks[1], b, start, start + blocks[0], False)
    if owned == (1,) and len(blocks) in (2, 3):
        return View(blocks[0], blocks[1], b, None, start, slot.uniform)
    return None


def sgd_operands(
    p: torch.Tensor, grad: torch.Tensor, state: Any, group: dict
) -> tuple[torch.Tensor | None, float, float, float] | None:
    """``(momentum buffer or None, momentum, 1 − dampening, weight decay)`` when the kernels can
    compute this parameter's SGD direction themselves, else None (the eager path handles it: Adam,
    Nesterov, the first momentum step, which creates the buffer, or D = g + wd·x without momentum,
    which no tensor would hold for the second sweep)."""
    if group["variant"] != "sgd" or group["nesterov"]:
        return None
    if not plain_f32(p) or not plain_f32(grad):
        return None
    momentum, wd = float(group["momentum"]), float(group["weight_decay"])
    if momentum == 0:
        return (None, 0.0, 1.0, 0.0) if wd == 0 else None
    buf = state.get("momentum_buffer")
    if not isinstance(buf, torch.Tensor) or not plain_f32(buf) or buf.shape != p.shape:
        return None
    return buf, momentum, 1.0 - float(group["dampening"]), wd


def plain_f32(t: torch.Tensor) -> bool:
    """Whether the kernels can read ``t`` in place (float32, CPU, contiguous, dense)."""
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() and not t.is_sparse


# the flags of a parameter's row in Batch.meta (fused_step.c: F_UNIFORM, F_STEP, F_SKIP)
UNIFORM, STEP, SKIP = 1, 2, 4


class Batch:
    """Parameters handed to the whole-model kernels in one call per sweep.

    ``meta`` has one row of seven int64 per parameter (n0, n1, b, row_at, col_at, flags, 0; −1 where
    an axis is not owned), built once; per step, only the flags and the tensors' addresses change.
    """

    def __init__(self, views: list[View | None]) -> None:
        self.views = views
        meta = np.zeros((len(views), 7), dtype=np.int64)
        for i, v in enumerate(views):
            if v is not None:
                at = [-1 if a is None else a for a in (v.row_at, v.col_at)]
                meta[i, :6] = (v.n0, v.n1, v.b, at[0], at[1], UNIFORM if v.uniform else 0)
        self.meta = meta

    def sweep1(
        self,
        k: Kernels,
        members: list[int],
        tensors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
        operands: tuple[float, float, float],
        step: list[bool],
        lr: float,
        decay: float,
        keep_index: torch.Tensor | None,
        out: torch.Tensor,
    ) -> None:
        """Sweep 1 of parameters ``members`` (their ``(x, g, momentum buffer or None)``): statistics
        into ``out`` ([3, per-index length]: x², x·D, D²); those with ``step`` also take the plain step."""
        meta = self.meta[members].copy()
        meta[:, 5] |= np.where(step, STEP, 0)
        ptrs = np.array([[ptr(x), ptr(g), 0 if b is None else ptr(b)] for x, g, b in tensors], dtype=np.int64)
        momentum, damp1, wd = operands
        rc = k.sweep1(
            len(members), meta.ctypes.data, ptrs.ctypes.data, momentum, damp1, wd, decay, lr,
            ptr(keep_index), ptr(out), out.shape[1], torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise MemoryError("fused optimizer kernel: out of memory for its scratch sums")

    def sweep2(
        self,
        k: Kernels,
        members: list[int],
        tensors: list[tuple[torch.Tensor, torch.Tensor | None]],
        skip: list[bool],
        lr: float,
        decay: float,
        coef_index: torch.Tensor | None,
        keep_index: torch.Tensor | None,
        cross: torch.Tensor,
    ) -> None:
        """Sweep 2 of parameters ``members`` (their ``(x, D or None)``) but those in ``skip``; cross
        terms into ``cross`` (per index)."""
        meta = self.meta[members].copy()
        meta[:, 5] |= np.where(skip, SKIP, 0)
        ptrs = np.array([[ptr(x), 0 if d is None else ptr(d)] for x, d in tensors], dtype=np.int64)
        rc = k.sweep2(
            len(members), meta.ctypes.data, ptrs.ctypes.data, decay, lr, ptr(coef_index),
            ptr(keep_index), ptr(cross), cross.numel(), torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise MemoryError("fused optimizer kernel: out of memory for its scratch sums")
