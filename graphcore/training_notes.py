"""What a training run has to say about a model when it is constructed, without construct knowing
the optimizers (the import floors keep the two packages apart; both may import graphcore).

An optimizer registers, for the model it trains, a callable that returns a note — a plain sentence
when the run has not reached its target, else None. ``construct.to_torch`` asks for the note of the
model it is given and warns with it (:class:`TargetNotReachedWarning`). The model and the callable's
owner are held weakly: registering keeps nothing alive.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["TargetNotReachedWarning", "note_for", "register", "warn_if_unreached"]


class TargetNotReachedWarning(UserWarning):
    """A model is constructed from a training run that has not reached its sparsity target."""


_notes: weakref.WeakKeyDictionary[Any, Callable[[], str | None]] = weakref.WeakKeyDictionary()


def register(model: Any, note: Callable[[], str | None]) -> None:
    """Make ``note()`` the note of ``model`` (a newer registration replaces an older one)."""
    _notes[model] = note


def note_for(model: Any) -> str | None:
    """The note registered for ``model`` (or the module a DDP / DataParallel wrapper holds), if any."""
    for _ in range(8):  # wrappers hold the trained module as ``.module``
        note = _notes.get(model)
        if note is not None:
            return note()
        inner = getattr(model, "module", None)
        if inner is None or inner is model:
            return None
        model = inner
    return None


def warn_if_unreached(model: Any, stacklevel: int = 3) -> str | None:
    """Warn with ``model``'s note when there is one; returns it."""
    note = note_for(model)
    if note is not None:
        warnings.warn(note, TargetNotReachedWarning, stacklevel=stacklevel)
    return note
