"""Finding optimizers by name: built-ins, ``@register`` and an installed distribution's entry point."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import optimizers
from optimizers.registry import ENTRY_POINT_GROUP, UnknownOptimizerError
from optimizers.synthetic import linear_chain_analysis

PLUGIN = '''
"""A third-party optimizer: zero the smallest half of the prunable ZIGs at step 3, SGD otherwise."""
import torch
from optimizers import GroupOptimizer
from optimizers.base import Need
from optimizers.selection import select_with_caps


class HalveAtThree(GroupOptimizer):
    def need(self, group):
        return Need(pre=True) if self.steps_done == 3 else Need()

    def update(self, stats, group):
        self.penalized_step(stats, group, torch.zeros_like(stats.x2))   # the plain step
        budget = self.target_count(0.5) - self.num_zero()
        self.zero_zigs(select_with_caps(self.prunable, stats.x2, self.zig_group, self.room(), budget))
'''


def test_builtins_are_found_case_insensitively() -> None:
    assert {"dhspg", "hspg", "proxsg"} <= set(optimizers.available())
    assert optimizers.get("DHSPG") is optimizers.DHSPG
    assert optimizers.get(" hspg ") is optimizers.HSPG


def test_unknown_name_lists_what_is_available() -> None:
    with pytest.raises(UnknownOptimizerError) as err:
        optimizers.get("no-such-optimizer")
    message = str(err.value)
    assert "no-such-optimizer" in message and "dhspg, h2spg, hspg, proxsg" in message.replace("'", "")
    assert isinstance(err.value, KeyError)


def test_register_decorator_and_duplicate_names() -> None:
    @optimizers.register("test-plain")
    class Plain(optimizers.GroupOptimizer):
        pass

    assert optimizers.get("Test-Plain") is Plain
    with pytest.raises(ValueError, match="already registered"):
        optimizers.register("test-plain")(type("Other", (optimizers.GroupOptimizer,), {}))


def test_entry_point_plugin_from_an_installed_distribution(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "zigraph_halving_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "zigraph_halving_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zigraph-halving-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nhalving = zigraph_halving_plugin:HalveAtThree\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "halving" in optimizers.available()
    cls = optimizers.get("halving")
    assert cls.__name__ == "HalveAtThree"

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 1))
    analysis = linear_chain_analysis(model, ["0", "2", "4"])
    opt = cls(model, analysis, lr=0.05, momentum=0.9)
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    for _ in range(6):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    removed = optimizers.removed_zigs(model, analysis)
    assert len(removed) == 7 and removed.tolist() == opt.zero_zig_ids().tolist()


def test_broken_plugin_names_itself(tmp_path: Path, monkeypatch) -> None:
    info = tmp_path / "zigraph_broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zigraph-broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = zigraph_missing_module:Opt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="broken"):
        optimizers.get("broken")


def test_the_documented_example_optimizer_trains_to_its_target() -> None:
    """docs/optimizers.md "Write your own optimizer": the code shown there runs as shown."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "optimizers.md").read_text()
    section = doc.split("## Write your own optimizer", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/optimizers.md", "exec"), namespace)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 1))
    analysis = linear_chain_analysis(model, ["0", "2", "4"])
    opt = optimizers.get("gradual-magnitude")(
        model, analysis, lr=0.05, momentum=0.9, target_group_sparsity=0.5, every=3, rounds=2
    )
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    for step in range(1, 10):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if step == 3:
            assert opt.num_zero() == 3  # half of the goal after the first round
    assert len(optimizers.removed_zigs(model, analysis)) == 7 == opt.num_zero()
