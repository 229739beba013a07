"""``zigraph demo``: the whole pipeline on a built-in model, in a temporary folder, in under a minute."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["DemoNet", "run_demo"]


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


def run_demo(quick: bool = False) -> int:
    import torch

    import construct
    import frontends
    import graphcore
    from construct.onnx_construct import zero_slices
    from construct.verify import compare_models
    from graphcore.select import relative_scores, select_zigs
    from zigraph.summary import format_summary, human

    torch.manual_seed(0)
    model = DemoNet().eval()
    x = torch.randn(1, 1, 8, 8)
    with tempfile.TemporaryDirectory(prefix="zigraph-demo-") as tmp:
        full_path = str(Path(tmp) / "demonet.onnx")
        print("1/4 export   the built-in DemoNet to ONNX")
        torch.onnx.export(model, (x,), full_path, dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
        print("2/4 analyze  zero-invariant groups\n")
        graph = frontends.load(full_path)
        analysis = graphcore.analyze(graph)
        print(format_summary(analysis.report()))
        print("\n3/4 prune    50% of the prunable ZIGs, lowest relative L2 norm first")
        chosen = select_zigs(analysis, 0.5, relative_scores(analysis, construct.zig_norms(analysis)))
        small, plan = construct.prune_onnx(analysis, chosen)
        small_path = str(Path(tmp) / "demonet_small.onnx")
        construct.save_onnx(small, small_path)
        print("4/4 verify   the small model against the zeroed full model in onnxruntime\n")
        zeroed = zero_slices(graph.meta["model"], graph.meta["base_dir"], plan.removed)
        rep = compare_models(zeroed, small, samples=3 if quick else 5)
        feed = {"x": np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)}
        runs = 20 if quick else 200
        lat_full = _ort_latency(full_path, feed, runs)
        lat_small = _ort_latency(small_path, feed, runs)
        p_full = sum(int(np.prod(t.dims)) for t in graph.meta["model"].graph.initializer)
        p_small = sum(int(np.prod(t.dims)) for t in small.graph.initializer)
        f_full = analysis.flops_total
        f_small = graphcore.analyze(frontends.load(small)).flops_total
        rows = [
            ("parameters", human(p_full), human(p_small), f"{p_small / p_full:.2f}"),
            ("FLOPs", human(f_full), human(f_small), f"{f_small / max(f_full, 1):.2f}"),
            ("ORT latency (ms)", f"{lat_full:.3f}", f"{lat_small:.3f}", f"{lat_small / lat_full:.2f}"),
        ]
        print(f"{'':<18}{'full':>10}{'pruned':>10}{'ratio':>8}")
        for r in rows:
            print(f"{r[0]:<18}{r[1]:>10}{r[2]:>10}{r[3]:>8}")
        status = "PASSED" if rep.passed else "FAILED"
        print(
            f"\nequivalence {status}: max abs error {rep.max_abs:.2e}, max relative error {rep.max_rel:.2e}"
        )
        return 0 if rep.passed else 1
