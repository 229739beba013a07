"""A tiny builder for hand-written ONNX graphs in tests: random weights, named nodes, one call per op."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class G:
    """Collects nodes and initializers; ``model()`` returns a checked ModelProto."""

    def __init__(self, seed: int = 0, opset: int = 18) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.infos: list[onnx.ValueInfoProto] = []
        self.opset = opset
        self.n = 0

    def input(self, name: str, shape, dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, name: str, dtype=TensorProto.FLOAT) -> None:
        self.outputs.append(helper.make_value_info(name, helper.make_tensor_type_proto(dtype, shape=None)))

    def shape_of(self, name: str, shape, dtype=TensorProto.FLOAT) -> None:
        """Declare a value's shape (what an exporter writes for ops shape inference cannot see)."""
        self.infos.append(helper.make_tensor_value_info(name, dtype, shape))

    def w(self, name: str, shape, scale: float = 0.3, positive: bool = False) -> str:
        arr = self.rng.standard_normal(shape).astype(np.float32) * scale
        if positive:
            arr = np.abs(arr) + 0.5
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const(self, name: str, values, dtype=np.int64) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs) -> str | list[str]:
        self.n += 1
        outs = [f"{op.lower()}{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{self.n}", domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, group: int = 1, name: str | None = None) -> str:
        name = name or f"conv{self.n + 1}"
        w = self.w(f"{name}.weight", (cout, cin // group, k, k))
        b = self.w(f"{name}.bias", (cout,))
        return self.op("Conv", [x, w, b], pads=[k // 2] * 4, group=group)

    def bn(self, x: str, c: int, name: str | None = None) -> str:
        name = name or f"bn{self.n + 1}"
        return self.op(
            "BatchNormalization",
            [
                x,
                self.w(f"{name}.weight", (c,)),
                self.w(f"{name}.bias", (c,)),
                self.w(f"{name}.running_mean", (c,)),
                self.w(f"{name}.running_var", (c,), positive=True),
            ],
        )

    def gemm(self, x: str, cin: int, cout: int, name: str, trans_b: bool = True) -> str:
        shape = (cout, cin) if trans_b else (cin, cout)
        return self.op(
            "Gemm", [x, self.w(f"{name}.weight", shape), self.w(f"{name}.bias", (cout,))], transB=int(trans_b)
        )

    def model(self, domains: dict[str, int] | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "test", self.inputs, self.outputs, self.inits, value_info=self.infos
        )
        imports = [helper.make_opsetid("", self.opset)]
        for d, v in (domains or {}).items():
            imports.append(helper.make_opsetid(d, v))
        m = helper.make_model(graph, opset_imports=imports)
        m.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(m)
        types = {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output]}
        for out in m.graph.output:
            if out.name in types and types[out.name].tensor_type.HasField("shape"):
                out.type.CopyFrom(types[out.name])
            else:
                out.type.tensor_type.shape.SetInParent()
        return m
