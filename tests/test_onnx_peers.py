"""bench/onnx_peers.py recovers which channels a peer removed and zeroes them in the original: its
"equal to the zeroed original" must hold for a channel cut that is exact and fail for one that is not,
whatever tool made the cut (here: slicing by hand, so onnxsim need not be installed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.onnx_builder import G

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("onnx_peers", ROOT / "bench" / "onnx_peers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["onnx_peers"] = module
    spec.loader.exec_module(module)
    return module


def _two_convs(middle: str) -> onnx.ModelProto:
    """conv1 (8 channels) -> ``middle`` -> conv2; conv2's output is the model's."""
    g = G(seed=3)
    x = g.input("x", [1, 3, 8, 8])
    h = g.conv(x, 3, 8, name="conv1")
    h = g.op(middle, [h], axis=1) if middle == "Softmax" else g.op(middle, [h])
    g.output(g.conv(h, 8, 4, name="conv2"))
    return g.model()


def _cut(model: onnx.ModelProto, keep: list[int]) -> onnx.ModelProto:
    """What a channel pruner writes: conv1's output channels and conv2's input channels ``keep``."""
    small = onnx.ModelProto()
    small.CopyFrom(model)
    for t in small.graph.initializer:
        a = numpy_helper.to_array(t)
        if t.name in ("conv1.weight", "conv1.bias"):
            a = a[keep]
        elif t.name == "conv2.weight":
            a = a[:, keep]
        else:
            continue
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a), t.name))
    return small


def test_kept_indices_are_recovered_in_order(peers):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5, 3)).astype(np.float32)
    keep = peers.kept_indices(w, w[[0, 2, 5]][:, [1, 3]])
    assert [k.tolist() for k in keep] == [[0, 2, 5], [1, 3], [0, 1, 2]]
    assert peers.kept_indices(w, rng.standard_normal((3, 5, 3)).astype(np.float32)) is None


def test_exact_cut_equals_the_zeroed_original(peers):
    model = _two_convs("Relu")
    small = _cut(model, [0, 2, 3, 6])
    zeroed, changed, why = peers.zeroed_like(model, small)
    assert zeroed is not None and changed == 3, why
    max_rel, equal = peers._compare(zeroed, small, 1e-4)
    assert equal and max_rel <= 1e-5
    assert peers._compare(model, small, 1e-4)[0] > 1e-3  # the cut changed the function


def test_cut_across_a_channel_softmax_is_not_equal(peers):
    # Softmax over the channels: the removed channels take part in every kept one's normalisation, so
    # zeroing them is not removing them; the bench must say "not equal".
    model = _two_convs("Softmax")
    small = _cut(model, [0, 2, 3, 6])
    zeroed, changed, _ = peers.zeroed_like(model, small)
    assert zeroed is not None and changed == 3
    _max_rel, equal = peers._compare(zeroed, small, 1e-4)
    assert not equal


def test_integer_weights_are_zeroed_to_their_zero_point(peers):
    """A uint8 weight's zero is its zero point: a removed slice is filled with it, not with 0."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.uint8).reshape(4, 3) + 100, "w")
    zp = numpy_helper.from_array(np.array(128, dtype=np.uint8), "w_zp")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "w_scale")
    node = helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["y"])
    out_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])
    graph = helper.make_graph([node], "g", [], [out_info], [w, zp, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    small = onnx.ModelProto()
    small.CopyFrom(model)
    small.graph.initializer[0].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[[1, 3]], "w"))
    zeroed, changed, _ = peers.zeroed_like(model, small)
    assert changed == 1
    out = numpy_helper.to_array(zeroed.graph.initializer[0])
    assert (out[[0, 2]] == 128).all() and (out[[1, 3]] == numpy_helper.to_array(w)[[1, 3]]).all()
