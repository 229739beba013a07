"""Hand-built ONNX graphs: the groups we expect, written out by hand, and exact pruning of each."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.helpers import analyze, assert_exact, group_of, params_of, random_removal
from tests.onnx_builder import G


def _parameter_count(model) -> int:
    """Elements in the model's float initializers (the weights; shape constants are int64)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


def prune_smaller_and_exact(analysis, rng: np.random.Generator, fraction: float | None = None) -> None:
    """Remove a random subset of ZIGs, at least one from every prunable group that can spare one, and
    prove the pruned model smaller and exact: a removal of nothing would pass both checks vacuously."""
    removed = random_removal(analysis, rng, fraction)
    for g in analysis.prunable_groups:
        if g.size > g.min_keep:
            assert np.isin(g.zig_ids, removed).any(), f"group {g.id} lost no ZIG"
    assert removed.size, "the pattern has no prunable group that can lose a channel"
    small, _plan, _ = assert_exact(analysis, removed)
    before, after = _parameter_count(analysis.graph.meta["model"]), _parameter_count(small)
    assert after < before, f"removing {removed.size} ZIGs left {after} of {before} parameters"


def _slices(analysis, zig: int) -> dict[tuple[str, int], tuple[int, ...]]:
    """(param, axis) -> indices that ZIG ``zig`` removes."""
    return {(s.param, s.axis): s.indices for s in analysis.zig_slices(zig)}


def _head(g: G, x: str, c: int, classes: int = 3) -> None:
    p = g.op("GlobalAveragePool", [x])
    f = g.op("Flatten", [p])
    g.gemm(f, c, classes, "fc")
    g.nodes[-1].output[0] = "y"
    g.output("y")


def residual() -> G:
    g = G()
    x = g.input("x", [1, 4, 8, 8])
    a = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    b = g.conv(a, 8, 8, name="conv2")
    c = g.op("Relu", [g.op("Add", [a, b])])
    _head(g, g.conv(c, 8, 6, name="conv3"), 6)
    return g


def test_residual_add_ties_both_branches():
    a = analyze(residual().model())
    res = group_of(a, "conv1.weight", 0)
    assert res.prunable and res.size == 8
    expected = {
        ("conv1.weight", 0),
        ("conv1.bias", 0),
        ("conv2.weight", 0),
        ("conv2.weight", 1),
        ("conv2.bias", 0),
    }
    assert params_of(res) >= expected | {("conv3.weight", 1)}
    mid = group_of(a, "conv3.weight", 0)
    assert mid.prunable and mid.size == 6 and ("fc.weight", 1) in mid.params
    out = group_of(a, "fc.weight", 0)
    assert not out.prunable and "graph output" in out.reason
    inp = group_of(a, "conv1.weight", 1)
    assert not inp.prunable and "graph input" in inp.reason


def concat() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.conv(x, 4, 3, name="conv_a")
    b = g.conv(x, 4, 5, name="conv_b")
    c = g.op("Concat", [a, b], axis=1)
    d = g.op("Relu", [g.bn(c, 8, name="bn")])
    _head(g, g.conv(d, 8, 4, name="conv_c"), 4)
    return g


def test_concat_branches_keep_their_offsets():
    a = analyze(concat().model())
    ga, gb = group_of(a, "conv_a.weight", 0), group_of(a, "conv_b.weight", 0)
    assert ga is not gb and ga.prunable and gb.prunable and (ga.size, gb.size) == (3, 5)
    first_b = _slices(a, int(gb.zig_ids[0]))
    assert first_b[("bn.weight", 0)] == (3,) and first_b[("conv_c.weight", 1)] == (3,)
    last_a = _slices(a, int(ga.zig_ids[-1]))
    assert last_a[("bn.running_var", 0)] == (2,)


def depthwise() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    d = g.op("Relu", [g.conv(a, 8, 8, group=8, name="dw")])
    _head(g, g.conv(d, 8, 6, k=1, name="pw"), 6)
    return g


def test_depthwise_ties_input_and_output_channels():
    a = analyze(depthwise().model())
    grp = group_of(a, "conv1.weight", 0)
    assert grp.prunable and grp.size == 8
    assert params_of(grp) >= {("dw.weight", 0), ("dw.bias", 0), ("pw.weight", 1)}
    assert not any(("dw.weight", 1) in g.params for g in a.groups)  # the per-group width is structure


def grouped() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    b = g.op("Relu", [g.conv(a, 8, 8, group=2, name="gconv")])
    _head(g, g.conv(b, 8, 6, name="conv3"), 6)
    return g


