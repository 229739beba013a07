"""``graphcore.analyze``: one entry for both analyses, so callers name a mode instead of a module."""

from __future__ import annotations

from typing import Literal, overload

from graphcore.analysis import analyze as analyze_prune
from graphcore.erase import EraseAnalysis, analyze_erase
from graphcore.errors import AnalysisError
from graphcore.groups import PruneAnalysis
from graphcore.ir import Graph
from graphcore.util import gc_paused

__all__ = ["MODES", "analyze"]

MODES = ("prune", "erase")


@overload
def analyze(graph: Graph, mode: Literal["erase"]) -> EraseAnalysis: ...
@overload
def analyze(graph: Graph, mode: str = "prune") -> PruneAnalysis: ...
def analyze(graph: Graph, mode: str = "prune") -> PruneAnalysis:
    """Node groups and ZIGs (``mode="prune"``) or removal structures and their hierarchy (``"erase"``)."""
    if mode == "prune":
        return analyze_prune(graph)
    if mode == "erase":
        prune = analyze_prune(graph)
        with gc_paused():
            return analyze_erase(graph, prune)
    raise AnalysisError(f"unknown analysis mode {mode!r}; expected one of {MODES}")
