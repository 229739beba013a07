"""zero_when, the erasing fact, is true: wherever the table says an op's output is exactly zero given which
operands are zero, the ONNX reference evaluator computes exactly zero (and nothing infinite or NaN).

Every ONNX op whose declaration can answer yes has cases below; each case is run for every pattern of
zeroed data operands, with random values for the others, and where ``output_is_zero`` says yes the
evaluator must agree. A case marked ``claims=False`` must never be called zero (a setting that moves f(0)
off zero, a division by zero); the others must be called zero for some pattern, so a declaration that
says no to everything fails too.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from graphcore.ir import Node, Value
from graphcore.ops import register_rule, rule_for, rules
from graphcore.ops.common import data_zero, never
from graphcore.ops.elementwise import _BINARY, UNARY
from graphcore.ops.normalize import ZERO_KEEPING
from graphcore.ops.registry import output_is_zero

OPSET = onnx.defs.onnx_opset_version()
ORT_OPSET = 22
MS = "com.microsoft"


@dataclass(frozen=True)
class Data:
    """An operand a removal structure may zero: random values, or all zeros when flagged. ``known``: the
    IR operand carries its (unzeroed) values, as a small parameter does, so a rule may read them."""

    shape: tuple[int, ...]
    kind: str = "normal"  # normal, positive, int, uint, bool, ratio
    known: bool = False


@dataclass(frozen=True)
class Setting:
    """An operand that is not data (axes, a shape, indices, an exponent): a constant, never zeroed."""

    value: Any


def _f(*xs: float) -> np.ndarray:
    return np.array(xs[0] if len(xs) == 1 else xs, dtype=np.float32)


def _i(*xs: int) -> np.ndarray:
    return np.array(xs[0] if len(xs) == 1 else xs, dtype=np.int64)


Operand = Data | Setting | None


@dataclass(frozen=True)
class Case:
    op: str
    inputs: tuple[Operand, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = OPSET
    outputs: int = 1
    checked: tuple[int, ...] = (0,)  # the outputs zero_when speaks for (Split: every one)
    claims: bool = True  # some pattern of zeroed operands makes the output zero
    domain: str = ""
    runtime: str = "reference"  # or onnxruntime: a contrib op, a pool with asymmetric pads

    @property
    def label(self) -> str:
        attrs = ",".join(f"{k}={v}" for k, v in self.attrs.items())
        ins = ",".join(_label(o) for o in self.inputs)
        return f"{self.op}({ins}){'{' + attrs + '}' if attrs else ''}"


def _label(o: Operand) -> str:
    if o is None:
        return "-"
    if isinstance(o, Setting):
        return f"={np.asarray(o.value).tolist()}"
    return f"{o.kind}{list(o.shape)}{'!' if o.known else ''}"


def _x(*shape: int, kind: str = "normal", known: bool = False) -> Data:
    return Data(tuple(shape), kind, known)


X23 = _x(2, 3)


def _unary_cases() -> list[Case]:
    settings = ("Cast", "CastLike", "Dropout", "Shrink", "Celu")  # cases of their own below
    cases = [Case(op, (X23,)) for op, f0 in UNARY.items() if f0 == "zero" and op not in settings]
    return [
        *cases,
        Case("Cast", (X23,), {"to": TensorProto.FLOAT}),
        Case("Cast", (X23,), {"to": TensorProto.INT64}),
        Case("Cast", (X23,), {"to": TensorProto.BOOL}),
        Case("CastLike", (X23, Setting(_i(0)))),
        Case("Dropout", (X23,), outputs=2),
        Case("Dropout", (X23, Setting(_f(0.5)), Setting(np.array(True))), {"seed": 3}, outputs=2),
        Case("Dropout", (X23, _x(kind="ratio"), Setting(np.array(True))), {"seed": 3}),
        Case("Shrink", (X23,)),
        Case("Shrink", (X23,), {"lambd": -0.5, "bias": 1.0}, claims=False),
        Case("Shrink", (X23,), {"lambd": -0.5, "bias": 0.0}),
        Case("Celu", (X23,)),
        Case("Celu", (X23,), {"alpha": 0.0}, claims=False),
        Case("Clip", (X23,)),
        Case("Clip", (X23, Setting(_f(-1.0)), Setting(_f(1.0)))),
        Case("Clip", (X23, Setting(_f(0.5)), Setting(_f(6.0))), claims=False),
        Case("Clip", (X23, Setting(_f(-1.0)), Setting(_f(-0.5))), claims=False),
        Case("Clip", (X23, None, Setting(_f(6.0)))),
        Case("Clip", (X23, _x(known=True), Setting(_f(6.0)))),
        Case("Clip", (X23, _x(), None)),
        Case("Clip", (X23, None, _x())),
    ]


_BOOL_OPS = {"And", "Or", "Xor"}
_INT_OPS = {"BitwiseAnd", "BitwiseOr", "BitwiseXor"}
_VARIADIC = {"Sum", "Max", "Min", "Mean"}


def _binary_cases() -> list[Case]:
    cases = []
    for op, (mode, _, _) in _BINARY.items():
        if mode == "none":
            continue
        kind = (
            "bool"
            if op in _BOOL_OPS
            else "int"
            if op in _INT_OPS
            else "uint"
            if op == "BitShift"
            else "normal"
        )
        attrs: dict[str, Any] = {"BitShift": {"direction": "LEFT"}, "Mod": {"fmod": 1}}.get(op, {})
        n = 3 if op in _VARIADIC else 2
        cases.append(Case(op, tuple(_x(2, 3, kind=kind) for _ in range(n)), attrs))
        cases.append(Case(op, (_x(2, 3, kind=kind), *(_x(3, kind=kind) for _ in range(n - 1))), attrs))
    return [
        *cases,
        Case("BitShift", (_x(2, 3, kind="uint"), _x(2, 3, kind="uint")), {"direction": "RIGHT"}),
        Case("Mod", (_x(2, 3, kind="int"), _x(3, kind="int"))),
        Case("Div", (X23, Setting(_f(1.0, 0.0, 2.0))), claims=False),
        Case("Div", (X23, Setting(_f(1.0, -3.0, 2.0)))),
        Case("Div", (X23, _x(3, known=True))),
        Case("Pow", (X23, Setting(_f(2.0)))),
        Case("Pow", (X23, Setting(_f(0.5)))),
        Case("Pow", (X23, Setting(_f(0.0))), claims=False),
        Case("Pow", (X23, Setting(_f(-1.0))), claims=False),
        Case("Pow", (X23, _x()), claims=False),
        Case("Pow", (X23, _x(kind="positive", known=True))),
        Case("Where", (Setting(np.array([[True, False, True], [False, False, True]])), X23, _x(3))),
    ]


def _stem_cases() -> list[Case]:
    return [
        Case("Conv", (_x(1, 2, 5, 5), _x(3, 2, 3, 3), _x(3)), {"pads": [1, 1, 1, 1]}),
        Case("Conv", (_x(1, 2, 5, 5), _x(3, 2, 3, 3), None), {"strides": [2, 2]}),
        Case("Conv", (_x(1, 4, 5, 5), _x(4, 2, 3, 3), _x(4)), {"group": 2, "pads": [1, 1, 1, 1]}),
        Case("ConvTranspose", (_x(1, 2, 4, 4), _x(2, 3, 3, 3), _x(3)), {"strides": [2, 2], "pads": [1] * 4}),
        Case("ConvTranspose", (_x(1, 2, 4, 4), _x(2, 3, 3, 3))),
        Case("MatMul", (_x(2, 3), _x(3, 4))),
        Case("MatMul", (_x(2, 2, 3), _x(3, 4))),
        Case("Gemm", (_x(2, 3), _x(3, 4), _x(4))),
        Case("Gemm", (_x(2, 3), _x(4, 3), _x(2, 4)), {"transB": 1, "alpha": 2.0, "beta": 0.5}),
        Case("Gemm", (_x(3, 2), _x(3, 4)), {"transA": 1}),
        Case("Einsum", (_x(2, 3), _x(3, 4)), {"equation": "ij,jk->ik"}),
        Case("Einsum", (_x(2, 2, 3), _x(2, 3, 4)), {"equation": "bij,bjk->bik"}),
        Case("Einsum", (_x(2, 3),), {"equation": "ij->j"}),
        Case("Einsum", (_x(3), _x(3), _x(3)), {"equation": "i,i,i->i"}),
        Case("Gather", (_x(5, 3), Setting(_i([[0, 2], [4, 1]])))),
        Case("Gather", (_x(5, 3), Setting(_i(0, 2))), {"axis": 1}),
    ]


def _norm_cases() -> list[Case]:
    var = _x(3, kind="positive")
    bn = (_x(2, 3, 4, 4), _x(3), _x(3), _x(3), var)
    return [
        Case("BatchNormalization", bn),
        Case("BatchNormalization", (*bn[:4], _x(3, kind="positive", known=True)), {"epsilon": 1e-3}),
        Case("BatchNormalization", bn, {"epsilon": 0.0}, claims=False),
        Case("InstanceNormalization", (_x(2, 3, 4), _x(3), _x(3))),
        Case("InstanceNormalization", (_x(2, 3, 4), _x(3), _x(3)), {"epsilon": 0.0}, claims=False),
        Case("GroupNormalization", (_x(2, 4, 3), _x(4), _x(4)), {"num_groups": 2}),
        Case("LayerNormalization", (_x(2, 3, 4), _x(4), _x(4))),
        Case("LayerNormalization", (_x(2, 3, 4), _x(4)), outputs=3),
        Case("LayerNormalization", (_x(2, 3, 4), _x(3, 4), _x(3, 4)), {"axis": 1}),
        Case("LayerNormalization", (_x(2, 3, 4), _x(4), _x(4)), {"epsilon": 0.0}, claims=False),
        Case("RMSNormalization", (_x(2, 3, 4), _x(4))),
        # No scale (torch's elementwise_affine=False, affine=False): it is one, not zero — never called
        # zero, so the evaluator (which wants the scale) is never asked.
        Case("LayerNormalization", (_x(2, 3, 4), None, None), claims=False),
        Case("GroupNormalization", (_x(2, 4, 3), None, None), {"num_groups": 2}, claims=False),
        Case("RMSNormalization", (_x(2, 3, 4), None), claims=False),
        *(
            Case(
                "SkipLayerNormalization",
                ins,
                attrs,
                domain=MS,
                opset=ORT_OPSET,
                runtime="onnxruntime",
                claims=c,
            )
            for ins, attrs, c in (
                ((_x(2, 3, 4), _x(2, 3, 4), _x(4), _x(4), _x(4)), {}, True),
                ((_x(2, 3, 4), _x(2, 3, 4), _x(4)), {"epsilon": 1e-5}, True),
                ((_x(2, 3, 4), _x(2, 3, 4), _x(4), _x(4)), {"epsilon": 0.0}, False),
            )
        ),
        Case("MeanVarianceNormalization", (_x(2, 3, 4, 4),)),
        Case("LRN", (_x(1, 5, 3, 3),), {"size": 3}),
        Case("LRN", (_x(1, 5, 3, 3),), {"size": 3, "bias": 0.0}, claims=False),
    ]


def _pool_cases() -> list[Case]:
    x = _x(1, 2, 6, 6)
    ort: dict[str, Any] = {"opset": ORT_OPSET, "runtime": "onnxruntime"}  # asymmetric pads
    k3 = {"kernel_shape": [3, 3]}
    return [
        Case("MaxPool", (x,), {**k3, "pads": [1, 1, 1, 1], "strides": [2, 2]}, outputs=2),
        Case("MaxPool", (x,), {**k3, "strides": [2, 2], "ceil_mode": 1}),
        Case("MaxPool", (x,), {**k3, "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        Case("MaxPool", (x,), {"kernel_shape": [2, 2], "pads": [2, 2, 2, 2]}, claims=False),
        Case("AveragePool", (x,), {**k3, "pads": [1, 1, 1, 1]}),
        Case("AveragePool", (x,), {"kernel_shape": [2, 2], "pads": [2, 2, 2, 2], "count_include_pad": 1}),
        Case("AveragePool", (x,), {"kernel_shape": [2, 2], "pads": [2, 2, 2, 2]}, claims=False),
        *(
            Case("MaxPool", (x,), {**k3, "pads": pads, "strides": [2, 2], "ceil_mode": 1}, **ort, claims=c)
            for pads, c in (([0, 1, 1, 0], True), ([0, 0, 2, 0], False))
        ),
        Case("LpPool", (x,), {"kernel_shape": [2, 2], "p": 2}),
        Case("LpPool", (x,), {**k3, "p": 1, "pads": [1, 1, 1, 1]}),
        Case("GlobalAveragePool", (x,)),
        Case("GlobalMaxPool", (x,)),
    ]


def _reduce_cases() -> list[Case]:
    cases = [Case(op, (_x(2, 3, 4), Setting(_i([1])))) for op in sorted(ZERO_KEEPING)]
    return [
        *cases,
        Case("ReduceSum", (_x(2, 3, 4),), {"keepdims": 0}),
        Case("ReduceMax", (_x(2, 3, 4), Setting(_i(0, 2))), {"keepdims": 0}),
    ]


def _movement_cases() -> list[Case]:
    return [
        Case("Reshape", (_x(2, 3, 4), Setting(_i(6, 4)))),
        Case("Flatten", (_x(2, 3, 4),), {"axis": 2}),
        Case("Transpose", (_x(2, 3, 4),), {"perm": [2, 0, 1]}),
        Case("Squeeze", (_x(2, 1, 3), Setting(_i([1])))),
        Case("Unsqueeze", (_x(2, 3), Setting(_i([0])))),
        Case("DepthToSpace", (_x(1, 8, 2, 2),), {"blocksize": 2}),
        Case("DepthToSpace", (_x(1, 8, 2, 2),), {"blocksize": 2, "mode": "CRD"}),
        Case("SpaceToDepth", (_x(1, 2, 4, 4),), {"blocksize": 2}),
        Case("Concat", (_x(2, 3), _x(2, 1), _x(2, 2)), {"axis": 1}),
        Case("Split", (_x(2, 6), Setting(_i(2, 4))), {"axis": 1}, outputs=2, checked=(0, 1)),
        Case("Split", (_x(4, 3),), {"num_outputs": 2}, outputs=2, checked=(0, 1)),
        Case("Slice", (_x(4, 5), Setting(_i([1])), Setting(_i([3])), Setting(_i([1])))),
        Case("Pad", (X23, Setting(_i(1, 0, 1, 2)))),
        Case("Pad", (X23, Setting(_i(1, 0, 1, 2)), Setting(_f(0.0)))),
        Case("Pad", (X23, Setting(_i(1, 0, 1, 2)), Setting(_f(1.0))), claims=False),
        Case("Pad", (X23, Setting(_i(1, 0, 1, 2)), _x())),
        Case("Pad", (X23, Setting(_i(1, 1, 1, 1))), {"mode": "reflect"}),
        Case("Pad", (X23, Setting(_i(1, 1, 1, 1))), {"mode": "edge"}),
        Case("Pad", (X23, Setting(_i(1, 1, 1, 1))), {"mode": "wrap"}),
        Case("Pad", (_x(2, 3, 4), Setting(_i(1, 2)), None, Setting(_i([1])))),
        Case("Resize", (_x(1, 1, 2, 2), None, Setting(_f(1, 1, 2, 2)))),
        Case("Resize", (_x(1, 1, 2, 2), None, Setting(_f(1, 1, 2, 1.5))), {"mode": "linear"}),
        Case("Resize", (_x(1, 1, 3, 3), None, None, Setting(_i(1, 1, 5, 4))), {"mode": "cubic"}),
        *(
            Case(
                "Resize",
                (_x(1, 1, 3, 3), Setting(_f(0, 0, -0.5, 0.2, 1, 1, 1.5, 1.2)), None, Setting(_i(1, 1, 4, 4))),
                {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", **extra},
                claims=claims,
            )
            for extra, claims in (({}, True), ({"extrapolation_value": 1.0}, False))
        ),
        Case("Upsample", (_x(1, 1, 2, 2), Setting(_f(1, 1, 2, 2))), opset=9),
        Case("Expand", (_x(3, 1), Setting(_i(2, 3, 4)))),
        Case("Tile", (X23, Setting(_i(2, 1)))),
    ]


def _indexing_cases() -> list[Case]:
    return [
        Case("Trilu", (_x(3, 4),)),
        Case("Trilu", (_x(3, 4), Setting(_i(1))), {"upper": 0}),
        Case("TopK", (_x(3, 4), Setting(_i([2]))), outputs=2),
        Case("GatherElements", (_x(3, 4), Setting(_i([[0, 3], [1, 1], [2, 0]]))), {"axis": 1}),
        Case("GatherND", (_x(3, 4), Setting(_i([[1], [2]])))),
        Case("ScatterElements", (_x(3, 4), Setting(_i([[1, 0, 2, 1]])), _x(1, 4))),
        Case("ScatterElements", (_x(3, 4), Setting(_i([[1, 0, 2, 1]])), _x(1, 4)), {"reduction": "add"}),
        Case("ScatterND", (_x(4, 3), Setting(_i([[1], [3]])), _x(2, 3))),
        Case("ReverseSequence", (_x(4, 3), Setting(_i(4, 2, 1))), {"batch_axis": 1, "time_axis": 0}),
        Case("Compress", (_x(3, 4), Setting(np.array([True, False, True]))), {"axis": 0}),
        Case("Unique", (_x(6),)),
        Case("OneHot", (Setting(_i(0, 2)), Setting(_i(3)), _x(2))),
        Case("CumSum", (_x(3, 4), Setting(_i(1)))),
        Case("CumSum", (_x(3, 4), Setting(_i(0))), {"reverse": 1, "exclusive": 1}),
    ]


def _contrib_cases() -> list[Case]:
    """onnxruntime's com.microsoft ops (graphcore/ops/contrib.py), run by onnxruntime."""

    def ms(op: str, ins: tuple[Operand, ...], attrs: dict[str, Any] | None = None, **kw: Any) -> Case:
        return Case(op, ins, attrs or {}, domain=MS, opset=ORT_OPSET, runtime="onnxruntime", **kw)

    conv = (_x(1, 2, 5, 5), _x(3, 2, 3, 3), _x(3))
    packed = Setting(np.random.default_rng(0).integers(0, 256, (3, 1, 8)).astype(np.uint8))
    positions = Setting(np.tile(np.arange(3, dtype=np.int64), (2, 1)))
    return [
        ms("BiasGelu", (X23, _x(3))),
        ms("FastGelu", (X23, _x(3))),
        ms("FastGelu", (X23,)),
        ms("QuickGelu", (X23,)),
        ms("QuickGelu", (X23,), {"alpha": 1.702}),
        ms("SkipSimplifiedLayerNormalization", (_x(2, 3, 4), _x(2, 3, 4), _x(4))),
        ms("SkipSimplifiedLayerNormalization", (_x(2, 3, 4), _x(2, 3, 4), _x(4), _x(4))),
        Case("SimplifiedLayerNormalization", (_x(2, 3, 4), _x(4)), opset=ORT_OPSET, runtime="onnxruntime"),
        ms("RotaryEmbedding", (_x(2, 3, 8), positions, _x(4, 2), _x(4, 2)), {"num_heads": 2}),
        ms("FusedConv", conv, {"activation": "Relu"}),
        ms("FusedConv", (*conv, _x(1, 3, 3, 3)), {"activation": "Relu"}),
        ms("FusedConv", conv, {"activation": "Sigmoid"}, claims=False),
        ms("FusedConv", conv, {"activation": "Clip", "activation_params": [0.5, 6.0]}, claims=False),
        ms("FusedMatMul", (_x(2, 3), _x(4, 3)), {"transB": 1, "alpha": 0.5}),
        ms("TransposeMatMul", (_x(3, 2), _x(3, 4)), {"transA": 1}),
        ms("FusedGemm", (_x(2, 3), _x(4, 3), _x(4)), {"transB": 1, "activation": "Relu"}),
        ms("FusedGemm", (_x(2, 3), _x(3, 4), _x(4)), {"activation": "LeakyRelu", "activation_alpha": 0.1}),
        ms("FusedGemm", (_x(2, 3), _x(3, 4), _x(4)), {"activation": "Sigmoid"}, claims=False),
        ms("MatMulNBits", (_x(2, 16), packed, _x(3)), {"K": 16, "N": 3, "bits": 4, "block_size": 16}),
        ms(
            "MatMulNBits",
            (_x(2, 16), packed, _x(3), None, None, _x(3)),
            {"K": 16, "N": 3, "bits": 4, "block_size": 16},
        ),
    ]


