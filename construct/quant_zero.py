"""What "zeroed" means for a quantized weight: its zero point.

A quantized weight ``q`` stands for ``(q - zero_point) * scale``, so the reference model (the original
with the removed slices zeroed) sets a removed slice of it to its zero point, sliced the same way (a
per-axis zero point broadcast along its axis, a blocked one repeated over its block). Its scale and zero
point are left as they are: a removed channel's scale multiplies zero either way, and zeroing a zero
point would move every other value of the weight. The op table says which operands are quantized
(``OpRule.quantized``); nothing here names an operator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphcore.ir import Node, Value
from graphcore.ops import QuantOperand, rules

__all__ = ["KEEP", "Fill", "fill_slice", "quant_fills"]


class _Keep:
    """Marks a scale or zero point: a removed slice of it keeps its values in the reference model."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()
Fill = np.ndarray | _Keep | None
"""The full-shape array a removed slice is filled from, KEEP, or None for plain zeros."""


def _tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    out = {t.name: t for t in model.graph.initializer}
    for pn in model.graph.node:
        if pn.op_type == "Constant" and pn.output:
            for att in pn.attribute:
                if att.name == "value":
                    out.setdefault(pn.output[0], att.t)
    return out


def _array(t: onnx.TensorProto, base: Path | None) -> np.ndarray:
    return numpy_helper.to_array(t, base_dir=str(base) if base is not None else "")


def _stand_in(pn: onnx.NodeProto, tensors: dict[str, onnx.TensorProto], base: Path | None) -> Node:
    """The IR node a ``quantized`` hook reads: operand shapes and attributes (no weight is read)."""
    ins: list[Value | None] = []
    for name in pn.input:
        t = tensors.get(name) if name else None
        if t is None:
            ins.append(Value(name) if name else None)
            continue
        ins.append(Value(name, shape=tuple(int(d) for d in t.dims), is_param=True))
    attrs = {a.name: helper.get_attribute_value(a) for a in pn.attribute}
    domain = "" if pn.domain == "ai.onnx" else pn.domain
    return Node(name=pn.name, op=pn.op_type, inputs=ins, outputs=[], attrs=attrs, domain=domain)


def _full(zp: np.ndarray, shape: tuple[int, ...], q: QuantOperand) -> np.ndarray | None:
    """The zero point of every element of a weight of ``shape``."""
    if zp.size == 1:
        return np.broadcast_to(zp.reshape(()), shape)
    if q.axis is None or not shape:
        return None
    ax = q.axis % len(shape)
    if q.block > 0:
        if zp.ndim != len(shape):
            return None
        full = np.take(np.repeat(zp, q.block, axis=ax), np.arange(shape[ax]), axis=ax)
        return full if full.shape == shape else None
    if zp.ndim != 1 or zp.shape[0] != shape[ax]:
        return None
    dims = [1] * len(shape)
    dims[ax] = -1
    return np.broadcast_to(zp.reshape(dims), shape)


def quant_fills(model: onnx.ModelProto, base: Path | None) -> dict[str, Fill]:
    """For every weight read as a quantized operand: the array its removed slices are filled from (its
    zero point; None where that is 0 or its readers disagree); KEEP for their scales and zero points."""
    table = rules()
    tensors = _tensors(model)
    found: dict[str, list[np.ndarray | None]] = {}
    keep: set[str] = set()
    for pn in model.graph.node:
        rule = table.get(("" if pn.domain == "ai.onnx" else pn.domain, pn.op_type))
        if rule is None or rule.quantized is None:
            continue
        node = _stand_in(pn, tensors, base)
        for q in rule.quantized(node):
            data = node.input(q.data)
            if data is None or data.name not in tensors or data.static_shape is None:
                continue
            for i in (q.scale, q.zero_point):
                p = node.input(i) if i is not None else None
                if p is not None:
                    keep.add(p.name)
            zp_v = node.input(q.zero_point) if q.zero_point is not None else None
            if zp_v is None:
                found.setdefault(data.name, []).append(None)
                continue
            t = tensors.get(zp_v.name)
            zp = None if t is None else _array(t, base)
            found.setdefault(data.name, []).append(None if zp is None else _full(zp, data.static_shape, q))
    out: dict[str, Fill] = {}
    for name, fills in found.items():
        first = fills[0]
        agree = all(
            (f is None and first is None)
            or (f is not None and first is not None and np.array_equal(f, first))
            for f in fills
        )
        out[name] = first if agree and first is not None and first.any() else None
    for name in keep:
        out[name] = KEEP
    return out


def fill_slice(arr: np.ndarray, axis: int, indices: list[int], fill: Fill) -> None:
    """Set ``indices`` along ``axis`` of ``arr`` (in place) to what zero is for that parameter."""
    if isinstance(fill, _Keep):
        return
    view = np.moveaxis(arr, axis, 0)
    view[indices] = 0 if fill is None else np.moveaxis(fill, axis, 0)[indices]


def exact_integer_products(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every MatMulInteger that multiplies uint8 activations by an int8 weight rewritten
    to a uint8 weight (``q + 128`` and zero point ``zp + 128``: the same ``q - zp``, the same function).

    For verification only, applied to both models compared: onnxruntime's AVX2 kernel for uint8 x int8
    adds pairs of products with int16 saturation, so its result depends on which input channels sit
    next to each other, and removing a channel changes the pairs. The uint8 x uint8 kernel sums in
    int32, exactly as the ONNX definition does. Measured on a quantize_dynamic CNN: 0.16 absolute
    (5% of the output scale) without this, 0 with it.
    """
    tensors = _tensors(model)
    producers = {o: pn for pn in model.graph.node for o in pn.output}

    def rewritable(pn: onnx.NodeProto) -> bool:
        if pn.op_type != "MatMulInteger" or pn.domain not in ("", "ai.onnx") or len(pn.input) < 2:
            return False
        w, src = tensors.get(pn.input[1]), producers.get(pn.input[0])
        zp = pn.input[3] if len(pn.input) > 3 else ""
        return (
            w is not None
            and w.data_type == onnx.TensorProto.INT8
            and w.data_location != onnx.TensorProto.EXTERNAL
            and src is not None
            and src.op_type == "DynamicQuantizeLinear"  # uint8 activations
            and (not zp or zp in tensors)
        )

    todo = [i for i, pn in enumerate(model.graph.node) if rewritable(pn)]
    if not todo:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    made: dict[str, str] = {}
    used = set(tensors) | {o for pn in model.graph.node for o in pn.output}
    used |= {i.name for i in model.graph.input}

    def shifted(name: str) -> str:
        """The uint8 copy of int8 tensor ``name`` (a zero point of 0 where ``name`` is empty)."""
        if name not in made:
            arr = numpy_helper.to_array(tensors[name]) if name else np.zeros((), np.int8)
            new = f"{name or 'zero_point'}__u8"
            while new in used:
                new += "_"
            used.add(new)
            out.graph.initializer.append(
                numpy_helper.from_array((arr.astype(np.int16) + 128).astype(np.uint8), new)
            )
            made[name] = new
        return made[name]

    for i in todo:
        pn = out.graph.node[i]
        while len(pn.input) < 4:
            pn.input.append("")
        pn.input[1] = shifted(pn.input[1])
        pn.input[3] = shifted(pn.input[3])
    return out
