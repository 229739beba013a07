"""What a load reads once and what it leaves out: the shared node rows (``frontends.onnx_rows``) never
describe a graph as it was before an edit, and the light copy that the checker and shape inference get
keeps every value that sizes something."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import frontends
from frontends.onnx_frontend import SMALL_FLOAT, light_copy
from frontends.onnx_order import sort_graph
from frontends.onnx_rows import forget_rows, node_rows, shared_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from analysis_speed import synthetic_model


def _reversed(nodes: int) -> onnx.ModelProto:
    model = synthetic_model(nodes, "mlp")
    order = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(order[::-1])
    return model


def test_an_unsorted_file_maps_every_ir_node_to_its_sorted_proto(tmp_path):
    """A file is sorted in place after its rows were read for the checks: the IR build must read the
    sorted nodes (stale rows gave every IR node the origin of another proto node)."""
    path = tmp_path / "unsorted.onnx"
    onnx.save(_reversed(40), str(path))
    graph = frontends.load(path)
    protos = graph.meta["model"].graph.node
    assert [n.name for n in graph.nodes] == [protos[n.origin].name for n in graph.nodes]
    assert [n.op for n in graph.nodes] == [protos[n.origin].op_type for n in graph.nodes]
    assert graph.nodes[0].inputs[0] is not None and graph.nodes[0].inputs[0].name == "x"


def test_rows_are_shared_inside_a_load_and_reread_after_an_edit():
    model = _reversed(10)
    g = model.graph
    assert node_rows(g) is not node_rows(g)  # outside a load: read afresh each time
    with shared_rows():
        first = node_rows(g)
        assert node_rows(g) is first
        assert [r.name for r in first] == [pn.name for pn in g.node]
        with shared_rows():  # nested: the same rows
            assert node_rows(g) is first
        sort_graph(g)  # edits the nodes and forgets their rows
        again = node_rows(g)
        assert again is not first
        assert [r.name for r in again] == [pn.name for pn in g.node]
        forget_rows(g)
        assert node_rows(g) is not again


def test_float_weights_leave_the_light_copy_but_float_scales_stay():
    """A float weight never sizes anything, so the checked copy drops it; a Resize's float scales do
    size its output, so they stay, and the output shape comes out static."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), dtype=np.float32), "w")  # 108 floats
    b = numpy_helper.from_array(np.zeros(SMALL_FLOAT + 1, dtype=np.float32), "b")
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["up", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["b", "b"], ["bb"]),
    ]
    graph = helper.make_graph(
        nodes,
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 4, "h", "w"]),
            helper.make_tensor_value_info("bb", TensorProto.FLOAT, [SMALL_FLOAT + 1]),
        ],
        [scales, w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    light = light_copy(model)
    assert [t.name for t in light.graph.initializer] == ["scales"]
    assert {i.name for i in light.graph.input} == {"x", "w", "b"}
    g = frontends.load(model)
    assert g.values["up"].shape == (1, 3, 16, 16)
    assert g.values["c"].shape == (1, 4, 16, 16)
