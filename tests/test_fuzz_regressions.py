"""Bugs the fuzzer found (``python -m fuzz``), each pinned by the smallest example that showed it.

Architecture specs are the fuzzer's own shrunk examples (``fuzz.arch``); malformed inputs are written
out with the ONNX builder so that each test shows the one thing that is wrong with its model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import construct
import frontends
import graphcore
from construct.verify import compare_models, random_inputs
from fuzz.arch import build, export
from fuzz.malformed import mutate
from fuzz.properties import check_analysis, check_architecture, check_frontends_agree, check_prune_exact
from graphcore.channels import ChannelGraph
from graphcore.ir import Graph, Node, Value
from tests.onnx_builder import G
from tests.test_onnx_patterns import residual, unknown_op
from zigraph.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


def _cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("zigraph: error:"), err
    assert "could not process the input" not in lines[0], lines[0]  # an internal exception leaked
    return lines[0]


# -- analysis -----------------------------------------------------------------------------------------

# torch.chunk exported by TorchScript: the chunk widths are computed at run time (Shape -> Div -> Slice),
# so ONNX shape inference leaves them symbolic and a later node learns them.
_CHUNKED = {
    "input": {"kind": "image", "shape": [1, 2, 2, 8]},
    "layers": [
        {"op": "gap"},
        {"op": "split", "sizes": [1, 1], "chunk": True, "branches": [
            [],
            [{"op": "concat", "branches": [[{"op": "chanstat", "kind": "max"}],
                                           [{"op": "linear", "out": 7, "bias": True}], []]},
             {"op": "linear", "out": 16, "bias": True}],
        ]},
        {"op": "linear", "out": 1, "bias": False},
    ],
    "seed": 362,
}  # fmt: skip


def test_a_size_learned_late_does_not_leave_consumer_weights_prunable_alone():
    # Found: a Concat of inputs of unknown width ran before a Gemm learned the width (9) from its
    # weight; the Concat never related that axis, so the Gemm's weight columns formed a "prunable"
    # group of their own. Cutting it gave a model onnxruntime refused (9 vs 1 columns). The analysis
    # now runs again with learned sizes known from the start (graphcore/analysis.py).
    model = onnx.load_from_string(export(build(_CHUNKED), "torchscript-preserve"))
    a = check_analysis(frontends.load(model))
    for g in a.prunable_groups:
        check_prune_exact(a, np.asarray(g.zig_ids[: g.size - g.min_keep]))
    assert not any(("body.mods.1.branches.1.mods.1.weight", 1) in g.params for g in a.prunable_groups)


def test_the_grammar_local_response_norm_keeps_shapes_for_the_exporter():
    # Found (a grammar bug, not an engine bug): nn.LocalResponseNorm reshapes with sizes read at run
    # time, after which TorchScript could not export a following InstanceNorm ("unknown channel
    # size"). The grammar's LRN is now written with static shapes (fuzz/arch.py).
    spec = {
        "input": {"kind": "image", "shape": [1, 2, 1, 2]},
        "layers": [{"op": "cl_linear", "out": 3, "bias": False}, {"op": "lrn", "size": 3},
                   {"op": "inorm", "affine": False}],
        "seed": 0,
    }  # fmt: skip
    check_architecture(spec, removal_seed=0, exporter="torchscript")


@pytest.mark.parametrize("op", ["BatchNormalization", "InstanceNormalization", "GroupNormalization"])
@pytest.mark.parametrize("eps", [-1.0, 0.0, 1e-5])
def test_a_normalization_without_a_positive_epsilon_blocks_its_channels(op, eps):
    # Found (attribute mutation, epsilon -1): a removed channel is normalized as 0 / sqrt(0 + eps), NaN
    # in the zeroed model, and 0 * NaN stays NaN downstream, so the cut model (finite) differed. The
    # verification refused to write it; the analysis now blocks the channel instead (normalize.py).
    g = G(opset=21)  # GroupNormalization-21: per-channel scale
    x = g.input("x", [1, 3, 4, 4])
    a = g.conv(x, 3, 4, name="conv1")
    if op == "BatchNormalization":
        ins = [a, g.w("s", [4]), g.w("b", [4]), g.w("m", [4]), g.w("v", [4], positive=True)]
        n = g.op(op, ins, epsilon=eps)
    elif op == "InstanceNormalization":
        n = g.op(op, [a, g.w("s", [4]), g.w("b", [4])], epsilon=eps)
    else:
        n = g.op(op, [a, g.w("s", [4]), g.w("b", [4])], epsilon=eps, num_groups=2)
    g.conv(g.op("Relu", [n]), 4, 2, name="conv2")
    g.nodes[-1].output[0] = "y"
    g.output("y")
    model = g.model()
    model.ir_version = 10
    # ONNX cannot infer GroupNormalization-21 and writes a scalar shape for what follows: declare it.
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4]))
    a = check_analysis(frontends.load(model))
    grp = next(gr for gr in a.groups if ("conv1.weight", 0) in gr.params)
    if eps > 0:  # GroupNormalization-21 too: graphcore/infer.py carries the shape ONNX leaves out
        assert grp.prunable, grp.reason
        check_prune_exact(a, np.asarray(grp.zig_ids[:1]))
    else:
        assert not grp.prunable and "epsilon" in grp.reason


def test_stacked_mutations_never_read_a_weight_moved_to_external_data():
    # Found (a harness bug): "stack" pointed a bias at ../outside.bin, then "cast_weight" read that
    # tensor and onnx refused the path. Mutators now skip tensors whose data is external.
    spec = {"input": {"kind": "image", "shape": [1, 2, 5, 2]},
            "layers": [{"op": "conv", "out": 9, "k": 1, "stride": 2, "groups": 1, "bias": True},
                       {"op": "conv", "out": 8, "k": 1, "stride": 2, "groups": 1, "bias": True},
                       {"op": "gap"}, {"op": "head", "out": 5}],
            "seed": 8830}  # fmt: skip
    data = export(build(spec), "torchscript")
    mutate(data, "stack", 174429043)
    model = onnx.load_from_string(data)
    for t in model.graph.initializer:
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
    for name in ("cast_weight", "special_values", "reshape_init", "absurd_dim"):
        for seed in range(4):
            mutate(model.SerializeToString(), name, seed)


def test_a_blocked_group_reports_its_pin_before_a_consequence_of_it():
    # Found: a TorchScript chunk (Slice with computed bounds) pinned the Concat after it, but the group
    # reported the ReduceSum downstream ("removal is exact only for a zero channel"): a requirement
    # overwrote the pin's reason on the same elements, and among several reasons the last element's
    # won. The frontends check took it for a real disagreement. Pins now come first, in graph order.
    spec = {"input": {"kind": "tokens", "vocab": 4, "seq": 6, "dim": 16},
            "layers": [{"op": "mean_seq"},
                       {"op": "concat", "branches": [[], [{"op": "glu", "fn": "sigmoid"}], []]},
                       {"op": "chanstat", "kind": "sum"}, {"op": "linear", "out": 1, "bias": True}],
            "seed": 11102}  # fmt: skip
    model = onnx.load_from_string(export(build(spec), "torchscript-preserve"))
    a = check_analysis(frontends.load(model))
    assert not any("ReduceSum" in (g.reason or "") for g in a.groups)
    check_frontends_agree(spec)


def test_torch_normalize_is_lowered_with_its_epsilon_like_its_onnx_export():
    # Found: the torch frontend lowered F.normalize to LpNormalization (no epsilon: blocked), while its
    # ONNX export, x / max(||x||, eps), prunes exactly; the frontends disagreed. It is written out now.
    spec = {"input": {"kind": "image", "shape": [1, 3, 4, 4]},
            "layers": [{"op": "conv", "out": 8, "k": 3, "stride": 1, "groups": 1, "bias": True},
                       {"op": "act", "fn": "relu"}, {"op": "chanstat", "kind": "l2norm"},
                       {"op": "conv", "out": 4, "k": 1, "stride": 1, "groups": 1, "bias": True}],
            "seed": 3}  # fmt: skip
    out = check_frontends_agree(spec)
    assert out.prunable_groups == 1
    check_architecture(spec, removal_seed=1, exporter="torchscript")


def test_the_grammar_pad_keeps_shapes_for_the_exporter():
    # Found (a grammar bug): TorchScript computes F.pad's pads at run time and loses the shape, then
    # cannot export an InstanceNorm after it. The grammar's pad reshapes to literal sizes.
    spec = {"input": {"kind": "image", "shape": [1, 2, 1, 1]},
            "layers": [{"op": "pad", "mode": "zeros"}, {"op": "inorm", "affine": False}],
            "seed": 0}  # fmt: skip
    check_architecture(spec, removal_seed=0, exporter="torchscript")


def test_concat_with_an_input_of_late_learned_width_does_not_crash_its_rule():
    # Found: Concat's zero flags combined an empty array (an input with no static size yet) with one
    # whose size a later link had learned -> "operands could not be broadcast", caught as a blocked
    # group "rule for Concat could not handle this node" (graphcore/ops/layout.py).
    spec = {
        "input": {"kind": "image", "shape": [1, 4, 3, 8]},
        "layers": [
            {"op": "pool", "kind": "avg"}, {"op": "to_seq"},
            {"op": "split", "sizes": [2, 2], "chunk": True, "branches": [
                [{"op": "pos"}, {"op": "act", "fn": "relu"},
                 {"op": "concat", "branches": [
                     [{"op": "act", "fn": "hardswish"}, {"op": "glu", "fn": "tanh"}, {"op": "bn"}],
                     [{"op": "scale", "mode": "add"}, {"op": "bn"}, {"op": "rms"}]]}],
                [{"op": "concat", "branches": [[{"op": "chanstat", "kind": "sum"}],
                                               [{"op": "dropout"}, {"op": "bn"}]]},
                 {"op": "bn"}, {"op": "dropout"}],
            ]},
            {"op": "scale", "mode": "add"}, {"op": "scale", "mode": "mul"}, {"op": "first_token"},
        ],
        "seed": 1976,
    }  # fmt: skip
    model = onnx.load_from_string(export(build(spec), "torchscript-preserve"))
    check_analysis(frontends.load(model))  # fails on any "could not handle this node" reason


def test_indices_past_an_axis_end_block_instead_of_linking_another_axis():
    # Found with declared shapes that contradict the ops (a Concat whose inputs are wider than its
    # declared output): the offsets ran past the output axis into other values' elements.
    ctx = ChannelGraph()
    a, b = Value("a", shape=(1, 4)), Value("b", shape=(1, 3))
    assert not ctx.link_index(a, 1, np.arange(4), b, 1, np.arange(4))
    assert ctx.is_pinned(a, 1) and ctx.is_pinned(b, 1)
    assert ctx.links()[0].size == 0


def test_a_reduction_over_axes_of_different_sizes_blocks_them():
    # Found: a weight reshaped to another layout (valid data, wrong shape) gave Conv a 3-wide input
    # and an 8-wide weight axis; the analysis crashed combining their zero flags.
    ctx = ChannelGraph()
    x, w = Value("x", shape=(1, 3)), Value("w", shape=(5, 8), is_param=True, trainable=True)
    ctx.require_zero([(x, 1), (w, 1)], "sums")
    assert ctx.is_pinned(x, 1) and ctx.is_pinned(w, 1) and not ctx.requirements


def test_shape_filling_that_fails_does_not_crash_the_analysis():
    # Found: graphcore/infer.py raised (IndexError, a rank-0 Gather input) outside the rules' guard.
    import graphcore

    g = Graph()
    x = g.value("x", shape=())
    idx = g.value("i", shape=(2,), dtype="int64")
    y = g.value("y")
    g.inputs = [x, idx]
    g.add_node(Node("gather", "Gather", [x, idx], [y], {"axis": 0}))
    g.outputs = [y]
    graphcore.analyze(g)


def test_outputs_that_are_infinite_in_both_models_agree():
    # Found: a LayerNorm weight of +inf (a valid model) gave inf in both outputs; inf - inf is nan,
    # so verification failed comparing a model with itself.
    g = G()
    x = g.input("x", [1, 4])
    w = g.const("w", [np.inf, 1.0, 2.0, 3.0], dtype=np.float32)
    g.op("Mul", [x, w])
    g.nodes[-1].output[0] = "y"
    g.output("y")
    m = g.model()
    rep = compare_models(m, m, samples=2)
    assert rep.passed and rep.max_rel == 0.0


# -- bad input through the command line ----------------------------------------------------------------


def test_a_model_without_outputs_is_bad_input(tmp_path, capsys):
    m = residual().model()
    del m.graph.output[:]
    onnx.save(m, str(tmp_path / "m.onnx"))
    code, _, err = _cli(["analyze", tmp_path / "m.onnx"], capsys)
    assert code == 2 and "no outputs" in _one_error_line(err)


def test_a_tensor_whose_data_does_not_fill_its_shape_is_bad_input(tmp_path, capsys):
    # Found: ValueError "cannot reshape array of size 8 into shape (1,)" leaked from numpy_helper.
    m = residual().model()
    small = next(t for t in m.graph.initializer if t.name == "conv1.bias")
    small.dims[0] = 1
    onnx.save(m, str(tmp_path / "m.onnx"))
    out = tmp_path / "out.onnx"
    code, _, err = _cli(["prune", tmp_path / "m.onnx", "--sparsity", "0.5", "-o", out], capsys)
    assert code == 2 and "holds 8 values" in _one_error_line(err) and not out.exists()


def test_a_type_error_is_bad_input_at_load_not_an_internal_error(tmp_path, capsys):
    # Found: a float64 weight on a float32 Conv passed the checker and failed only once pruned, as
    # "internal error: the pruned model fails shape inference". Now strict inference at load.
    m = residual().model()
    t = next(t for t in m.graph.initializer if t.name == "conv2.weight")
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    onnx.save(m, str(tmp_path / "m.onnx"))
    for argv in (["analyze", tmp_path / "m.onnx"], ["prune", tmp_path / "m.onnx", "--sparsity", "0.5",
                                                     "-o", tmp_path / "o.onnx"]):  # fmt: skip
        code, _, err = _cli(argv, capsys)
        line = _one_error_line(err)
        assert code == 2 and "invalid ONNX graph" in line and "internal error" not in line


def test_a_negative_size_is_bad_input(tmp_path, capsys):
    # Found: an input of size -1 reached numpy ("negative dimensions are not allowed").
    m = residual().model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    onnx.save(m, str(tmp_path / "m.onnx"))
    code, _, err = _cli(["analyze", tmp_path / "m.onnx"], capsys)
    assert code == 2 and "negative size" in _one_error_line(err)


@pytest.mark.parametrize("op", ["Concat", "Gather"])
def test_an_axis_out_of_range_is_bad_input(tmp_path, capsys, op):
    # Found (attribute mutation): axis -2**40 passes ONNX's inference. In a Concat, onnxruntime's
    # optimizer hid it in the original model, so only the pruned one failed to run; in a Gather, the
    # verification indexed the table's shape with it (an internal error).
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    if op == "Concat":
        b = g.op("Concat", [a, a], axis=-(2**40))
    else:
        b = g.op("Gather", [a, g.const("idx", [0, 2])], axis=-(2**40))
    g.op("ReduceSum", [b], keepdims=0)
    g.nodes[-1].output[0] = "y"
    g.output("y")
    m = g.model()
    onnx.save(m, str(tmp_path / "m.onnx"))
    for cmd in (
        ["analyze", tmp_path / "m.onnx"],
        ["prune", tmp_path / "m.onnx", "--sparsity", "0.5", "-o", tmp_path / "out.onnx"],
    ):
        code, _, err = _cli(cmd, capsys)
        assert code == 2 and "has axis" in _one_error_line(err)
    assert not (tmp_path / "out.onnx").exists()


def test_token_bounds_ignore_a_gather_axis_out_of_range():
    # The same mutation on an embedding: verify reads Gather(table, token ids) to draw ids below the
    # table size, and indexed the table's shape with the axis (IndexError at verify.py).
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])
    table = numpy_helper.from_array(np.ones((5, 4), dtype=np.float32), "table")
    node = helper.make_node("Gather", ["table", "ids"], ["y"], axis=-(2**40))
    m = helper.make_model(helper.make_graph([node], "g", [ids], [y], [table]))
    assert random_inputs(m, np.random.default_rng(0))["ids"].shape == (1, 3)


def _runtime_failure() -> onnx.ModelProto:
    """Valid for the checker and for shape inference, but onnxruntime fails running it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    shape = numpy_helper.from_array(np.array([4, 4], dtype=np.int64), "shape")
    w = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [shape, w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def test_a_model_onnxruntime_cannot_run_is_one_clear_line(tmp_path):
    # Found: the ONNX Runtime "Fail" exception reached the user as "could not process the input
    # (Fail: ...)". Verification now says which model onnxruntime could not run.
    from graphcore.errors import ZigraphError

    m = _runtime_failure()
    with pytest.raises(ZigraphError, match="onnxruntime cannot run the model"):
        construct.verify(m, m, [])


def test_onnxruntime_failing_at_run_time_prints_only_our_line(tmp_path, capfd):
    # Found (python -m fuzz --seed 2026, mutation reshape_init): onnxruntime logged its own coloured
    # "[E:onnxruntime ...] Non-zero status code" line to stderr before ours: two lines, not one.
    m = _runtime_failure()
    onnx.save(m, str(tmp_path / "m.onnx"))
    (tmp_path / "r.json").write_text('{"removed": []}')
    code = main(
        ["verify", str(tmp_path / "m.onnx"), str(tmp_path / "m.onnx"), "--zero", str(tmp_path / "r.json")]
    )
    err = capfd.readouterr().err  # file-descriptor level: onnxruntime writes there, not to sys.stderr
    assert code == 2 and "onnxruntime cannot run the model" in _one_error_line(err)


def test_an_output_declared_with_a_shape_it_does_not_compute_is_bad_input():
    # Found by python -m fuzz --seed 2026 (mutation bypass_node): with the class-token Concat bypassed,
    # the output still declares 7 tokens but computes 1. Inference cannot see through the run-time
    # Expand shape, so the model loads; pruning writes that shape as a constant and the small model
    # failed inference: "internal error: the pruned model fails shape inference". Now it names the lie.
    from fuzz.malformed import library_verdict, mutate

    spec = {
        "input": {"kind": "tokens", "vocab": 2, "seq": 6, "dim": 3},
        "layers": [{"op": "attn", "heads": 2, "kv_heads": 2, "head_dim": 4, "bias": True}, {"op": "cls"},
                   {"op": "tied_head", "vocab": 2}],
        "seed": 882,
    }  # fmt: skip
    data = mutate(export(build(spec), "torchscript"), "bypass_node", 550395592)
    verdict = library_verdict(data, 0)
    assert verdict.ok and "declared with shape [1, 7, 2] but the model computes [1, 1, 2]" in verdict.message


def test_prune_that_fails_verification_leaves_no_output(tmp_path, capsys):
    # Found by the malformed-input fuzzer (mutation unknown_op): a valid model with a custom op that
    # onnxruntime cannot run is pruned and written, then verification fails to load it: exit 2 with
    # OUT on disk, against "never write the output" on error.
    path = tmp_path / "m.onnx"
    onnx.save(unknown_op().model({"custom": 1}), str(path))
    out = tmp_path / "out.onnx"
    code, _, err = _cli(["prune", path, "--sparsity", "0.5", "-o", out], capsys)
    assert code == 2 and _one_error_line(err)
    assert not out.exists()


def test_regressions_module_needs_no_network(tmp_path: Path):
    # The fuzzer's exports are made here from specs; keep them deterministic across runs.
    assert export(build(_CHUNKED), "torchscript") == export(build(_CHUNKED), "torchscript")


def test_flops_of_an_absurd_axis_saturate_instead_of_overflowing():
    # Found (mutation absurd_dim): a 2**60-long axis made one channel's FLOPs exceed int64 and
    # np.full raised OverflowError inside the analysis.
    import graphcore

    g = Graph()
    x = g.value("x", shape=(1, 2**60, 7))
    w1 = g.value("w1", shape=(7, 4), is_param=True, trainable=True)
    w2 = g.value("w2", shape=(4, 3), is_param=True, trainable=True)
    y, z = g.value("y", shape=(1, 2**60, 4)), g.value("z", shape=(1, 2**60, 3))
    g.inputs = [x]
    g.add_node(Node("m1", "MatMul", [x, w1], [y]))
    g.add_node(Node("m2", "MatMul", [y, w2], [z]))
    g.outputs = [z]
    a = graphcore.analyze(g)
    assert all(0 <= grp.flops < 2**63 for grp in a.groups)


def test_a_name_that_is_not_utf8_is_bad_input(tmp_path, capsys):
    # Found (mutation flip_bytes): protobuf returns bytes for such a name and the report's pydantic
    # validation failed ("could not process the input (ValidationError ...)").
    data = residual().model().SerializeToString().replace(b"Relu_", b"R\xc3lu_")
    (tmp_path / "m.onnx").write_bytes(data)
    code, _, err = _cli(["analyze", tmp_path / "m.onnx"], capsys)
    assert code == 2 and "not UTF-8" in _one_error_line(err)


def test_an_input_with_more_axes_than_numpy_allows_is_one_clear_error():
    # Found (mutation huge_rank): random inputs of rank 67 raised numpy's ValueError in verification.
    from graphcore.errors import ZigraphError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1] * 67)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1] * 67)
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    m.ir_version = 8
    with pytest.raises(ZigraphError, match="too many to verify"):
        construct.verify(m, m, [])


