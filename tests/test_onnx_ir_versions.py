"""Accept what onnxruntime accepts and write what onnx.checker accepts: graphs whose nodes are out of
topological order are sorted on load, and pruned models are valid for their IR version (IR < 4 lists
every initializer, the new ones included, among the graph inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import construct
import frontends
import graphcore
from construct.onnx_construct import finish
from frontends.onnx_frontend import read_onnx
from frontends.onnx_order import sort_graph
from graphcore.errors import InternalError, ModelLoadError
from graphcore.select import select_zigs
from zigraph.cli import main


def _conv_relu_conv(rng: np.random.Generator) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in [("W1", (8, 3, 3, 3)), ("B1", (8,)), ("W2", (4, 8, 3, 3))]
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "W2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node]


def test_a_sorted_graph_keeps_its_order_exactly():
    model = _conv_relu_conv(np.random.default_rng(0))
    assert not sort_graph(model.graph)
    assert _names(model) == ["conv1", "relu", "conv2"]


def test_a_node_before_its_producer_moves_just_after_it():
    """Stable: only the node out of place moves (as the float16 converter's appended Casts do)."""
    model = _conv_relu_conv(np.random.default_rng(0))
    nodes = list(model.graph.node)
    cast_in = helper.make_node("Cast", ["x16"], ["x"], to=TensorProto.FLOAT, name="cast_in")
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    model.graph.input[0].name = "x16"
    del model.graph.node[:]
    model.graph.node.extend([*nodes, cast_in])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    assert sort_graph(model.graph)
    assert _names(model) == ["cast_in", "conv1", "relu", "conv2"]
    onnx.checker.check_model(model)


def test_outer_scope_reads_of_a_subgraph_count_as_dependencies():
    """An If branch reads 'r' from the enclosing graph: the If must come after r's producer."""
    model = _conv_relu_conv(np.random.default_rng(0))
    then = helper.make_graph(
        [helper.make_node("Identity", ["r"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 8, 8, 8])],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 8, 8, 8])],
    )
    cond = helper.make_node(
        "Constant", [], ["cond"], value=helper.make_tensor("v", TensorProto.BOOL, [], [True])
    )
    branch = helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=other, name="if")
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([cond, branch, *nodes])
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 8, 8]))
    assert sort_graph(model.graph)
    names = [n.name or n.op_type for n in model.graph.node]
    assert names.index("if") > names.index("relu")
    onnx.checker.check_model(model)


def test_a_cycle_is_a_clear_load_error():
    model = _conv_relu_conv(np.random.default_rng(0))
    model.graph.node[0].input[0] = "y"  # conv1 reads conv2's output
    with pytest.raises(ModelLoadError, match="cycle through"):
        read_onnx(model)


