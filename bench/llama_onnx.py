"""LLaMA-shaped ONNX files with their weights as external data, written without holding them in memory.

The graph is built with ``onnx.helper`` (embedding, RMSNorm, attention without rotary, SwiGLU MLP,
LM head); every weight is an external tensor in one data file beside the model, at 64 KiB-aligned
offsets. ``fill="random"`` writes real values (so the pruning choice and the verification mean
something); ``fill="sparse"`` only sets the file's size, a sparse file of zeros that costs no disk, for
shapes (the full 7B) that would not fit a shared disk twice. Norm weights are ones in both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ALIGN = 65536


@dataclass(frozen=True)
class Shape:
    layers: int = 4
    hidden: int = 4096
    inter: int = 11008
    heads: int = 32
    vocab: int = 32000

    @property
    def params(self) -> int:
        per_layer = 4 * self.hidden * self.hidden + 3 * self.hidden * self.inter + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


class _Data:
    """The data file: each weight appended at an aligned offset, as random values or as a hole."""

    def __init__(self, path: Path, fill: str, seed: int) -> None:
        self.path, self.fill = path, fill
        self.f = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.offset = 0
        self.rng = np.random.default_rng(seed)

    def add(self, name: str, dims: list[int], ones: bool = False) -> TensorProto:
        self.offset = -(-self.offset // ALIGN) * ALIGN
        n = int(np.prod(dims))
        if ones:
            self.f.seek(self.offset)
            self.f.write(np.ones(n, np.float32).tobytes())
        elif self.fill == "random":
            self.f.seek(self.offset)
            scale = 1.0 / np.sqrt(dims[0])
            step = 1 << 24
            for k in range(0, n, step):
                m = min(step, n - k)
                self.f.write((self.rng.standard_normal(m, np.float32) * np.float32(scale)).tobytes())
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", self.offset), ("length", 4 * n)):
            e = t.external_data.add()
            e.key, e.value = k, str(v)
        self.offset += 4 * n
        return t

    def close(self) -> None:
        self.f.truncate(self.offset)  # a sparse tail when the last weights were holes
        self.f.close()


def build(path: str | os.PathLike, shape: Shape = Shape(), fill: str = "random", seed: int = 0) -> Path:
    """Write the model to ``path`` and its weights to ``path + '.data'``; returns the model path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _Data(path.with_name(path.name + ".data"), fill, seed)
    h, hd = shape.hidden, shape.hidden // shape.heads
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(onnx.numpy_helper.from_array(arr, name))
        return name

    def weight(name: str, dims: list[int], ones: bool = False) -> str:
        inits.append(data.add(name, dims, ones))
        return name

    def node(op: str, ins: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    const("two", np.array(2.0, np.float32))
    const("eps", np.array(1e-5, np.float32))
    const("scale", np.array(1.0 / np.sqrt(hd), np.float32))
    const("heads_shape", np.array([0, 0, shape.heads, hd], np.int64))
    const("merge_shape", np.array([0, 0, h], np.int64))

    def rms(x: str, p: str) -> str:
        sq = node("Pow", [x, "two"], f"{p}_sq")
        mean = node("ReduceMean", [sq], f"{p}_mean", axes=[-1], keepdims=1)
        std = node("Sqrt", [node("Add", [mean, "eps"], f"{p}_add")], f"{p}_std")
        normed = node("Div", [x, std], f"{p}_div")
        return node("Mul", [normed, weight(f"{p}.weight", [h], ones=True)], f"{p}_out")

    x = node("Gather", [weight("embed.weight", [shape.vocab, h]), "input_ids"], "embed")
    for i in range(shape.layers):
        p = f"layers.{i}"
        a = rms(x, f"{p}.attn_norm")
        q, k, v = (node("MatMul", [a, weight(f"{p}.{n}.weight", [h, h])], f"{p}_{n}") for n in "qkv")
        qh, kh, vh = (
            node("Transpose", [node("Reshape", [t, "heads_shape"], f"{t}_r")], f"{t}_t", perm=[0, 2, 1, 3])
            for t in (q, k, v)
        )
        kt = node("Transpose", [kh], f"{p}_kT", perm=[0, 1, 3, 2])
        s = node("Mul", [node("MatMul", [qh, kt], f"{p}_qk"), "scale"], f"{p}_scaled")
        ctx = node("MatMul", [node("Softmax", [s], f"{p}_sm", axis=-1), vh], f"{p}_ctx")
        merged = node(
            "Reshape", [node("Transpose", [ctx], f"{p}_ctxT", perm=[0, 2, 1, 3]), "merge_shape"], f"{p}_m"
        )
        o = node("MatMul", [merged, weight(f"{p}.o.weight", [h, h])], f"{p}_o")
        x = node("Add", [x, o], f"{p}_res1")
        m = rms(x, f"{p}.mlp_norm")
        gate = node("MatMul", [m, weight(f"{p}.gate.weight", [h, shape.inter])], f"{p}_gate")
        silu = node("Mul", [gate, node("Sigmoid", [gate], f"{p}_sig")], f"{p}_silu")
        up = node("MatMul", [m, weight(f"{p}.up.weight", [h, shape.inter])], f"{p}_up")
        down = node(
            "MatMul",
            [node("Mul", [silu, up], f"{p}_gu"), weight(f"{p}.down.weight", [shape.inter, h])],
            f"{p}_down",
        )
        x = node("Add", [x, down], f"{p}_res2")
    logits = node("MatMul", [rms(x, "final_norm"), weight("lm_head.weight", [h, shape.vocab])], "logits")
    data.close()
    graph = helper.make_graph(
        nodes,
        "llama_shaped",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", "seq", shape.vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())  # weights are external: the proto is small
    return path


def remove(path: str | os.PathLike) -> None:
    """Delete a built model and its data file."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".data")):
        if p.exists():
            p.unlink()
