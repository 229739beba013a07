"""Old opsets and ONNX local functions go through the same analysis and prune exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import analyze, assert_exact, group_of, random_removal
from tests.test_onnx_patterns import concat, residual


@pytest.mark.parametrize("opset", [7, 9, 11, 13])
@pytest.mark.parametrize("build", [residual, concat], ids=lambda f: f.__name__)
def test_old_opsets_prune_exactly(build, opset):
    g = build()
    g.opset = opset
    model = g.model()
    model.ir_version = 3 if opset < 8 else 7
    if opset < 8:  # IR v3: every initializer is also a graph input, as old exporters wrote them
        for t in model.graph.initializer:
            model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    a = analyze(model)
    assert a.prunable_groups
    assert_exact(a, random_removal(a, np.random.default_rng(opset)))


def test_local_functions_are_inlined():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((5, 8, 3, 3)).astype(np.float32), "w2")
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    body = [conv, helper.make_node("Relu", ["c"], ["y"])]
    fn = helper.make_function(
        "local", "ConvRelu", ["x", "w"], ["y"], body, opset_imports=[helper.make_opsetid("", 18)]
    )
    nodes = [
        helper.make_node("ConvRelu", ["x", "w1"], ["h"], domain="local", name="block1"),
        helper.make_node("Conv", ["h", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 6, 6])], [w1, w2],
    )  # fmt: skip
    model = helper.make_model(
        graph, functions=[fn], opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)]
    )
    onnx.checker.check_model(model)
    a = analyze(model)
    grp = group_of(a, "w1", 0)
    assert grp.prunable and grp.size == 8 and ("w2", 1) in grp.params
    assert not a.report().unknown_ops
