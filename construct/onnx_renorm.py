"""Keep the original count of a statistic whose axes shrank, in an ONNX model (docs/hidden_size.md).

The analysis lets a mean or a normalization lose elements only where they are exactly zero in the
zeroed model (``require_zero``), so the sums are unchanged and only the count D must be kept:

- a mean becomes ``ReduceMean(x) * (d / D)`` (= ReduceSum(x) / D);
- a LayerNorm (LayerNormalization, com.microsoft::SkipLayerNormalization) becomes a decomposition in
  plain ONNX ops, mean = sum / D and var = (sum((x - mean)^2) + (D - d) * mean^2) / D;
- an RMSNorm (RMSNormalization, SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization) keeps
  its op with epsilon * D / d and its scale times sqrt(D / d).

Which nodes, which operands and which outputs come from the op table (``OpRule.renorm``), never from
op names here.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from construct.renorm_plan import Counted, counted
from graphcore.errors import InternalError
from graphcore.ir import Graph

__all__ = ["lower_counts"]

_NP = {"bfloat16": TensorProto.BFLOAT16}


def _elem(dtype: str | None) -> int:
    if dtype is None:
        return TensorProto.FLOAT
    if dtype in _NP:
        return _NP[dtype]
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


class _Writer:
    """Fresh names, new initializers and new nodes for one model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.taken = {t.name for t in model.graph.initializer} | {
            x for pn in model.graph.node for x in [pn.name, *pn.input, *pn.output]
        }
        self.k = 0
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)

    def name(self, stem: str) -> str:
        while True:
            self.k += 1
            n = f"{stem}__zigraph_count{self.k}"
            if n not in self.taken:
                self.taken.add(n)
                return n

    def const(self, stem: str, value: float | np.ndarray, elem: int) -> str:
        n = self.name(stem)
        arr = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(elem))
        self.model.graph.initializer.append(numpy_helper.from_array(arr, n))
        return n

    def node(self, out: list[onnx.NodeProto], op: str, inputs: list[str], stem: str, **attrs) -> str:
        y = self.name(stem)
        out.append(helper.make_node(op, inputs, [y], name=self.name(f"{stem}_{op}"), **attrs))
        return y

    def reduce_sum(self, out: list[onnx.NodeProto], x: str, axes: list[int], stem: str) -> str:
        if self.opset >= 13:
            ax = self.name(f"{stem}_axes")
            self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(axes, np.int64), ax))
            return self.node(out, "ReduceSum", [x, ax], stem, keepdims=1)
        return self.node(out, "ReduceSum", [x], stem, keepdims=1, axes=axes)


