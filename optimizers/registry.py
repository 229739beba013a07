"""Finding optimizers by name: built-ins and plugins register with ``@register``, installed
distributions through the entry-point group ``zigraph.optimizers``.

An entry point's name is the optimizer's name and its value points at the class (or any callable
built as ``Opt(model, analysis, **hyperparameters)``), e.g. in a plugin's ``pyproject.toml``::

    [project.entry-points."zigraph.optimizers"]
    mysgd = "my_package.my_module:MyOptimizer"

Entry points are looked up lazily, so a broken plugin only fails when it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

__all__ = ["ENTRY_POINT_GROUP", "UnknownOptimizerError", "available", "get", "register"]

ENTRY_POINT_GROUP = "zigraph.optimizers"

T = TypeVar("T", bound=Callable[..., Any])

_registry: dict[str, Callable[..., Any]] = {}


class UnknownOptimizerError(KeyError):
    """No optimizer is registered or installed under the requested name."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def _key(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"optimizer names are non-empty strings, got {name!r}")
    return name.strip().lower()


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make ``optimizers.get(name)`` return the class (names are case-insensitive)."""
    key = _key(name)

    def decorate(obj: T) -> T:
        known = _registry.get(key)
        if known is not None and known is not obj:
            raise ValueError(f"an optimizer named {key!r} is already registered ({known!r})")
        _registry[key] = obj
        return obj

    return decorate


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {_key(ep.name): ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def get(name: str) -> Callable[..., Any]:
    """The optimizer registered (or installed as a ``zigraph.optimizers`` entry point) as ``name``."""
    key = _key(name)
    if key in _registry:
        return _registry[key]
    importlib.invalidate_caches()  # a plugin installed since the last lookup
    ep = _entry_points().get(key)
    if ep is None:
        raise UnknownOptimizerError(
            f"unknown optimizer {name!r}; available: {', '.join(available()) or 'none'} "
            f"(register one with @optimizers.register({key!r}) or the entry-point group "
            f"{ENTRY_POINT_GROUP!r})"
        )
    try:
        obj = ep.load()
    except Exception as exc:  # report which plugin failed, whatever it raised
        raise ImportError(f"optimizer plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    if not callable(obj):
        raise TypeError(f"optimizer plugin {ep.name!r} ({ep.value}) is not callable")
    return _registry.setdefault(key, obj)


def available() -> list[str]:
    """Names of every registered and installed optimizer, sorted."""
    return sorted(set(_registry) | set(_entry_points()))