def test_a_unit_scale_keeps_the_channel_axis_where_inference_lost_its_width():
    # Found (python -m fuzz --seed 1201): a chunk (Slice with computed bounds) and a Concat left the
    # channel width unknown before a nearest upsampling; Resize pinned every axis whose output size it
    # could not compare, though its constant scale on the channel axis is 1, so the ONNX side blocked
    # a group the torch side pruned exactly.
    spec = {
        "input": {"kind": "image", "shape": [1, 4, 1, 2]},
        "layers": [
            {"op": "act", "fn": "relu"},
            {"op": "split", "sizes": [2, 2], "chunk": True,
             "branches": [[{"op": "conv", "out": 9, "k": 1, "stride": 1, "groups": 1, "bias": False},
                           {"op": "scale", "mode": "mul"}], []]},
            {"op": "upsample", "mode": "nearest"},
            {"op": "gap"},
            {"op": "head", "out": 1},
        ],
        "seed": 0,
    }  # fmt: skip
    check_architecture(spec, removal_seed=0, exporter="torchscript")


@pytest.mark.parametrize("mode", ["tf_half_pixel_for_nn", "tf_crop_and_resize"])
def test_resize_that_may_shift_indices_keeps_every_axis(mode):
    # The spec samples tf_half_pixel_for_nn half a pixel further on (the next index when rounded up)
    # and crops with tf_crop_and_resize: even at scale 1 index c need not come from index c.
    g = G(seed=3, opset=13)
    x = g.input("x", [1, 4, 4, 4])
    c = g.conv(x, 4, 8, name="c1")
    roi = g.const("roi", [0, 0, 0, 0, 1, 1, 1, 1], np.float32)
    scales = g.const("scales", [1, 1, 2, 2], np.float32)
    h = g.op("Resize", [c, roi, scales], mode="nearest", coordinate_transformation_mode=mode,
             nearest_mode="ceil")  # fmt: skip
    g.output(g.conv(h, 8, 3, k=1, name="c2"))
    a = graphcore.analyze(frontends.load(g.model()))
    mine = [grp for grp in a.groups if ("c1.weight", 0) in grp.params]
    assert mine and not any(grp.prunable for grp in mine)
    assert "Resize resamples this axis" in (mine[0].reason or "")


