"""The op table is the only per-op source: its f(0) facts are true, its legacy attributes prune exactly,
and the passes outside it name no op."""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from graphcore.ir import Node, Value
from graphcore.ops import rules
from graphcore.ops.registry import OpRule
from tests.helpers import analyze, assert_exact, group_of
from tests.onnx_builder import G

ROOT = Path(__file__).resolve().parents[1]

# -- f(0) -------------------------------------------------------------------------------------------------


def _f(x: float) -> np.ndarray:
    return np.array(x, dtype=np.float32)


_BOOL = {"Not", "And", "Or", "Xor"}
_INT = {"BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"}
_ATTRS: dict[str, dict[str, Any]] = {
    "Cast": {"to": TensorProto.FLOAT},
    "BitShift": {"direction": "LEFT"},
    "Mod": {"fmod": 1},
}
# Operands that are not data: (op, index) -> the constant, one case per entry.
_CASES: dict[str, list[dict[int, np.ndarray | None]]] = {
    "Clip": [
        {},
        {1: _f(-1.0), 2: _f(1.0)},
        {1: _f(0.0), 2: _f(6.0)},
        {1: _f(0.5), 2: _f(6.0)},
        {1: _f(-1.0), 2: _f(-0.5)},
        {1: None, 2: _f(6.0)},
    ],
    "Pow": [{1: _f(2.0)}, {1: _f(0.5)}, {1: _f(0.0)}, {1: _f(-1.0)}],
    "CastLike": [{1: np.zeros(3, np.float32)}],
    "Where": [{0: np.zeros(3, bool)}, {0: np.ones(3, bool)}],
}


def _elem_type(op: str) -> tuple[int, type]:
    if op in _BOOL:
        return TensorProto.BOOL, np.bool_
    if op in _INT:
        return TensorProto.INT32, np.int32
    return TensorProto.FLOAT, np.float32


def _arity(op: str) -> int:
    schema = onnx.defs.get_schema(op)
    if op == "Where":
        return 3
    return max(1, min(len(schema.inputs), 2)) if op not in ("Clip", "Dropout") else 1


def _evaluate(op: str, consts: dict[int, np.ndarray | None]) -> np.ndarray:
    """``op`` on all-zero data operands, with the constant operands of ``consts``."""
    elem, dtype = _elem_type(op)
    n_in = max([_arity(op), *(i + 1 for i in consts)])
    names: list[str] = []
    feeds: dict[str, np.ndarray] = {}
    inputs: list[onnx.ValueInfoProto] = []
    for i in range(n_in):
        if i in consts:
            c = consts[i]
            if c is None:
                names.append("")
                continue
            names.append(f"c{i}")
            inputs.append(
                helper.make_tensor_value_info(f"c{i}", helper.np_dtype_to_tensor_dtype(c.dtype), c.shape)
            )
            feeds[f"c{i}"] = c
        else:
            names.append(f"x{i}")
            inputs.append(helper.make_tensor_value_info(f"x{i}", elem, [3]))
            feeds[f"x{i}"] = np.zeros(3, dtype)
    node = helper.make_node(op, names, ["y"], **_ATTRS.get(op, {}))
    graph = helper.make_graph([node], "f0", inputs, [helper.make_value_info("y", onnx.TypeProto())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx.defs.onnx_opset_version())])
    with np.errstate(all="ignore"):
        outputs: list[Any] = list(ReferenceEvaluator(model).run(None, feeds))
    return np.asarray(outputs[0])


def _ir_node(op: str, consts: dict[int, np.ndarray | None]) -> Node:
    n_in = max([_arity(op), *(i + 1 for i in consts)])
    inputs: list[Value | None] = []
    for i in range(n_in):
        if i in consts:
            c = consts[i]
            inputs.append(None if c is None else Value(f"c{i}", shape=np.shape(c), const=np.asarray(c)))
        else:
            inputs.append(Value(f"x{i}", shape=(3,)))
    return Node("n", op, inputs, [Value("y", shape=(3,))])


def _elementwise_rules() -> list[OpRule]:
    return [r for (domain, _), r in sorted(rules().items()) if not domain and r.at_zero is not None]


