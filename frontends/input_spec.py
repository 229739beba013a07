"""The example inputs of a torch factory as the command line gives them: ``SHAPE[:DTYPE]``.

Plain Python (no torch import), so the CLI can check ``--input-shape`` before anything heavy loads.
Integer dtypes are token ids: ``frontends.torch_frontend.example_inputs_for`` draws them below the
model's embedding size.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FLOAT_NAMES", "INT_NAMES", "InputSpec", "parse_input_spec"]

FLOAT_NAMES = ("float32", "float64", "float16", "bfloat16")
INT_NAMES = ("int64", "int32")


@dataclass(frozen=True)
class InputSpec:
    """One example input of a torch factory: its shape and dtype (``1,8:int64`` on the command line)."""

    dims: tuple[int, ...]
    dtype: str = "float32"


def parse_input_spec(text: str) -> InputSpec:
    """``D0,D1,...[:DTYPE]`` → InputSpec; raises ValueError with a one-line reason.

    DTYPE is one of float32 (the default), float64, float16, bfloat16, int64, int32.
    """
    shape, _, dtype = text.strip().partition(":")
    dtype = dtype.strip() or "float32"
    if dtype not in FLOAT_NAMES and dtype not in INT_NAMES:
        known = ", ".join([*FLOAT_NAMES, *INT_NAMES])
        raise ValueError(f"unknown dtype {dtype!r} in {text!r} (one of {known})")
    try:
        dims = tuple(int(x) for x in shape.split(","))
    except ValueError:
        raise ValueError(f"must look like 1,3,224,224 or 1,8:int64, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"needs positive sizes, got {text!r}")
    return InputSpec(dims, dtype)
