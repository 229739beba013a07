"""The README's Python examples run as written (with a tiny model and random data filled in)."""

import re
from pathlib import Path

import onnx
import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


class MyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_onnx_example(tmp_path, monkeypatch):
    from tests.test_onnx_patterns import residual

    monkeypatch.chdir(tmp_path)
    onnx.save(residual().model(), "model.onnx")
    exec(BLOCKS[0], {})
    assert (tmp_path / "small.onnx").exists()


def test_torch_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(3)]
    env = {"MyNet": MyNet, "loader": loader}
    exec(BLOCKS[1], env)
    assert (tmp_path / "small.onnx").exists()
    assert sum(p.numel() for p in env["small"].parameters()) <= sum(
        p.numel() for p in env["model"].parameters()
    )
