"""Regressions found on Hugging Face families beyond the covered zoo (docs/coverage.md): each test is
the smallest torch module spelling the construct the family uses, checked against the zeroed original.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphcore
from construct.torch_construct import to_torch
from construct.torch_verify import randomize_, verify_torch, zeroed_copy
from frontends.torch_frontend import load_torch


def _prunes_exactly(model: nn.Module, x: torch.Tensor, param: str, tracer: str) -> None:
    """The group of ``param``'s output channels is prunable, and removing half of it is exact."""
    g = load_torch(model, x)
    assert g.meta["tracer"] == tracer
    a = graphcore.analyze(g)
    grp = next(gr for gr in a.groups if (param, 0) in gr.params)
    assert grp.prunable, grp.reason
    chosen = grp.zig_ids[: len(grp.zig_ids) // 2]
    zeroed = zeroed_copy(model, a, chosen)
    small = to_torch(zeroed, a)
    assert verify_torch(zeroed, small, x).max_rel <= 1e-5
    with torch.no_grad():
        assert not torch.allclose(zeroed(x), model(x))  # the zeroing changed the output: the check can fail


class WeightT(nn.Module):
    """Falcon's ``FalconLinear``: ``x @ self.weight.T`` (torch.export's ``aten.numpy_T``), and ``.mT``;
    a branch on a shape makes torch.fx give up, so torch.export traces it."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Parameter(torch.randn(16, 8))
        self.down = nn.Parameter(torch.randn(4, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x @ self.up.T)
        if h.shape[-1] > 4:
            h = h * 2
        return (self.down.unsqueeze(0).mT.mT @ h.mT).mT


def test_weight_transposed_by_attribute_in_an_exported_graph_is_prunable():
    torch.manual_seed(0)
    _prunes_exactly(randomize_(WeightT()).eval(), torch.randn(2, 3, 8), "up", "export")


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
