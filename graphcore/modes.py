"""``graphcore.analyze``: one entry for both analyses, so callers name a mode instead of a module."""

from __future__ import annotations

from typing import Literal, overload

from graphcore.analysis import analyze as analyze_prune
from graphcore.erase import EraseAnalysis, analyze_erase
from graphcore.errors import AnalysisError
from graphcore.groups import PruneAnalysis
from graphcore.ir import Graph
from graphcore.ops.head_dims import attention_granularity, attention_used
from graphcore.util import gc_paused

__all__ = ["MODES", "analyze"]

MODES = ("prune", "erase")


@overload
def analyze(graph: Graph, mode: Literal["erase"], attention: str | None = None) -> EraseAnalysis: ...
@overload
def analyze(graph: Graph, mode: str = "prune", attention: str | None = None) -> PruneAnalysis: ...
def analyze(graph: Graph, mode: str = "prune", attention: str | None = None) -> PruneAnalysis:
    """Node groups and ZIGs (``mode="prune"``) or removal structures and their hierarchy (``"erase"``).

    ``attention``: the channels of attention, ``"dims"`` (head dimensions: each head keeps the same
    number) or ``"heads"`` (whole heads); None keeps the setting in force (``"dims"`` unless inside
    ``attention_granularity`` / ``whole_heads``). Recorded in the report."""
    if mode not in MODES:
        raise AnalysisError(f"unknown analysis mode {mode!r}; expected one of {MODES}")
    with attention_granularity(attention_used() if attention is None else attention):
        if mode == "prune":
            return analyze_prune(graph)
        prune = analyze_prune(graph)
        with gc_paused():
            return analyze_erase(graph, prune)