def test_every_elementwise_declaration_states_f0():
    import graphcore.ops.elementwise as elementwise

    declared_there = {r.op for r in rules().values() if r.relate.__module__ == elementwise.__name__}
    stated = {r.op for r in _elementwise_rules()}
    assert declared_there and declared_there <= stated, declared_there - stated


@pytest.mark.parametrize("rule", _elementwise_rules(), ids=lambda r: r.op)
def test_f0_declaration_is_true(rule: OpRule):
    for consts in _CASES.get(rule.op, [{}]):
        node = _ir_node(rule.op, consts)
        y = _evaluate(rule.op, consts).astype(np.float64)
        finite = bool(np.isfinite(y).all())
        where = f"{rule.op} with {consts}: f(0) = {y}"
        assert rule.zero_at_zero(node) == (finite and not y.any()), where
        assert rule.blows_up_at_zero(node) == (not finite), where


def test_a_wrong_f0_declaration_fails_the_check():
    """The check above can fail: Sigmoid declared as f(0) = 0 disagrees with the evaluator."""
    import dataclasses

    sigmoid = rules()[("", "Sigmoid")]
    wrong = dataclasses.replace(sigmoid, at_zero="zero")
    with pytest.raises(AssertionError):
        test_f0_declaration_is_true(wrong)


def _channel_sum(g: G, h: str) -> str:
    """A sum over the channel axis: exact under removal only for a channel that is zero there."""
    if g.opset < 13:
        return str(g.op("ReduceSum", [h], axes=[1], keepdims=1))
    return str(g.op("ReduceSum", [h, g.const(f"sum_axes{g.n}", [1])], keepdims=1))


def test_f0_drives_zero_tracking():
    """A zeroed channel stays removable through f(0) = 0 and is blocked where f(0) != 0 feeds a sum."""
    for act, prunable in (("Relu", True), ("Sigmoid", False), ("Tanh", True), ("Exp", False)):
        g = G(seed=1)
        x = g.input("x", [1, 4, 6, 6])
        g.output(_channel_sum(g, g.op(act, [g.conv(x, 4, 8, name="c1")])))
        a = analyze(g.model())
        assert group_of(a, "c1.weight", 0).prunable is prunable, act


# -- legacy attributes: one form for the rules, the original form in the pruned model ---------------------