def test_unsorted_file_prunes_to_a_sorted_valid_file_and_the_input_is_untouched(tmp_path, capsys):
    model = _conv_relu_conv(np.random.default_rng(1))
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    path = tmp_path / "unsorted.onnx"
    onnx.save(model, str(path))
    before = path.read_bytes()
    out = tmp_path / "small.onnx"
    code = main(["prune", str(path), "--sparsity", "0.5", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "PASSED" in captured.out
    small = onnx.load(str(out))
    onnx.checker.check_model(small)
    assert _names(small) == ["conv1", "relu", "conv2"]
    assert path.read_bytes() == before
    # Loading from a ModelProto sorts a copy, never the caller's object.
    frontends.load(model)
    assert _names(model) == ["conv2", "relu", "conv1"]


def _ir3(opset: int, rng: np.random.Generator) -> onnx.ModelProto:
    """Model-zoo style: IR version 3, every initializer also a graph input; a Reshape whose shape
    constant names the channel count, so pruning writes a new initializer for it."""
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B1"),
        numpy_helper.from_array(np.array([1, 8, 16], dtype=np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["s"]),
        helper.make_node("ReduceSum", ["s"], ["m"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["m", "W2"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    g = helper.make_graph(
        nodes,
        "ir3",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 3
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_ir3_model_prunes_to_a_valid_ir3_file(opset, tmp_path, capsys):
    path = tmp_path / f"ir3_op{opset}.onnx"
    onnx.save(_ir3(opset, np.random.default_rng(opset)), str(path))
    out = tmp_path / "small.onnx"
    code = main(["prune", str(path), "--sparsity", "0.5", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "PASSED" in captured.out
    small = onnx.load(str(out))
    assert small.ir_version == 3
    onnx.checker.check_model(small)
    inits = {t.name: list(t.dims) for t in small.graph.initializer}
    declared = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in small.graph.input}
    assert any(n != "shape" and n.startswith("shape") for n in inits), inits  # construct wrote a new one
    for name, dims in inits.items():
        assert declared.get(name) == dims, name  # every initializer is a graph input, with its new shape
    assert inits["W1"][0] == 4


def test_finish_declares_new_initializers_for_ir3_and_keeps_ir4_inputs_clean():
    rng = np.random.default_rng(0)
    for ir, declared in [(3, True), (7, False)]:
        model = _ir3(8, rng)
        model.ir_version = ir
        if ir >= 4:
            del model.graph.input[1:]
        extra = numpy_helper.from_array(np.array([1, 8, 16], dtype=np.int64), "shape_new")
        model.graph.initializer.append(extra)
        model.graph.node[2].input[1] = "shape_new"
        finish(model, model, "pruned")
        onnx.checker.check_model(model)
        assert ("shape_new" in {i.name for i in model.graph.input}) is declared
        assert "shape" not in {t.name for t in model.graph.initializer}  # unused now: dropped


def test_finish_reports_an_invalid_result_as_internal():
    model = _conv_relu_conv(np.random.default_rng(0))
    original = onnx.ModelProto()
    original.CopyFrom(model)
    model.graph.node[1].input[0] = "nowhere"
    with pytest.raises(InternalError, match="pruned model"):
        finish(model, original, "pruned")


def test_ir3_prune_in_the_library_round_trips():
    model = _ir3(7, np.random.default_rng(3))
    analysis = graphcore.analyze(frontends.load(model))
    small, plan = construct.prune_onnx(analysis, select_zigs(analysis, 0.5, criterion="random"))
    onnx.checker.check_model(small)
    assert construct.verify(model, small, plan.removed).passed


def test_converted_fp16_cnn_with_io_casts_is_no_longer_refused(tmp_path: Path, capsys):
    """keep_io_types=True: the converter appends the input Cast after its consumers."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(_conv_relu_conv(np.random.default_rng(2)), keep_io_types=True)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    path = tmp_path / "half.onnx"
    onnx.save(model, str(path))
    code = main(["analyze", str(path)])
    assert code == 0, capsys.readouterr().err


def _with_default_domain_op(op: str) -> onnx.ModelProto:
    """x -> MatMul(16) -> Relu -> MatMul(8) -> ``op`` (default domain) -> y."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in [("W1", (8, 16)), ("W2", (16, 8)), ("scale", (8,))]
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["o"]),
        helper.make_node(op, ["o", "scale"], ["y"], axis=-1, epsilon=1e-5),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8])],
        initializer=inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_an_op_only_onnxruntime_registers_in_the_default_domain_is_accepted(tmp_path, capsys):
    """onnxruntime's transformer optimizer writes SimplifiedLayerNormalization in the default domain;
    onnxruntime runs it, onnx.checker says 'No Op registered'. Accepted, and written back valid."""
    model = _with_default_domain_op("SimplifiedLayerNormalization")
    with pytest.raises(onnx.checker.ValidationError, match="No Op registered"):
        onnx.checker.check_model(model)
    path = tmp_path / "sln.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "small.onnx"
    code = main(["prune", str(path), "--sparsity", "0.5", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "PASSED" in captured.out
    small = onnx.load(str(out))
    assert [n.op_type for n in small.graph.node][-1] == "SimplifiedLayerNormalization"
    assert small.graph.node[-1].domain == ""  # written as it came, not in our checking domain
    assert numpy_helper.to_array(next(t for t in small.graph.initializer if t.name == "W1")).shape == (8, 8)


def test_an_op_neither_onnx_nor_onnxruntime_knows_is_still_refused(tmp_path, capsys):
    path = tmp_path / "foo.onnx"
    onnx.save(_with_default_domain_op("NoSuchOpAnywhere"), str(path))
    code = main(["analyze", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "No Op registered for NoSuchOpAnywhere" in err, err