def test_a_conv_applied_twice_prunes_its_hidden_channels_per_read():
    """python -m fuzz --seed 1301: one conv used twice (``shared``) is two reads of one weight. Since
    sharing is a value and not a tie, pruning the channels between the reads clones the weight, so the
    file can store more than before while each layer reads less; the property counted storage and
    called that "not smaller". It counts per read now, and the removal is still verified exact."""
    from fuzz.properties import check_architecture

    spec = {
        "input": {"kind": "image", "shape": [1, 2, 1, 1]},
        "layers": [{"op": "shared", "k": 1}],
        "seed": 0,
    }
    check_architecture(spec, removal_seed=0, exporter="torchscript")


def test_frontends_agree_around_a_weight_read_twice():
    """python -m fuzz --seed 1302: a conv applied twice inside a concat branch. Torch has one parameter
    for both reads (a tie that reaches the graph output). ONNX gave each read its own value, so the conv
    feeding the first read was prunable there and the agreement check set the group aside ("read
    twice"); the reads of a matrix a stem reads are now tied in ONNX too (ALBERT grew when cut per
    read), so the two frontends agree and nothing is set aside."""
    from fuzz.properties import check_architecture

    conv = {"op": "conv", "out": 4, "k": 1, "stride": 1, "groups": 1, "bias": False}
    spec = {
        "input": {"kind": "image", "shape": [1, 1, 2, 2]},
        "layers": [
            {"op": "conv", "out": 1, "k": 1, "stride": 1, "groups": 1, "bias": False},
            {"op": "act", "fn": "relu"},
            {"op": "concat", "branches": [[conv, {"op": "shared", "k": 1}]]},
        ],
        "seed": 0,
    }
    out = check_architecture(spec, removal_seed=0, exporter="torchscript")
    assert not any("read twice" in gap for gap in out.skipped), out.skipped


