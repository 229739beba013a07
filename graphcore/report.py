"""The analysis report: a pydantic model with a published JSON schema (docs/report.schema.json)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from graphcore.groups import ParamSlice, PruneAnalysis

__all__ = ["SCHEMA_VERSION", "GroupReport", "Report", "build_report", "write_json_atomic"]

SCHEMA_VERSION = "1.0"


class ParamRef(BaseModel):
    name: str
    axis: int


class GroupReport(BaseModel):
    id: int
    size: int = Field(description="channels (ZIGs) in the group, or 1 for an erasing structure")
    params: list[ParamRef]
    prunable: bool
    reason: str | None = None
    num_params: int
    flops: int
    parent: int | None = None
    nodes: list[str] = Field(default_factory=list)


class RemovedSlice(BaseModel):
    param: str
    axis: int
    indices: list[int]


class ModelInfo(BaseModel):
    name: str
    format: str
    opset: int | None = None
    source: str | None = None


class Report(BaseModel):
    schema_version: str = SCHEMA_VERSION
    model: ModelInfo
    mode: str
    num_nodes: int
    vertex_kinds: dict[str, int]
    unknown_ops: dict[str, int]
    params_total: int
    params_prunable: int = Field(description="parameters inside at least one prunable ZIG")
    flops_total: int
    num_groups: int
    num_prunable_groups: int
    num_zigs: int
    num_prunable_zigs: int
    groups: list[GroupReport]
    removed: list[RemovedSlice] | None = None
    result: dict | None = Field(default=None, description="after prune: sizes before/after and verification")


def _params_prunable(analysis: PruneAnalysis) -> int:
    """Count parameter scalars covered by a prunable ZIG (union over axes, computed exactly)."""
    prunable_zig = np.zeros(analysis.num_zigs + 1, dtype=bool)
    ids = analysis.prunable_zig_ids()
    prunable_zig[ids] = True
    per_param: dict[str, dict[int, int]] = {}
    for (name, axis), owner in analysis.param_axes.items():
        if not analysis.trainable.get(name):
            continue
        covered = prunable_zig[owner]  # owner -1 hits the sentinel (False)
        per_param.setdefault(name, {})[axis] = int((~covered).sum())
    total = 0
    for name, axes in per_param.items():
        shape = analysis.param_shapes.get(name, ())
        numel = math.prod(shape) if shape else 1
        uncovered = 1
        for a, d in enumerate(shape):
            uncovered *= axes.get(a, d)
        total += numel - uncovered
    return int(total)


def build_report(analysis: PruneAnalysis, removed: list[ParamSlice] | None = None) -> Report:
    graph = analysis.graph
    groups = [
        GroupReport(
            id=g.id,
            size=g.size,
            params=[ParamRef(name=n, axis=a) for n, a in g.params],
            prunable=g.prunable,
            reason=g.reason,
            num_params=g.num_params,
            flops=g.flops,
            nodes=g.nodes,
        )
        for g in analysis.groups
    ]
    return Report(
        model=ModelInfo(
            name=getattr(graph, "name", "model"),
            format=getattr(graph, "format", "onnx"),
            opset=getattr(graph, "opset", None),
            source=getattr(graph, "meta", {}).get("source"),
        ),
        mode=analysis.mode,
        num_nodes=len(graph.nodes),  # type: ignore[attr-defined]
        vertex_kinds=dict(getattr(analysis, "vertex_kinds", {})),
        unknown_ops=dict(getattr(analysis, "unknown_ops", {})),
        params_total=analysis.params_total,
        params_prunable=_params_prunable(analysis),
        flops_total=analysis.flops_total,
        num_groups=len(analysis.groups),
        num_prunable_groups=sum(1 for g in analysis.groups if g.prunable),
        num_zigs=analysis.num_zigs,
        num_prunable_zigs=int(analysis.prunable_zig_ids().size),
        groups=groups,
        removed=None
        if removed is None
        else [RemovedSlice(param=s.param, axis=s.axis, indices=list(s.indices)) for s in removed],
    )


def write_json_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".zigraph-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def schema_json() -> str:
    return json.dumps(Report.model_json_schema(), indent=2, sort_keys=True) + "\n"
