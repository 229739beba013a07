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

from frontends.onnx_sources import stored_tensors
from graphcore.ir import Node, Value
from graphcore.ops import QuantOperand, rules

__all__ = ["KEEP", "Fill", "exact_integer_products", "fill_slice", "quant_fills", "real_values"]


class _Keep:
    """Marks a scale or zero point: a removed slice of it keeps its values in the reference model."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()
Fill = np.ndarray | _Keep | None
"""The full-shape array a removed slice is filled from, KEEP, or None for plain zeros."""


def _array(t: onnx.TensorProto, base: Path | None) -> np.ndarray:
    return numpy_helper.to_array(t, base_dir=str(base) if base is not None else "")


def _stand_in(pn: onnx.NodeProto, tensors: dict[str, onnx.TensorProto]) -> Node:
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


def _quantized_reads(
    model: onnx.ModelProto, tensors: dict[str, onnx.TensorProto]
) -> list[tuple[QuantOperand, Value, Value | None, Value | None]]:
    """Every read of a stored tensor as a quantized operand: (how, data, scale, zero point)."""
    table = rules()
    out = []
    for pn in model.graph.node:
        rule = table.get(("" if pn.domain == "ai.onnx" else pn.domain, pn.op_type))
        if rule is None or rule.quantized is None:
            continue
        node = _stand_in(pn, tensors)
        for q in rule.quantized(node):
            data = node.input(q.data)
            if data is None or data.name not in tensors or data.static_shape is None:
                continue
            scale = node.input(q.scale) if q.scale is not None else None
            zp = node.input(q.zero_point) if q.zero_point is not None else None
            out.append((q, data, scale, zp))
    return out


def quant_fills(model: onnx.ModelProto, base: Path | None) -> dict[str, Fill]:
    """For every weight read as a quantized operand: the array its removed slices are filled from (its
    zero point; None where that is 0 or its readers disagree); KEEP for their scales and zero points."""
    tensors = stored_tensors(model)
    found: dict[str, list[np.ndarray | None]] = {}
    keep: set[str] = set()
    for q, data, scale, zp_v in _quantized_reads(model, tensors):
        keep |= {p.name for p in (scale, zp_v) if p is not None}
        shape = data.static_shape
        assert shape is not None
        t = tensors.get(zp_v.name) if zp_v is not None else None
        if zp_v is not None and t is None:  # a computed zero point: not a weight's
            found.setdefault(data.name, []).append(None)
            continue
        zp = None if t is None else _full(_array(t, base), shape, q)
        found.setdefault(data.name, []).append(zp)
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


def real_values(
    model: onnx.ModelProto, base: Path | None, arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``arrays`` with every quantized weight replaced by the real numbers it stands for,
    ``(q - zero_point) * scale``, and its scales and zero points left out: what a norm criterion should
    weigh (a uint8 weight's raw values are all near its zero point)."""
    tensors = stored_tensors(model)
    out = dict(arrays)
    for q, data, scale, zp_v in _quantized_reads(model, tensors):
        for p in (scale, zp_v):
            if p is not None:
                out.pop(p.name, None)
        raw = arrays.get(data.name)
        shape = data.static_shape
        if raw is None or shape is None:
            continue
        parts = []
        for p in (zp_v, scale):
            t = tensors.get(p.name) if p is not None else None
            parts.append(None if t is None else _full(_array(t, base), shape, q))
        zp, sc = parts
        if (zp_v is not None and zp is None) or (scale is not None and sc is None):
            continue
        real = np.asarray(raw).astype(np.float64) - (0.0 if zp is None else zp.astype(np.float64))
        out[data.name] = real * (1.0 if sc is None else sc.astype(np.float64))
    return out


def fill_slice(arr: np.ndarray, axis: int, indices: list[int], fill: Fill) -> None:
    """Set ``indices`` along ``axis`` of ``arr`` (in place) to what zero is for that parameter."""
    if isinstance(fill, _Keep):
        return
    view = np.moveaxis(arr, axis, 0)
    view[indices] = 0 if fill is None else np.moveaxis(fill, axis, 0)[indices]


# Integer products onnxruntime runs with a saturating uint8 x int8 kernel at the optimization level
# verification uses: (domain, op) -> (activation zero point, weight, weight zero point) operands
# (None: the operator quantizes its float input to uint8 itself).
_U8S8: dict[tuple[str, str], tuple[int | None, int, int]] = {
    ("", "MatMulInteger"): (2, 1, 3),
    ("", "ConvInteger"): (2, 1, 3),
    ("", "QLinearConv"): (2, 3, 5),
    ("", "QLinearMatMul"): (2, 3, 5),
    ("com.microsoft", "QGemm"): (2, 3, 5),
    ("com.microsoft", "MatMulIntegerToFloat"): (4, 1, 5),
    ("com.microsoft", "DynamicQuantizeMatMul"): (None, 1, 3),  # quantizes its input to uint8 itself
}


def exact_integer_products(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every uint8 x int8 integer product of an int8 weight rewritten to a uint8 weight
    (``q + 128`` and zero point ``zp + 128``: the same ``q - zp``, the same function).

    For verification only, applied to both models compared: onnxruntime's AVX2 kernels for uint8 x
    int8 (its own conversion runs only at the highest optimization level) add pairs of products with
    int16 saturation, so the result depends on which input channels sit next to each other, and
    removing a channel changes the pairs. The uint8 x uint8 kernels sum in int32, as ONNX defines
    these operators. Measured without this: a quantize_dynamic CNN 0.16 off (5% of its output scale,
    MatMulInteger), a quantize_static MLP one output step (2%, QLinearMatMul), a quantize_static
    MobileNetV2 0.8% (QLinearConv, 3 steps); all exact with it.
    """
    tensors = stored_tensors(model)
    producers = {o: pn for pn in model.graph.node for o in pn.output}

    def int8(name: str) -> bool:
        t = tensors.get(name)
        return (
            t is not None
            and t.data_type == onnx.TensorProto.INT8
            and t.data_location != onnx.TensorProto.EXTERNAL
        )

    def uint8_activation(pn: onnx.NodeProto, zp_i: int | None) -> bool:
        if zp_i is None:
            return True
        zp = pn.input[zp_i] if len(pn.input) > zp_i else ""
        t = tensors.get(zp)
        if t is not None:
            return t.data_type == onnx.TensorProto.UINT8
        src = producers.get(zp) if zp else producers.get(pn.input[0])
        return src is not None and src.op_type == "DynamicQuantizeLinear" and src.domain in ("", "ai.onnx")

    def slots(pn: onnx.NodeProto) -> tuple[int, int] | None:
        found = _U8S8.get(("" if pn.domain == "ai.onnx" else pn.domain, pn.op_type))
        if found is None or len(pn.input) <= found[1]:
            return None
        a_zp, w, w_zp = found
        zp = pn.input[w_zp] if len(pn.input) > w_zp else ""
        if int8(pn.input[w]) and (not zp or int8(zp)) and uint8_activation(pn, a_zp):
            return w, w_zp
        return None

    todo = [(i, sl) for i, pn in enumerate(model.graph.node) if (sl := slots(pn)) is not None]
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

    for i, (w, w_zp) in todo:
        pn = out.graph.node[i]
        while len(pn.input) <= w_zp:
            pn.input.append("")
        pn.input[w] = shifted(pn.input[w])
        pn.input[w_zp] = shifted(pn.input[w_zp])
    return out
