"""The README's Python examples run as written (with a tiny model and random data filled in)."""

import functools
import re
from pathlib import Path

import numpy as np
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


def _weights(path: Path) -> int:
    model = onnx.load(str(path))
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def test_onnx_example(tmp_path, monkeypatch):
    from tests.test_onnx_patterns import residual

    monkeypatch.chdir(tmp_path)
    onnx.save(residual().model(), "model.onnx")
    exec(BLOCKS[0], {})
    assert _weights(tmp_path / "small.onnx") < _weights(tmp_path / "model.onnx")


def test_torch_example(tmp_path, monkeypatch):
    import zigraph

    monkeypatch.chdir(tmp_path)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(4)]
    # DHSPG's default pruning window is 1000 steps; the README's loop here has four, so the window is
    # shortened to the loader (everything else exactly as the README calls it) and the groups the
    # target asks for are zeroed by the end of the loop.
    optimizer_class = zigraph.get_optimizer
    monkeypatch.setattr(
        zigraph,
        "get_optimizer",
        lambda name: functools.partial(optimizer_class(name), pruning_steps=len(loader)),
    )
    env = {"MyNet": MyNet, "loader": loader}
    exec(BLOCKS[1], env)
    assert (tmp_path / "small.onnx").exists()
    assert sum(p.numel() for p in env["small"].parameters()) < sum(
        p.numel() for p in env["model"].parameters()
    )