def test_grouped_conv_removes_whole_groups():
    a = analyze(grouped().model())
    grp = group_of(a, "conv1.weight", 0)
    assert grp.prunable and grp.size == 2  # two conv groups of four channels
    sl = _slices(a, int(grp.zig_ids[1]))
    assert sl[("conv1.weight", 0)] == (4, 5, 6, 7) and sl[("gconv.weight", 0)] == (4, 5, 6, 7)
    small, _plan, _ = assert_exact(a, grp.zig_ids[:1])
    assert _parameter_count(small) < _parameter_count(a.graph.meta["model"])
    conv = next(n for n in small.graph.node if n.name.startswith("Conv") and n.input[1] == "gconv.weight")
    assert next(at.i for at in conv.attribute if at.name == "group") == 1


def split() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    s1, s2 = g.op("Split", [a, g.const("sizes", [3, 5])], n_out=2, axis=1)
    c = g.op("Add", [g.conv(s1, 3, 4, name="conv_a"), g.conv(s2, 5, 4, name="conv_b")])
    _head(g, c, 4)
    return g


def test_split_ranges_are_separate_groups():
    a = analyze(split().model())
    sizes = sorted(g.size for g in a.groups if ("conv1.weight", 0) in g.params)
    assert sizes == [3, 5]
    assert all(g.prunable for g in a.groups if ("conv1.weight", 0) in g.params)
    prune_smaller_and_exact(a, np.random.default_rng(1), 0.5)


def flatten_gemm() -> G:
    g = G()
    x = g.input("x", [1, 4, 4, 4])
    a = g.op("Relu", [g.conv(x, 4, 3, name="conv")])
    f = g.op("Flatten", [a], axis=1)
    g.gemm(f, 48, 5, "fc")
    g.nodes[-1].output[0] = "y"
    g.output("y")
    return g


def test_flatten_into_gemm_owns_spatial_blocks():
    a = analyze(flatten_gemm().model())
    grp = group_of(a, "conv.weight", 0)
    assert grp.prunable and grp.size == 3
    sl = _slices(a, int(grp.zig_ids[1]))
    assert sl[("fc.weight", 1)] == tuple(range(16, 32))


def squeeze_excite() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    y = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    s = g.op("GlobalAveragePool", [y])
    s = g.op("Relu", [g.conv(s, 8, 2, k=1, name="reduce")])
    s = g.op("Sigmoid", [g.conv(s, 2, 8, k=1, name="expand")])
    z = g.op("Mul", [y, s])
    _head(g, g.conv(z, 8, 6, name="conv3"), 6)
    return g


def test_squeeze_excite_gate_shares_the_channel():
    a = analyze(squeeze_excite().model())
    grp = group_of(a, "conv1.weight", 0)
    assert grp.prunable and grp.size == 8
    assert params_of(grp) >= {
        ("reduce.weight", 1),
        ("expand.weight", 0),
        ("expand.bias", 0),
        ("conv3.weight", 1),
    }
    inner = group_of(a, "reduce.weight", 0)
    assert inner.prunable and inner.size == 2 and ("expand.weight", 1) in inner.params


def matmul_transposed() -> G:
    g = G()
    x = g.input("x", [1, 5, 6])
    wt = g.op("Transpose", [g.w("w1", (8, 6))], perm=[1, 0])
    h = g.op("Relu", [g.op("MatMul", [x, wt])])
    g.op("MatMul", [h, g.w("w2", (8, 4))])
    g.nodes[-1].output[0] = "y"
    g.output("y")
    return g


def test_matmul_with_transposed_constant_weight():
    a = analyze(matmul_transposed().model())
    grp = group_of(a, "w1", 0)
    assert grp.prunable and grp.size == 8 and ("w2", 0) in grp.params


def layernorm() -> G:
    g = G()
    x = g.input("x", [1, 5, 6])
    h = g.op("MatMul", [x, g.w("w1", (6, 8))])
    h = g.op("LayerNormalization", [h, g.w("ln.weight", (8,)), g.w("ln.bias", (8,))], axis=-1)
    h = g.op("MatMul", [h, g.w("w2", (8, 7))])
    h = g.op("Relu", [h])
    g.op("MatMul", [h, g.w("w3", (7, 4))])
    g.nodes[-1].output[0] = "y"
    g.output("y")
    return g


def test_layernorm_over_the_channel_axis_is_prunable_with_its_count_kept():
    """The removed channels are zero at the LayerNorm; construct keeps its original count (issue 13,
    tests/test_hidden_size.py), and test_every_pattern_prunes_exactly proves it exact."""
    a = analyze(layernorm().model())
    grp = group_of(a, "w1", 1)
    assert grp.prunable, grp.reason
    assert ("ln.weight", 0) in grp.params
    mlp = group_of(a, "w2", 1)
    assert mlp.prunable and mlp.size == 7


def unknown_op() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.conv(x, 4, 8, name="conv1")
    b = g.op("Foo", [a], domain="custom")
    g.shape_of(b, [1, 8, 6, 6])
    c = g.op("Relu", [g.conv(b, 8, 6, name="conv2")])
    _head(g, g.conv(c, 6, 5, name="conv3"), 5)
    return g


