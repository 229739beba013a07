"""fp16 and bf16 models end to end: analysis, construct (slicing half-precision initializers in every
storage ONNX allows) and verification in the model's own dtype at the tolerance of that dtype.

Hand-built graphs with ``onnx.helper`` and the files ``onnxruntime.transformers.float16`` writes from a
small CNN and a tiny BERT (keep_io_types both ways, op_block_list): each prunes at 50% with at most 90%
of the parameters kept and verifies at the stated tolerance, and each check is shown able to fail.
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
from construct.tolerance import BF16_RTOL, FP16_RTOL, FP32_RTOL, QUANT_RTOL, model_tolerance
from construct.verify import compare_models
from graphcore.errors import ZigraphError
from graphcore.select import relative_scores, select_zigs
from graphcore.shrink import plan as make_plan
from zigraph.pipeline import load_model, prune

BF16 = helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16)


def _w(rng, name: str, shape: tuple[int, ...], dtype=np.float16, raw: bool = True) -> onnx.TensorProto:
    arr = (rng.standard_normal(shape) * 0.3).astype(dtype)
    if raw:
        return numpy_helper.from_array(arr, name)
    elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
    return helper.make_tensor(name, elem, list(shape), arr.reshape(-1).tolist(), raw=False)


def _conv_net(
    elem: int, weight_dtype, raw: bool = True, cast_weights: bool = False, seed: int = 0, opset: int = 17
):
    """x -> Conv(8) -> Relu -> Conv(8) -> Relu -> Conv(4) -> y, every tensor in ``elem`` unless
    ``cast_weights`` (weights stored in ``weight_dtype``, each Cast to float before its Conv)."""
    rng = np.random.default_rng(seed)
    shapes = {"W1": (8, 3, 3, 3), "B1": (8,), "W2": (8, 8, 3, 3), "B2": (8,), "W3": (4, 8, 1, 1), "B3": (4,)}
    inits = [_w(rng, n, s, weight_dtype, raw) for n, s in shapes.items()]
    nodes, use = [], {}
    for n in shapes:
        use[n] = n
        if cast_weights:
            nodes.append(helper.make_node("Cast", [n], [f"{n}_f"], to=elem))
            use[n] = f"{n}_f"
    nodes += [
        helper.make_node("Conv", ["x", use["W1"], use["B1"]], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", use["W2"], use["B2"]], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", use["W3"], use["B3"]], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", elem, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", elem, [1, 4, 8, 8])],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m, full_check=True)
    return m


def _prune_half(model: onnx.ModelProto, criterion: str = "l2"):
    analysis = graphcore.analyze(frontends.load(model))
    norms = construct.zig_norms(analysis)
    chosen = select_zigs(analysis, 0.5, relative_scores(analysis, norms), criterion=criterion)
    small, plan = construct.prune_onnx(analysis, chosen)
    return analysis, chosen, small, plan


def _params(m: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in m.graph.initializer)


def _live_channel_fails(analysis, chosen, model, small) -> None:
    """Zeroing live channel groups in the full model (the strongest kept ones, each alone and up to eight
    together: one hidden channel or one head dimension can be below the dtype's tolerance on its own)
    must fail verification at the dtype's tolerance."""
    norms = construct.zig_norms(analysis)
    kept = np.setdiff1d(analysis.prunable_zig_ids(), chosen)
    strongest = kept[np.argsort(-norms[kept], kind="stable")]
    reports, together = [], list(chosen)
    for z in strongest[:8]:
        try:
            removed = make_plan(analysis, np.asarray([*together, z])).removed
        except ZigraphError:  # it would empty its group: leave it
            continue
        together.append(z)
        alone = make_plan(analysis, np.asarray([*chosen, z])).removed
        reports += [compare_models(zero_slices(model, None, r), small) for r in (alone, removed)]
    worst = max(reports, key=lambda r: r.max_rel)
    assert not worst.passed, worst


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "int32_data"])
def test_all_fp16_graph_prunes_and_verifies_at_the_fp16_tolerance(raw):
    model = _conv_net(TensorProto.FLOAT16, np.float16, raw=raw)
    analysis, chosen, small, plan = _prune_half(model)
    assert chosen.size == 8
    rep = construct.verify(model, small, plan.removed)
    assert rep.passed and rep.rtol == FP16_RTOL and "float16" in (rep.tolerance or ""), rep
    assert _params(small) <= 0.9 * _params(model)
    # The sliced weights stay fp16 and hold exactly the kept values of the original.
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: t for t in small.graph.initializer}
    assert {t.data_type for t in after.values()} == {TensorProto.FLOAT16}
    keep = dict(plan.param_keep)["W2"]
    want = before["W2"]
    for axis, idx in keep:
        want = np.take(want, idx, axis=axis)
    np.testing.assert_array_equal(numpy_helper.to_array(after["W2"]), want)
    # The check can fail: the unzeroed original differs, and so does one more live channel removed.
    assert not construct.verify(model, small, []).passed
    _live_channel_fails(analysis, chosen, model, small)


