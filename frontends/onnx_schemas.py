"""Operators onnxruntime defines in the default ONNX domain that onnx itself does not know.

onnxruntime's transformer optimizer writes ``SimplifiedLayerNormalization`` (and
``LayerNormalization`` below opset 17) in the default domain; onnxruntime registers them there and runs
the model, while ``onnx.checker`` and strict shape inference refuse it ("No Op registered"). To accept
what onnxruntime accepts, such nodes are moved to a private domain, which the checker and inference
skip, in the throw-away copy that is checked; the model itself keeps them as written. An op that
neither onnx nor onnxruntime knows stays an error.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import onnx

from frontends.onnx_rows import forget_rows, node_rows

__all__ = ["ORT_ONLY_DOMAIN", "hide_ort_only_ops", "ort_only_ops"]

ORT_ONLY_DOMAIN = "zigraph.onnxruntime-default-domain"


@functools.cache
def _ort_default_domain() -> dict[str, int]:
    """Op type -> the first opset at which onnxruntime registers it in the default domain."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

        schemas = ort_c.get_all_operator_schema()
    except Exception:  # no onnxruntime, or one built without schemas: accept only what onnx knows
        return {}
    first: dict[str, int] = {}
    for s in schemas:
        if s.domain in ("", "ai.onnx"):
            first[s.name] = min(first.get(s.name, s.since_version), s.since_version)
    return first


def _nodes(g: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for pn in g.node:
        yield pn
        for att in pn.attribute:
            if att.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(att.g)
            elif att.type == onnx.AttributeProto.GRAPHS:
                for sg in att.graphs:
                    yield from _nodes(sg)


def _opset(model: onnx.ModelProto) -> int | None:
    return next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), None)


def ort_only_ops(model: onnx.ModelProto) -> set[str]:
    """Default-domain op types of ``model`` that onnx has no schema for at the model's opset but
    onnxruntime registers (cheap: onnxruntime is asked only when onnx does not know an op)."""
    opset = _opset(model)
    if opset is None:
        return set()
    rows = node_rows(model.graph)
    if any(r.subgraphs for r in rows):
        ops = {pn.op_type for pn in _nodes(model.graph) if pn.domain in ("", "ai.onnx")}
    else:
        ops = {r.op_type for r in rows if r.domain in ("", "ai.onnx")}
    unknown = {op for op in ops if not onnx.defs.has(op, opset, "")}  # asked once per op type
    if not unknown:
        return set()
    ort = _ort_default_domain()
    return {op for op in unknown if op in ort and ort[op] <= opset}


def hide_ort_only_ops(model: onnx.ModelProto, ops: set[str] | None = None) -> set[str]:
    """Move the ``ort_only_ops`` nodes of ``model`` (a copy made for checking) to ``ORT_ONLY_DOMAIN``,
    in place, so ``onnx.checker`` and shape inference skip them. Returns the op types moved.
    ``ops``: the ``ort_only_ops`` when the caller knows them (from the model the copy was made of)."""
    ops = ort_only_ops(model) if ops is None else ops
    if not ops:
        return ops
    for pn in _nodes(model.graph):
        if pn.domain in ("", "ai.onnx") and pn.op_type in ops:
            pn.domain = ORT_ONLY_DOMAIN
    forget_rows(model.graph)
    if all(i.domain != ORT_ONLY_DOMAIN for i in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(ORT_ONLY_DOMAIN, 1))
    return ops