def test_unknown_custom_op_blocks_its_neighbours():
    a = analyze(unknown_op().model({"custom": 1}))
    before = group_of(a, "conv1.weight", 0)
    assert not before.prunable and "custom::Foo" in before.reason
    after = group_of(a, "conv2.weight", 1)
    assert not after.prunable and "custom::Foo" in after.reason
    assert group_of(a, "conv2.weight", 0).prunable  # one stem further the channels are free again
    assert a.report().unknown_ops == {"custom::Foo": 1}


def sigmoid_between_convs() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.op("Sigmoid", [g.conv(x, 4, 8, name="conv1")])
    _head(g, g.conv(a, 8, 6, name="conv2"), 6)
    return g


def channel_mean() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    m = g.op("ReduceMean", [a, g.const("axes", [1])], keepdims=1)
    _head(g, g.op("Add", [g.conv(a, 8, 3, name="conv2"), m]), 3)
    return g


def test_f0_nonzero_activation_is_exact_when_consumers_drop_the_channel():
    a = analyze(sigmoid_between_convs().model())
    assert group_of(a, "conv1.weight", 0).prunable
    prune_smaller_and_exact(a, np.random.default_rng(0), 0.5)


def test_mean_over_channels_is_prunable_with_its_count_kept():
    """A mean over channels that are zero once removed is their sum over the original count, which
    construct keeps (ReduceMean * d / D); test_every_pattern_prunes_exactly proves it exact."""
    a = analyze(channel_mean().model())
    grp = group_of(a, "conv1.weight", 0)
    assert grp.prunable, grp.reason


PATTERNS = [residual, concat, depthwise, grouped, split, flatten_gemm, squeeze_excite, matmul_transposed,
            layernorm, sigmoid_between_convs, channel_mean]  # fmt: skip