CASES = [
    *_contrib_cases(),
    *_unary_cases(),
    *_binary_cases(),
    *_stem_cases(),
    *_norm_cases(),
    *_pool_cases(),
    *_reduce_cases(),
    *_movement_cases(),
    *_indexing_cases(),
]

# Declared zero_when, not checked here: the reference evaluator has no implementation.
NOT_EVALUATED = {
    "Scatter": "deprecated for ScatterElements, no reference implementation",
    "GlobalLpPool": "no reference implementation (LpPool, which it is over the whole map, is checked)",
}

# -- running a case ------------------------------------------------------------------------------------


def _values(o: Data, rng: np.random.Generator) -> np.ndarray:
    if o.kind == "normal":
        return rng.standard_normal(o.shape).astype(np.float32)
    if o.kind == "positive":
        return (np.abs(rng.standard_normal(o.shape)) + 0.5).astype(np.float32)
    if o.kind == "ratio":
        return rng.uniform(0.1, 0.9, o.shape).astype(np.float32)
    if o.kind == "int":
        return (rng.integers(1, 8, o.shape) * rng.choice([-1, 1], o.shape)).astype(np.int32)
    if o.kind == "uint":
        return rng.integers(1, 4, o.shape).astype(np.uint32)
    return rng.random(o.shape) < 0.5


