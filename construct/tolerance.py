"""How close the small model must come to the zeroed full one: a tolerance that fits the model's dtype.

The pruned model computes the same function as the original with the removed slices zeroed, but not
bit for bit: a narrower Conv or MatMul may take another kernel, block or summation order, so every sum
is rounded differently. In fp32 that difference stays far below 1e-4 of the output's scale; in fp16
(10 mantissa bits) or bf16 (7) it is larger by the ratio of the unit roundoffs, and after a requantizing
``QuantizeLinear`` one rounding flip is a whole quantization step. The verification therefore takes its
tolerance from the lowest precision the model computes in; the numbers, and the measurements behind
them, are in docs/construct.md ("Verification tolerance").

The check stays able to fail: a removed live channel changes an output by the size of that channel's
contribution, orders of magnitude above these bounds (tests/test_onnx_fp16.py shows it for fp16).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

__all__ = ["BF16_RTOL", "FP16_RTOL", "FP32_RTOL", "QUANT_RTOL", "Tolerance", "model_tolerance"]

FP32_RTOL = 1e-4
"""fp32 and fp64: relative to the output's largest magnitude; measured errors stay below 1e-6."""
FP16_RTOL = 1e-3
"""fp16: one unit in the last place at the output's largest magnitude (2**-10 = 9.8e-4, rounded up):
what one rounding flip of the largest output element costs. The measured worst, 2.9e-4 over fp16
ResNet-18/50, EfficientNet-B0, MobileNet-V2, tiny BERT and GPT-2 pruned at 30-70%, is one flip of a
smaller element (docs/construct.md). Twice this let a live channel of a small fp16 CNN pass (1.9e-3)."""
BF16_RTOL = 8e-3
"""bf16: the same one unit in the last place at bf16's 8-bit precision (2**-7 = 7.8e-3, rounded up)."""
QUANT_RTOL = 1e-2
"""Quantized models: a float difference before a requantization can flip one rounding, a whole step that
later layers carry on; one step of an int8 output is 1/127 (7.9e-3) of its largest magnitude, so 1e-2
admits one flip and no more. Measured: exact (0) on every quantized model from onnxruntime's tools once
verification computes integer products exactly (``construct.quant_zero.exact_integer_products``; before
that, onnxruntime's AVX2 u8 x s8 kernels gave 7.6e-3 on MobileNet-V2 QOperator per-channel)."""

_FP16 = frozenset({onnx.TensorProto.FLOAT16})
_BF16 = frozenset({onnx.TensorProto.BFLOAT16})
# Operators that round activations to a quantized grid at run time (or compute on such a grid), in the
# default and Microsoft domains. Weight-only quantization (a lone DequantizeLinear, MatMulNBits) is not
# here: zeroing is exact in the quantized domain and the arithmetic is float, so the float rule applies.
_QUANT_OPS = frozenset({
    "QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
    "ConvInteger", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool",
    "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearWhere",
    "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM",
})  # fmt: skip


@dataclass(frozen=True)
class Tolerance:
    """A relative tolerance and the one line that says why it was chosen (it goes into the report)."""

    rtol: float
    why: str


def _types(g: onnx.GraphProto) -> set[int]:
    """Element types the graph stores, declares or casts to (subgraphs included)."""
    out: set[int] = {t.data_type for t in g.initializer}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type"):
            out.add(vi.type.tensor_type.elem_type)
    for pn in g.node:
        for att in pn.attribute:
            if att.type == onnx.AttributeProto.TENSOR:
                out.add(att.t.data_type)
            elif att.name == "to" and att.type == onnx.AttributeProto.INT:
                out.add(int(att.i))  # Cast's target: fp16 computation behind fp32 inputs and outputs
            elif att.type == onnx.AttributeProto.GRAPH:
                out |= _types(att.g)
            elif att.type == onnx.AttributeProto.GRAPHS:
                for sg in att.graphs:
                    out |= _types(sg)
    return out


def _quant_op(g: onnx.GraphProto) -> str | None:
    for pn in g.node:
        if pn.op_type in _QUANT_OPS and pn.domain in ("", "ai.onnx", "com.microsoft"):
            return pn.op_type
    return None


def model_tolerance(*models: onnx.ModelProto) -> Tolerance:
    """The tolerance for comparing ``models`` (the zeroed full model and the small one): the loosest
    that the lowest-precision arithmetic among them calls for."""
    types: set[int] = set()
    quant: str | None = None
    for m in models:
        types |= _types(m.graph)
        quant = quant or _quant_op(m.graph)
    if quant is not None:
        return Tolerance(QUANT_RTOL, f"quantized model ({quant}): one requantization step may differ")
    if types & _BF16:
        return Tolerance(BF16_RTOL, "the model holds bfloat16 tensors (8-bit mantissa): bf16 tolerance")
    if types & _FP16:
        return Tolerance(FP16_RTOL, "the model holds float16 tensors (11-bit mantissa): fp16 tolerance")
    return Tolerance(FP32_RTOL, "float32 model: fp32 tolerance")
