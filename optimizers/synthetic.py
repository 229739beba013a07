"""Hand-built analyses for chains of Linear layers: tests, benchmarks and examples without a frontend.

The analysis of ``Linear → act → Linear → ... → Linear`` is known in closed form: hidden unit j of
layer i is one ZIG made of row j of ``layer_i.weight``, ``layer_i.bias[j]`` and column j of
``layer_{i+1}.weight``; each hidden layer is one prunable node group; the output layer is not pruned.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from graphcore.groups import NodeGroup, PruneAnalysis
from graphcore.ir import Graph

__all__ = ["linear_chain_analysis"]


def linear_chain_analysis(model: nn.Module, layers: list[str], *, min_keep: int = 1) -> PruneAnalysis:
    """The PruneAnalysis of the Linear modules named ``layers`` (in forward order) inside ``model``."""
    modules = dict(model.named_modules())
    linears = [modules[name] for name in layers]
    if not all(isinstance(m, nn.Linear) for m in linears):
        raise TypeError("linear_chain_analysis expects the names of nn.Linear modules")
    groups: list[NodeGroup] = []
    param_axes: dict[tuple[str, int], np.ndarray] = {}
    zig_group: list[np.ndarray] = []
    first = 0
    for i, (name, layer) in enumerate(zip(layers[:-1], linears[:-1])):
        width = layer.out_features
        ids = np.arange(first, first + width, dtype=np.int64)
        nxt = layers[i + 1]
        param_axes[(f"{name}.weight", 0)] = ids
        if layer.bias is not None:
            param_axes[(f"{name}.bias", 0)] = ids
        param_axes[(f"{nxt}.weight", 1)] = ids
        params = [(f"{name}.weight", 0), (f"{nxt}.weight", 1)]
        if layer.bias is not None:
            params.insert(1, (f"{name}.bias", 0))
        groups.append(
            NodeGroup(id=i, zig_ids=ids, params=params, prunable=True, min_keep=min_keep, nodes=[name])
        )
        zig_group.append(np.full(width, i, dtype=np.int64))
        first += width
    named = dict(model.named_parameters())
    return PruneAnalysis(
        graph=Graph(name="linear_chain", fmt="torch"),  # hand-built: no traced graph behind it
        groups=groups,
        zig_group=np.concatenate(zig_group) if zig_group else np.zeros(0, dtype=np.int64),
        param_axes=param_axes,
        trainable={n: p.requires_grad for n, p in named.items()},
        param_shapes={n: tuple(p.shape) for n, p in named.items()},
        params_total=sum(p.numel() for p in named.values()),
    )