def _assert_prunes_exactly(model: onnx.ModelProto, param: str, expect_prunable: bool = True) -> None:
    """``param``'s output channels are prunable (or not); removing a third of every prunable group is
    exact in onnxruntime, shrinks the model and keeps its opset."""
    a = analyze(model)
    mine = [g for g in a.groups if (param, 0) in g.params]
    assert mine and all(g.prunable is expect_prunable for g in mine), [g.reason for g in mine]
    if not expect_prunable:
        return
    removed = np.concatenate([g.zig_ids[: max(1, g.size // 3)] for g in a.groups if g.prunable])
    small, _, _ = assert_exact(a, np.sort(removed).astype(np.int64))
    assert sum(t.ByteSize() for t in small.graph.initializer) < sum(
        t.ByteSize() for t in model.graph.initializer
    )
    version = next(o.version for o in small.opset_import if o.domain in ("", "ai.onnx"))
    original = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert version == original


def _small(model: onnx.ModelProto) -> onnx.ModelProto:
    import construct

    a = analyze(model)
    removed = [int(g.zig_ids[0]) for g in a.groups if g.prunable and g.size > 1]
    small, _ = construct.prune_onnx(a, removed)
    return small


@pytest.mark.parametrize("with_axes", [True, False])
def test_slice_with_attributes_opset9_prunes_exactly(with_axes):
    g = G(seed=2, opset=9)
    x = g.input("x", [1, 4, 6, 6])
    c = g.conv(x, 4, 8, name="c1")
    if with_axes:
        a = g.op("Slice", [c], starts=[0], ends=[3], axes=[1])
        b = g.op("Slice", [c], starts=[3], ends=[8], axes=[1])
    else:
        a = g.op("Slice", [c], starts=[0, 0], ends=[1, 3])
        b = g.op("Slice", [c], starts=[0, 3], ends=[1, 8])
    g.output(g.conv(a, 3, 2, name="ha"))
    g.output(g.conv(b, 5, 2, name="hb"))
    model = g.model()
    _assert_prunes_exactly(model, "c1.weight")
    small = _small(model)
    slices = [n for n in small.graph.node if n.op_type == "Slice"]
    assert all(len(n.input) == 1 and {a.name for a in n.attribute} >= {"starts", "ends"} for n in slices)


@pytest.mark.parametrize(
    ("opset", "split_attr", "split_input"),
    [(11, [3, 5], False), (11, None, False), (13, None, False), (13, [3, 5], True), (18, [3, 5], True)],
)
def test_split_in_every_spelling_prunes_exactly(opset, split_attr, split_input):
    g = G(seed=3, opset=opset)
    x = g.input("x", [1, 4, 6, 6])
    c = g.conv(x, 4, 8, name="c1")
    sizes = split_attr or [4, 4]
    if split_input:
        parts = g.op("Split", [c, g.const("sizes", sizes)], n_out=2, axis=1)
    elif split_attr is not None:
        parts = g.op("Split", [c], n_out=2, axis=1, split=split_attr)
    else:
        parts = g.op("Split", [c], n_out=2, axis=1)
    for k, p in enumerate(parts):
        g.output(g.conv(p, sizes[k], 2, name=f"h{k}"))
    model = g.model()
    _assert_prunes_exactly(model, "c1.weight")
    small = _small(model)
    split = next(n for n in small.graph.node if n.op_type == "Split")
    if opset < 13:
        assert len(split.input) == 1 and any(a.name == "split" for a in split.attribute)
    else:
        assert len(split.input) == 2 and not any(a.name == "split" for a in split.attribute)


@pytest.mark.parametrize("opset", [11, 13])
def test_unsqueeze_squeeze_in_both_spellings_prune_exactly(opset):
    g = G(seed=4, opset=opset)
    x = g.input("x", [1, 4, 6, 6])
    c = g.conv(x, 4, 8, name="c1")
    if opset < 13:
        u = g.op("Unsqueeze", [c], axes=[0])
        s = g.op("Squeeze", [u], axes=[0])
    else:
        u = g.op("Unsqueeze", [c, g.const("ax_u", [0])])
        s = g.op("Squeeze", [u, g.const("ax_s", [0])])
    g.output(g.conv(s, 8, 3, name="c2"))
    _assert_prunes_exactly(g.model(), "c1.weight")


@pytest.mark.parametrize("opset", [11, 18])
def test_reduce_axes_in_both_spellings(opset):
    g = G(seed=5, opset=opset)
    x = g.input("x", [1, 4, 6, 6])
    c = g.op("Relu", [g.conv(x, 4, 8, name="c1")])
    if opset < 18:
        m = g.op("ReduceMean", [c], axes=[2, 3], keepdims=1)
    else:
        m = g.op("ReduceMean", [c, g.const("axes", [2, 3])], keepdims=1)
    g.output(g.conv(m, 8, 3, k=1, name="c2"))
    _assert_prunes_exactly(g.model(), "c1.weight")


@pytest.mark.parametrize(("lo", "prunable"), [(0.0, True), (0.5, False)])
@pytest.mark.parametrize("opset", [9, 13])
def test_clip_bounds_in_both_spellings(opset, lo, prunable):
    g = G(seed=6, opset=opset)
    x = g.input("x", [1, 4, 6, 6])
    c = g.conv(x, 4, 8, name="c1")
    if opset < 11:
        h = g.op("Clip", [c], min=lo, max=6.0)
    else:
        h = g.op("Clip", [c, g.const("lo", lo, np.float32), g.const("hi", 6.0, np.float32)])
    g.output(_channel_sum(g, h))
    _assert_prunes_exactly(g.model(), "c1.weight", prunable)


def test_clip_bound_computed_at_run_time_is_not_assumed_open():
    """A min fed by the graph (it may be 0.5 at run time) must not let a zeroed channel count as zero."""
    g = G(seed=6, opset=13)
    x = g.input("x", [1, 4, 6, 6])
    lo = g.input("lo", [])
    h = g.op("Clip", [g.conv(x, 4, 8, name="c1"), lo, g.const("hi", 6.0, np.float32)])
    g.output(_channel_sum(g, h))
    _assert_prunes_exactly(g.model(), "c1.weight", expect_prunable=False)


@pytest.mark.parametrize(("value", "prunable"), [(0.0, True), (1.0, False)])
@pytest.mark.parametrize("opset", [9, 13])
def test_pad_in_both_spellings(opset, value, prunable):
    g = G(seed=7, opset=opset)
    x = g.input("x", [1, 4, 6, 6])
    c = g.conv(x, 4, 8, name="c1")
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    if opset < 11:
        h = g.op("Pad", [c], pads=pads, value=value)
    else:
        h = g.op("Pad", [c, g.const("pads", pads), g.const("value", value, np.float32)])
    g.output(_channel_sum(g, h))
    _assert_prunes_exactly(g.model(), "c1.weight", prunable)


def test_legacy_attributes_become_operands_for_the_rules():
    g = G(seed=8, opset=9)
    x = g.input("x", [1, 4, 6, 6])
    g.output(g.op("Slice", [g.op("Clip", [x], min=0.0, max=6.0)], starts=[0], ends=[2], axes=[1]))
    graph = __import__("frontends").load(g.model())
    clip, sl = graph.nodes
    assert "min" not in clip.attrs and float(clip.inputs[1].const) == 0.0 and float(clip.inputs[2].const) == 6
    assert not {"starts", "ends", "axes"} & set(sl.attrs)
    assert [list(v.const) for v in sl.inputs[1:4]] == [[0], [2], [1]]


# -- the passes outside graphcore/ops name no op --------------------------------------------------------

# The few names that are not per-op facts: how a frontend spells a constant's producer.
_ALLOWED = {("channels.py", "Constant")}


def test_no_pass_outside_the_op_table_names_an_op():
    ops = {op for (_, op) in rules()}
    found = []
    for path in sorted((ROOT / "graphcore").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and node.value in ops
                and (path.name, node.value) not in _ALLOWED
            ):
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not found, found


# -- docs/architecture.md: "Adding an op" runs ---------------------------------------------------------


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return re.findall(r"```python\n(.*?)```", text[text.index("## Adding an op") :], re.S)


def _example_model(domain: str) -> onnx.ModelProto:
    g = G(seed=9)
    x = g.input("x", [2, 8])
    h = g.op("Dense", [x, g.w("d1.weight", (16, 8)), g.w("d1.bias", (16,))], domain=domain)
    h = g.op("Swish", [str(h)], domain=domain)
    h = g.op("SwapLastTwo", [str(h)], domain=domain)
    h = g.op("SwapLastTwo", [str(h)], domain=domain)
    y = str(g.op("Dense", [str(h), g.w("d2.weight", (4, 16)), g.w("d2.bias", (4,))], domain=domain))
    g.output(y)
    model = g.model(domains={domain: 1})
    # ONNX's inference knows nothing of the domain: only the declared shape hooks give shapes inside.
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info(y, TensorProto.FLOAT, [2, 4]))
    return model


def test_the_adding_an_op_example_runs():
    blocks = _doc_blocks()
    assert [b.count("register_op(") for b in blocks] == [1, 1, 1], "one declaration per new op"
    domain = f"example.ops.{uuid.uuid4().hex[:8]}"  # a fresh domain: the table is global
    model = _example_model(domain)

    before = analyze(model)
    blocked = group_of(before, "d1.weight", 0)
    assert not blocked.prunable and blocked.reason and blocked.reason.startswith("unknown op"), blocked

    namespace: dict[str, Any] = {}
    for code in blocks:
        exec(compile(code.replace('"example.ops"', repr(domain)), "docs/architecture.md", "exec"), namespace)
    after = analyze(model)
    grp = group_of(after, "d1.weight", 0)
    assert grp.prunable, grp.reason
    assert set(grp.params) == {("d1.weight", 0), ("d1.bias", 0), ("d2.weight", 1)}
    assert grp.size == 16
    assert not after.report().unknown_ops
    assert after.flops_total == 2 * 2 * 16 * 8 + 2 * 2 * 4 * 16  # the Dense cost hook
    assert group_of(after, "d2.weight", 0).prunable is False  # a graph output keeps its width
