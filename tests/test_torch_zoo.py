"""torchvision families with random weights, pruned at 50% from torch: exact in torch and onnxruntime.

The default run covers a small representative subset at small resolutions (a CNN with residuals, one
with SE gates and hard-swish, channel shuffles, fire-module concats, and a tiny ViT and Swin); the
whole zoo at full resolution is marked ``slow`` (``pytest -m slow``), as is the onnxruntime check of
every family. ``scripts/torch_zoo_table.py`` writes the same numbers to ``docs/torch_zoo.md``.
"""

from __future__ import annotations

import pytest
import torch

from construct.torch_verify import randomize_
from zigraph.prune_check import prune_check

torchvision = pytest.importorskip("torchvision")

FULL = [
    "resnet18", "resnet50", "vgg11_bn", "densenet121", "mobilenet_v2", "mobilenet_v3_large",
    "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1", "mnasnet1_0",
    "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t",
]  # fmt: skip
NEEDS_224 = {"vit_b_16", "swin_t", "maxvit_t"}


def build(name: str) -> torch.nn.Module:
    """A torchvision model (or a tiny variant for the default run) with random, non-degenerate weights."""
    models = torchvision.models
    if name == "tiny_vit":
        m = models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                     mlp_dim=64, num_classes=10)  # fmt: skip
    elif name == "tiny_swin":
        m = models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                   window_size=[4, 4], num_classes=10)  # fmt: skip
    else:
        m = getattr(models, name)(weights=None)
    return randomize_(m, seed=0).eval()


def resolution(name: str, small: bool) -> int:
    if name in NEEDS_224:
        return 224
    if name == "tiny_vit":
        return 32
    return 64 if small else 224


DEFAULT = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_0", "tiny_vit", "tiny_swin"]


@pytest.mark.parametrize("name", DEFAULT)
def test_zoo_subset_prunes_exactly(name):
    torch.manual_seed(0)
    x = torch.randn(1, 3, resolution(name, True), resolution(name, True))
    # multiple=1: this measures exactness at half the ZIGs, not the default runtime-width rounding
    r = prune_check(build(name), x, sparsity=0.5, criterion="random", samples=2, multiple=1)
    assert r.torch_rel <= 1e-4, r.torch_rel
    assert r.kept <= 0.9, r.kept
    assert r.removed_zigs >= 0.45 * r.prunable_zigs


def test_zoo_subset_in_onnxruntime(tmp_path):
    x = torch.randn(1, 3, 32, 32)
    r = prune_check(build("tiny_vit"), x, sparsity=0.5, criterion="l2", onnx_path=str(tmp_path / "vit.onnx"))
    assert r.torch_rel <= 1e-4 and r.ort_rel <= 1e-4, r


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_zoo_full_prunes_exactly_in_torch_and_onnxruntime(name, tmp_path):
    torch.manual_seed(0)
    size = 224 if name in NEEDS_224 else 96
    x = torch.randn(1, 3, size, size)
    r = prune_check(build(name), x, sparsity=0.5, criterion="l2", onnx_path=str(tmp_path / f"{name}.onnx"))
    assert r.torch_rel <= 1e-4, r.torch_rel
    assert r.ort_rel <= 1e-4, r.ort_rel
    assert r.kept <= 0.9, r.kept
