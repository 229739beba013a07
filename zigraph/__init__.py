"""zigraph: train a network once and get a smaller one that provably computes the same function.

``import zigraph`` re-exports the stable Python API of the four packages; it holds no logic itself.
"""

from __future__ import annotations

from typing import Any

from construct import prune_onnx, to_onnx, to_torch, verify
from frontends import load
from graphcore import analyze
from graphcore.errors import ZigraphError

__all__ = ["ZigraphError", "analyze", "get_optimizer", "load", "prune_onnx", "to_onnx", "to_torch", "verify"]
__version__ = "0.1.0"


def get_optimizer(name: str) -> Any:
    """The optimizer class registered as ``name`` (built-in or plugin)."""
    import optimizers

    return optimizers.get(name)
