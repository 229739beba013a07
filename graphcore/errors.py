"""Errors a user can act on: each message names the model, the node or the file, and what to do."""

from __future__ import annotations

__all__ = ["AnalysisError", "ModelLoadError", "ZigraphError"]


class ZigraphError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits with code 2."""


class ModelLoadError(ZigraphError):
    """The model file or object cannot be read into the IR."""


class AnalysisError(ZigraphError):
    """The analysis cannot run on this graph or in this mode."""
