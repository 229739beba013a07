"""``zigraph demo``: the whole pipeline on a built-in model, in a temporary folder, in under a minute."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from construct.verify import VerifyReport

__all__ = ["DemoNet", "ResidualDigitsNet", "run_demo"]


def _torch_model():
    import torch
    from torch import nn

    class DemoNet(nn.Module):
        """A small CNN with the patterns that matter: a residual Add, a channel Concat, Flatten→Linear."""

        def __init__(self, width: int = 32, classes: int = 10) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
            self.block = nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
            )
            self.branch_a = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU())
            self.branch_b = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
            self.pool = nn.MaxPool2d(2)
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, classes)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = torch.relu(x + self.block(x))
            x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
            return self.head(self.pool(x))

    return DemoNet


def DemoNet(width: int = 32, classes: int = 10):
    return _torch_model()(width, classes)


def _residual_model():
    import torch
    from torch import nn

    class Block(nn.Module):
        """``relu(x + bn(conv(relu(bn(conv(x))))))``: the branch is one removal structure."""

        def __init__(self, width: int) -> None:
            super().__init__()
            self.branch = nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.branch(x))

    class ResidualDigitsNet(nn.Module):
        """A strided stem, ``blocks`` residual blocks of constant width, average pool, Linear.

        Deep enough that half of its blocks are redundant on digits: the super-network of the erasing
        demo and of ``bench/erase_quality.py``.
        """

        def __init__(self, blocks: int = 8, width: int = 16, classes: int = 10) -> None:
            super().__init__()
            # Stride 2: the blocks work on 4×4 maps, which keeps a deep net quick to train on two cores.
            self.stem = nn.Sequential(
                nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
            self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.stem(x)))

    return ResidualDigitsNet


def ResidualDigitsNet(blocks: int = 8, width: int = 16, classes: int = 10):
    return _residual_model()(blocks, width, classes)


def _ort_latency(path: str, feed: dict, runs: int = 50) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for _ in range(5):
        sess.run(None, feed)
    t = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feed)
    return (time.perf_counter() - t) / runs * 1e3


def _digits(seed: int = 0):
    """scikit-learn's 8×8 digits (1797 images, shipped with the package: nothing is downloaded)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(
        x, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    t = torch.from_numpy
    return t(xtr), t(ytr).long(), t(xte), t(yte).long()


def _train(model, opt, data, epochs: int, desc: str, quiet: bool, seed: int = 0) -> None:
    import torch

    from zigraph.console import progress

    xtr, ytr = data[0], data[1]
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(xtr) + 63) // 64)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)  # the same for every run
    with progress(disable=quiet) as bar:
        task = bar.add_task(f"{desc:<22}", total=steps)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(xtr), generator=gen)
            for i in range(0, len(xtr), 64):
                idx = order[i : i + 64]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()
                schedule.step()
                bar.advance(task)
    model.eval()


def _accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def _onnx_stats(module, example, path: str, runs: int) -> tuple[int, float]:
    import frontends
    import graphcore
    from construct.torch_export import export_onnx
    from zigraph.console import status

    with status(f"exporting {type(module).__name__} to ONNX and timing it in onnxruntime"):
        export_onnx(module, (example,), path)
        flops = graphcore.analyze(frontends.load(path)).flops_total
        return flops, _ort_latency(path, {_input_name(path): example.numpy()}, runs)


def _input_name(path: str) -> str:
    import onnx

    return onnx.load(path, load_external_data=False).graph.input[0].name


