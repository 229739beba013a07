"""Keep the original count of a statistic whose axes shrank, in a torch FX graph (docs/hidden_size.md).

The torch counterpart of ``construct/onnx_renorm.py``; the same nodes (``construct/renorm_plan.py``),
the same algebra:

- a mean (``torch.mean``, ``Tensor.mean``, ``aten.mean``) is followed by ``* (d / D)``;
- a LayerNorm becomes ``WideLayerNorm`` (an ``nn.LayerNorm`` that remembers its original width) or,
  for a functional call, ``layer_norm_full``: mean and variance over the original count;
- an ``nn.RMSNorm`` with a weight keeps its class, with ``eps * D / d`` and its weight times
  ``sqrt(D / d)``; a functional one (or one without weight) becomes ``rms_norm_full``.

Every replacement is a function or a module of this package, so ``construct/torch_save.py`` can write
and read the result (``construct`` is a trusted package there) and ``torch.onnx.export`` traces it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence

import torch
import torch.fx as fx
from torch import nn

from construct.renorm_plan import Counted, counted
from graphcore.errors import InternalError
from graphcore.groups import PruneAnalysis
from graphcore.shrink import ShrinkPlan

__all__ = ["WideLayerNorm", "layer_norm_full", "lower_counts", "rms_norm_full"]


def _stats(x: torch.Tensor, k: int, full: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 1 / sqrt(var + eps) over the last ``k`` axes of ``x``, as if the ``full - n`` removed
    elements (exactly zero) were still there: mean = sum / D, var = (sum((x-mean)^2) + (D-n) mean^2) / D."""
    dims = tuple(range(-k, 0))
    n = math.prod(x.shape[-k:])
    mean = x.sum(dim=dims, keepdim=True) / full
    centered = x - mean
    var = ((centered * centered).sum(dim=dims, keepdim=True) + (full - n) * mean * mean) / full
    return mean, torch.rsqrt(var + eps)


def layer_norm_full(
    input: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    cudnn_enable: bool = True,
    *,
    full_count: int,
) -> torch.Tensor:
    """``F.layer_norm`` (and ``aten.layer_norm``'s arguments) over the original count ``full_count``
    of normalized elements; the removed ones were zero. Computed in float32 for lower precisions."""
    k = len(normalized_shape)
    x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
    mean, rstd = _stats(x, k, full_count, eps)
    y = ((x - mean) * rstd).to(input.dtype)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm_full(
    input: torch.Tensor,
    normalized_shape: Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float | None = None,
    *,
    full_count: int,
) -> torch.Tensor:
    """``F.rms_norm`` over the original count ``full_count``: x / sqrt(sum(x^2) / D + eps) * weight."""
    k = len(normalized_shape)
    if eps is None:
        eps = torch.finfo(input.dtype).eps
    dims = tuple(range(-k, 0))
    y = input * torch.rsqrt((input * input).sum(dim=dims, keepdim=True) / full_count + eps)
    return y * weight if weight is not None else y


class WideLayerNorm(nn.LayerNorm):
    """An ``nn.LayerNorm`` whose normalized elements were ``full_width`` before pruning: the removed
    ones were exactly zero, so the statistics are taken as if they were still there."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        full_width: int = 0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.full_width = int(full_width)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        full = self.full_width or math.prod(self.normalized_shape)
        return layer_norm_full(
            input, self.normalized_shape, self.weight, self.bias, self.eps, full_count=full
        )

    @classmethod
    def from_module(cls, mod: nn.LayerNorm, full_width: int) -> WideLayerNorm:
        new = cls(
            mod.normalized_shape,
            mod.eps,
            mod.elementwise_affine,
            mod.bias is not None,
            full_width,
            device=torch.device("meta"),
        )
        new.weight, new.bias = mod.weight, mod.bias  # the pruned tensors themselves (stay tied)
        new.train(mod.training)
        return new


def lower_counts(
    small: fx.GraphModule,
    nodes: dict[str, fx.Node],
    analysis: PruneAnalysis,
    p: ShrinkPlan,
    skip: Collection[str] = frozenset(),
) -> None:
    """Rewrite, in ``small``, every statistic that ``p`` takes elements from (``construct.torch_construct
    .lower`` calls this once the weights are sliced)."""
    done: set[str] = set()
    folded: dict[int, tuple[int, int]] = {}  # module id -> (D, d) folded into it (a module called twice)
    for c in counted(analysis.graph, p, skip):
        fx_name = str(c.node.origin)
        if fx_name in done:
            raise InternalError(f"{c.node.label}: two counted statistics in one FX node")
        done.add(fx_name)
        node = nodes.get(fx_name)
        if node is None:
            raise InternalError(f"{c.node.label}: its FX node '{fx_name}' is gone")
        if c.info.kind == "mean":
            _mean(small, node, c)
        elif node.op == "call_module":
            _norm_module(small, node, c, folded)
        elif node.op == "call_function":
            target = layer_norm_full if c.info.kind == "layernorm" else rms_norm_full
            node.target = target
            node.kwargs = {**node.kwargs, "full_count": c.full}
        else:
            raise InternalError(f"{c.node.label}: no torch rewrite for a {node.op} normalization")


def _mean(small: fx.GraphModule, node: fx.Node, c: Counted) -> None:
    with small.graph.inserting_after(node):
        scaled = small.graph.call_function(operator.mul, (node, c.kept / c.full))
    node.replace_all_uses_with(scaled, delete_user_cb=lambda user: user is not scaled)


def _norm_module(
    small: fx.GraphModule, node: fx.Node, c: Counted, folded: dict[int, tuple[int, int]]
) -> None:
    mod = small.get_submodule(str(node.target))
    parent_path, _, attr = str(node.target).rpartition(".")
    parent = small.get_submodule(parent_path) if parent_path else small
    if c.info.kind == "layernorm" and isinstance(mod, nn.LayerNorm):
        setattr(parent, attr, WideLayerNorm.from_module(mod, c.full))
        return
    rms = getattr(nn, "RMSNorm", None)
    if c.info.kind == "rmsnorm" and rms is not None and isinstance(mod, rms):
        ratio = c.full / c.kept
        x = c.node.input(0)
        dtype = getattr(torch, x.dtype) if x is not None and x.dtype else torch.float32
        eps = mod.eps if mod.eps is not None else torch.finfo(dtype).eps
        if mod.weight is not None:
            if id(mod) in folded:  # one module called at several places: folded once
                if folded[id(mod)] != (c.full, c.kept):
                    raise InternalError(f"{c.node.label}: one norm module normalizes two different widths")
                return
            folded[id(mod)] = (c.full, c.kept)
            mod.eps = eps * ratio
            with torch.no_grad():
                mod.weight.mul_(math.sqrt(ratio))
            return
        shape = tuple(mod.normalized_shape)
        with small.graph.inserting_after(node):
            fn = small.graph.call_function(
                rms_norm_full, (node.args[0], shape, None, eps), {"full_count": c.full}
            )
        node.replace_all_uses_with(fn)
        small.graph.erase_node(node)
        return
    raise InternalError(f"{c.node.label}: no torch rewrite for module {type(mod).__name__}")
