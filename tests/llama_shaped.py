"""LLaMA-shaped ONNX graphs, built with ``onnx.helper``, whose weights are external data.

The one builder for the tests and the benches (``tests/test_analysis_scale.py``,
``tests/test_external_data.py``, ``bench/analysis_speed.py``, ``bench/big_models.py``): the analysis
must handle a 7B-parameter model (26 GB of weights) without reading one weight byte, and the
construct must stream models past protobuf's 2 GB; both are checked on the same graph.

The graph is what a torch exporter writes for LLaMA: token embedding (Gather), RMSNorm as Pow →
ReduceMean → Add(eps) → Sqrt → Reciprocal → Mul → Mul(weight), attention with per-head
Reshape/Transpose, rotary embedding on q and k (cos/sin tables gathered by ``position_ids``,
``rotate_half`` as Slice/Neg/Concat; ``rotary=False`` leaves it out, and the input with it), scaled
scores, Softmax, the merge Reshape and the output projection, a SwiGLU MLP (gate · sigmoid(gate) ·
up → down) and the LM head. Weights are stored transposed ([in, out]) for MatMul, as exporters
store them.

Every float tensor points into one external data file beside the model, at 64 KiB-aligned offsets.
``data`` chooses what that file holds: ``"random"`` (real values, written a chunk at a time, so a
pruning choice and its verification mean something; the rotary tables are real cos/sin),
``"sparse"`` (its full size, a hole of zeros that costs no disk: what a real file looks like to a
reader that does not read it, for shapes that would not fit a shared disk twice), or ``"empty"``
(exists, zero bytes: any read of a weight fails, which is how the tests prove that the analysis
reads none). Norm weights are ones in ``"random"``; ``"sparse"`` writes no byte at all (with every
weight zero, ones there would change no output).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["LLAMA_7B", "LlamaShape", "build_llama", "remove"]

ALIGN = 65536
DATA = ("random", "sparse", "empty")


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
        """Parameters of the LLaMA layers, embedding, final norm and LM head (not the rotary tables)."""
        per_layer = 4 * self.hidden**2 + 3 * self.hidden * self.inter + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


LLAMA_7B = LlamaShape()


class _Data:
    """The data file: each weight at the next aligned offset; ``"random"`` writes values (drawn, or
    the table given), ``"sparse"`` leaves holes, ``"empty"`` writes nothing at all."""

    def __init__(self, path: Path, data: str, seed: int) -> None:
        self.path, self.data = path, data
        self.f = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.offset = 0
        self.rng = np.random.default_rng(seed)

    def add(self, name: str, dims: list[int], values: np.ndarray | None = None) -> TensorProto:
        self.offset = -(-self.offset // ALIGN) * ALIGN
        n = int(np.prod(dims))
        if self.data == "random" and values is not None:
            self.f.seek(self.offset)
            self.f.write(np.ascontiguousarray(values, np.float32).tobytes())
        elif self.data == "random":
            self.f.seek(self.offset)
            scale = np.float32(1.0 / np.sqrt(dims[0]))
            step = 1 << 24
            for k in range(0, n, step):
                self.f.write((self.rng.standard_normal(min(step, n - k), np.float32) * scale).tobytes())
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", self.offset), ("length", 4 * n)):
            e = t.external_data.add()
            e.key, e.value = k, str(v)
        self.offset += 4 * n
        return t

    def close(self) -> None:
        if self.data != "empty":
            self.f.truncate(self.offset)  # the full size: a sparse tail where the last weights were holes
        self.f.close()


def _rotary_tables(shape: LlamaShape) -> tuple[np.ndarray, np.ndarray]:
    """LLaMA's cos/sin caches: [max_pos, head_dim], each frequency twice (``rotate_half`` layout)."""
    inv = 1.0 / 10000.0 ** (np.arange(0, shape.head_dim, 2) / shape.head_dim)
    angles = np.outer(np.arange(shape.max_pos), inv)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def build_llama(
    path: str | os.PathLike,
    shape: LlamaShape = LLAMA_7B,
    data: str = "sparse",
    seed: int = 0,
    rotary: bool = True,
) -> Path:
    """Write the model to ``path`` and its weights' file to ``path + '.data'``; returns the model path."""
    if data not in DATA:
        raise ValueError(f"data must be one of {DATA}, not {data!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = _Data(path.with_name(path.name + ".data"), data, seed)
    h, nh, hd = shape.hidden, shape.heads, shape.head_dim
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, dims: list[int], values: np.ndarray | None = None) -> str:
        inits.append(store.add(name, dims, values))
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

    def rms(x: str, p: str) -> str:
        var = node("ReduceMean", [node("Pow", [x, "two"], f"{p}/pow")], f"{p}/var", axes=[-1], keepdims=1)
        inv = node(
            "Reciprocal", [node("Sqrt", [node("Add", [var, "eps"], f"{p}/add")], f"{p}/sqrt")], f"{p}/inv"
        )
        norm_w = weight(f"{p}.weight", [h], np.ones(h, np.float32))
        return node("Mul", [norm_w, node("Mul", [x, inv], f"{p}/normed")], f"{p}/out")

    def heads(t: str, p: str) -> str:
        return node(
            "Transpose", [node("Reshape", [t, "heads_shape"], f"{p}/split")], f"{p}/bhsd", perm=[0, 2, 1, 3]
        )

    cos = sin = ""
    if rotary:
        const("axis3", [3])
        const("zero", [0])
        const("half", [hd // 2])
        const("end", [2**62])
        const("one_axis", [1])
        cos_t, sin_t = _rotary_tables(shape) if data == "random" else (None, None)
        weight("rotary.cos_cached", [shape.max_pos, hd], cos_t)
        weight("rotary.sin_cached", [shape.max_pos, hd], sin_t)
        cos = node(
            "Unsqueeze", [node("Gather", ["rotary.cos_cached", "position_ids"], "cos"), "one_axis"], "cos4"
        )
        sin = node(
            "Unsqueeze", [node("Gather", ["rotary.sin_cached", "position_ids"], "sin"), "one_axis"], "sin4"
        )

    def rope(t: str, p: str) -> str:
        if not rotary:
            return t
        x1 = node("Slice", [t, "zero", "half", "axis3"], f"{p}/x1")
        x2 = node("Slice", [t, "half", "end", "axis3"], f"{p}/x2")
        rot = node("Concat", [node("Neg", [x2], f"{p}/neg"), x1], f"{p}/rot", axis=-1)
        return node(
            "Add", [node("Mul", [t, cos], f"{p}/tcos"), node("Mul", [rot, sin], f"{p}/rsin")], f"{p}/emb"
        )

    x = node("Gather", [weight("model.embed_tokens.weight", [shape.vocab, h]), "input_ids"], "embed")
    for i in range(shape.layers):
        p = f"model.layers.{i}"
        a = rms(x, f"{p}.input_layernorm")
        proj = {
            n: node("MatMul", [a, weight(f"{p}.self_attn.{n}_proj.weight", [h, h])], f"{p}/{n}")
            for n in "qkv"
        }
        q = rope(heads(proj["q"], f"{p}/q"), f"{p}/q_rot")
        k = rope(heads(proj["k"], f"{p}/k"), f"{p}/k_rot")
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
    store.close()
    ids = ["input_ids", "position_ids"] if rotary else ["input_ids"]
    graph = helper.make_graph(
        nodes,
        "llama_shaped",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ids],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", "seq", shape.vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())  # the weights are external: the proto is small
    return path


def remove(path: str | os.PathLike) -> None:
    """Delete a built model and its data file."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".data")):
        if p.exists():
            p.unlink()
