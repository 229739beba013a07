"""Regressions found on Hugging Face families beyond the covered zoo (docs/coverage.md): each test is
the smallest torch module spelling the construct the family uses, checked against the zeroed original.
"""

from __future__ import annotations

import numpy as np
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


class GlobalResponseNorm(nn.Module):
    """ConvNeXt V2's block: ``linalg.vector_norm`` over the spatial axes, divided by its mean over the
    channels (the mean counts the removed channels: construct keeps the original count)."""

    def __init__(self, branch: bool) -> None:
        super().__init__()
        self.branch = branch
        self.up = nn.Linear(4, 12)
        self.gamma = nn.Parameter(torch.randn(12))
        self.beta = nn.Parameter(torch.randn(12))
        self.down = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.up(x))  # (batch, height, width, channels)
        if self.branch and h.shape[-1] > 4:  # control flow on a shape: only torch.export traces it
            h = h * 2
        g = torch.linalg.vector_norm(h, ord=2, dim=(1, 2), keepdim=True)
        h = self.gamma * (h * (g / (g.mean(dim=-1, keepdim=True) + 1e-6))) + self.beta + h
        return self.down(h) + torch.linalg.vector_norm(h, 1, -1, True)


@pytest.mark.parametrize("tracer", ["symbolic_trace", "export"])
def test_vector_norm_is_a_reduction(tracer):
    torch.manual_seed(0)
    model = randomize_(GlobalResponseNorm(branch=tracer == "export")).eval()
    _prunes_exactly(model, torch.randn(2, 3, 3, 4), "up.weight", tracer)


class BatchNormOverTokens(nn.Module):
    """LeViT's ``MLPLayerWithBN``: a BatchNorm1d over ``flatten(0, 1)``, put back with ``reshape_as``
    (torch.export's ``aten.reshape_as``; a branch on a shape makes torch.fx give up)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.down = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if h.shape[-1] > 4:
            h = h * 2
        h = torch.relu(self.bn(h.flatten(0, 1)).reshape_as(h))
        return self.down(h.view_as(h))


def test_reshape_as_in_an_exported_graph_is_a_reshape():
    torch.manual_seed(0)
    _prunes_exactly(randomize_(BatchNormOverTokens()).eval(), torch.randn(2, 3, 8), "up.weight", "export")


class SoftplusStep(nn.Module):
    """Mamba's time step: ``softplus(dt_proj(x))``, read by an exported graph (``aten.softplus``)."""

    def __init__(self) -> None:
        super().__init__()
        self.dt = nn.Linear(8, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * 2 if x.shape[-1] > 4 else x
        return self.out(torch.nn.functional.softplus(self.dt(h)) * torch.relu(self.dt(h)))


def test_softplus_in_an_exported_graph_is_declared():
    torch.manual_seed(0)
    model = randomize_(SoftplusStep()).eval()
    g = load_torch(model, torch.randn(2, 8))
    assert g.meta["tracer"] == "export" and g.find("Softplus")
    # softplus(0) = log 2, but the product with relu's zero is zero: the channels stay removable
    _prunes_exactly(model, torch.randn(2, 8), "dt.weight", "export")


class PaddedResiduals(nn.Module):
    """HF MobileNetV2's TF padding: ``F.pad`` before each convolution of two residual blocks. The
    TorchScript exporter computes the pads from literals, so ONNX shape inference names every later
    axis with a made-up symbol and the second block's Add saw two different shapes (not erasable)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 1)) for _ in "ab"
        )
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        for block in self.blocks:
            y = y + block(torch.nn.functional.pad(y, (1, 1, 1, 1)))
        return self.head(y)


def test_pads_computed_by_torchscript_give_static_shapes_so_every_block_is_erasable(tmp_path):
    import warnings

    import frontends
    from zigraph.erase_pipeline import erase
    from zigraph.pipeline import LoadedModel

    torch.manual_seed(0)
    path = tmp_path / "padded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(randomize_(PaddedResiduals()).eval(), (torch.randn(1, 3, 8, 8),), str(path),
                          dynamo=False, opset_version=17)  # fmt: skip
    graph = frontends.load(str(path))
    a = graphcore.analyze(graph, mode="erase")
    blocks = [s for s in a.structures if any(p.startswith("blocks.") for p in s.params)]
    assert len(blocks) == 2 and all(s.erasable for s in blocks), [s.reason for s in blocks]
    assert graph.find("Pad")[0].outputs[0].shape == (1, 8, 10, 10)
    rep = erase(LoadedModel(frontends.load(str(path)), source=str(path)), 1.0, tmp_path / "erased.onnx")
    assert rep.result.verification.passed and len(rep.result.structures_erased) == 2


if __name__ == "__main__":
    pytest.main([__file__, "-q"])


class SharedLayer(nn.Module):
    """ALBERT's encoder: one layer's weights applied at every depth (residual FFN, here twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for _ in range(2):
            h = h + self.down(torch.relu(self.up(h)))
        return self.head(h)


def test_a_layer_shared_across_depths_is_cut_once_and_the_model_shrinks(tmp_path):
    # The TorchScript export stores the shared weights once and reads them at each depth; every read
    # beyond the first is an alias, and each was cut on its own: one copy per read, and ALBERT grew
    # (14,036 to 14,205 parameters at 50%). The reads of a shared matrix are now tied.
    import onnx

    from zigraph.pipeline import load_model, prune

    torch.manual_seed(0)
    model = randomize_(SharedLayer()).eval()
    path = tmp_path / "shared.onnx"
    torch.onnx.export(model, (torch.randn(2, 5, 6),), str(path), dynamo=False, opset_version=17)
    full = onnx.load(str(path))
    assert any(n.op_type == "MatMul" for n in full.graph.node)
    report = prune(load_model(str(path)), 0.5, tmp_path / "small.onnx")
    result = report.result
    assert result is not None and result.verification is not None and result.verification.passed
    assert result.params_after < 0.8 * result.params_before
    small = onnx.load(str(tmp_path / "small.onnx"))

    def numel(m: onnx.ModelProto) -> int:
        return sum(int(np.prod(t.dims)) for t in m.graph.initializer)

    assert report.removed, "something was cut"
    assert numel(small) < 0.8 * numel(full)
    # a read cut on its own gets a copy named after its alias (``weight@node``) or ``__zigraph_w``
    copies = [t.name for t in small.graph.initializer if "@" in t.name or "__zigraph_w" in t.name]
    assert not copies


class Relu6Branch(nn.Module):
    """MobileNet's ReLU6 in a graph only torch.export traces (a branch on a shape): there it is its own
    ATen op, ``aten.relu6``, which was an unknown op (found by ``python -m fuzz --seed 2026``)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if h.shape[-1] > 4:
            h = h * 2
        return self.down(torch.nn.functional.relu6(h))


def test_relu6_in_an_exported_graph_is_a_clip():
    torch.manual_seed(0)
    _prunes_exactly(randomize_(Relu6Branch()).eval(), torch.randn(2, 3, 8), "up.weight", "export")
