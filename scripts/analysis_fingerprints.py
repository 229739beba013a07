"""Fingerprints of the analysis on every cached model: the proof that a speed-up changed no result.

Why: the analysis is rewritten for speed from time to time, and "the same groups" must be checked on
real models, not believed. For every ONNX file in the zoo and bench caches (both attention settings)
and, with ``--torch``, a few torchvision models through the torch frontend, this hashes the report
JSON, each ZIG's node group and the owner of every parameter index. Run it on the old commit and on
the new one and compare:

    python scripts/analysis_fingerprints.py /tmp/before.json --torch          # on the old commit
    python scripts/analysis_fingerprints.py /tmp/after.json --torch --compare /tmp/before.json

Exit 1 when ``--compare`` finds a difference (each differing model is named).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fingerprint(analysis: Any) -> str:
    import numpy as np

    h = hashlib.sha256()
    h.update(analysis.report().model_dump_json().encode())
    h.update(np.asarray(analysis.zig_group).tobytes())
    for key in sorted(analysis.param_axes, key=str):
        h.update(str(key).encode())
        h.update(np.asarray(analysis.param_axes[key]).tobytes())
    return h.hexdigest()[:16]


def onnx_files() -> list[str]:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zigraph"
    found = []
    for folder in ("/tmp/zoo", str(cache / "zoo"), str(cache / "bench")):
        found += sorted(glob.glob(f"{folder}/*.onnx"))
    return found


def collect(with_torch: bool) -> dict[str, str]:
    import frontends
    import graphcore

    out: dict[str, str] = {}
    for path in onnx_files():
        for attention in ("dims", "heads"):
            try:
                analysis = graphcore.analyze(frontends.load(path), attention=attention)
                out[f"{path}:{attention}"] = fingerprint(analysis)
            except Exception as exc:  # a model the engine refuses is a fingerprint too
                out[f"{path}:{attention}"] = f"error {type(exc).__name__}: {str(exc)[:80]}"
    if with_torch:
        import torch
        import torchvision

        from frontends.torch_frontend import load_torch

        for name in ("resnet18", "mobilenet_v3_small", "vit_b_16", "densenet121", "swin_t"):
            torch.manual_seed(0)
            model = getattr(torchvision.models, name)().eval()
            graph = load_torch(model, torch.randn(1, 3, 224, 224))
            out[f"torch:{name}"] = fingerprint(graphcore.analyze(graph))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="write the fingerprints here (JSON)")
    p.add_argument("--torch", action="store_true", help="also torchvision models through the torch frontend")
    p.add_argument("--compare", help="fingerprints of another commit to compare with")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    prints = collect(args.torch)
    Path(args.out).write_text(json.dumps(prints, indent=1) + "\n", encoding="utf-8")
    print(f"{len(prints)} fingerprints -> {args.out}")
    if args.compare:
        before = json.loads(Path(args.compare).read_text(encoding="utf-8"))
        differ = sorted(k for k in prints if k in before and before[k] != prints[k])
        missing = sorted(set(before) ^ set(prints))
        for k in differ:
            print(f"DIFFERENT: {k}")
        for k in missing:
            print(f"only in one run: {k}")
        print(f"{len(differ)} of {len(set(before) & set(prints))} differ")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