def test_fuzz_torch_addmm_is_a_gemm_without_transb():
    """python -m fuzz (widened grammar, ``wlinear`` mode ``addmm``): the torch frontend did not know
    ``torch.addmm`` (FX traces it as the function, not the ATen op it already handled), so every
    channel around a Linear written ``torch.addmm(b, x, W)`` was pinned as an unknown op while the ONNX
    export of the same network (a Gemm without transB) pruned it."""
    spec = {
        "input": {"kind": "seq", "shape": [1, 4, 6]},
        "layers": [
            {"op": "first_token"},
            {"op": "linear", "out": 8, "bias": True},
            {"op": "act", "fn": "relu"},
            {"op": "wlinear", "out": 6, "mode": "addmm", "bias": True},
            {"op": "act", "fn": "relu"},
            {"op": "head", "out": 3},
        ],
        "seed": 3,
    }
    agree = check_frontends_agree(spec)
    assert not agree.skipped and agree.agreement.axes_skipped == 0, agree.skipped
    built = build(spec)
    ta = graphcore.analyze(frontends.load(built.module, built.inputs))
    w = "body.mods.3.weight"  # stored [in, out]: axis 1 is the Gemm's output channel
    assert any(g.prunable and (w, 1) in {(p, a) for p, a in g.params} for g in ta.groups), ta.groups
    out = check_architecture(spec, removal_seed=1, exporter="torchscript-preserve")
    assert out.zigs_removed > 0 and not out.skipped, out


