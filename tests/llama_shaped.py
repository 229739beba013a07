"""A LLaMA-shaped ONNX graph, built with ``onnx.helper``, whose weights are external data never written.

Why: the analysis must handle a 7B-parameter model (26 GB of weights) in seconds and a few hundred MiB
without reading one weight byte. The graph is what a torch exporter writes for LLaMA: token embedding
(Gather), RMSNorm as Pow → ReduceMean → Add(eps) → Sqrt → Reciprocal → Mul → Mul(weight), attention
with per-head Reshape/Transpose, rotary embedding on q and k (cos/sin tables gathered by position,
``rotate_half`` as Slice/Neg/Concat), scaled scores, Softmax, the merge Reshape and the output
projection, a SwiGLU MLP (gate · sigmoid(gate) · up → down) and the LM head. Weights are stored
transposed ([in, out]) for MatMul, as exporters store them.

Every float tensor points into one external data file at its own offset. ``data`` chooses what that
file is: ``"sparse"`` (its full size, a hole that costs no disk: what a real file looks like to a
reader that does not read it), or ``"empty"`` (exists, zero bytes: any read of a weight fails, which
is how the tests prove that the analysis reads none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["LLAMA_7B", "LlamaShape", "build_llama"]


@dataclass(frozen=True)
class LlamaShape:
    layers: int = 32
    hidden: int = 4096
    heads: int = 32
    inter: int = 11008
    vocab: int = 32000
    max_pos: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def params(self) -> int:
        per_layer = 4 * self.hidden**2 + 3 * self.hidden * self.inter + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


LLAMA_7B = LlamaShape()


def build_llama(path: str | os.PathLike, shape: LlamaShape = LLAMA_7B, data: str = "sparse") -> Path:
    """Write the model to ``path`` and its (unwritten) weights' file beside it; returns the model path."""
    if data not in ("sparse", "empty"):
        raise ValueError(f"data must be 'sparse' or 'empty', not {data!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = path.name + ".data"
    h, nh, hd = shape.hidden, shape.heads, shape.head_dim
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    offset = 0

    def weight(name: str, dims: list[int]) -> str:
        nonlocal offset
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        t.data_location = TensorProto.EXTERNAL
        n = 4 * int(np.prod(dims))
        for k, v in (("location", data_name), ("offset", offset), ("length", n)):
            e = t.external_data.add()
            e.key, e.value = k, str(v)
        offset += n
        inits.append(t)
        return name

    def const(name: str, values: list[int] | float) -> str:
        arr = np.array(values, np.float32 if isinstance(values, float) else np.int64)
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(op: str, ins: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=f"/{out}/{op}", **attrs))
        return out

    const("two", 2.0)
    const("eps", 1e-6)
    const("scale", float(1.0 / np.sqrt(hd)))
    const("heads_shape", [0, 0, nh, hd])
    const("merge_shape", [0, 0, h])
    const("axis3", [3])
    const("zero", [0])
    const("half", [hd // 2])
    const("end", [2**62])
    weight("rotary.cos_cached", [shape.max_pos, hd])
    weight("rotary.sin_cached", [shape.max_pos, hd])

    def rms(x: str, p: str) -> str:
        var = node("ReduceMean", [node("Pow", [x, "two"], f"{p}/pow")], f"{p}/var", axes=[-1], keepdims=1)
        inv = node(
            "Reciprocal", [node("Sqrt", [node("Add", [var, "eps"], f"{p}/add")], f"{p}/sqrt")], f"{p}/inv"
        )
        return node("Mul", [weight(f"{p}.weight", [h]), node("Mul", [x, inv], f"{p}/normed")], f"{p}/out")

    cos = node(
        "Unsqueeze", [node("Gather", ["rotary.cos_cached", "position_ids"], "cos"), "one_axis"], "cos4"
    )
    sin = node(
        "Unsqueeze", [node("Gather", ["rotary.sin_cached", "position_ids"], "sin"), "one_axis"], "sin4"
    )
    const("one_axis", [1])

    def rotary(t: str, p: str) -> str:
        x1 = node("Slice", [t, "zero", "half", "axis3"], f"{p}/x1")
        x2 = node("Slice", [t, "half", "end", "axis3"], f"{p}/x2")
        rot = node("Concat", [node("Neg", [x2], f"{p}/neg"), x1], f"{p}/rot", axis=-1)
        return node(
            "Add", [node("Mul", [t, cos], f"{p}/tcos"), node("Mul", [rot, sin], f"{p}/rsin")], f"{p}/emb"
        )

    def heads(t: str, p: str) -> str:
        return node(
            "Transpose", [node("Reshape", [t, "heads_shape"], f"{p}/split")], f"{p}/bhsd", perm=[0, 2, 1, 3]
        )

    x = node("Gather", [weight("model.embed_tokens.weight", [shape.vocab, h]), "input_ids"], "embed")
    for i in range(shape.layers):
        p = f"model.layers.{i}"
        a = rms(x, f"{p}.input_layernorm")
        proj = {
            n: node("MatMul", [a, weight(f"{p}.self_attn.{n}_proj.weight", [h, h])], f"{p}/{n}")
            for n in "qkv"
        }
        q = rotary(heads(proj["q"], f"{p}/q"), f"{p}/q_rot")
        k = rotary(heads(proj["k"], f"{p}/k"), f"{p}/k_rot")
        v = heads(proj["v"], f"{p}/v")
        kt = node("Transpose", [k], f"{p}/kT", perm=[0, 1, 3, 2])
        scores = node("Mul", [node("MatMul", [q, kt], f"{p}/qk"), "scale"], f"{p}/scores")
        attn = node("MatMul", [node("Softmax", [scores], f"{p}/probs", axis=-1), v], f"{p}/attn")
        merged = node(
            "Reshape",
            [node("Transpose", [attn], f"{p}/bshd", perm=[0, 2, 1, 3]), "merge_shape"],
            f"{p}/merged",
        )
        o = node("MatMul", [merged, weight(f"{p}.self_attn.o_proj.weight", [h, h])], f"{p}/o")
        x = node("Add", [x, o], f"{p}/res1")
        m = rms(x, f"{p}.post_attention_layernorm")
        gate = node("MatMul", [m, weight(f"{p}.mlp.gate_proj.weight", [h, shape.inter])], f"{p}/gate")
        silu = node("Mul", [gate, node("Sigmoid", [gate], f"{p}/sig")], f"{p}/silu")
        up = node("MatMul", [m, weight(f"{p}.mlp.up_proj.weight", [h, shape.inter])], f"{p}/up")
        down_w = weight(f"{p}.mlp.down_proj.weight", [shape.inter, h])
        x = node(
            "Add", [x, node("MatMul", [node("Mul", [silu, up], f"{p}/gu"), down_w], f"{p}/down")], f"{p}/res2"
        )
    logits = node("MatMul", [rms(x, "model.norm"), weight("lm_head.weight", [h, shape.vocab])], "logits")
    graph = helper.make_graph(
        nodes,
        "llama_shaped",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", "seq", shape.vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())  # the weights are external: the proto is small
    with open(path.with_name(data_name), "wb") as f:
        if data == "sparse":
            f.truncate(offset)  # a hole of the weights' full size: no disk used, nothing written
    return path