def train_h2spg(
    model,
    data,
    epochs: int,
    sparsity: float,
    quiet: bool,
    seed: int = 0,
    lr: float = 0.05,
    window: float = 0.5,
):
    """Train ``model`` once with H2SPG, erasing ``sparsity`` of its erasable structures; the analysis.

    Warm-up for a sixth of the run, then the hierarchical search picks the structures, and hybrid
    training drives them to exact zeros over the next ``window`` of the run; the rest trains what is left.
    """
    import frontends
    import graphcore
    import optimizers

    analysis = graphcore.analyze(frontends.load(model, (data[0][:1],)), mode="erase")
    steps_per_epoch = (len(data[0]) + 63) // 64
    opt = optimizers.get("h2spg")(
        model, analysis, lr=lr, momentum=0.9, target_group_sparsity=sparsity,
        start_pruning_steps=steps_per_epoch * max(1, epochs // 6),
        pruning_steps=steps_per_epoch * max(1, round(epochs * window)),
    )  # fmt: skip
    _train(model, opt, data, epochs, f"H2SPG (erase {sparsity:g})", quiet, seed)
    return analysis


def erased_structures(model, analysis) -> list[int]:
    """Ids of the erasable structures whose variables are all exactly zero (what construct removes)."""
    import construct

    return construct.erased_structures(model, analysis)


def _results(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """The demo's before/after table (a rich table: the first column names the run)."""
    from rich.table import Table

    from zigraph.console import show

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 0, 0, 2))
    for i, title in enumerate(header):
        table.add_column(title, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    show("", table)


def run_demo(quick: bool = False, mode: str = "prune", quiet: bool = False) -> int:
    """``mode="prune"``: digits, dense SGD vs DHSPG (target group sparsity 0.7) vs the pruned architecture
    from scratch. ``mode="erase"``: a deep residual net, dense SGD vs H2SPG erasing half its blocks.
    ``quiet``: no progress bars and nothing on stdout; the exit status says whether it verified. The
    short ``quick`` run (the tests') shows no progress bars either."""
    from zigraph.console import quiet_output

    if mode not in ("prune", "erase"):
        raise ValueError(f"mode must be 'prune' or 'erase', got {mode!r}")
    with quiet_output(quiet):
        if mode == "erase":
            return run_erase_demo(quick, quiet or quick)
        return _run_prune_demo(quick, quiet or quick)


def _run_prune_demo(quick: bool, no_bars: bool) -> int:
    import copy

    import torch

    import construct
    import frontends
    import graphcore
    import optimizers
    from zigraph.console import show
    from zigraph.summary import human

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    epochs = 4 if quick else 30
    data = _digits()
    xte, yte = data[2], data[3]
    example = data[0][:1]
    show(f"digits: {len(data[0])} training and {len(xte)} test images, {epochs} epochs each run\n")

    init = DemoNet()
    dense = copy.deepcopy(init)
    _train(
        dense, torch.optim.SGD(dense.parameters(), lr=0.05, momentum=0.9), data, epochs, "dense SGD", no_bars
    )

    model = copy.deepcopy(init)
    analysis = graphcore.analyze(frontends.load(model, (example,)))
    steps_per_epoch = (len(data[0]) + 63) // 64
    opt = optimizers.get("dhspg")(
        model, analysis, lr=0.05, momentum=0.9, target_group_sparsity=0.7,
        start_pruning_steps=steps_per_epoch * max(1, epochs // 6),
        pruning_steps=steps_per_epoch * max(1, epochs // 2), pruning_periods=max(1, epochs // 6), epsilon=0.9,
    )  # fmt: skip
    _train(model, opt, data, epochs, "DHSPG (sparsity 0.7)", no_bars)
    small = construct.to_torch(model, analysis)

    with torch.no_grad():
        same = float((model.eval()(xte) - small.eval()(xte)).abs().max())
        scale = float(small(xte).abs().max())
    scratch = copy.deepcopy(small)
    torch.manual_seed(1)
    with torch.no_grad():
        for m in scratch.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    _train(scratch, torch.optim.SGD(scratch.parameters(), lr=0.05, momentum=0.9), data, epochs,
           "pruned arch. scratch", no_bars)  # fmt: skip

    runs = 20 if quick else 200
    rows = []
    with tempfile.TemporaryDirectory(prefix="zigraph-demo-") as tmp:
        for name, m in (
            ("dense (SGD)", dense),
            ("DHSPG, constructed", small),
            ("same arch., scratch", scratch),
        ):
            flops, lat = _onnx_stats(m, example, str(Path(tmp) / f"{len(rows)}.onnx"), runs)
            params = sum(p.numel() for p in m.parameters())
            rows.append((name, _accuracy(m, xte, yte), params, flops, lat))
        verified = construct.to_onnx(small, (example,), str(Path(tmp) / "small.onnx"))
    base = rows[0]
    _results(("", "accuracy", "params", "kept", "FLOPs", "ORT ms"), [
        (name, f"{100 * acc:.1f}%", human(params), f"{100 * params / base[2]:.1f}%", human(flops),
         f"{lat:.3f}")
        for name, acc, params, flops, lat in rows
    ])  # fmt: skip
    zeros = optimizers.removed_zigs(model, analysis)
    n_prunable = analysis.prunable_zig_ids().size
    show(f"\nDHSPG zeroed {len(zeros)} of {n_prunable} prunable ZIGs; the constructed model differs from "
          f"the trained one by {same:.1e} (max abs, test set)")  # fmt: skip
    note = opt.progress().note  # a run that ended before its target says so
    if note:
        show(note)
    passed, verdict = _verdict(verified)
    show(f"ONNX export of the constructed model verified in onnxruntime: {verdict}")
    return 0 if passed and same <= 1e-4 * max(1.0, scale) else 1


def run_erase_demo(quick: bool = False, quiet: bool | None = None) -> int:
    """Digits: a residual net of 8 blocks trained once with H2SPG (half its blocks erased) against the
    same net trained densely; the erased net is constructed, exported and verified in onnxruntime."""
    quiet = quick if quiet is None else quiet
    import copy

    import torch

    import construct
    from zigraph.console import show
    from zigraph.summary import human

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the nets are small: more threads only fight over a shared machine
    epochs, blocks, width = (4, 4, 8) if quick else (18, 8, 16)
    data = _digits()
    xte, yte = data[2], data[3]
    example = data[0][:1]
    show(f"digits: {len(data[0])} training and {len(xte)} test images, {epochs} epochs each run; "
          f"a residual net of {blocks} blocks, width {width}\n")  # fmt: skip

    init = ResidualDigitsNet(blocks, width)
    dense = copy.deepcopy(init)
    opt = torch.optim.SGD(dense.parameters(), lr=0.05, momentum=0.9)
    _train(dense, opt, data, epochs, "dense SGD", quiet)

    model = copy.deepcopy(init)
    analysis = train_h2spg(model, data, epochs, 0.5, quiet)
    erased = erased_structures(model, analysis)
    small = construct.to_torch(model, analysis)
    with torch.no_grad():
        same = float((model.eval()(xte) - small.eval()(xte)).abs().max())
        scale = float(small(xte).abs().max())

    erasable = sum(1 for s in analysis.structures if s.erasable)
    runs = 20 if quick else 200
    rows = []
    with tempfile.TemporaryDirectory(prefix="zigraph-demo-") as tmp:
        for name, m, left in (
            ("dense (SGD)", dense, erasable),
            ("H2SPG, constructed", small, erasable - len(erased)),
        ):
            flops, lat = _onnx_stats(m, example, str(Path(tmp) / f"{len(rows)}.onnx"), runs)
            params = sum(p.numel() for p in m.parameters())
            rows.append((name, _accuracy(m, xte, yte), params, flops, left, lat))
        verified = construct.to_onnx(small, (example,), str(Path(tmp) / "small.onnx"), reference=model)
    base = rows[0]
    _results(("", "accuracy", "params", "kept", "FLOPs", "blocks", "ORT ms"), [
        (name, f"{100 * acc:.1f}%", human(params), f"{100 * params / base[2]:.1f}%", human(flops), str(left),
         f"{lat:.3f}")
        for name, acc, params, flops, left, lat in rows
    ])  # fmt: skip
    ids = ", ".join(map(str, erased)) or "-"
    show(f"\nH2SPG erased {len(erased)} of {erasable} erasable structures ({ids}); the constructed model "
          f"differs from the trained one by {same:.1e} (max abs, test set)")  # fmt: skip
    passed, verdict = _verdict(verified)
    show(f"ONNX export of the erased model verified in onnxruntime: {verdict}")
    return 0 if passed and same <= 1e-4 * max(1.0, scale) else 1


def _verdict(report: VerifyReport | None) -> tuple[bool, str]:
    """Whether the export verified, and the words for it. No report is a failure: an export that was
    never compared proves nothing, and the demo must not print PASSED for it."""
    if not isinstance(report, VerifyReport):
        return False, "FAILED: no verification report came back, so the export was not verified"
    status = "PASSED" if report.passed else "FAILED"
    return report.passed, f"{status}, max relative error {report.max_rel:.1e}"
