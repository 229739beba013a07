"""Quantized ONNX models prune exactly in the quantized domain, verified in onnxruntime.

A removed channel of a quantized tensor is its zero point, not 0: the zeroed reference fills removed
weight slices with their zero point, per-axis scales and zero points are cut with their channel, and a
zero flag crosses a Q -> DQ pair only when both use the same zero point. Hand-built graphs cover each
pattern (QDQ per tensor / per channel, int8 / uint8 / int4, blocked; QLinearConv; MatMulInteger), and
files written by onnxruntime's own ``quantize_static`` / ``quantize_dynamic`` are pruned at 50% through
the public pipeline.
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
from construct.onnx_construct import zero_slices
from construct.verify import compare_models
from tests.helpers import analyze, group_of
from tests.onnx_builder import G

# Measured: every quantized model here verifies with max_abs == 0 (integer accumulation with the zero
# point in removed slices contributes exactly nothing; requantization then sees the same integers).
QUANT_RTOL = 1e-4

_NP = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8}


def _q(g: G, name: str, arr: np.ndarray, dtype=None) -> str:
    t = (
        numpy_helper.from_array(arr, name)
        if dtype is None
        else helper.make_tensor(name, dtype, arr.shape, arr)
    )
    g.inits.append(t)
    return name


def _qweight(
    g: G, name: str, shape: tuple[int, ...], elem: int, per_channel: bool, axis: int = 0
) -> tuple[str, str, str]:
    """A quantized weight (values, scale, zero point): symmetric int8, or uint8 with zero points away
    from 0 (so that zeroing a slice to 0 instead of its zero point would show)."""
    rng = g.rng
    n = shape[axis] if per_channel else 1
    if elem == TensorProto.INT8:
        q = rng.integers(-100, 100, shape).astype(np.int8)
        zp = np.zeros(n, np.int8)
    else:
        q = rng.integers(0, 255, shape).astype(np.uint8)
        zp = rng.integers(90, 160, n).astype(np.uint8)
    scale = (rng.random(n) * 0.01 + 0.005).astype(np.float32)
    if not per_channel:
        zp, scale = zp.reshape(()), scale.reshape(())
    return _q(g, name, q), _q(g, name + "_scale", scale), _q(g, name + "_zp", zp)


def _dq(g: G, q: str, s: str, zp: str | None, axis: int = 0) -> str:
    return str(g.op("DequantizeLinear", [q, s] + ([zp] if zp else []), axis=axis))


def _qdq_act(g: G, x: str, zp: int, elem: int, zp_read: int | None = None) -> str:
    """An activation through QuantizeLinear -> DequantizeLinear, per tensor (``zp_read``: the zero
    point the DequantizeLinear uses, when it differs from the writer's)."""
    s = _q(g, f"act{g.n}_s", np.array(0.05, np.float32))
    z = _q(g, f"act{g.n}_zp", np.array(zp, _NP[elem]))
    q = str(g.op("QuantizeLinear", [x, s, z]))
    z2 = z if zp_read is None else _q(g, f"act{g.n}_zp2", np.array(zp_read, _NP[elem]))
    return str(g.op("DequantizeLinear", [q, s, z2]))


def _qdq_cnn(elem: int, per_channel: bool) -> onnx.ModelProto:
    """x -> QDQ -> Conv(DQ(w1), DQ(int32 bias)) -> Relu -> QDQ -> Conv(DQ(w2)) -> y."""
    g = G(seed=3, opset=13)
    x = g.input("x", [1, 3, 8, 8])
    h = _qdq_act(g, x, 128 if elem == TensorProto.UINT8 else 0, elem)
    w1 = _dq(g, *_qweight(g, "w1", (8, 3, 3, 3), elem, per_channel))
    b1_scale = (np.random.default_rng(1).random(8 if per_channel else 1) * 1e-3 + 1e-4).astype(np.float32)
    b1 = _q(g, "b1", np.random.default_rng(2).integers(-500, 500, 8).astype(np.int32))
    bs = _q(g, "b1_scale", b1_scale if per_channel else b1_scale.reshape(()))
    bias = _dq(g, b1, bs, None)
    h = str(g.op("Conv", [h, w1, bias], pads=[1, 1, 1, 1]))
    h = str(g.op("Relu", [h]))
    h = _qdq_act(g, h, 120 if elem == TensorProto.UINT8 else 0, elem)
    w2 = _dq(g, *_qweight(g, "w2", (4, 8, 3, 3), elem, per_channel))
    y = str(g.op("Conv", [h, w2], pads=[1, 1, 1, 1]))
    g.output(y)
    return g.model()


def _prune_half(model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto, graphcore.PruneAnalysis]:
    """Prune half of every prunable group; returns (small, zeroed reference, analysis)."""
    a = analyze(model)
    chosen = [int(z) for grp in a.groups if grp.prunable for z in grp.zig_ids[: max(1, grp.size // 2)]]
    assert chosen, [g.reason for g in a.groups]
    small, plan = construct.prune_onnx(a, chosen)
    onnx.checker.check_model(small, full_check=True)
    zeroed = zero_slices(model, None, plan.removed)
    return small, zeroed, a


def _assert_exact_and_meaningful(model: onnx.ModelProto, small: onnx.ModelProto, zeroed: onnx.ModelProto):
    rep = compare_models(zeroed, small, samples=3, rtol=QUANT_RTOL)
    assert rep.passed, rep
    assert rep.max_abs == 0.0, rep  # exact in the quantized domain
    unzeroed = compare_models(model, small, samples=3, rtol=QUANT_RTOL)
    assert not unzeroed.passed, "the check cannot fail: removing channels changed nothing"
    return rep


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


# -- QDQ ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("elem", [TensorProto.INT8, TensorProto.UINT8], ids=["int8", "uint8"])
def test_qdq_conv_chain_prunes_exactly(elem: int, per_channel: bool):
    model = _qdq_cnn(elem, per_channel)
    a = analyze(model)
    grp = group_of(a, "w1", 0)
    assert grp.prunable, grp.reason
    expected = {("w1", 0), ("b1", 0), ("w2", 1)}
    if per_channel:
        expected |= {("w1_scale", 0), ("w1_zp", 0), ("b1_scale", 0)}
    assert expected <= set(grp.params)
    small, zeroed, _ = _prune_half(model)
    _assert_exact_and_meaningful(model, small, zeroed)
    # The removed slices hold the zero point in the reference (for uint8 that is not 0) and the
    # per-channel scale and zero point are cut with their channel in the small model.
    w1, zp = _init(zeroed, "w1"), _init(model, "w1_zp")
    removed = [i for i in range(8) if i < 4]
    expect = np.broadcast_to(zp.reshape(-1, 1, 1, 1), (8, 1, 1, 1))[removed] if per_channel else zp
    assert (w1[removed] == expect).all()
    assert _init(small, "w1").shape[0] == 4
    if per_channel:
        assert _init(small, "w1_scale").shape == (4,) and _init(small, "w1_zp").shape == (4,)
        assert (_init(zeroed, "w1_zp") == zp).all()  # zero points are never zeroed


def test_norms_weigh_the_real_values_of_a_quantized_weight():
    """A uint8 channel holding its zero point stands for zeros: the l2 criterion must see it as the
    smallest (its raw integers, near 128, would make it look like any other)."""
    model = _qdq_cnn(TensorProto.UINT8, per_channel=True)
    tensors = {t.name: t for t in model.graph.initializer}
    w1, w2, b1 = (numpy_helper.to_array(tensors[n]).copy() for n in ("w1", "w2", "b1"))
    w1[5] = _init(model, "w1_zp")[5]  # channel 5 in, out and its bias: all real zeros
    w2[:, 5] = _init(model, "w2_zp").reshape(-1, 1, 1)
    b1[5] = 0
    for name, arr in (("w1", w1), ("w2", w2), ("b1", b1)):
        tensors[name].CopyFrom(numpy_helper.from_array(arr, name))
    a = analyze(model)
    norms = construct.zig_norms(a)
    owner = a.param_axes[("w1", 0)]
    others = [norms[owner[i]] for i in range(8) if i != 5]
    assert norms[owner[5]] == 0.0 < min(others), (norms[owner[5]], others)


def test_int4_weights_per_channel_prune_exactly():
    g = G(seed=5, opset=21)
    x = g.input("x", [2, 8])
    rng = g.rng
    q1 = rng.integers(-7, 7, (8, 16)).astype(np.int8)
    w1 = _dq(
        g,
        _q(g, "w1", q1, TensorProto.INT4),
        _q(g, "w1_scale", (rng.random(16) * 0.1 + 0.05).astype(np.float32)),
        _q(g, "w1_zp", rng.integers(-2, 3, 16).astype(np.int8), TensorProto.INT4),
        axis=1,
    )
    h = str(g.op("Relu", [str(g.op("MatMul", [x, w1]))]))
    q2 = rng.integers(-7, 7, (16, 4)).astype(np.int8)
    w2 = _dq(g, _q(g, "w2", q2, TensorProto.INT4), _q(g, "w2_scale", np.array(0.1, np.float32)), None)
    g.output(str(g.op("MatMul", [h, w2])))
    model = g.model()
    a = analyze(model)
    grp = group_of(a, "w1", 1)
    assert grp.prunable and {("w1_zp", 0), ("w1_scale", 0), ("w2", 0)} <= set(grp.params)
    small, zeroed, _ = _prune_half(model)
    _assert_exact_and_meaningful(model, small, zeroed)


def test_blocked_quantization_removes_whole_blocks():
    """DequantizeLinear with ``block_size``: each scale covers 4 rows of w2, so the hidden channels go
    in blocks of 4 and the blocked scale loses a row per block."""
    g = G(seed=6, opset=21)
    x = g.input("x", [2, 8])
    w1 = _dq(g, *_qweight(g, "w1", (8, 16), TensorProto.INT8, True, axis=1), axis=1)
    h = str(g.op("Relu", [str(g.op("MatMul", [x, w1]))]))
    rng = g.rng
    q2 = _q(g, "w2", rng.integers(-100, 100, (16, 4)).astype(np.int8))
    s2 = _q(g, "w2_scale", (rng.random((4, 4)) * 0.01 + 0.005).astype(np.float32))
    z2 = _q(g, "w2_zp", rng.integers(-5, 5, (4, 4)).astype(np.int8))
    w2 = str(g.op("DequantizeLinear", [q2, s2, z2], axis=0, block_size=4))
    g.output(str(g.op("MatMul", [h, w2])))
    model = g.model()
    a = analyze(model)
    grp = group_of(a, "w1", 1)
    assert grp.prunable and grp.size == 4, (grp.size, grp.reason)  # 16 channels in 4 blocks
    assert ("w2_scale", 0) in grp.params and ("w2_zp", 0) in grp.params
    small, zeroed, _ = _prune_half(model)
    assert _init(small, "w2").shape == (8, 4) and _init(small, "w2_scale").shape == (2, 4)
    _assert_exact_and_meaningful(model, small, zeroed)


# -- soundness: a zero point that changes between writer and reader ---------------------------------------


def _sum_after_qdq(zp_write: int, zp_read: int, reader: str = "dq") -> onnx.ModelProto:
    """Conv -> QuantizeLinear(zp_write) -> DequantizeLinear(zp_read) -> ReduceSum over channels: a
    channel can go only if it is zero at the sum, which holds exactly when the zero points agree."""
    g = G(seed=7, opset=13)
    x = g.input("x", [1, 3, 6, 6])
    h = g.conv(x, 3, 8, name="c1")
    if reader == "dq":
        h = _qdq_act(g, str(h), zp_write, TensorProto.UINT8, zp_read=zp_read)
    else:  # QuantizeLinear read by an op that sees the integers as they are
        s = _q(g, "s", np.array(0.05, np.float32))
        q = str(g.op("QuantizeLinear", [str(h), s, _q(g, "z", np.array(zp_write, np.uint8))]))
        h = str(g.op("Cast", [q], to=TensorProto.FLOAT))
    y = str(g.op("ReduceSum", [h, g.const("axes", [1])], keepdims=1))
    g.output(y)
    return g.model()


def test_matching_zero_points_carry_zero_through_q_dq():
    model = _sum_after_qdq(37, 37)
    assert group_of(analyze(model), "c1.weight", 0).prunable
    small, zeroed, _ = _prune_half(model)
    _assert_exact_and_meaningful(model, small, zeroed)


@pytest.mark.parametrize("reader", ["dq", "cast"])
def test_a_zero_point_that_changes_is_not_zero(reader: str):
    """Q with zp 37 read by DQ with zp 40 gives (37 - 40) * s != 0 for a zeroed channel (and a Cast
    reads 37): the channel is not zero at the sum, so the group must be blocked. Forcing the removal
    shows the difference is real."""
    model = _sum_after_qdq(37, 40 if reader == "dq" else 37, reader)
    a = analyze(model)
    grp = group_of(a, "c1.weight", 0)
    assert not grp.prunable and "zero" in (grp.reason or ""), grp.reason
    # What the removal would do if the rule ignored the zero points: it is not exact.
    reference = graphcore.analyze(frontends.load(_sum_after_qdq(37, 37)))
    small, plan = construct.prune_onnx(reference, group_of(reference, "c1.weight", 0).zig_ids[:4])
    zeroed = zero_slices(model, None, plan.removed)
    assert not compare_models(zeroed, small, samples=2).passed


def _shared_weight(zp_a: int, zp_b: int) -> onnx.ModelProto:
    g = G(seed=8, opset=13)
    x = g.input("x", [2, 8])
    q = _q(g, "wq", g.rng.integers(0, 255, (8, 8)).astype(np.uint8))
    s = _q(g, "ws", np.array(0.01, np.float32))
    za, zb = _q(g, "za", np.array(zp_a, np.uint8)), _q(g, "zb", np.array(zp_b, np.uint8))
    wa, wb = _dq(g, q, s, za), _dq(g, q, s, zb)
    g.output(str(g.op("Add", [str(g.op("MatMul", [x, wa])), str(g.op("MatMul", [x, wb]))])))
    return g.model()


def test_a_weight_read_with_two_zero_points_is_not_zeroable():
    """Its zero would be two different numbers: it is not a parameter the analysis may count as zero."""

    def uses(model: onnx.ModelProto) -> list[bool]:  # every read of wq, however the frontend names it
        graph = frontends.load(model)
        return [v.trainable for v in graph.params if v.name.split("@")[0] == "wq"]

    assert not any(uses(_shared_weight(100, 101)))
    assert all(uses(_shared_weight(100, 100)))


# -- QOperator --------------------------------------------------------------------------------------------


def _qlinear_conv_chain(elem: int) -> onnx.ModelProto:
    """x -> QuantizeLinear -> QLinearConv -> QLinearConv -> DequantizeLinear -> y, per-channel weights."""
    g = G(seed=11, opset=13)
    x = g.input("x", [1, 3, 8, 8])
    npt = _NP[elem]
    zp_a = 128 if elem == TensorProto.UINT8 else 0

    def act(name: str, zp: int) -> tuple[str, str]:
        return _q(g, name + "_s", np.array(0.05, np.float32)), _q(g, name + "_zp", np.array(zp, npt))

    xs, xz = act("x", zp_a)
    h = str(g.op("QuantizeLinear", [x, xs, xz]))
    for i, (cin, cout) in enumerate([(3, 8), (8, 4)]):
        w, ws, wz = _qweight(g, f"w{i}", (cout, cin, 3, 3), elem, per_channel=True)
        bias = _q(g, f"b{i}", g.rng.integers(-300, 300, cout).astype(np.int32))
        ys, yz = act(f"y{i}", zp_a + 3 * (i + 1) if elem == TensorProto.UINT8 else 0)
        h = str(g.op("QLinearConv", [h, xs, xz, w, ws, wz, ys, yz, bias], pads=[1, 1, 1, 1]))
        xs, xz = ys, yz
    g.output(str(g.op("DequantizeLinear", [h, xs, xz])))
    return g.model()


@pytest.mark.parametrize("elem", [TensorProto.INT8, TensorProto.UINT8], ids=["int8", "uint8"])
def test_qlinearconv_chain_prunes_exactly(elem: int):
    model = _qlinear_conv_chain(elem)
    a = analyze(model)
    grp = group_of(a, "w0", 0)
    assert grp.prunable, grp.reason
    assert {("w0", 0), ("w0_scale", 0), ("w0_zp", 0), ("b0", 0), ("w1", 1)} <= set(grp.params)
    small, zeroed, _ = _prune_half(model)
    _assert_exact_and_meaningful(model, small, zeroed)


@pytest.mark.parametrize(("zp_read", "prunable"), [(37, True), (40, False)])
def test_qlinearconv_output_is_zero_only_for_its_own_zero_point(zp_read: int, prunable: bool):
    """QLinearConv writes a channel with a zeroed weight slice (at its zero point) and zero bias as its
    output zero point y_zp = 37; DequantizeLinear then gives 0 only with that same zero point, which a
    ReduceSum over the channels needs."""
    g = G(seed=13, opset=13)
    x = g.input("x", [1, 3, 6, 6])
    s = _q(g, "s", np.array(0.05, np.float32))
    xz = _q(g, "xz", np.array(128, np.uint8))
    h = str(g.op("QuantizeLinear", [x, s, xz]))
    w, ws, wz = _qweight(g, "w", (8, 3, 3, 3), TensorProto.UINT8, per_channel=True)
    bias = _q(g, "b", g.rng.integers(-300, 300, 8).astype(np.int32))
    yz = _q(g, "yz", np.array(37, np.uint8))
    h = str(g.op("QLinearConv", [h, s, xz, w, ws, wz, s, yz, bias], pads=[1, 1, 1, 1]))
    h = str(g.op("DequantizeLinear", [h, s, _q(g, "yz_read", np.array(zp_read, np.uint8))]))
    g.output(str(g.op("ReduceSum", [h, g.const("axes", [1])], keepdims=1)))
    model = g.model()
    grp = group_of(analyze(model), "w", 0)
    assert grp.prunable == prunable, grp.reason
    if prunable:
        small, zeroed, _ = _prune_half(model)
        _assert_exact_and_meaningful(model, small, zeroed)


# -- dynamic ----------------------------------------------------------------------------------------------


def test_matmulinteger_mlp_prunes_exactly():
    """DynamicQuantizeLinear -> MatMulInteger (uint8 weights, per-column zero points) -> Cast -> Mul
    -> Add -> Relu, twice: the hidden channels go, and DynamicQuantizeLinear's range (which holds 0)
    is unchanged because the removed channels are zero there."""
    g = G(seed=12, opset=13)
    x = g.input("x", [2, 8])
    h = x
    for i, (cin, cout) in enumerate([(8, 16), (16, 4)]):
        q, scale, zp = str(g.op("DynamicQuantizeLinear", [h], n_out=3)[0]), None, None
        dq_node = g.nodes[-1]
        scale, zp = dq_node.output[1], dq_node.output[2]
        w, ws, wz = _qweight(g, f"w{i}", (cin, cout), TensorProto.UINT8, per_channel=True, axis=1)
        acc = str(g.op("MatMulInteger", [q, w, zp, wz]))
        f = str(g.op("Cast", [acc], to=TensorProto.FLOAT))
        f = str(g.op("Mul", [f, str(g.op("Mul", [scale, ws]))]))
        h = str(g.op("Add", [f, g.w(f"b{i}", (cout,))]))
        if i == 0:
            h = str(g.op("Relu", [h]))
    g.output(h)
    model = g.model()
    a = analyze(model)
    grp = group_of(a, "w0", 1)
    assert grp.prunable, grp.reason
    assert {("w0", 1), ("w0_zp", 0), ("w0_scale", 0), ("b0", 0), ("w1", 0)} <= set(grp.params)
    small, zeroed, _ = _prune_half(model)
    _assert_exact_and_meaningful(model, small, zeroed)


# -- files written by onnxruntime's quantization tools -----------------------------------------------------


def _float_cnn(path: Path) -> Path:
    """A small CNN with what quantize_static turns into each QOperator op: LeakyRelu, a residual Add,
    a Concat of two branches, AveragePool, MaxPool, a Sigmoid gate (Mul), global pooling, a Gemm."""
    g = G(seed=21, opset=17)
    x = g.input("x", [1, 3, 12, 12])
    h = str(g.op("LeakyRelu", [g.conv(x, 3, 16, name="c1")], alpha=0.1))
    r = str(g.op("Relu", [g.conv(h, 16, 16, name="c2")]))
    r = g.conv(r, 16, 16, name="c3")
    h = str(g.op("Relu", [str(g.op("Add", [h, str(r)]))]))
    a = str(g.op("Relu", [g.conv(h, 16, 8, k=1, name="c4a")]))
    b = str(g.op("Relu", [g.conv(h, 16, 8, k=3, name="c4b")]))
    h = str(g.op("Concat", [a, b], axis=1))
    h = str(g.op("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2]))
    h = str(g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[1, 1]))
    h = str(g.op("Mul", [h, str(g.op("Sigmoid", [g.conv(h, 16, 16, k=1, name="c5")]))]))
    h = str(g.op("Flatten", [str(g.op("GlobalAveragePool", [h]))]))
    g.output(g.gemm(h, 16, 10, "fc"))
    onnx.save(g.model(), path)
    return path


def _float_mlp(path: Path) -> Path:
    g = G(seed=22, opset=17)
    x = g.input("x", [4, 16])
    h = str(g.op("Add", [str(g.op("MatMul", [x, g.w("w1", (16, 32))])), g.w("b1", (32,))]))
    h = str(g.op("Relu", [h]))
    h = str(g.op("Add", [str(g.op("MatMul", [h, g.w("w2", (32, 32))])), g.w("b2", (32,))]))
    h = str(g.op("Relu", [h]))
    g.output(str(g.op("MatMul", [h, g.w("w3", (32, 8))])))
    onnx.save(g.model(), path)
    return path


class _Calibration:
    def __init__(self, shape: list[int], n: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.data = iter([{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self.data, None)


def _prune_file(path: Path, tmp_path: Path):
    from zigraph.pipeline import load_model, prune

    out = tmp_path / (path.stem + ".small.onnx")
    report = prune(load_model(str(path)), 0.5, out)
    res = report.result
    assert res is not None and res.verification is not None
    assert res.verification.passed, res.verification
    assert res.params_after <= 0.9 * res.params_before, (res.params_after, res.params_before)
    small = onnx.load(str(out))
    unzeroed = compare_models(onnx.load(str(path)), small, samples=2)
    assert not unzeroed.passed, "the check cannot fail: removing channels changed nothing"
    return res


_QOPERATOR_OPS = {
    "QLinearConv", "QLinearLeakyRelu", "QLinearAdd", "QLinearConcat", "QLinearAveragePool",
    "QLinearSigmoid", "QLinearMul", "QLinearGlobalAveragePool", "QGemm",
}  # fmt: skip
# (format, per channel, activations, weights): uint8 activations have zero points away from 0.
_STATIC = [
    ("QDQ", False, "QInt8", "QInt8"),
    ("QDQ", True, "QUInt8", "QInt8"),
    ("QDQ", True, "QUInt8", "QUInt8"),
    ("QDQ", True, "QUInt8", "QInt4"),  # int4 weights: com.microsoft DequantizeLinear below opset 21
    ("QOperator", False, "QUInt8", "QInt8"),
    ("QOperator", True, "QInt8", "QInt8"),
    ("QOperator", True, "QUInt8", "QUInt8"),
]


@pytest.mark.parametrize(("fmt", "per_channel", "act", "weight"), _STATIC, ids=lambda v: str(v))
def test_quantize_static_cnn_prunes_exactly(
    tmp_path: Path, fmt: str, per_channel: bool, act: str, weight: str
):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = _float_cnn(tmp_path / "cnn.onnx")
    dst = tmp_path / f"cnn_{fmt}_{per_channel}_{act}_{weight}.onnx"
    quantize_static(
        str(src),
        str(dst),
        _Calibration([1, 3, 12, 12]),
        quant_format=getattr(QuantFormat, fmt),
        per_channel=per_channel,
        activation_type=getattr(QuantType, act),
        weight_type=getattr(QuantType, weight),
    )
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    if fmt == "QOperator":
        assert ops >= _QOPERATOR_OPS, _QOPERATOR_OPS - ops
    else:
        assert "QLinearConv" not in ops and {"QuantizeLinear", "DequantizeLinear"} <= ops
    res = _prune_file(dst, tmp_path)
    assert res.verification is not None and res.verification.max_abs == 0.0, res.verification


@pytest.mark.parametrize("weight", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_quantize_dynamic_mlp_prunes_exactly(tmp_path: Path, per_channel: bool, weight: str):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = _float_mlp(tmp_path / "mlp.onnx")
    dst = tmp_path / f"mlp_dyn_{per_channel}_{weight}.onnx"
    quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=getattr(QuantType, weight))
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    res = _prune_file(dst, tmp_path)
    assert res.verification is not None and res.verification.max_abs == 0.0, res.verification


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_quantize_static_mlp_prunes_exactly(tmp_path: Path, fmt: str):
    """MatMul + Add: QLinearMatMul and QLinearAdd in the QOperator format."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = _float_mlp(tmp_path / "mlp.onnx")
    dst = tmp_path / f"mlp_{fmt}.onnx"
    quantize_static(
        str(src),
        str(dst),
        _Calibration([4, 16]),
        quant_format=getattr(QuantFormat, fmt),
        per_channel=True,
        activation_type=QuantType.QUInt8,
    )
    if fmt == "QOperator":
        assert "QLinearMatMul" in {n.op_type for n in onnx.load(str(dst)).graph.node}
    res = _prune_file(dst, tmp_path)
    assert res.verification is not None and res.verification.max_abs == 0.0, res.verification


@pytest.mark.parametrize("act", ["Relu", "Sigmoid"])
def test_onnxruntime_optimized_dynamic_mlp(tmp_path: Path, act: str):
    """onnxruntime's optimizer fuses dynamic quantization into com.microsoft DynamicQuantizeMatMul,
    which quantizes its input with the range of the whole tensor: a hidden channel goes only where it
    is zero (after Relu), not where it is 0.5 (after Sigmoid)."""
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic

    src = _float_mlp(tmp_path / "mlp.onnx")
    if act == "Sigmoid":
        model = onnx.load(str(src))
        for n in model.graph.node:
            if n.op_type == "Relu":
                n.op_type = "Sigmoid"
        onnx.save(model, str(src))
    quantize_dynamic(str(src), str(tmp_path / "dyn.onnx"))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(tmp_path / "dyn.onnx"), opts, providers=["CPUExecutionProvider"])
    fused = onnx.load(str(tmp_path / "fused.onnx"))
    assert {n.op_type for n in fused.graph.node} >= {"DynamicQuantizeMatMul"}
    a = analyze(fused)
    hidden = [g for g in a.groups if g.size == 32]
    assert len(hidden) == 2
    if act == "Sigmoid":
        assert not any(g.prunable for g in hidden)
        assert all("range of its whole input" in (g.reason or "") for g in hidden), [g.reason for g in hidden]
        return
    res = _prune_file(tmp_path / "fused.onnx", tmp_path)
    assert res.verification is not None and res.verification.max_abs == 0.0, res.verification


def test_quantize_dynamic_cnn_uses_convinteger_and_prunes_exactly(tmp_path: Path):
    from onnxruntime.quantization import quantize_dynamic

    src = _float_cnn(tmp_path / "cnn.onnx")
    dst = tmp_path / "cnn_dyn.onnx"
    quantize_dynamic(str(src), str(dst))
    assert "ConvInteger" in {n.op_type for n in onnx.load(str(dst)).graph.node}
    res = _prune_file(dst, tmp_path)
    assert res.verification is not None and res.verification.max_abs == 0.0, res.verification


def test_verification_runs_integer_products_exactly():
    """onnxruntime's uint8 x int8 MatMulInteger may saturate pairs of products (AVX2 without VNNI);
    verification runs the same function with a uint8 weight, which must match ONNX's definition
    (the reference evaluator's exact int32 sums) on values large enough to saturate."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from construct.quant_zero import exact_integer_products

    rng = np.random.default_rng(0)
    g = G(seed=0, opset=13)
    x = g.input("x", [4, 32])
    q, _, zp = g.op("DynamicQuantizeLinear", [x], n_out=3)
    w = _q(g, "w", rng.integers(-127, 128, (32, 16)).astype(np.int8))
    wz = _q(g, "wz", rng.integers(-3, 3, 16).astype(np.int8))
    g.nodes.append(helper.make_node("MatMulInteger", [q, w, zp, wz], ["y"]))
    g.outputs.append(helper.make_tensor_value_info("y", TensorProto.INT32, [4, 16]))
    model = g.model()
    exact = exact_integer_products(model)
    assert {t.name: t.data_type for t in exact.graph.initializer}["w__u8"] == TensorProto.UINT8
    feeds = {"x": (rng.standard_normal((4, 32)) * 3).astype(np.float32)}
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = ort.InferenceSession(exact.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]
    assert np.array_equal(got, want)
    plain = _qdq_cnn(TensorProto.INT8, False)
    assert exact_integer_products(plain) is plain  # nothing to rewrite: the model itself


# -- larger models (slow) ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo_quant")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_quantize_static_mobilenet_v2_prunes_exactly(zoo_dir: Path, tmp_path: Path, fmt: str):
    from onnxruntime.quantization import QuantFormat, quantize_static

    from tests.zoo import export

    src = export("mobilenet_v2", zoo_dir, dynamo=False)
    dst = tmp_path / f"mobilenet_v2_{fmt}.onnx"
    quantize_static(
        str(src),
        str(dst),
        _Calibration([1, 3, 224, 224], n=1),
        quant_format=getattr(QuantFormat, fmt),
        per_channel=True,
    )
    res = _prune_file(dst, tmp_path)
    assert res.verification is not None and res.verification.max_abs == 0.0, res.verification


@pytest.mark.slow
@pytest.mark.parametrize("how", ["dynamic", "QOperator"])
def test_tiny_bert_quantized_prunes_exactly(zoo_dir: Path, tmp_path: Path, how: str):
    """quantize_dynamic (MatMulInteger) and quantize_static QOperator (QLinearMatMul, QLinearSoftmax,
    QLinearAdd ...) on a two-layer BERT."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    from tests.zoo import export

    src = export("bert", zoo_dir, dynamo=False)
    dst = tmp_path / f"bert_{how}.onnx"
    if how == "dynamic":
        quantize_dynamic(str(src), str(dst))
    else:

        class Ids:
            data = iter([{"ids": np.random.default_rng(0).integers(0, 100, (1, 16))}])

            def get_next(self):
                return next(self.data, None)

        quantize_static(str(src), str(dst), Ids(), quant_format=QuantFormat.QOperator)
        assert "QLinearSoftmax" in {n.op_type for n in onnx.load(str(dst)).graph.node}
    res = _prune_file(dst, tmp_path)
    assert res.verification is not None and res.verification.max_abs == 0.0, res.verification


# -- shape hooks: a contrib op upstream leaves ONNX's inference without shapes; the hooks take over -------

_SHAPE_CASES = [
    ("Flatten", [(2, 3, 4, 5)], {"axis": 1}),
    ("Flatten", [(2, 3, 4, 5)], {"axis": -1}),
    ("Flatten", [(2, 3, 4, 5)], {"axis": 0}),
    ("Flatten", [(2, 3, 4, 5)], {"axis": 4}),
    ("MaxPool", [(1, 3, 9, 8)], {"kernel_shape": [3, 2], "strides": [2, 2]}),
    (
        "MaxPool",
        [(1, 3, 9, 8)],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
    ),
    ("MaxPool", [(1, 3, 9, 8)], {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    ("AveragePool", [(1, 3, 7, 7)], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("GlobalAveragePool", [(2, 5, 7, 3)], {}),
    ("GlobalMaxPool", [(2, 5, 7)], {}),
    ("Gemm", [(3, 4), (4, 6)], {}),
    ("Gemm", [(4, 3), (6, 4)], {"transA": 1, "transB": 1}),
]


@pytest.mark.parametrize(("op", "shapes", "attrs"), _SHAPE_CASES, ids=lambda v: str(v))
def test_shape_hooks_agree_with_onnx_inference(op: str, shapes: list, attrs: dict):
    from graphcore.infer import shape_hook
    from graphcore.ir import Node, Value

    names = [f"i{k}" for k in range(len(shapes))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    inferred = onnx.shape_inference.infer_shapes(helper.make_model(graph), strict_mode=True)
    want = tuple(d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim)
    ir = Node("n", op, [Value(n, shape=tuple(s)) for n, s in zip(names, shapes)], [Value("y")], attrs=attrs)
    hook = shape_hook(ir)
    assert hook is not None
    assert hook(None, ir) == want  # type: ignore[arg-type]