def test_bf16_weights_cast_to_float_prune_and_verify_at_the_bf16_tolerance():
    model = _conv_net(TensorProto.FLOAT, BF16, cast_weights=True)
    analysis, chosen, small, plan = _prune_half(model)
    assert chosen.size == 8
    assert {t.data_type for t in small.graph.initializer} == {TensorProto.BFLOAT16}
    rep = construct.verify(model, small, plan.removed)
    assert rep.passed and rep.rtol == BF16_RTOL and "bfloat16" in (rep.tolerance or ""), rep
    assert _params(small) <= 0.9 * _params(model)
    assert not construct.verify(model, small, []).passed
    _live_channel_fails(analysis, chosen, model, small)


@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "int32_data"])
def test_zeroing_and_slicing_keep_bf16_storage_exact(raw):
    """bf16 has no numpy dtype of its own in onnx's storage: int32_data holds the bit patterns."""
    model = _conv_net(TensorProto.FLOAT, BF16, raw=raw, cast_weights=True)
    _, _, small, plan = _prune_half(model, criterion="random")
    zeroed = zero_slices(model, None, plan.removed)
    src = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in zeroed.graph.initializer}
    for s in plan.removed:
        assert got[s.param].dtype == BF16
        assert not np.moveaxis(got[s.param].astype(np.float32), s.axis, 0)[list(s.indices)].any()
    untouched = set(src) - {s.param for s in plan.removed}
    for name in untouched:
        np.testing.assert_array_equal(got[name].astype(np.float32), src[name].astype(np.float32))
    assert construct.verify(model, small, plan.removed).passed


def test_bf16_at_the_edges_is_fed_and_read_through_exact_casts():
    """bf16 graph inputs and outputs (fp32 inside): numpy cannot hand bf16 to onnxruntime, so the
    verification feeds float32 through an exact Cast and widens the outputs; tolerance is bf16's."""
    inner = _conv_net(TensorProto.FLOAT, np.float32)
    g = inner.graph
    g.node.insert(0, helper.make_node("Cast", ["x_bf16"], ["x"], to=TensorProto.FLOAT))
    for pn in g.node:
        if "y" in pn.output:
            pn.output[0] = "y_f"
    g.node.append(helper.make_node("Cast", ["y_f"], ["y_bf16"], to=TensorProto.BFLOAT16))
    del g.input[:], g.output[:]
    g.input.append(helper.make_tensor_value_info("x_bf16", TensorProto.BFLOAT16, [1, 3, 8, 8]))
    g.output.append(helper.make_tensor_value_info("y_bf16", TensorProto.BFLOAT16, [1, 4, 8, 8]))
    onnx.checker.check_model(inner)
    analysis, chosen, small, plan = _prune_half(inner)
    rep = construct.verify(inner, small, plan.removed)
    assert rep.passed and rep.rtol == BF16_RTOL and rep.outputs[0].name == "y_bf16", rep
    assert rep.outputs[0].scale > 0
    assert not construct.verify(inner, small, []).passed
    _live_channel_fails(analysis, chosen, inner, small)


