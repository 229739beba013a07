"""The small torch module leaves zigraph as ONNX (verified in onnxruntime) or as a code-free file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphcore
from construct.torch_construct import to_torch
from construct.torch_export import to_onnx
from construct.torch_modules import PrunedMultiheadAttention
from construct.torch_save import FORMAT, load_small, save_small
from construct.torch_verify import randomize_, verify_torch, zeroed_copy
from frontends.torch_frontend import load_torch
from graphcore.errors import ZigraphError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.drop = nn.Dropout(0.2)
        self.proj = nn.Linear(16, 24)
        self.att = nn.MultiheadAttention(24, 4, batch_first=True)
        self.fc1 = nn.Linear(24, 48)
        self.fc2 = nn.Linear(48, 24)
        self.head = nn.Linear(24 * 4, 5)
        self.head.weight = nn.Parameter(self.head.weight.detach().clone())

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        t = self.proj(self.drop(y.flatten(2).transpose(1, 2)))  # [N, 4, 24]
        t = t + self.att(t, t, t, need_weights=False)[0]
        t = t + self.fc2(F.gelu(self.fc1(t)))
        return self.head(t.reshape(t.shape[0], 24 * 4))


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)
    m = randomize_(Net()).eval()
    x = torch.randn(2, 3, 2, 2)
    a = graphcore.analyze(load_torch(m, x))
    rng = np.random.default_rng(0)
    sel = []
    for g in a.prunable_groups:
        sel.extend(rng.choice(g.zig_ids, size=g.size // 2, replace=False).tolist())
    z = zeroed_copy(m, a, np.array(sorted(sel)))
    small = to_torch(z, a)
    assert isinstance(small.get_submodule("att"), PrunedMultiheadAttention)
    return m, z, small, x


def test_to_onnx_verifies_in_onnxruntime(pruned, tmp_path):
    _, zeroed, small, x = pruned
    path = tmp_path / "out" / "small.onnx"
    rep = to_onnx(small, x, path, reference=zeroed, samples=3)
    assert path.exists() and rep is not None and rep.passed and rep.max_rel <= 1e-4, rep
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_save_load_round_trip(pruned, tmp_path):
    _, _, small, x = pruned
    path = tmp_path / "small.zt"
    save_small(small, path)
    payload = torch.load(path, weights_only=True)  # readable without unpickling any code
    assert payload["format"] == FORMAT
    back = load_small(path)
    assert verify_torch(small, back, x).max_rel == 0.0
    assert isinstance(back.get_submodule("att"), PrunedMultiheadAttention)
    shapes = {k: v.shape for k, v in small.state_dict().items()}
    assert {k: v.shape for k, v in back.state_dict().items()} == shapes
    assert back.training == small.training
    back.train()
    back(x).sum().backward()
    assert all(p.grad is not None for p in back.parameters())


def test_load_refuses_untrusted_names(pruned, tmp_path):
    import json

    _, _, small, _ = pruned
    path = tmp_path / "small.zt"
    save_small(small, path)
    payload = torch.load(path, weights_only=True)
    nodes = json.loads(payload["graph"])
    for n in nodes:
        if n["op"] == "call_function":
            n["target"] = "os:system"
            break
    payload["graph"] = json.dumps(nodes)
    torch.save(payload, tmp_path / "evil.zt")
    with pytest.raises(ZigraphError, match="trusted"):
        load_small(tmp_path / "evil.zt")
    (tmp_path / "junk.zt").write_bytes(b"not a file")
    with pytest.raises(ZigraphError):
        load_small(tmp_path / "junk.zt")
