"""Regressions found running torchvision families beyond the zoo (video, segmentation, detection
backbones, optical flow) through the public surface, each reduced to the smallest model that shows it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from construct.torch_verify import randomize_
from zigraph.prune_check import prune_check


class _NormNet(nn.Module):
    """conv -> norm -> relu, then a conv (whose input slices go with the channel) or a channel sum
    (which needs the removed channel to be exactly zero); optionally a constant added before the norm,
    so that a zeroed channel is not zero when it reaches the norm."""

    def __init__(self, norm: nn.Module, constant: bool, channel_sum: bool):
        super().__init__()
        self.c, self.n, self.d = nn.Conv2d(3, 8, 3), norm, nn.Conv2d(8, 4, 3)
        self.constant, self.channel_sum = constant, channel_sum

    def forward(self, x):
        h = self.c(x)
        if self.constant:
            h = h + torch.arange(14.0).view(1, 1, 1, 14)
        y = torch.relu(self.n(h))
        return y.sum(1) if self.channel_sum else self.d(y)


NORMS = {
    "instance": lambda: nn.InstanceNorm2d(8),  # RAFT's feature encoder: affine=False
    "instance_affine": lambda: nn.InstanceNorm2d(8, affine=True),
    "batch_unscaled": lambda: nn.BatchNorm2d(8, affine=False),
}


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("constant", [False, True])
@pytest.mark.parametrize("channel_sum", [False, True])
def test_norm_without_affine_prunes_exactly(norm, constant, channel_sum):
    """A norm with no scale and no bias (torch's affine=False) was emitted with absent operands, and the
    op rule linked the absent ones to the channel axis, which pinned it ("linked to an axis whose size is
    unknown"): RAFT's encoder had no prunable ZIG from torch. Now the channel prunes; where a channel sum
    needs the removed channel to be zero, it prunes only when the norm keeps it zero."""
    torch.manual_seed(0)
    model = randomize_(_NormNet(NORMS[norm](), constant, channel_sum), seed=0).eval()
    r = prune_check(model, torch.randn(1, 3, 16, 16), sparsity=0.5, criterion="random", samples=3, multiple=1)
    groups = {g.size: g for g in r.analysis.report().groups}
    assert r.torch_rel <= 1e-5, r.torch_rel
    # A channel sum sees the removed channel: it must stay unprunable where that channel is not known to
    # be zero after the norm: an unscaled InstanceNorm of a constant-shifted channel, and a BatchNorm
    # without scale (its running mean is a buffer, not known to be zeroed). An affine InstanceNorm's
    # zeroed scale and bias zero the channel whatever reaches it.
    blocked = channel_sum and (norm == "batch_unscaled" or (constant and norm == "instance"))
    assert groups[8].prunable is not blocked, groups[8].reason
    if not blocked:
        assert r.removed_zigs == 4
