"""Sizes that shape inference leaves symbolic are learned, and pins placed before that still hold."""

from __future__ import annotations

import numpy as np

from tests.helpers import analyze, assert_exact, group_of, random_removal
from tests.onnx_builder import G


def test_pin_on_a_symbolic_axis_survives_learning_its_size():
    # Regression (found on a TorchScript Swin-T export): LayerNorm's output width was symbolic when
    # its normalized axis was pinned, then learned from the scale; the pin was lost and the scale got
    # pruned. The group holding ln.weight must stay unprunable.
    g = G()
    x = g.input("x", ["b", 5, 6])
    h = g.op("MatMul", [x, g.w("w1", (6, 8))])
    p = g.op("Foo", [h], domain="custom")
    g.shape_of(p, ["b", 5, "u3"])
    y = g.op("LayerNormalization", [p, g.w("ln.weight", (8,)), g.w("ln.bias", (8,))], axis=-1)
    g.shape_of(y, ["b", 5, "u4"])
    g.op("MatMul", [y, g.w("w2", (8, 3))])
    g.nodes[-1].output[0] = "out"
    g.output("out")
    a = analyze(g.model({"custom": 1}))
    assert not group_of(a, "ln.weight", 0).prunable


def test_head_count_learned_from_a_runtime_reshape_target():
    # A TorchScript-style attention split: the target is Concat(Shape(h)[0:2], [2, 4]) computed at
    # run time, and the inferred output shape names the head axis with a fresh symbol.
    g = G()
    x = g.input("x", ["b", 5, 6])
    h = g.op("MatMul", [x, g.w("wq", (6, 8))])
    shape = g.op("Shape", [h])
    lead = g.op("Slice", [shape, g.const("s0", [0]), g.const("s1", [2])])
    target = g.op("Concat", [lead, g.const("heads", [2, 4])], axis=0)
    r = g.op("Reshape", [h, target])
    g.shape_of(r, ["b", 5, "unk_heads", 4])
    t = g.op("Transpose", [r], perm=[0, 2, 1, 3])
    g.shape_of(t, ["b", "unk_heads2", 5, 4])
    m = g.op("Relu", [t])
    back = g.op("Transpose", [m], perm=[0, 2, 1, 3])
    flat = g.op("Reshape", [back, g.const("flat", [0, 0, 8])])
    g.op("MatMul", [flat, g.w("wo", (8, 3))])
    g.nodes[-1].output[0] = "out"
    g.output("out")
    a = analyze(g.model())
    heads = group_of(a, "wq", 1)
    assert heads.prunable and heads.size == 2 and ("wo", 0) in heads.params
    assert_exact(a, random_removal(a, np.random.default_rng(0), 0.5))


def test_absurd_dimensions_cost_no_memory():
    # A malformed model may declare a 2**40-long axis; it must be treated as unknown, not allocated.
    g = G()
    x = g.input("x", [1, 2**40])
    g.op("Relu", [x])
    g.nodes[-1].output[0] = "out"
    g.output("out")
    a = analyze(g.model())
    assert a.num_zigs == 0