def _draw(case: Case, seed: int) -> list[np.ndarray | None]:
    """The operands' values before zeroing: settings as given, data drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [
        None if o is None else np.asarray(o.value) if isinstance(o, Setting) else _values(o, rng)
        for o in case.inputs
    ]


def _patterns(case: Case) -> list[tuple[bool, ...]]:
    """Every choice of zeroed operands among the data operands (settings and absent ones are not)."""
    data = [i for i, o in enumerate(case.inputs) if isinstance(o, Data)]
    out = []
    for bits in itertools.product([False, True], repeat=len(data)):
        zeroed = dict(zip(data, bits, strict=True))
        out.append(tuple(zeroed.get(i, False) for i in range(len(case.inputs))))
    return out


def _ir_node(case: Case, values: list[np.ndarray | None]) -> Node:
    inputs: list[Value | None] = []
    for i, (o, arr) in enumerate(zip(case.inputs, values, strict=True)):
        if o is None or arr is None:
            inputs.append(None)
            continue
        const = arr if isinstance(o, Setting) or o.known else None
        inputs.append(Value(f"x{i}", shape=arr.shape, dtype=arr.dtype.name, const=const))
    outputs = [Value(f"y{k}") for k in range(case.outputs)]
    return Node("n", case.op, inputs, outputs, attrs=dict(case.attrs), domain=case.domain)


def _model(case: Case, feeds: list[np.ndarray | None]) -> onnx.ModelProto:
    names = ["" if a is None else f"x{i}" for i, a in enumerate(feeds)]
    while names and not names[-1]:
        names.pop()
    inputs = [
        helper.make_tensor_value_info(f"x{i}", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for i, a in enumerate(feeds)
        if a is not None
    ]
    outs = [helper.make_value_info(f"y{k}", onnx.TypeProto()) for k in range(case.outputs)]
    node = helper.make_node(case.op, names, [y.name for y in outs], domain=case.domain, **case.attrs)
    opsets = [helper.make_opsetid("", case.opset)]
    opsets += [helper.make_opsetid(case.domain, 1)] if case.domain else []
    model = helper.make_model(helper.make_graph([node], "z", inputs, outs), opset_imports=opsets)
    model.ir_version = 10  # what onnxruntime reads; the reference evaluator does not mind
    return model


def _evaluate(case: Case, feeds: list[np.ndarray | None]) -> list[np.ndarray]:
    model = _model(case, feeds)
    named = {f"x{i}": a for i, a in enumerate(feeds) if a is not None}
    if case.runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return [np.asarray(r) for r in session.run(None, named)]
    with np.errstate(all="ignore"):
        return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, named)]


def check_case(case: Case, seeds: tuple[int, ...] = (0, 1)) -> bool:
    """Where ``output_is_zero`` says yes, the evaluator computes exact zeros, nothing non-finite. Returns
    whether it said yes for some pattern."""
    said_zero = False
    for seed, zeroed in itertools.product(seeds, _patterns(case)):
        values = _draw(case, seed)
        node = _ir_node(case, values)  # a known operand keeps its values: the flag must win over them
        if not output_is_zero(node, list(zeroed)):
            continue
        said_zero = True
        feeds = [
            None if v is None else np.zeros_like(v) if z else v for v, z in zip(values, zeroed, strict=True)
        ]
        where = f"{case.label} with operands {[i for i, z in enumerate(zeroed) if z]} zeroed"
        try:
            outputs = _evaluate(case, feeds)
        except Exception as e:  # said to be zero, but not even defined (a max over no element)
            raise AssertionError(f"{where}: the evaluator fails: {e}") from e
        for k in case.checked:
            y = outputs[k].astype(np.float64)
            assert np.isfinite(y).all() and not y.any(), f"{where}: output {k} = {y}"
    return said_zero


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label)
def test_zero_when_agrees_with_the_reference_evaluator(case: Case):
    said_zero = check_case(case)
    assert said_zero is case.claims, f"{case.label}: called zero {'never' if case.claims else 'somewhere'}"


@given(
    op=st.sampled_from(["MaxPool", "AveragePool"]),
    length=st.integers(1, 7),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 4),
    dilation=st.sampled_from([1, 1, 2]),
    pads=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    auto_pad=st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
)
def test_pool_windows_in_the_padding_are_never_called_zero(
    op, length, kernel, stride, dilation, pads, auto_pad, ceil_mode, count_include_pad
):
    """A window wholly in the padding has no element to take the max or the mean of: wherever a pool is
    called zero for a zero input, every window of this configuration holds one. Run by onnxruntime (the
    reference evaluator reads asymmetric pool pads wrongly), which refuses a pad as wide as the kernel and
    a SAME padding with a stride above the kernel (it computes a negative pad): no model has those."""
    span = (kernel - 1) * dilation + 1
    assume(length + (sum(pads) if auto_pad == "NOTSET" else 0) >= span)
    assume(
        max(pads) < kernel if auto_pad == "NOTSET" else stride <= kernel or not auto_pad.startswith("SAME")
    )
    attrs: dict[str, Any] = {"kernel_shape": [kernel], "strides": [stride], "ceil_mode": int(ceil_mode)}
    attrs |= {"dilations": [dilation]} if dilation != 1 else {}
    attrs |= {"pads": list(pads)} if auto_pad == "NOTSET" else {"auto_pad": auto_pad}
    attrs |= {"count_include_pad": int(count_include_pad)} if op == "AveragePool" else {}
    check_case(Case(op, (_x(1, 1, length),), attrs, opset=ORT_OPSET, runtime="onnxruntime"), seeds=(0,))


@given(
    op=st.sampled_from(["MaxPool", "AveragePool"]),
    length=st.integers(1, 8),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 4),
    padding=st.integers(0, 2),
    dilation=st.sampled_from([1, 1, 2, 3]),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
)
def test_a_pool_from_torch_is_zero_for_a_zero_input(
    op, length, kernel, stride, padding, dilation, ceil_mode, count_include_pad
):
    """The torch frontend lowers a pool without its window attributes (its module keeps them); the rule
    calls it zero for a zero input because PyTorch keeps every window on the input: it refuses a padding
    above half the kernel and drops a window that would start in the right padding. Checked on every
    configuration PyTorch accepts, but for one it cannot rule out: a dilated window on an input shorter
    than the dilation may miss the input, and is then -inf whatever the input (no model to erase)."""
    import torch
    import torch.nn.functional as F

    assume(padding <= kernel // 2 and (op == "MaxPool" or dilation == 1))

    def pool(x: torch.Tensor) -> torch.Tensor:
        if op == "MaxPool":
            return F.max_pool1d(x, kernel, stride, padding, dilation, ceil_mode)
        return F.avg_pool1d(x, kernel, stride, padding, ceil_mode, count_include_pad)

    try:
        y = pool(torch.zeros(1, 1, length))
    except RuntimeError:  # a window larger than the input, an output of size 0
        assume(False)
        raise
    assume(bool(torch.isfinite(pool(torch.randn(1, 1, length))).all()))
    node = Node("n", op, [Value("x", shape=(1, 1, length))], [Value("y")])
    assert output_is_zero(node, [True])
    assert bool(torch.isfinite(y).all()) and not bool(y.any()), y


def test_every_declaration_that_can_say_zero_is_checked():
    declared = {op for (_, op), r in rules().items() if r.zero_when is not None and r.zero_when is not never}
    checked = {c.op for c in CASES}
    assert declared - checked - set(NOT_EVALUATED) == set()
    assert set(NOT_EVALUATED) <= declared


def test_a_wrong_declaration_fails_the_check():
    """The check can fail: a Conv declared zero whenever its input is (forgetting the bias) disagrees with
    the evaluator, as do a Sigmoid declared zero at 0 and a MaxPool whose windows lie in the padding."""
    for op, wrong, case in (
        ("Conv", data_zero(0), Case("Conv", (_x(1, 2, 5, 5), _x(3, 2, 3, 3), _x(3)))),
        ("Sigmoid", data_zero(0), Case("Sigmoid", (X23,))),
        (
            "MaxPool",
            data_zero(0),
            Case("MaxPool", (_x(1, 2, 6, 6),), {"kernel_shape": [2, 2], "pads": [2] * 4}),
        ),
    ):
        original = rules()[("", op)]
        register_rule(dataclasses.replace(original, zero_when=wrong), replace=True)
        try:
            with pytest.raises(AssertionError):
                check_case(case)
        finally:
            register_rule(original, replace=True)
        assert rule_for(_ir_node(case, [None] * len(case.inputs))) is original


# -- the facts the erasing analysis leans on, one by one ---------------------------------------------------


def _outcome(case: Case, zeroed: set[int], seed: int = 0) -> tuple[bool, np.ndarray]:
    """What the table says of ``case`` with operands ``zeroed``, and output 0 as the evaluator has it."""
    values = _draw(case, seed)
    flags = [i in zeroed for i in range(len(case.inputs))]
    said = output_is_zero(_ir_node(case, values), flags)
    feeds = [None if v is None else np.zeros_like(v) if z else v for v, z in zip(values, flags, strict=True)]
    return said, _evaluate(case, feeds)[0].astype(np.float64)


def _exact_zero(y: np.ndarray) -> bool:
    return bool(np.isfinite(y).all() and not y.any())


def test_conv_is_zero_with_its_weight_and_bias_zeroed_not_with_a_bias_left():
    conv = Case("Conv", (_x(1, 2, 5, 5), _x(3, 2, 3, 3), _x(3)), {"pads": [1, 1, 1, 1]})
    said, y = _outcome(conv, {1, 2})
    assert said and _exact_zero(y)
    said, y = _outcome(conv, {1})
    assert not said and not _exact_zero(y)  # the bias is still there
    said, y = _outcome(dataclasses.replace(conv, inputs=conv.inputs[:2]), {1})
    assert said and _exact_zero(y)  # no bias: a missing operand counts as zero


def test_batchnorm_is_zero_with_scale_and_bias_zeroed_not_with_its_input_zeroed():
    bn = Case("BatchNormalization", (_x(2, 3, 4, 4), _x(3), _x(3), _x(3), _x(3, kind="positive")))
    said, y = _outcome(bn, {1, 2})
    assert said and _exact_zero(y)
    said, y = _outcome(bn, {0})
    assert not said and not _exact_zero(y)  # (0 - mean) / sqrt(var + eps) * scale + B
    said, _ = _outcome(bn, {1})
    assert not said


def test_division_of_zero_by_a_zeroed_divisor_is_not_zero():
    div = Case("Div", (X23, _x(3)))
    said, y = _outcome(div, {0, 1})
    assert not said and np.isnan(y).all()
    said, y = _outcome(div, {0})
    assert said and _exact_zero(y)


def test_an_activation_with_f0_not_zero_is_not_zero():
    said, y = _outcome(Case("Sigmoid", (X23,)), {0})
    assert not said and (y == 0.5).all()


def test_padding_with_a_nonzero_constant_is_not_zero():
    pad = Case("Pad", (X23, Setting(_i(1, 0, 1, 2)), Setting(_f(1.0))))
    said, y = _outcome(pad, {0})
    assert not said and y.max() == 1.0
    said, y = _outcome(dataclasses.replace(pad, inputs=pad.inputs[:2]), {0})
    assert said and _exact_zero(y)


def test_a_known_parameter_is_read_until_it_is_zeroed():
    """A small parameter carries its values in the IR; a rule reads them (a Clip bound above zero) but the
    zero flag wins: the erasing analysis zeroes it."""
    clip = Case("Clip", (X23, _x(kind="positive", known=True), Setting(_f(6.0))))
    said, y = _outcome(clip, {0})
    assert not said and not _exact_zero(y)  # clipped up to a minimum above zero
    said, y = _outcome(clip, {0, 1})
    assert said and _exact_zero(y)
