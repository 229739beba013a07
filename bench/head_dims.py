"""Whole heads versus head dimensions: parameters kept at 50% of the prunable ZIGs, tiny HF models.

For BERT, GPT-2 and LLaMA (grouped-query, 2 key/value heads) built from the configs in
``tests/test_torch_hf.py`` (torch) and ``tests/zoo.py`` (ONNX, ``torch.onnx.export(dynamo=True)``),
one-shot at 50% of the prunable ZIGs (lowest relative L2 norm), analysed once with whole heads
(``whole_heads()``, the previous granularity) and once with head dimensions (the default). Prints a
markdown table: parameters kept and the max relative error against the zeroed original (torch, and
onnxruntime for the ONNX rows). ``docs/head_dims.md`` quotes it.

    python bench/head_dims.py [--onnx]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from construct.torch_verify import randomize_
from graphcore.ops.head_dims import whole_heads
from zigraph.prune_check import prune_check

MODELS = ["bert", "gpt2", "llama"]


def _mode(heads: bool) -> contextlib.AbstractContextManager[None]:
    return whole_heads() if heads else contextlib.nullcontext()


def from_torch(name: str, heads: bool) -> tuple[float, float]:
    from tests.test_torch_hf import _model

    torch.manual_seed(0)
    model = randomize_(_model(name)).eval()
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    with _mode(heads):
        r = prune_check(model, (ids,), sparsity=0.5, criterion="l2")
    return r.kept, r.torch_rel


def from_onnx(name: str, heads: bool, folder: Path) -> tuple[float, float]:
    import frontends
    from tests.zoo import export
    from zigraph.pipeline import LoadedModel, prune_model

    path = export(name, folder, dynamo=True)
    out = folder / f"{name}.{'heads' if heads else 'dims'}.small.onnx"
    with _mode(heads):
        graph = frontends.load(str(path))
        rep = prune_model(LoadedModel(graph, source=str(path)), 0.5, out, samples=2)

    def params(p: Path) -> int:
        return sum(int(np.prod(t.dims)) for t in onnx.load(str(p)).graph.initializer)

    return params(out) / params(path), float(rep["result"]["verification"]["max_rel"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", action="store_true", help="also the ONNX (dynamo export) rows")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print("| model | from | kept, whole heads | kept, head dims | max rel (head dims) |")
    print("| --- | --- | --- | --- | --- |")
    for name in MODELS:
        (kh, _), (kd, rel) = from_torch(name, True), from_torch(name, False)
        print(f"| {name} | torch | {kh:.3f} | {kd:.3f} | {rel:.1e} |", flush=True)
    if args.onnx:
        with tempfile.TemporaryDirectory() as tmp:
            for name in MODELS:
                (kh, _), (kd, rel) = from_onnx(name, True, Path(tmp)), from_onnx(name, False, Path(tmp))
                print(f"| {name} | ONNX (dynamo) | {kh:.3f} | {kd:.3f} | {rel:.1e} |", flush=True)


if __name__ == "__main__":
    main()
