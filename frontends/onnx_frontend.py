"""ONNX → graphcore IR: validate, inline local functions, infer shapes, and never read external weights.

Initializers become parameter Values with their shapes only; a small integer initializer keeps its value
because shape arithmetic needs it. Weights stored as ONNX external data stay on disk: their locations
are checked (they must stay inside the model's folder) and nothing else is read.

Which tensors are weights is ``frontends/onnx_sources.py``'s to say: initializers (in IR >= 4 less those
also listed as graph inputs, which are overridable defaults and so inputs of fixed width) and float
``Constant`` nodes. A weight read by several nodes gets one parameter per read (an alias), so an
exporter's deduplication of equal tensors never ties the readers' channels together.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from frontends.onnx_order import is_sorted, sort_graph
from frontends.onnx_rows import (
    NodeRow,
    TensorRow,
    field_getter,
    initializer_rows,
    node_rows,
    shared_rows,
    tensor_row,
)
from frontends.onnx_schemas import hide_ort_only_ops, ort_only_ops
from frontends.onnx_sources import (
    ParamUse,
    initializer_names,
    is_weight_constant,
    outer_reads,
    overridable_inputs,
    param_uses,
)
from frontends.onnx_sources import node_name as onnx_node_name
from graphcore.errors import ModelLoadError
from graphcore.ir import Dim, Graph, Node, Value
from graphcore.ops import lift_legacy_attrs, mark_quantized_weights
from graphcore.util import gc_paused

__all__ = ["MAX_OPSET", "MIN_OPSET", "checkable", "light_copy", "load_onnx", "read_onnx"]

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
SMALL_CONST = 4096
SMALL_FLOAT = 64
_FLOAT_ELEMS = frozenset(
    getattr(onnx.TensorProto, name)
    for name in (
        "FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "COMPLEX64", "COMPLEX128", "FLOAT8E4M3FN",
        "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT4E2M1", "FLOAT8E8M0",
    )
    if hasattr(onnx.TensorProto, name)
)  # fmt: skip
NOT_TRAINABLE_INPUTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}
_FROZEN_OPS = frozenset(op for op, _ in NOT_TRAINABLE_INPUTS)


def read_onnx(
    source: str | os.PathLike | onnx.ModelProto, copy: bool = True, _light: list | None = None
) -> tuple[onnx.ModelProto, Path | None]:
    """Parse and validate a model without loading external data; raises ModelLoadError with one line.

    Nodes out of topological order are sorted first (onnxruntime accepts such files; the checker and
    everything after it need the order), so the returned model is always sorted.

    A ``ModelProto`` source is never edited. With ``copy`` (the default) the result is a private copy
    the caller may edit; without it the source itself comes back when it needs no edit (sorted, no
    local functions), because copying a model copies its weight bytes: for a parsed ViT-B/16 that copy
    cost more than the whole analysis. Nothing may edit a result returned with ``copy=False``."""
    with shared_rows():
        return _read_onnx(source, copy, _light)


def _read_onnx(
    source: str | os.PathLike | onnx.ModelProto, copy: bool, _light: list | None
) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(source, onnx.ModelProto):
        name = source.graph.name or "model"
        model = source
        base = None
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ModelLoadError(f"{name}: no such file")
        if not path.is_file():
            raise ModelLoadError(f"{name}: not a file")
        if path.stat().st_size == 0:
            raise ModelLoadError(f"{name}: the file is empty")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError, TypeError) as exc:
            raise ModelLoadError(f"{name}: not a readable ONNX model ({_short(exc)})") from None
        except Exception as exc:
            raise ModelLoadError(f"{name}: not a readable ONNX model ({_short(exc)})") from None
        base = path.resolve().parent
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{name}: not an ONNX model (no graph or no nodes)")
    _check_opset(model, name)
    stored = _stored_rows(model)
    _check_external(stored, base, name)
    _check_declared(model, stored, name)
    if model is source and (copy or len(source.functions) or not _in_order(source, name)):
        model = onnx.ModelProto()
        model.CopyFrom(source)
    if model is not source:
        try:  # onnxruntime runs a graph whose nodes are out of order; the checker refuses it
            sort_graph(model.graph)
        except ValueError as exc:
            raise ModelLoadError(f"{name}: invalid ONNX graph ({exc})") from None
    # Serialized once: the checker and shape inference both read bytes, and serializing was a third
    # of their cost.
    light = checkable(model).SerializeToString()
    try:
        onnx.checker.check_model(light)
    except Exception as exc:
        raise ModelLoadError(f"{name}: invalid ONNX graph ({_short(exc)})") from None
    if _light is not None and not len(model.functions):
        _light.append(light)  # load_onnx's shape inference reads the same light copy
    if len(model.functions):
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as exc:
            raise ModelLoadError(f"{name}: cannot inline its local functions ({_short(exc)})") from None
    return model, base


def load_onnx(source: str | os.PathLike | onnx.ModelProto) -> Graph:
    """Read an ONNX model (path or ModelProto) into the IR, with inferred shapes.

    The graph keeps the model in ``meta["model"]``: for a ``ModelProto`` source that is the caller's
    own object whenever it needed no edit (``read_onnx(copy=False)``); zigraph never edits it."""
    # Each graph's node list is read from protobuf once; the collector waits until the load is done
    # (its rows and the IR are hundreds of thousands of objects on a big graph, and every collection
    # on the way scanned all of them).
    with shared_rows(), gc_paused():
        return _load_onnx(source)


def _load_onnx(source: str | os.PathLike | onnx.ModelProto) -> Graph:
    light: list[bytes] = []
    model, base = read_onnx(source, copy=False, _light=light)
    name = str(source) if not isinstance(source, onnx.ModelProto) else (model.graph.name or "model")
    try:
        # Strict: a type or shape error ONNX can see (a float64 weight on a float32 Conv, ranks that
        # cannot match) is bad input now, not an "internal error" when the pruned model is checked.
        # The checker's light copy is reused: building it walks every initializer.
        inferred = onnx.shape_inference.infer_shapes(
            light[0] if light else checkable(model).SerializeToString(),
            check_type=True,
            strict_mode=True,
            data_prop=True,
        )
    except Exception as exc:
        raise ModelLoadError(f"{name}: invalid ONNX graph (shape inference: {_short(exc)})") from None
    _file_shapes(inferred.graph, model.graph)
    graph = _to_ir(model, name, inferred.graph)
    _check_axes(graph, name)
    graph.meta["model"] = model
    graph.meta["base_dir"] = base
    graph.meta["source"] = None if isinstance(source, onnx.ModelProto) else str(source)
    return graph


def _file_shapes(inferred: onnx.GraphProto, g: onnx.GraphProto) -> None:
    """Fill in from the file's ``value_info`` what ONNX's inference left unknown: a value it could not
    infer at all, or a dim it left unknown (no size, or only a placeholder ``unk__N`` symbol of its own
    making). A size or symbol inference derived is never overridden, nor is a file shape of another
    rank used (a stale annotation)."""
    if not len(g.value_info):
        return  # the file annotates nothing (a freshly exported model): no per-value map to build
    have = {vi.name: vi for vi in inferred.value_info}
    for vi in g.value_info:
        if not vi.type.HasField("tensor_type"):
            continue
        cur = have.get(vi.name)
        if cur is None:
            inferred.value_info.append(vi)
            continue
        if cur.type == vi.type:
            continue  # the common case, compared in C: nothing to fill
        ct, ft = cur.type.tensor_type, vi.type.tensor_type
        if not ft.HasField("shape"):
            continue
        if not ct.HasField("shape"):
            ct.shape.CopyFrom(ft.shape)
            continue
        if len(ct.shape.dim) != len(ft.shape.dim):
            continue
        for cd, fd in zip(ct.shape.dim, ft.shape.dim):
            if cd.HasField("dim_value") or (
                cd.HasField("dim_param") and not cd.dim_param.startswith("unk__")
            ):
                continue  # a size or a symbol inference derived (a graph input's 'batch') stays
            if fd.HasField("dim_value"):
                cd.dim_value = fd.dim_value
            elif fd.HasField("dim_param") and not cd.HasField("dim_param"):
                cd.dim_param = fd.dim_param


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == 3  # protobuf < 5: LABEL_REPEATED


def _copy_fields(src, dst, skip: tuple[str, ...]) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except those named in ``skip``."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if _repeated(field):
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its weight bytes: large or external initializers become typed graph inputs.

    The checker and shape inference serialize the whole model; for a 350 MB ViT that cost seconds
    while the analysis itself takes a fraction of one. Small initializers stay, because shape inference
    reads their values: integers up to ``SMALL_CONST`` elements (shapes, axes, pads), and floats up to
    ``SMALL_FLOAT`` (a Resize's scales, a float Range's bounds); a float weight never sizes anything,
    and a deep CNN's thousands of small biases and norm parameters were most of the checked bytes.
    """
    light = onnx.ModelProto()
    _copy_fields(model, light, skip=("graph",))
    g, lg = model.graph, light.graph
    _copy_fields(g, lg, skip=("initializer", "input", "value_info"))
    # ONNX derives the shapes of its own ops' outputs; a file's annotation of them can be another
    # tool's stale guess (onnxruntime's quantizers write 'unk__29' dims from their own symbolic
    # inference), which ONNX's inference then keeps over a static size it could have derived.
    # ``load_onnx`` falls back to the file's shapes only where ONNX derives less (``_file_shapes``).
    if len(g.value_info):
        derived = {o for r in node_rows(g) if r.domain in ("", "ai.onnx") for o in r.outputs}
        lg.value_info.extend(vi for vi in g.value_info if vi.name not in derived)
    lg.input.extend(g.input)
    declared = {i.name for i in g.input}
    typed: dict[tuple[int, tuple[int, ...]], bytes] = {}
    kept: list[onnx.TensorProto] = []
    inputs: list[bytes] = []
    for t in initializer_rows(g):
        limit = SMALL_FLOAT if t.data_type in _FLOAT_ELEMS else SMALL_CONST
        if not t.external and t.numel <= limit:
            kept.append(t.proto)
        elif t.name not in declared:
            inputs.append(_typed_input(t, typed))
    lg.initializer.extend(kept)  # one call copies them all, in order
    if inputs:
        lg.MergeFromString(b"".join(inputs))  # appended after the file's own inputs, in order
    return light