def test_fuzz_a_parameter_with_a_folded_copy_is_not_compared_across_frontends():
    """python -m fuzz --seed 2612 (a fuzzer bug): a weight-normalized conv exports ``gain * v`` folded
    into a new initializer (``onnx::Div_N``, what the Conv reads) while ``|v|`` is still computed from
    ``v``. In ONNX ``v``'s input axis then only feeds a reduction (prunable, and exact), in torch it is
    the conv's input channel (fixed by the graph input): not a disagreement of the frontends but a
    copy the exporter made, which the check must set aside like the copies it already knew."""
    spec = {
        "input": {"kind": "image", "shape": [1, 2, 1, 1]},
        "layers": [{"op": "wconv", "out": 1, "k": 1, "mode": "wnorm", "bias": False}],
        "seed": 0,
    }
    out = check_frontends_agree(spec)
    assert out.agreement.axes_skipped == 1 and "copied parameters" in out.skipped[0], out
    check_architecture(spec, removal_seed=0, exporter="torchscript")


def test_fuzz_a_large_tensor_short_of_its_declared_values_is_bad_input(tmp_path, capsys):
    """python -m fuzz --seed 777 ([absurd_dim]): a bias whose dims say 2**40 over 13 stored floats. The
    loader counts only small tensors' bytes, so the declared size let it through to the writer of the
    pruned model, which decoded it with onnx's to_array: a ValueError, reported as an internal error
    (exit 3). It is the model's fault: exit 2, one line, nothing written."""
    spec = {
        "input": {"kind": "image", "shape": [1, 3, 2, 5]},
        "layers": [
            {"op": "conv", "out": 13, "k": 1, "stride": 1, "groups": 1, "bias": True},
            {"op": "act", "fn": "relu"},
            {"op": "conv", "out": 2, "k": 3, "stride": 1, "groups": 1, "bias": True},
        ],
        "seed": 1301,
    }
    model = onnx.load_from_string(export(build(spec), "torchscript-preserve"))
    bias = next(t for t in model.graph.initializer if t.name == "body.mods.0.bias")
    bias.dims[:] = [2**40]
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    before = src.read_bytes()
    out = tmp_path / "small.onnx"
    code, _, err = _cli(["prune", src, "--sparsity", "0.5", "-o", out], capsys)
    assert code == 2, err
    assert "body.mods.0.bias" in _one_error_line(err) and "internal error" not in err
    assert not out.exists() and src.read_bytes() == before


def test_fuzz_a_small_tensor_short_of_its_declared_shape_is_bad_input(tmp_path):
    """python -m fuzz --seed 2026 ([break_init_shape] on an fp16 export): a small initializer whose
    values do not fill its declared shape (18 values, dims [6, 1]) raised numpy's ValueError from the IR
    build, an internal error (exit 3) instead of a one-line bad-input error."""
    from fuzz.arch import build, export
    from fuzz.malformed import assert_contract, mutate

    spec = {
        "input": {"kind": "tokens", "vocab": 11, "seq": 4, "dim": 6},
        "layers": [{"op": "act", "fn": "square"}, {"op": "head", "out": 3}],
        "seed": 1080,
    }
    data = mutate(export(build(spec), "torchscript-fp16"), "break_init_shape", 1525544821)
    assert_contract(data, tmp_path, seed=1525544821)
