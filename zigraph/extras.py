"""Features that need an optional dependency say so in one line instead of a traceback.

``pip install zigraph`` works on ONNX files only; torch models, the optimizers and the demo need the
``torch`` extra (the demo also scikit-learn: the ``demo`` extra).
"""

from __future__ import annotations

import importlib

from graphcore.errors import ZigraphError

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ZigraphError):
    """A feature was asked for whose optional dependency is not installed (the CLI exits 2)."""


def require(module: str, feature: str, extra: str = "torch") -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``feature`` and the extra to install."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{feature} needs {module}, which is not installed: pip install 'zigraph[{extra}]'"
        ) from None
