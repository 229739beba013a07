"""Models of any float dtype made runnable for verification in onnxruntime's CPU provider, exactly.

Two gaps between what a model may hold and what the verification can run, both closed without changing
a single value the comparison sees:

- bf16 graph inputs and outputs: numpy and onnxruntime's Python API exchange no bfloat16 arrays.
  ``float_io`` puts them behind Casts (the feed is rounded to bf16 inside the model, the output
  widened exactly), so the model still computes on its own bf16 values.
- bf16 computation: the CPU provider has almost no bfloat16 kernels (Conv, MatMul, Add: none).
  ``widen_bf16`` rewrites the model to float32 with every bf16 value widened exactly. Both the zeroed
  full model and the small one are widened the same way, so the comparison still checks the slicing;
  it is then done in fp32 arithmetic, at fp32's tolerance, and the report says so.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

__all__ = ["bf16_tensors", "float_io", "widen_bf16"]

_BF16 = onnx.TensorProto.BFLOAT16
_F32 = onnx.TensorProto.FLOAT


def _subgraphs(g: onnx.GraphProto):
    for pn in g.node:
        for att in pn.attribute:
            if att.type == onnx.AttributeProto.GRAPH:
                yield att.g
            elif att.type == onnx.AttributeProto.GRAPHS:
                yield from att.graphs


def bf16_tensors(model: onnx.ModelProto) -> bool:
    """Whether the model stores, declares or casts to bfloat16 anywhere."""

    def walk(g: onnx.GraphProto) -> bool:
        if any(t.data_type == _BF16 for t in g.initializer):
            return True
        if any(vi.type.tensor_type.elem_type == _BF16 for vi in [*g.input, *g.output, *g.value_info]):
            return True
        for pn in g.node:
            for att in pn.attribute:
                if att.type == onnx.AttributeProto.TENSOR and att.t.data_type == _BF16:
                    return True
                if att.type == onnx.AttributeProto.INT and att.name in ("to", "dtype") and att.i == _BF16:
                    return True
        return any(walk(sg) for sg in _subgraphs(g))

    return walk(model.graph)


def float_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its bfloat16 graph inputs and outputs behind exact Casts from and to float32
    (``model`` itself when it has no bf16 edge). Names are kept, so feeds and outputs still match."""
    inits = {t.name for t in model.graph.initializer}

    def is_bf16(vi: onnx.ValueInfoProto) -> bool:
        return vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == _BF16

    ins = [vi.name for vi in model.graph.input if is_bf16(vi) and vi.name not in inits]
    outs = [vi.name for vi in model.graph.output if is_bf16(vi)]
    if not ins and not outs:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inner = {n: f"{n}__zigraph_bf16" for n in [*ins, *outs]}
    for pn in g.node:
        for i, name in enumerate(pn.input):
            if name in inner:
                pn.input[i] = inner[name]
        for i, name in enumerate(pn.output):
            if name in inner:
                pn.output[i] = inner[name]
    heads = [onnx.helper.make_node("Cast", [n], [inner[n]], to=_BF16) for n in ins]
    tails = [onnx.helper.make_node("Cast", [inner[n]], [n], to=_F32) for n in outs]
    nodes = [*heads, *g.node, *tails]
    del g.node[:]
    g.node.extend(nodes)
    for vi in [*g.input, *g.output]:
        if vi.name in inner:
            vi.type.tensor_type.elem_type = _F32
    return out


def _widen_tensor(t: onnx.TensorProto) -> None:
    if t.data_type == _BF16 and t.data_location != onnx.TensorProto.EXTERNAL:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype("float32"), t.name))


def _widen_graph(g: onnx.GraphProto) -> None:
    for t in g.initializer:
        _widen_tensor(t)
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == _BF16:
            vi.type.tensor_type.elem_type = _F32
    for pn in g.node:
        for att in pn.attribute:
            if att.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(att.t)
            elif att.type == onnx.AttributeProto.INT and att.name in ("to", "dtype") and att.i == _BF16:
                att.i = _F32
    for sg in _subgraphs(g):
        _widen_graph(sg)


def widen_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float32 where it computed in bfloat16, every bf16 value widened
    exactly (initializers, Constant values, declared types, Cast targets)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _widen_graph(out.graph)
    return out