@pytest.mark.parametrize("build", PATTERNS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_pattern_prunes_exactly(build, seed):
    a = analyze(build().model())
    prune_smaller_and_exact(a, np.random.default_rng(seed))


def division_by_a_channel() -> G:
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.conv(x, 4, 8, name="conv_num")
    b = g.op("Add", [g.op("Relu", [g.conv(x, 4, 8, name="conv_den")]), g.const("one", 1.0, np.float32)])
    _head(g, g.conv(g.op("Div", [a, b]), 8, 6, name="conv3"), 6)
    return g


def test_dividing_by_a_zeroed_channel_is_not_prunable():
    # Zeroing conv_den's channel makes the denominator 0 + 1 here, but Relu(0) + 1 is not provably
    # nonzero in general; a bare zeroed denominator would give inf × 0 = NaN downstream.
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.conv(x, 4, 8, name="conv_num")
    b = g.conv(x, 4, 8, name="conv_den")
    _head(g, g.conv(g.op("Div", [a, b]), 8, 6, name="conv3"), 6)
    a = analyze(g.model())
    grp = group_of(a, "conv_den.weight", 0)
    assert not grp.prunable and "division by zero" in grp.reason


def test_dividing_by_a_shifted_channel_stays_prunable_and_exact():
    a = analyze(division_by_a_channel().model())
    assert group_of(a, "conv_den.weight", 0).prunable
    for seed in range(3):
        prune_smaller_and_exact(a, np.random.default_rng(seed))


def test_cube_with_an_initializer_exponent_is_zero_preserving():
    # Regression: GPT-2's tanh-GELU computes x ** 3.0 with the exponent in an initializer; the
    # exponent's value must be known, or every MLP channel is wrongly blocked.
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.conv(x, 4, 8, name="conv1")
    cube = g.op("Pow", [a, g.const("three", 3.0, np.float32)])
    _head(g, g.conv(cube, 8, 6, name="conv2"), 6)
    a = analyze(g.model())
    assert group_of(a, "conv1.weight", 0).prunable
    prune_smaller_and_exact(a, np.random.default_rng(0), 0.5)


def test_packed_qkv_projection_prunes_the_hidden_channels_not_the_qkv_index():
    # nn.MultiheadAttention packs q, k, v into one [3 × hidden] projection, reshaped to [..., 3, hidden]
    # and indexed along the 3: the carrier of that split must be the hidden axis.
    g = G()
    x = g.input("x", [1, 5, 6])
    h = g.op("MatMul", [x, g.w("w_qkv", (6, 24))])
    r = g.op("Reshape", [h, g.const("to", [1, 5, 3, 8])])
    q = g.op("Gather", [r, g.const("i0", 0)], axis=2)
    v = g.op("Gather", [r, g.const("i2", 2)], axis=2)
    g.op("MatMul", [g.op("Mul", [q, v]), g.w("w_out", (8, 4))])
    g.nodes[-1].output[0] = "out"
    g.output("out")
    a = analyze(g.model())
    grp = group_of(a, "w_qkv", 1)
    assert grp.prunable and grp.size == 8
    assert _slices(a, int(grp.zig_ids[1]))[("w_qkv", 1)] == (
        1,
        9,
        17,
    )
    prune_smaller_and_exact(a, np.random.default_rng(0), 0.5)


def test_castlike_type_operand_does_not_pin_the_activation():
    # Regression: CastLike's second input only lends its type; leaving its axes unmapped pinned a
    # whole activation (every conv group of an unoptimized dynamo export became unprunable).
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    scale = g.op("CastLike", [g.const("s", 2.0, np.float32), a])
    _head(g, g.conv(g.op("Mul", [a, scale]), 8, 6, name="conv2"), 6)
    a = analyze(g.model())
    assert group_of(a, "conv1.weight", 0).prunable


def test_layer_scale_broadcast_axes_are_not_reported_as_groups():
    g = G()
    x = g.input("x", [1, 4, 6, 6])
    a = g.conv(x, 4, 8, name="conv1")
    y = g.op("Mul", [a, g.w("gamma", (1, 8, 1, 1))])
    _head(g, g.conv(y, 8, 6, name="conv2"), 6)
    a = analyze(g.model())
    assert ("gamma", 1) in group_of(a, "conv1.weight", 0).params
    assert not any(("gamma", 0) in grp.params for grp in a.groups)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_removes_a_shallow_channel_with_its_block(mode):
    g = G()
    x = g.input("x", [1, 3, 4, 4])
    a = g.op("Sigmoid", [g.conv(x, 3, 8, name="conv1")])  # f(0) != 0: the block must go whole
    d = g.op("DepthToSpace", [a], blocksize=2, mode=mode)
    _head(g, g.conv(g.op("Relu", [d]), 2, 5, name="conv2"), 5)
    a = analyze(g.model())
    grp = group_of(a, "conv1.weight", 0)
    assert grp.prunable and grp.size == 2 and ("conv2.weight", 1) in grp.params
    first = _slices(a, int(grp.zig_ids[0]))
    assert first[("conv1.weight", 0)] == ((0, 2, 4, 6) if mode == "DCR" else (0, 1, 2, 3))
    for seed in range(3):
        prune_smaller_and_exact(a, np.random.default_rng(seed))


def test_space_to_depth_removes_each_input_channel_from_every_block():
    g = G()
    x = g.input("x", [1, 3, 4, 4])
    a = g.op("Relu", [g.conv(x, 3, 2, name="conv1")])
    d = g.op("SpaceToDepth", [a], blocksize=2)  # output channel (i * 2 + j) * 2 + c
    _head(g, g.conv(d, 8, 5, name="conv2"), 5)
    a = analyze(g.model())
    grp = group_of(a, "conv1.weight", 0)
    assert grp.prunable and grp.size == 2
    first = _slices(a, int(grp.zig_ids[0]))
    assert first[("conv2.weight", 1)] == (0, 2, 4, 6)
    for seed in range(3):
        prune_smaller_and_exact(a, np.random.default_rng(seed))


def test_pads_computed_from_literals_are_folded():
    # TorchScript writes F.pad's pads as Concat -> Reshape(-1, 2) -> Slice(step -1) -> Transpose ->
    # Reshape(-1) -> Cast over literals; tracking 1-D values alone left the Pad's operand unknown.
    g = G()
    x = g.input("x", [1, 3, 4, 4])
    a = g.op("Relu", [g.conv(x, 3, 6, name="conv1")])
    zeros = g.op("ConstantOfShape", [g.const("four", [4])], value=_int_tensor(0))
    pairs = g.op("Reshape", [g.op("Concat", [g.const("ones", [1, 1, 1, 1]), zeros], axis=0),
                             g.const("pair", [-1, 2])])  # fmt: skip
    flipped = g.op("Slice", [pairs, g.const("s", [-1]), g.const("e", [-(2**63)]), g.const("ax", [0]),
                             g.const("st", [-1])])  # fmt: skip
    pads = g.op("Cast", [g.op("Reshape", [g.op("Transpose", [flipped], perm=[1, 0]), g.const("flat", [-1])])],
                to=7)  # fmt: skip
    p = g.op("Pad", [a, pads, g.const("fill", 0.0, np.float32)], mode="constant")
    _head(g, g.conv(p, 6, 4, name="conv2"), 4)
    a = analyze(g.model())
    grp = group_of(a, "conv1.weight", 0)
    assert grp.prunable, grp.reason
    prune_smaller_and_exact(a, np.random.default_rng(0))


def _int_tensor(v: int):
    return helper.make_tensor("value", TensorProto.INT64, [1], [v])
