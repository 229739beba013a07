"""Small helpers shared by the passes."""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["gc_paused", "return_freed_memory"]

BIG_GRAPH_NODES = 10_000
"""From this many nodes on, an analysis hands its freed scratch memory back to the system (about 20 ms,
against seconds of analysis); below it the call would cost more than the memory is worth."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def return_freed_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``); True if it ran.

    Why: the analysis's scratch arrays (fold, the post-pass) are freed when it ends, but glibc keeps
    that memory resident for reuse, and the report and everything after it are Python objects that
    never reuse it. On a 100k-node graph that was about 120 MiB of a 1 GiB peak. Elsewhere than glibc
    (macOS, musl, Windows) there is no such call and nothing happens."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a pass builds many small objects.

    Every full collection scans all live objects, so on a 100k-node model the collector alone made
    the build grow faster than the graph. The objects a pass creates hold no cycles worth collecting
    before it returns.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