def _quantized(activations: bool) -> onnx.ModelProto:
    """int8 weights dequantized for a float MatMul; with ``activations`` the input is requantized."""
    w = numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), "wq")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, dtype=np.int8), "zp")
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["w"])]
    x = "x"
    if activations:
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        ]
        x = "xd"
    nodes.append(helper.make_node("MatMul", [x, "w"], ["y"]))
    g = helper.make_graph(
        nodes,
        "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[w, scale, zp],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_the_tolerance_follows_the_lowest_precision_and_the_user_wins():
    fp32 = _conv_net(TensorProto.FLOAT, np.float32)
    assert model_tolerance(fp32).rtol == FP32_RTOL
    assert model_tolerance(fp32, _conv_net(TensorProto.FLOAT16, np.float16)).rtol == FP16_RTOL
    assert model_tolerance(_conv_net(TensorProto.FLOAT, BF16, cast_weights=True)).rtol == BF16_RTOL
    assert model_tolerance(_quantized(activations=True)).rtol == QUANT_RTOL
    assert model_tolerance(_quantized(activations=False)).rtol == FP32_RTOL  # weight-only: float math
    small = _prune_half(fp32)[2]
    rep = compare_models(fp32, small, rtol=0.5)
    assert rep.rtol == 0.5 and "--rtol" in (rep.tolerance or "")


# --- the real converter: onnxruntime.transformers.float16 on a small CNN and a tiny BERT -----------


def _small_cnn():
    import torch
    from torch import nn

    from tests.zoo import randomize

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.down = nn.Sequential(
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()
            )
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = self.stem(x)
            x = x + self.body(x)
            x = self.down(x).mean(dim=(2, 3))
            return self.head(x)

    torch.manual_seed(0)
    return randomize(Net()), (torch.randn(1, 3, 16, 16),)


@pytest.fixture(scope="module")
def fp32_files(tmp_path_factory) -> dict[str, Path]:
    import torch

    from tests.zoo import export

    folder = tmp_path_factory.mktemp("fp16")
    cnn, args = _small_cnn()
    cnn_path = folder / "cnn.onnx"
    torch.onnx.export(cnn, args, str(cnn_path), dynamo=False, opset_version=17, input_names=["x"])
    return {"cnn": cnn_path, "bert": export("bert", folder, dynamo=False)}


CONVERSIONS = {
    "fp16": {"keep_io_types": False},
    "fp16-keep-io": {"keep_io_types": True},
    "fp16-blocked": {"keep_io_types": True, "op_block_list": ["Relu", "Softmax", "Add"]},
}


@pytest.mark.parametrize("conversion", list(CONVERSIONS))
@pytest.mark.parametrize("net", ["cnn", "bert"])
def test_converter_output_prunes_at_half_and_verifies_in_fp16(fp32_files, tmp_path, net, conversion):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = onnx.load(str(fp32_files[net]))
    half = convert_float_to_float16(src, **CONVERSIONS[conversion])
    path = tmp_path / f"{net}.{conversion}.onnx"
    onnx.save(half, str(path))
    report = prune(load_model(str(path)), 0.5, tmp_path / "small.onnx")
    res = report.result
    assert res is not None and res.verification is not None
    ver = res.verification
    assert ver.passed and ver.rtol == FP16_RTOL and "float16" in (ver.tolerance or ""), ver
    assert res.output and res.params_after <= 0.9 * res.params_before, res
    small = onnx.load(res.output)
    onnx.checker.check_model(small)  # sorted and valid, whatever order the converter wrote
    assert any(t.data_type == TensorProto.FLOAT16 for t in small.graph.initializer)
    # The check can fail: the unzeroed original is not the small model at this tolerance, and neither
    # is the original with one more live channel group zeroed.
    assert not construct.verify(str(path), res.output, [], small_ours=False).passed
    analysis, chosen, small, _ = _prune_half(half)
    _live_channel_fails(analysis, chosen, analysis.graph.meta["model"], small)


def test_all_bf16_graph_is_verified_widened_exactly_to_fp32():
    """onnxruntime's CPU provider has no bf16 Conv: both models run widened exactly, at fp32's tolerance."""
    model = _conv_net(TensorProto.BFLOAT16, BF16, opset=22)  # Conv takes bf16 from opset 22
    with pytest.raises(Exception, match=r"NOT_IMPLEMENTED|implementation"):
        import onnxruntime as ort

        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    analysis, chosen, small, plan = _prune_half(model)
    assert {t.data_type for t in small.graph.initializer} == {TensorProto.BFLOAT16}
    rep = construct.verify(model, small, plan.removed)
    assert rep.passed and rep.rtol == FP32_RTOL and "widened" in (rep.tolerance or ""), rep
    assert not construct.verify(model, small, []).passed
    _live_channel_fails(analysis, chosen, model, small)


def test_a_bf16_bert_exported_by_torch_prunes_and_verifies(tmp_path):
    """torch's exporter on a bf16 module writes an all-bf16 graph onnxruntime's CPU provider cannot run:
    verified widened exactly to fp32, and the check still fails against the unzeroed original."""
    import torch

    from tests.zoo import hf_model

    path = tmp_path / "bert_bf16.onnx"
    module = hf_model("bert").to(torch.bfloat16)
    torch.onnx.export(module, (torch.randint(0, 100, (1, 16)),), str(path), dynamo=False, opset_version=17,
                      input_names=["ids"], dynamic_axes={"ids": {0: "batch", 1: "seq"}})  # fmt: skip
    assert {t.data_type for t in onnx.load(str(path)).graph.initializer} == {TensorProto.BFLOAT16}
    report = prune(load_model(str(path)), 0.5, tmp_path / "small.onnx")
    res = report.result
    assert res is not None and res.verification is not None and res.output
    ver = res.verification
    assert ver.passed and ver.rtol == FP32_RTOL and "widened" in (ver.tolerance or ""), ver
    assert res.params_after <= 0.9 * res.params_before
    assert not construct.verify(str(path), res.output, [], small_ours=False).passed