_SHORT_VARINTS = [bytes((i,)) for i in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SHORT_VARINTS[n]  # a name, a type: almost always one byte
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _typed_input(t: TensorRow, typed: dict[tuple[int, tuple[int, ...]], bytes]) -> bytes:
    """``t`` declared as a graph input of its type and shape, as the bytes of one ``GraphProto.input``
    entry (protobuf's wire format: parsing concatenated entries appends each to the list). Building a
    ``ValueInfoProto`` per weight cost 11 µs (a dozen upb calls); a deep network has tens of thousands
    of weights. Each distinct type is serialized once (in ``typed``): weights of one layer shape
    repeat."""
    tp = typed.get((t.data_type, t.dims))
    if tp is None:
        proto = onnx.TypeProto()
        tt = proto.tensor_type
        tt.elem_type = t.data_type
        dims = tt.shape.dim
        dims.extend([])  # a scalar's shape must still be present: rank 0, not unknown
        for d in t.dims:
            dims.add().dim_value = d
        tp = typed[(t.data_type, t.dims)] = b"\x12" + _varint(proto.ByteSize()) + proto.SerializeToString()
    name = t.name.encode() if isinstance(t.name, str) else t.name
    vi = b"\x0a" + _varint(len(name)) + name + tp  # ValueInfoProto: name = 1, type = 2
    return b"\x5a" + _varint(len(vi)) + vi  # GraphProto.input = 11, length-delimited


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The ``light_copy`` that ``onnx.checker`` and strict shape inference get: ops onnxruntime
    registers in the default domain but onnx does not know are moved out of their way
    (``frontends.onnx_schemas``), so a model onnxruntime runs is not refused for them."""
    light = light_copy(model)
    ops = ort_only_ops(model)  # read from the model's rows: the copy has the same nodes
    if ops:
        hide_ort_only_ops(light, ops)
    return light


def _in_order(model: onnx.ModelProto, name: str) -> bool:
    try:
        return is_sorted(model.graph)
    except ValueError as exc:
        raise ModelLoadError(f"{name}: invalid ONNX graph ({exc})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    return msg[:300]


def _opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _check_opset(model: onnx.ModelProto, name: str) -> None:
    v = _opset(model)
    if v is None:
        raise ModelLoadError(f"{name}: the model imports no default ONNX opset")
    if not MIN_OPSET <= v <= MAX_OPSET:
        raise ModelLoadError(
            f"{name}: opset {v} is not supported (supported: {MIN_OPSET} to {MAX_OPSET}); "
            "convert it with onnx.version_converter first"
        )


def _stored_rows(model: onnx.ModelProto) -> list[TensorRow]:
    """Rows of every tensor the file stores: the initializers, then tensor attributes (a Constant's
    value), in file order; read once for both checks (they were read per check, through a generator
    that cost as much as the rows)."""
    rows = initializer_rows(model.graph)
    held = [
        tensor_row(att.t)
        for row in node_rows(model.graph)
        if row.tensors
        for att in row.attributes
        if att.type == onnx.AttributeProto.TENSOR
    ]
    return [*rows, *held] if held else rows


# Row fields read in C by ``map`` (a whole-model test without a Python frame per tensor or node).
_ROW_PROTO, _ROW_NAME, _ROW_DIMS, _ROW_NUMEL, _ROW_EXTERNAL = (
    field_getter(TensorRow, f) for f in ("proto", "name", "dims", "numel", "external")
)
_RAW_DATA = operator.attrgetter("raw_data")
_NODE_TEXTS = field_getter(NodeRow, "name", "op_type", "domain")
_NODE_INPUTS, _NODE_OUTPUTS = field_getter(NodeRow, "inputs"), field_getter(NodeRow, "outputs")


def _check_external(rows: list[TensorRow], base: Path | None, name: str) -> None:
    if not any(map(_ROW_EXTERNAL, rows)):
        return  # the common case: no tensor has external data
    for t in rows:
        if not t.external:
            continue
        info = {e.key: e.value for e in t.proto.external_data}
        loc = info.get("location")
        if not loc:
            raise ModelLoadError(f"{name}: tensor '{t.name}' has external data without a location")
        if base is None:
            raise ModelLoadError(
                f"{name}: tensor '{t.name}' uses external data; load the model from its file path"
            )
        target = (base / loc).resolve()
        if os.path.isabs(loc) or os.path.commonpath([str(target), str(base)]) != str(base):
            raise ModelLoadError(
                f"{name}: tensor '{t.name}' points to external data outside the model's folder "
                f"({loc!r}); refused"
            )
        if not target.is_file():
            raise ModelLoadError(f"{name}: external data file {loc!r} for tensor '{t.name}' is missing")


_FIELD_OF: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float_data", onnx.TensorProto.DOUBLE: "double_data",
    onnx.TensorProto.INT64: "int64_data", onnx.TensorProto.INT32: "int32_data",
}  # fmt: skip
_ITEMSIZE: dict[int, int] = {k: np.dtype(helper.tensor_dtype_to_np_dtype(k)).itemsize for k in _FIELD_OF}


def _check_declared(model: onnx.ModelProto, rows_t: list[TensorRow], name: str) -> None:
    """What the checker lets through but nothing downstream can use: no outputs, negative sizes, and
    tensors whose data does not fill their declared shape (counted, never decoded). A large tensor's raw
    bytes are not counted here (protobuf hands them back as a copy: for a parsed ViT-B/16, 350 MB copied
    to learn a length); construct's ``tensor_array`` checks them when it reads them."""
    if not len(model.graph.output):
        raise ModelLoadError(f"{name}: invalid ONNX graph (it has no outputs)")
    g = model.graph
    # Protobuf hands back bytes for a string field that is not UTF-8. The types of every name are
    # collected in one pass that stays in C; the names are walked one by one only to say which one.
    rows = node_rows(g)
    chain = itertools.chain.from_iterable
    texts = [
        *chain(map(_NODE_TEXTS, rows)),
        *chain(map(_NODE_INPUTS, rows)),
        *chain(map(_NODE_OUTPUTS, rows)),
        *(vi.name for vi in itertools.chain(g.input, g.output, g.value_info)),
    ]
    if set(map(type, texts)) - {str}:
        bad_text = next(t for t in texts if not isinstance(t, str))
        raise ModelLoadError(f"{name}: invalid ONNX graph (a name is not UTF-8 text: {bad_text[:60]!r})")
    for vi in itertools.chain(g.input, g.output, g.value_info):
        dims = vi.type.tensor_type.shape.dim
        low = min((d.dim_value for d in dims), default=0)  # an unset dim_value reads 0
        if low < 0:
            raise ModelLoadError(f"{name}: invalid ONNX graph ('{vi.name}' has a negative size {low})")
    if not _tensors_ok(rows_t):
        _check_tensors(rows_t, name)


def _tensors_ok(rows: list[TensorRow]) -> bool:
    """Whether ``_check_tensors`` finds nothing wrong, tested a whole field at a time: the per-tensor
    walk cost 3 µs a tensor, and a deep network has more tensors than nodes. On False the walk runs to
    name the first offender, so the message is the one the walk alone would give."""
    if set(map(type, map(_ROW_NAME, rows))) - {str}:
        return False
    if min(itertools.chain.from_iterable(map(_ROW_DIMS, rows)), default=0) < 0:
        return False
    raw: list[TensorRow] = []
    fields: list[TensorRow] = []
    for t in rows:
        if t.data_type in _FIELD_OF and not t.external:
            if not t.raw:
                fields.append(t)
            elif t.numel <= SMALL_CONST:
                raw.append(t)
    want = [t.numel * _ITEMSIZE[t.data_type] for t in raw]
    if list(map(len, map(_RAW_DATA, map(_ROW_PROTO, raw)))) != want:
        return False
    held = [len(getattr(t.proto, _FIELD_OF[t.data_type])) for t in fields]
    return held == list(map(_ROW_NUMEL, fields))


def _check_tensors(rows: list[TensorRow], name: str) -> None:
    for t in rows:
        if not isinstance(t.name, str):
            raise ModelLoadError(f"{name}: invalid ONNX graph (a name is not UTF-8 text: {t.name[:60]!r})")
        if t.dims and min(t.dims) < 0:
            raise ModelLoadError(f"{name}: invalid ONNX graph (tensor '{t.name}' has a negative size)")
        if t.external:
            continue
        n = t.numel
        held = None
        if t.raw and t.data_type in _FIELD_OF and n > SMALL_CONST:
            continue  # counting raw bytes copies them: checked where they are read (tensor_array)
        if t.raw and t.data_type in _FIELD_OF:
            held = len(t.proto.raw_data) / _ITEMSIZE[t.data_type]
        elif t.data_type in _FIELD_OF:
            held = len(getattr(t.proto, _FIELD_OF[t.data_type]))
        if held is not None and held != n:
            raise ModelLoadError(
                f"{name}: invalid ONNX graph (tensor '{t.name}' of shape {list(t.dims)} "
                f"holds {held:g} values)"
            )


def _dims(tp: onnx.TypeProto) -> tuple[Dim, ...] | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    out: list[Dim] = []
    for d in tp.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(str(d.dim_param))
        else:
            out.append(None)
    return tuple(out)


@functools.cache
def _elem_kind(elem: int) -> tuple[str | None, bool, bool]:
    """numpy's name for an ONNX element type, whether it is an integer or bool (a size, an index:
    its small values are kept), and whether it is trainable (a float)."""
    dtype = _dtype(elem)
    return (
        dtype,
        dtype is not None and dtype[0] in "iub",
        bool(dtype and dtype.startswith(("float", "bfloat"))),
    )


@functools.cache
def _dtype(elem: int) -> str | None:
    """numpy's name for an ONNX element type; cached: asked once per value, and numpy's lookup costs
    more than everything else the IR build does for a value."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
    except Exception:
        return None


_PLAIN = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8,
}  # fmt: skip
_PLAIN_SIZE = {k: np.dtype(v).itemsize for k, v in _PLAIN.items()}
_LITTLE = sys.byteorder == "little"


def _small_array(t: onnx.TensorProto, dims: tuple[int, ...]) -> np.ndarray:
    """``numpy_helper.to_array`` for a small tensor, with its common case (raw little-endian bytes of a
    plain dtype) read directly: to_array's generic dtype lookups cost 50 µs a tensor, and a deep
    network has one small tensor per normalization parameter."""
    dt = _PLAIN.get(t.data_type)
    plain = dt is not None and t.HasField("raw_data") and _LITTLE and not t.HasField("segment")
    try:
        if plain:
            return np.frombuffer(t.raw_data, dtype=dt).reshape(dims)
        return numpy_helper.to_array(t)
    except ValueError as exc:  # values that do not fill the declared shape: the file's fault
        raise ModelLoadError(
            f"invalid ONNX graph (tensor '{t.name}' of shape {list(dims)} does not hold its values: {exc})"
        ) from None


class _SmallArrays:
    """The values of many small tensors, read a batch at a time: tensors of one type and shape with
    plain raw bytes are joined and read by one ``np.frombuffer``, each value a read-only view of it
    (as ``_small_array``'s own result is read-only). One read per tensor cost 2 µs, and a deep network
    keeps a value for every bias and normalization parameter. Any other tensor (no raw bytes, a
    segment, bytes that do not fill its shape, no elements) is read alone by ``_small_array``.
    Each Value gets one tensor: the caller reads tensors of a repeated name on the spot."""

    def __init__(self) -> None:
        self._groups: dict[tuple[int, tuple[int, ...]], tuple[list[Value], list[bytes]]] = {}
        self._alone: list[tuple[Value, TensorRow]] = []

    def add(self, v: Value, t: TensorRow) -> None:
        """``v.const`` becomes the value of ``t`` at ``fill``."""
        if t.data_type in _PLAIN and t.raw and t.numel and _LITTLE:
            raw = t.proto.raw_data
            if len(raw) == t.numel * _PLAIN_SIZE[t.data_type] and not t.proto.HasField("segment"):
                group = self._groups.get((t.data_type, t.dims))
                if group is None:
                    group = self._groups[(t.data_type, t.dims)] = ([], [])
                group[0].append(v)
                group[1].append(raw)
                return
        self._alone.append((v, t))

    def fill(self) -> None:
        for (data_type, dims), (values, raws) in self._groups.items():
            k = len(values)
            whole = np.frombuffer(b"".join(raws) if k > 1 else raws[0], dtype=_PLAIN[data_type])
            if k == 1:
                values[0].const = whole.reshape(dims)
                continue
            whole = whole.reshape((k, *dims))
            # Iterating a stacked array yields views of its rows, except for scalars (numpy scalars,
            # not 0-d arrays): those are indexed with an ellipsis, which keeps a 0-d array.
            views = list(whole) if dims else [whole[i, ...] for i in range(k)]
            for v, arr in zip(values, views):
                v.const = arr
        for v, t in self._alone:
            v.const = _small_array(t.proto, t.dims)


_INTS, _INT, _FLOAT, _FLOATS = (
    onnx.AttributeProto.INTS, onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.FLOATS,
)  # fmt: skip


def _attr(att: onnx.AttributeProto) -> Any:
    kind = att.type
    # The common kinds read directly (``helper.get_attribute_value`` asks for the type up to a dozen
    # times); a reference to a function's attribute is left to it, which refuses one.
    if kind == _INTS and not att.ref_attr_name:
        return att.ints[:]  # a list, built in C
    if kind == _INT and not att.ref_attr_name:
        return att.i
    if kind == _FLOAT and not att.ref_attr_name:
        return att.f
    if kind == _FLOATS and not att.ref_attr_name:
        return att.floats[:]
    if kind == onnx.AttributeProto.TENSOR:
        if att.t.data_location == onnx.TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(att.t)
    if att.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return "<subgraph>"
    val = helper.get_attribute_value(att)
    if isinstance(val, bytes):
        return val.decode("utf-8", "replace")
    if isinstance(val, list) and val and isinstance(val[0], bytes):
        return [x.decode("utf-8", "replace") for x in val]
    return val


def _constant_value(node: onnx.NodeProto) -> tuple[np.ndarray | None, tuple[int, ...] | None, str | None]:
    """The value of a Constant node: (array if cheap to hold, shape, dtype)."""
    for att in node.attribute:
        if att.name == "value":
            t = att.t
            shape = tuple(int(d) for d in t.dims)
            dtype = _dtype(t.data_type)
            if t.data_location == onnx.TensorProto.EXTERNAL:
                return None, shape, dtype
            return numpy_helper.to_array(t), shape, dtype
        if att.name in ("value_int", "value_float"):
            arr = np.array(helper.get_attribute_value(att))
            return arr, (), arr.dtype.name
        if att.name in ("value_ints", "value_floats"):
            arr = np.array(helper.get_attribute_value(att))
            return arr, arr.shape, arr.dtype.name
    return None, None, None


# Ops whose ``axis`` names an axis of their (first) input: valid values are -r .. r-1.
_AXIS_OF_INPUT = frozenset({
    "Concat", "Gather", "GatherElements", "ScatterElements", "Split", "Softmax", "LogSoftmax", "Hardmax",
    "ArgMax", "ArgMin", "LayerNormalization", "Compress", "QuantizeLinear", "DequantizeLinear",
})  # fmt: skip


def _check_axes(graph: Graph, name: str) -> None:
    """An ``axis`` out of range is bad input. ONNX's inference lets some through (Concat with axis
    -2**40), and onnxruntime's optimizer can hide it in the original model only for the pruned one
    to fail; our rules and the verification would index with it. Where the spec gives no range, an
    axis may still be at most one past the input's rank (Flatten, OneHot)."""
    for node in graph.nodes:
        axis = node.attrs.get("axis")
        if not isinstance(axis, int) or node.domain:
            continue  # most nodes: no axis (their operand is not looked up)
        x = node.input(0)
        if x is None or x.shape is None:
            continue
        r = len(x.shape)
        low, high = (-r, r - 1) if node.op in _AXIS_OF_INPUT else (-r - 1, r)
        if not low <= axis <= high:
            where = f"{node.op} '{node.name}'"
            raise ModelLoadError(
                f"{name}: invalid ONNX graph ({where} has axis {axis} for an input of rank {r})"
            )


def _to_ir(model: onnx.ModelProto, name: str, inferred: onnx.GraphProto | None = None) -> Graph:
    g = model.graph
    opset = _opset(model)
    graph = Graph(name=Path(name).stem if name else "model", fmt="onnx", opset=opset)
    shapes: dict[str, tuple[tuple[Dim, ...] | None, str | None]] = {}
    src = inferred if inferred is not None else g
    # Read per distinct type: a deep network's values have a few dozen types among thousands of values,
    # and serializing a type is a fraction of walking its dims (equal bytes are an equal type; the
    # values share the one shape tuple, which nothing edits in place).
    by_type: dict[bytes, tuple[tuple[Dim, ...] | None, str | None]] = {}
    for vi in [*g.input, *src.value_info, *src.output]:
        tp = vi.type
        key = tp.SerializeToString()
        found = by_type.get(key)
        if found is None:
            found = by_type[key] = (_dims(tp), _dtype(tp.tensor_type.elem_type))
        shapes[vi.name] = found

    inits = initializer_names(model)
    overridable = overridable_inputs(model, inits)
    rows = initializer_rows(g)
    batch = _SmallArrays() if len(rows) == len(inits) else None  # else a name repeats: read in order
    for t in rows:
        if t.name in overridable:
            continue  # IR >= 4: a default the caller may override, an input of fixed width below
        dims = t.dims
        dtype, integral, trainable = _elem_kind(t.data_type)
        n = t.numel
        small_int = n <= SMALL_CONST and integral
        if t.name not in graph.values:  # ``Graph.value``'s common case without its keyword handling
            v = graph.values[t.name] = Value(t.name, dims, dtype, True, trainable, None)
        else:
            v = graph.value(t.name, shape=dims, dtype=dtype, is_param=True, trainable=trainable)
        if not t.external and (small_int or n <= 64):  # shape arithmetic and scalar operands (exponents, eps)
            if batch is not None:
                batch.add(v, t)
            else:
                v.const = _small_array(t.proto, dims)
    if batch is not None:
        batch.fill()
    init_names = inits - overridable
    for vi in g.input:
        if vi.name in init_names:
            continue  # IR 3 lists every initializer as an input: there they are weights
        shape, dtype = shapes[vi.name]
        graph.inputs.append(graph.value(vi.name, shape=shape, dtype=dtype))

    const_params: dict[str, str] = {}
    aliases = param_uses(model, inits)
    alias_at = {(u.node, u.index): alias for alias, u in aliases.items()}
    values = graph.values
    # Without aliases, a node whose operands all exist already reads them in one comprehension (no
    # name is empty: that is a missing operand, None, and no value is named so).
    direct = not alias_at and "" not in values
    for idx, row in enumerate(node_rows(g)):
        pn = row.proto
        node_name = onnx_node_name(row, idx)
        inputs: list[Value | None] = []
        if direct:
            try:
                inputs = [values[nm] for nm in row.inputs]
            except KeyError:
                inputs = []
        for pos, nm in enumerate(() if inputs or not row.inputs else row.inputs):
            if not nm:
                inputs.append(None)
                continue
            alias = alias_at.get((idx, pos)) if alias_at else None
            if alias is not None:
                inputs.append(graph.value(alias, is_param=True, alias_of=nm))
                continue
            v = values.get(nm)
            if v is None:
                shape, dtype = shapes.get(nm, (None, None))
                v = values[nm] = Value(nm, shape, dtype)
            inputs.append(v)
        outputs: list[Value] = []
        for nm in row.outputs:
            shape, dtype = shapes.get(nm, (None, None))
            if not nm:
                nm = f"{node_name}::unused{len(outputs)}"
            out = values.get(nm)
            if out is None:
                out = values[nm] = Value(nm, shape, dtype)
            else:
                graph.value(nm, shape=shape, dtype=dtype)
            outputs.append(out)
        # A subgraph (If, Loop, Scan) may read outer values by name: they are operands of this node
        # too (after its own), so a rule, or the unknown-op pin, sees every tensor the node reads.
        if row.subgraphs:
            inputs.extend(
                graph.values[x] for x in outer_reads(pn) if x in graph.values and x not in row.inputs
            )
        attrs = {a.name: _attr(a) for a in row.attributes} if row.attributes else {}
        default_domain = row.domain in ("", "ai.onnx")
        if row.op_type in ("Softmax", "LogSoftmax", "Hardmax") and default_domain:
            attrs["_opset"] = opset
        if row.op_type == "Constant" and default_domain and outputs:
            arr, const_shape, dtype = _constant_value(pn)
            out = outputs[0]
            if const_shape is not None:
                out.shape = const_shape
                out.dtype = dtype
            n = math.prod(const_shape) if const_shape else 1
            if is_weight_constant(pn):
                # A weight stored as a Constant node: analysed like an initializer, and like one it
                # keeps a small value (a scalar operand: an exponent, an epsilon).
                out.is_param = True
                out.trainable = True
                const_params[out.name] = node_name
                if arr is not None and n <= 64:
                    out.const = arr
            elif arr is not None and (n <= SMALL_CONST):
                out.const = arr
        node = Node(
            name=node_name,
            op=row.op_type,
            inputs=inputs,
            outputs=outputs,
            attrs=attrs,
            domain=row.domain if row.domain != "ai.onnx" else "",
            origin=idx,
        )
        graph.add_node(node)
        if row.op_type in _FROZEN_OPS:
            for i, v in enumerate(inputs):
                if v is not None and v.is_param and (row.op_type, i) in NOT_TRAINABLE_INPUTS:
                    v.trainable = False
    for vo in g.output:
        graph.outputs.append(graph.values.get(vo.name) or graph.value(vo.name, shape=shapes[vo.name][0]))
    _fill_aliases(graph, aliases)
    graph.meta["constant_params"] = const_params
    graph.meta["param_aliases"] = aliases
    mark_quantized_weights(graph)  # integer weights read as quantized operands: their zero is the zero point
    lift_legacy_attrs(graph)  # rules read one form: operands, whatever the opset spelled as attributes
    try:
        graph.sort()
    except ValueError as exc:
        raise ModelLoadError(f"{name}: {exc}") from None
    return graph


def _fill_aliases(graph: Graph, aliases: dict[str, ParamUse]) -> None:
    """Each alias is its weight's twin (shape, dtype, value); trainability is decided per read (a
    BatchNormalization statistic is frozen), so the alias's own reader decides its flag."""
    for alias, use in aliases.items():
        a, w = graph.values[alias], graph.values.get(use.source)
        if w is None:
            continue
        a.shape, a.dtype, a.const = w.shape, w.dtype, w.const
        frozen = any((c.op, i) in NOT_TRAINABLE_INPUTS for c, i in a.consumers)
        a.trainable = bool(w.dtype and w.dtype.startswith(("float", "bfloat"))) and not frozen
