"""Errors a user can act on: each message names the model, the node or the file, and what to do."""

from __future__ import annotations

__all__ = ["AnalysisError", "InternalError", "ModelLoadError", "ZigraphError"]


class ZigraphError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits with code 2."""


class ModelLoadError(ZigraphError):
    """The model file or object cannot be read into the IR."""


class AnalysisError(ZigraphError):
    """The analysis cannot run on this graph or in this mode."""


class InternalError(Exception):
    """A failure that is zigraph's fault, not the input's (for one, a model zigraph wrote that does not
    check): the CLI exits 3, names the model and the stage, and asks for a bug report. Deliberately not
    a ``ZigraphError``, so no handler of bad input can swallow it.

    Raised with what went wrong; the pipeline stage it happens in adds ``stage`` and ``model``.
    """

    def __init__(self, message: str, stage: str | None = None, model: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.model = model

    def __str__(self) -> str:
        where = f" while {self.stage} {self.model or 'the model'}" if self.stage else ""
        return (
            f"internal error{where} ({self.message}); this is a bug in zigraph, please report it with the "
            "model"
        )
