"""The analysis report: a pydantic model with a published JSON schema (docs/report.schema.json).

Only the schema (and writing it) lives here; ``PruneAnalysis.report()`` in ``graphcore.groups`` fills
it, so the report depends on the analysis and never the other way round.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

__all__ = [
    "SCHEMA_VERSION",
    "EraseResult",
    "GroupReport",
    "ModelInfo",
    "OutputError",
    "ParamRef",
    "PruneResult",
    "RemovedSlice",
    "Report",
    "VerifyReport",
    "schema_json",
    "write_json_atomic",
]

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


class OutputError(BaseModel):
    name: str
    max_abs: float
    max_rel: float
    scale: float


class VerifyReport(BaseModel):
    """Max absolute error and error relative to the output's scale (max |full output|), per output."""

    passed: bool
    samples: int
    rtol: float
    max_abs: float
    max_rel: float
    outputs: list[OutputError]
    tolerance: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="why rtol is what it is: the model's dtype (fp32, fp16, bf16, quantized) or the user's "
        "--rtol; absent where the caller gave the tolerance without a reason",
    )
    method: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="how the models ran where it was not both in memory at once: 'one model at a time, "
        "weights read from files' (models too big to hold twice); absent for the in-memory check",
    )
    peak_memory_mb: float | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="peak resident memory of the process during verification (MB), where measured",
    )


class PruneResult(BaseModel):
    """What ``zigraph prune`` did: sizes before and after, the proof, and how the ZIGs were chosen."""

    zigs_removed: int
    params_before: int
    params_after: int
    verification: VerifyReport | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="onnxruntime equivalence of the written model; absent with --no-verify",
    )
    output: str | None = Field(default=None, description="the written model, or null when it did not verify")
    unverified: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="why verification was asked for but could not run on this machine (the model was "
        "written, NOT verified); absent otherwise",
    )
    sparsity: float
    criterion: str
    seed: int
    multiple: int | None = Field(
        description="channels each group keeps a multiple of; null: per group, what its ops' kernels like"
    )
    seconds: float


class EraseResult(BaseModel):
    """What ``zigraph erase`` did: which structures went, sizes before and after, and the proof."""

    structures_erased: list[int] = Field(description="ids of the erased removal structures")
    structures_requested: int = Field(description="round(sparsity x erasable structures)")
    structures_erasable: int
    note: str | None = Field(
        default=None, description="why fewer structures were erased than requested, or null"
    )
    nodes_removed: int = Field(description="operators gone: erased segments and what died with them")
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    verification: VerifyReport | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="onnxruntime equivalence of the written model; absent with --no-verify",
    )
    output: str | None = Field(default=None, description="the written model, or null when it did not verify")
    sparsity: float
    criterion: str = Field(description="how structures were ranked: 'norm' (L2 norm / sqrt(numel))")
    seed: int
    seconds: float


class Report(BaseModel):
    schema_version: str = SCHEMA_VERSION
    model: ModelInfo
    mode: str
    attention: str | None = Field(
        default=None, description="attention channels: 'dims' (head dimensions) or 'heads' (whole heads)"
    )
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
    result: PruneResult | EraseResult | None = Field(
        default=None, description="after prune or erase: sizes before/after and verification"
    )


def write_json_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".zigraph-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp creates the file 0600; a report is an ordinary file, readable as the umask allows.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def schema_json() -> str:
    return json.dumps(Report.model_json_schema(), indent=2, sort_keys=True) + "\n"