def lower_counts(model: onnx.ModelProto, graph: Graph, p, skip=frozenset()) -> None:
    """Rewrite, in ``model`` (a copy of the model ``graph`` was loaded from, same node order), every
    statistic the shrink plan ``p`` takes elements from, so that it keeps its original count."""
    todo = counted(graph, p, skip)
    if not todo:
        return
    w = _Writer(model)
    replace: dict[int, list[onnx.NodeProto]] = {}
    for c in todo:
        pn = model.graph.node[c.node.origin]
        if c.info.kind == "mean":
            replace[c.node.origin] = _mean(w, pn, c)
        elif c.info.kind == "rmsnorm":
            replace[c.node.origin] = _rms(w, pn, c)
        else:
            replace[c.node.origin] = _layernorm(w, pn, c)
    nodes = []
    for i, pn in enumerate(model.graph.node):
        nodes.extend(replace.get(i, [pn]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _mean(w: _Writer, pn: onnx.NodeProto, c: Counted) -> list[onnx.NodeProto]:
    """ReduceMean over d elements, times d / D: the sum over the original count."""
    y = pn.output[0]
    elem = _elem(c.node.outputs[0].dtype)
    inner = w.name(y)
    mean = onnx.NodeProto()
    mean.CopyFrom(pn)
    mean.output[0] = inner
    ratio = w.const(f"{y}_ratio", c.kept / c.full, elem)
    mul = helper.make_node("Mul", [inner, ratio], [y], name=w.name(f"{pn.name}_count"))
    return [mean, mul]


def _rms(w: _Writer, pn: onnx.NodeProto, c: Counted) -> list[onnx.NodeProto]:
    """x / sqrt(sum(x^2) / D + eps) * g == x / sqrt(sum(x^2) / d + eps * D / d) * (g * sqrt(D / d))."""
    ratio = c.full / c.kept
    new = onnx.NodeProto()
    new.CopyFrom(pn)
    keep = [a for a in new.attribute if a.name != "epsilon"]
    del new.attribute[:]
    new.attribute.extend(keep)
    new.attribute.append(helper.make_attribute("epsilon", float(c.info.epsilon * ratio)))
    out: list[onnx.NodeProto] = []
    if c.info.scale is None:
        # no scale to fold into: scale the output instead (only for a plain RMSNorm, whose other
        # outputs the analysis requires unread)
        y = new.output[0]
        inner = w.name(y)
        new.output[0] = inner
        factor = w.const(f"{y}_factor", math.sqrt(ratio), _elem(c.node.outputs[0].dtype))
        return [new, helper.make_node("Mul", [inner, factor], [y], name=w.name(f"{pn.name}_count"))]
    g = new.input[c.info.scale]
    elem = _elem(c.node.input(c.info.scale).dtype)  # type: ignore[union-attr]
    stored = {t.name: t for t in w.model.graph.initializer}
    if g in stored:
        arr = numpy_helper.to_array(stored[g]).astype(np.float64) * math.sqrt(ratio)
        new.input[c.info.scale] = w.const(g, arr, stored[g].data_type)
    else:
        factor = w.const(f"{g}_factor", math.sqrt(ratio), elem)
        new.input[c.info.scale] = w.node(out, "Mul", [g, factor], g)
    return [*out, new]


def _layernorm(w: _Writer, pn: onnx.NodeProto, c: Counted) -> list[onnx.NodeProto]:
    """LayerNorm over the original count D with d elements present (the others are zero):
    mean = sum(x) / D, var = (sum((x - mean)^2) + (D - d) * mean^2) / D, computed in float32 as
    LayerNormalization's stash type does (float64 stays float64)."""
    info = c.info
    out: list[onnx.NodeProto] = []
    x_val = c.node.input(0)
    assert x_val is not None
    dtype = _elem(x_val.dtype)
    stash = TensorProto.DOUBLE if dtype == TensorProto.DOUBLE else TensorProto.FLOAT
    stem = pn.output[0]
    summed = [pn.input[i] for i in info.summed if i < len(pn.input) and pn.input[i]]
    s = summed[0]
    for other in summed[1:]:
        s = w.node(out, "Add", [s, other], f"{stem}_sum")
    if info.sum_output is not None and info.sum_output < len(pn.output) and pn.output[info.sum_output]:
        out.append(helper.make_node("Identity", [s], [pn.output[info.sum_output]], name=w.name(stem)))
    xf = s if stash == dtype else w.node(out, "Cast", [s], f"{stem}_stash", to=stash)
    axes = list(info.axes)
    full = w.const(f"{stem}_D", float(c.full), stash)
    mean = w.node(out, "Div", [w.reduce_sum(out, xf, axes, f"{stem}_s"), full], f"{stem}_mean")
    xc = w.node(out, "Sub", [xf, mean], f"{stem}_centered")
    ss = w.reduce_sum(out, w.node(out, "Mul", [xc, xc], f"{stem}_sq"), axes, f"{stem}_ss")
    missing = w.const(f"{stem}_removed", float(c.full - c.kept), stash)
    corr = w.node(out, "Mul", [w.node(out, "Mul", [mean, mean], f"{stem}_m2"), missing], f"{stem}_corr")
    var = w.node(out, "Div", [w.node(out, "Add", [ss, corr], f"{stem}_ss2"), full], f"{stem}_var")
    eps = w.const(f"{stem}_eps", float(info.epsilon), stash)
    std = w.node(out, "Sqrt", [w.node(out, "Add", [var, eps], f"{stem}_ve")], f"{stem}_std")
    rstd = w.node(out, "Reciprocal", [std], f"{stem}_rstd")
    y = w.node(out, "Mul", [xc, rstd], f"{stem}_norm")
    if stash != dtype:
        y = w.node(out, "Cast", [y], f"{stem}_back", to=dtype)
    if info.scale is not None:
        y = w.node(out, "Mul", [y, pn.input[info.scale]], f"{stem}_scaled")
    if info.bias is not None:
        y = w.node(out, "Add", [y, pn.input[info.bias]], f"{stem}_shifted")
    out.append(helper.make_node("Identity", [y], [pn.output[0]], name=w.name(stem)))
    for i, src in zip(info.stats, (mean, rstd), strict=False):
        if i < len(pn.output) and pn.output[i]:
            out.append(helper.make_node("Identity", [src], [pn.output[i]], name=w.name(stem)))
    if len(info.stats) > 2:
        raise InternalError(f"{c.node.label}: more statistics outputs than mean and deviation")
    return out
