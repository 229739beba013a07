"""Weights as real tools write them: computed from constants, shared between readers, listed as inputs.

Each pattern is built with ``onnx.helper`` and pruned at 50% through the public API (``zig_norms`` ->
``select_zigs`` -> ``prune_onnx`` -> ``verify``): exact against the original with the removed slices
zeroed, different from the original unzeroed (so the check can fail), at most 90% of the weights kept,
and a valid output file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import construct
import frontends
import graphcore
from construct.verify import compare_models
from frontends.onnx_sources import param_uses
from graphcore.groups import PruneAnalysis
from graphcore.select import relative_scores, select_zigs

H = 16  # hidden width of the test MLPs
Part = tuple[list[onnx.NodeProto], list[onnx.TensorProto]]


def _w(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.4).astype(dtype)


def _t(arr, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def _node(op: str, ins: list[str], out: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, ins, [out], name=f"{op}_{out}", **attrs)


def mlp(
    first: Callable[[np.random.Generator], Part],
    bias1: Callable[[np.random.Generator], Part] | None = None,
    bias2: Callable[[np.random.Generator], Part] | None = None,
    opset: int = 18,
    ir: int = 8,
    b2: str = "b2",
) -> onnx.ModelProto:
    """x[2, 6] @ W1 (+ b1) -> Relu -> @ W2[H, H] (+ b2) -> Relu -> @ W3[H, 3]: ``first`` writes the value
    ``w1`` ([6, H]) from its sources, ``bias1``/``bias2`` write ``b1``/``b2`` ([H]-like); the second
    layer adds the value named ``b2``."""
    rng = np.random.default_rng(0)
    nodes, inits = first(rng)
    h = "h1"
    nodes.append(_node("MatMul", ["x", "w1"], "m1"))
    if bias1 is not None:
        n, i = bias1(rng)
        nodes += n
        inits += i
        nodes.append(_node("Add", ["m1", "b1"], h))
    else:
        nodes.append(_node("Identity", ["m1"], h))
    nodes.append(_node("Relu", [h], "r1"))
    inits.append(_t(_w(rng, H, H), "w2"))
    nodes.append(_node("MatMul", ["r1", "w2"], "m2"))
    if bias2 is not None:
        n, i = bias2(rng)
        nodes += n
        inits += i
        nodes.append(_node("Add", ["m2", b2], "h2"))
    else:
        nodes.append(_node("Identity", ["m2"], "h2"))
    nodes.append(_node("Relu", ["h2"], "r2"))
    inits.append(_t(_w(rng, H, 3), "w3"))
    nodes.append(_node("MatMul", ["r2", "w3"], "y"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]
    model = helper.make_model(
        helper.make_graph(nodes, "sources", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = ir
    if ir < 4:  # IR 3: every initializer is also a graph input, as old exporters wrote them
        for t in model.graph.initializer:
            model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.checker.check_model(model, full_check=True)
    return model


def _stored_weights(model: onnx.ModelProto) -> int:
    """Float elements the file stores: initializers and Constant-node values."""
    tensors = [t for t in model.graph.initializer]
    tensors += [
        a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
    return sum(int(np.prod(t.dims)) for t in tensors if t.data_type in floats)


def prune_half(model: onnx.ModelProto) -> tuple[PruneAnalysis, onnx.ModelProto, list]:
    """Prune 50% of the prunable channels by L2 norm and prove the result exact and smaller."""
    analysis = graphcore.analyze(frontends.load(model))
    assert analysis.prunable_groups, [(g.params, g.reason) for g in analysis.groups]
    scores = relative_scores(analysis, construct.zig_norms(analysis))
    chosen = select_zigs(analysis, 0.5, scores)
    small, plan = construct.prune_onnx(analysis, chosen)
    onnx.checker.check_model(small, full_check=True)
    report = construct.verify(model, small, plan.removed, rtol=1e-4)
    assert report.passed, report
    unzeroed = compare_models(model, small, rtol=1e-4)
    assert not unzeroed.passed, "the removed channels did not matter: the check could not fail"
    kept = _stored_weights(small) / _stored_weights(model)
    assert kept <= 0.9, f"{kept:.0%} of the weights kept"
    return analysis, small, plan.removed


def _hidden_groups(analysis: PruneAnalysis) -> list:
    return [g for g in analysis.groups if g.size == H]


# -- weights computed from constants -----------------------------------------------------------------


def plain(rng) -> Part:
    return [], [_t(_w(rng, 6, H), "w1")]


def identity(rng) -> Part:
    return [_node("Identity", ["w1s"], "w1")], [_t(_w(rng, 6, H), "w1s")]


def transpose(rng) -> Part:
    return [_node("Transpose", ["w1s"], "w1", perm=[1, 0])], [_t(_w(rng, H, 6), "w1s")]


def cast(rng) -> Part:
    return [_node("Cast", ["w1s"], "w1", to=TensorProto.FLOAT)], [_t(_w(rng, 6, H, dtype=np.float64), "w1s")]


def castlike(rng) -> Part:
    return [_node("CastLike", ["w1s", "x"], "w1")], [_t(_w(rng, 6, H, dtype=np.float64), "w1s")]


def flatten(rng) -> Part:
    return [_node("Flatten", ["w1s"], "w1", axis=1)], [_t(_w(rng, 6, H, 1), "w1s")]


def squeeze(rng) -> Part:
    return [_node("Squeeze", ["w1s", "ax0"], "w1")], [_t(_w(rng, 1, 6, H), "w1s"), _t([0], "ax0")]


def reshape_drop_axis(rng) -> Part:
    return [_node("Reshape", ["w1s", "shape"], "w1")], [_t(_w(rng, 6, 1, H), "w1s"), _t([6, H], "shape")]


def reshape_flat_rows(rng) -> Part:
    """A flat weight [H * 6] reshaped to [H, 6] and transposed: each hidden channel owns a block of 6."""
    nodes = [_node("Reshape", ["w1s", "shape"], "w1r"), _node("Transpose", ["w1r"], "w1", perm=[1, 0])]
    return nodes, [_t(_w(rng, H * 6), "w1s"), _t([H, 6], "shape")]


def constant(rng) -> Part:
    return [_node("Constant", [], "w1", value=_t(_w(rng, 6, H), "c"))], []


def constant_chain(rng) -> Part:
    """Constant (float64) -> Cast -> Transpose -> Identity: several steps before the stem."""
    nodes = [
        _node("Constant", [], "c64", value=_t(_w(rng, H, 6, dtype=np.float64), "c")),
        _node("Cast", ["c64"], "c32", to=TensorProto.FLOAT),
        _node("Transpose", ["c32"], "ct", perm=[1, 0]),
        _node("Identity", ["ct"], "w1"),
    ]
    return nodes, []


def constant_bias(rng) -> Part:
    """A small float Constant (16 values): a bias written as a node."""
    return [_node("Constant", [], "b1", value=_t(_w(rng, H), "c"))], []


def unsqueezed_bias(rng) -> Part:
    return [_node("Unsqueeze", ["b1s", "ax0"], "b1")], [_t(_w(rng, H), "b1s"), _t([0], "ax0")]


def zeros_bias_1(rng) -> Part:
    """ConstantOfShape(width): a zero bias whose width is a literal that must be rewritten."""
    zero = _t(np.zeros(1, np.float32), "v")
    return [_node("ConstantOfShape", ["width"], "b1", value=zero)], [_t([H], "width")]


def zeros_bias_2(rng) -> Part:
    """The second layer's zero bias reads the same width literal: it is rewritten per use."""
    one = _t(np.ones(1, np.float32), "v")
    return [_node("ConstantOfShape", ["width"], "b2", value=one)], []


SOURCES = {
    "plain": dict(first=plain),
    "identity": dict(first=identity),
    "transpose": dict(first=transpose),
    "cast": dict(first=cast),
    "castlike": dict(first=castlike),
    "flatten": dict(first=flatten),
    "squeeze": dict(first=squeeze),
    "reshape": dict(first=reshape_drop_axis),
    "reshape-flat": dict(first=reshape_flat_rows),
    "constant": dict(first=constant),
    "constant-chain": dict(first=constant_chain),
    "constant-bias": dict(first=plain, bias1=constant_bias),
    "unsqueeze-bias": dict(first=plain, bias1=unsqueezed_bias),
    "constantofshape-bias": dict(first=plain, bias1=zeros_bias_1, bias2=zeros_bias_2),
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_weight_source_prunes_exactly(name):
    analysis, _small, removed = prune_half(mlp(**SOURCES[name]))
    hidden = _hidden_groups(analysis)
    assert len(hidden) == 2 and all(g.prunable for g in hidden), [(g.params, g.reason) for g in hidden]
    # The first layer's weight is cut where it is stored, under its stored name.
    stored = {"constant": "w1", "constant-chain": "c64"}.get(
        name, "w1s" if name != "plain" and "bias" not in name else "w1"
    )
    assert any(s.param == stored for s in removed), sorted({s.param for s in removed})


def test_constant_weight_was_blocked_before():
    """The reason the Constant rule touches its output: untouched axes are pinned."""
    a = graphcore.analyze(frontends.load(mlp(first=constant)))
    first = [g for g in a.groups if ("w1", 1) in g.params]
    assert len(first) == 1 and first[0].prunable


def test_flat_weight_split_into_both_channel_axes_is_blocked():
    """A flat weight reshaped so that the pruned axis is the inner part: no per-axis cut of the flat
    source exists, so the group is blocked with its reason (sound, not guessed)."""

    def flat_inner(rng) -> Part:
        return [_node("Reshape", ["w1s", "shape"], "w1")], [_t(_w(rng, 6 * H), "w1s"), _t([6, H], "shape")]

    a = graphcore.analyze(frontends.load(mlp(first=flat_inner)))
    g = next(g for g in a.groups if ("w2", 0) in g.params)
    assert not g.prunable and "split axis" in (g.reason or "")


# -- shared constants are values, not ties ---------------------------------------------------------------


def shared_zero_bias(rng) -> Part:
    return [], [_t(np.zeros(H, np.float32), "b1")]


def _shared_bias_model() -> onnx.ModelProto:
    """Both hidden layers add the same zero bias ``b1`` (an exporter's deduplication)."""
    return mlp(first=plain, bias1=shared_zero_bias, bias2=lambda rng: ([], []), b2="b1")


def test_shared_bias_does_not_tie_layers():
    model = _shared_bias_model()
    assert sum(1 for n in model.graph.node for x in n.input if x == "b1") == 2
    analysis, small, _removed = prune_half(model)
    hidden = _hidden_groups(analysis)
    assert len(hidden) == 2 and all(g.prunable for g in hidden)
    names = [{p for p, _ in g.params if p.startswith("b")} for g in hidden]
    assert names == [{"b1"}, {"b1@Add_h2"}], names
    # Both layers lost channels, and each reads a bias of its own new width.
    widths = {n.name: None for n in small.graph.node if n.op_type == "Add"}
    inits = {t.name: list(t.dims) for t in small.graph.initializer}
    for n in small.graph.node:
        if n.op_type == "Add":
            widths[n.name] = inits[n.input[1]]
    assert all(w is not None and w[0] < H for w in widths.values()), widths


def test_shared_weight_is_counted_once():
    """An alias is a read, not storage: totals and prunable counts hold each stored scalar once."""
    a = graphcore.analyze(frontends.load(_shared_bias_model()))
    stored = 6 * H + H + H * H + H * 3  # w1, the one bias, w2, w3
    assert a.params_total == stored
    assert a.params_prunable == stored  # every scalar sits in some prunable channel
    report = a.report()
    assert report.params_prunable <= report.params_total


def test_shared_constant_node_does_not_tie_layers():
    model = _shared_bias_model()
    del model.graph.initializer[[t.name for t in model.graph.initializer].index("b1")]
    zeros = _t(np.zeros(H, np.float32), "z")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["b1"], value=zeros))
    analysis, _small, _removed = prune_half(model)
    assert len([g for g in _hidden_groups(analysis) if g.prunable]) == 2


def test_aliases_are_a_function_of_the_model():
    model = _shared_bias_model()
    uses = param_uses(model)
    assert list(uses) == ["b1@Add_h2"] and model.graph.node[uses["b1@Add_h2"].node].name == "Add_h2"
    again = onnx.ModelProto()
    again.CopyFrom(model)
    assert param_uses(again) == uses


def tied_embedding() -> onnx.ModelProto:
    """ids -> Gather(E) -> h; h + Relu(h @ W) -> logits = . @ Transpose(E): E is read twice, tied."""
    rng = np.random.default_rng(1)
    vocab = 20
    nodes = [
        _node("Gather", ["E", "ids"], "h"),
        _node("MatMul", ["h", "W"], "hw"),
        _node("Relu", ["hw"], "hr"),
        _node("MatMul", ["hr", "W2"], "hw2"),
        _node("Add", ["h", "hw2"], "res"),
        _node("Transpose", ["E"], "Et", perm=[1, 0]),
        _node("MatMul", ["res", "Et"], "logits"),
    ]
    inits = [_t(_w(rng, vocab, H), "E"), _t(_w(rng, H, 2 * H), "W"), _t(_w(rng, 2 * H, H), "W2")]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "tied",
            [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 5, vocab])],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_tied_embedding_stays_stored_once():
    model = tied_embedding()
    analysis, small, removed = prune_half(model)
    residual = next(g for g in analysis.groups if ("E", 1) in g.params)
    assert residual.prunable and ("E@Transpose_Et", 1) in residual.params
    assert any(s.param == "E" and s.axis == 1 for s in removed)
    stored = [t for t in small.graph.initializer if t.name.startswith("E")]
    assert [t.name for t in stored] == ["E"], [t.name for t in stored]


# -- initializers listed as graph inputs -------------------------------------------------------------------


def test_ir3_initializers_in_inputs_are_weights():
    model = mlp(first=plain, opset=8, ir=3)
    analysis, small, _ = prune_half(model)
    assert len([g for g in _hidden_groups(analysis) if g.prunable]) == 2
    inits = {t.name for t in small.graph.initializer}
    assert inits <= {i.name for i in small.graph.input}


def test_ir4_initializer_in_inputs_is_an_overridable_default():
    """In IR >= 4 an initializer that is also a graph input is a default a caller may override: its
    width is the caller's, so it is a fixed-width input and nothing tied to it is pruned."""
    model = mlp(first=plain)
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    model.graph.input.append(helper.make_tensor_value_info("w2", w2.data_type, list(w2.dims)))
    onnx.checker.check_model(model, full_check=True)
    graph = frontends.load(model)
    assert graph.values["w2"] in graph.inputs and not graph.values["w2"].is_param
    a = graphcore.analyze(graph)
    for g in _hidden_groups(a):
        assert not g.prunable and "graph input 'w2'" in (g.reason or "")


def test_ir4_file_listing_every_initializer_keeps_ir3_convention():
    """torch's keep_initializers_as_inputs (and older converters) list every initializer among the
    inputs in IR >= 4 too: a convention, not a choice of runtime arguments, so they are weights."""
    model = mlp(first=plain)
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.checker.check_model(model, full_check=True)
    analysis, small, _ = prune_half(model)
    assert len([g for g in _hidden_groups(analysis) if g.prunable]) == 2
    declared = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in small.graph.input}
    assert all(declared[t.name] == list(t.dims) for t in small.graph.initializer)


# -- erasing with shared weights ---------------------------------------------------------------------------


def _residual_shared_bias() -> onnx.ModelProto:
    """x -> conv0 -> h; h + conv_a(relu(h)); + conv_b(relu(.)): every conv adds the one zero bias."""
    rng = np.random.default_rng(2)
    c = 8
    nodes = [_node("Conv", ["x", "w0", "b"], "h0", pads=[1, 1, 1, 1])]
    prev = "h0"
    for k in ("a", "b"):
        nodes += [
            _node("Relu", [prev], f"r{k}"),
            _node("Conv", [f"r{k}", f"w{k}", "b"], f"c{k}", pads=[1, 1, 1, 1]),
            _node("Add", [prev, f"c{k}"], f"s{k}"),
        ]
        prev = f"s{k}"
    nodes.append(_node("Conv", [prev, "wout"], "y", pads=[1, 1, 1, 1]))
    inits = [
        _t(_w(rng, c, 3, 3, 3), "w0"),
        _t(_w(rng, c, c, 3, 3), "wa"),
        _t(_w(rng, c, c, 3, 3), "wb"),
        _t(_w(rng, 2, c, 3, 3), "wout"),
        _t(np.zeros(c, np.float32), "b"),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "res",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_erase_with_a_shared_zero_bias():
    model = _residual_shared_bias()
    analysis = graphcore.analyze(frontends.load(model), mode="erase")
    erasable = [s for s in analysis.structures if s.erasable and analysis.valid([s.id])]
    assert len(erasable) >= 2, [(s.segment, s.reason) for s in analysis.structures]
    for s in erasable:
        plan = analysis.plan([s.id])
        small = construct.erase_onnx(None, analysis, [s.id])
        onnx.checker.check_model(small, full_check=True)
        assert len(small.graph.node) < len(model.graph.node)
        report = construct.verify(model, small, plan.removed, rtol=1e-4)
        assert report.passed, (s.segment, report)
        assert not compare_models(model, small, rtol=1e-4).passed


# -- a freshly initialized ResNet-18 from the TorchScript exporter --------------------------------------


def _export_ts(module, path) -> onnx.ModelProto:
    import torch

    torch.onnx.export(
        module.eval(),
        (torch.randn(1, 3, 64, 64),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
    )
    return onnx.load(str(path))


def _canonical_groups(analysis: PruneAnalysis) -> set[tuple]:
    """Groups as (size, prunable, {(reader node, operand, axis)}): a parameter is named by the node
    that reads it (through Identity nodes), so a deduplicated model and one with a tensor per reader
    can be compared member by member."""
    graph = analysis.graph
    out = set()
    for g in analysis.groups:
        members = []
        for name, axis in g.params:
            readers = graph.values[name].consumers
            # The exporter writes its deduplication as Identity nodes: follow them to the reader.
            while len(readers) == 1 and readers[0][0].op == "Identity":
                readers = readers[0][0].outputs[0].consumers
            assert len(readers) == 1, (name, [c.name for c, _ in readers])
            members.append((readers[0][0].name, readers[0][1], axis))
        out.add((g.size, g.prunable, frozenset(members)))
    return out


def _reads(model: onnx.ModelProto) -> dict[str, int]:
    inits = {t.name for t in model.graph.initializer}
    counts: dict[str, int] = {}
    for n in model.graph.node:
        for x in n.input:
            if x in inits:
                counts[x] = counts.get(x, 0) + 1
    return counts


def test_fresh_resnet18_dedup_prunes_to_the_same_groups(tmp_path):
    """Freshly initialized, the folded conv biases are all zero and the TorchScript exporter stores one
    zero bias per width, read by every conv of that width. The same network with distinct biases (BN
    shifts drawn at random before export) has a tensor per reader: both must give the same groups."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    fresh = torchvision.models.resnet18(weights=None)
    distinct = torchvision.models.resnet18(weights=None)
    distinct.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        for m in distinct.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.copy_(torch.randn(m.bias.shape) * 0.1)
    dedup = _export_ts(fresh, tmp_path / "dedup.onnx")
    reference = _export_ts(distinct, tmp_path / "reference.onnx")
    shared = {k: n for k, n in _reads(dedup).items() if n > 1}
    assert len(shared) >= 4, shared  # one zero bias per stage width, read by several convs
    assert not [k for k, n in _reads(reference).items() if n > 1]

    a_dedup = graphcore.analyze(frontends.load(dedup))
    a_ref = graphcore.analyze(frontends.load(reference))
    assert _canonical_groups(a_dedup) == _canonical_groups(a_ref)
    assert len(a_dedup.prunable_groups) == len(a_ref.prunable_groups) >= 8
    assert a_dedup.params_total == sum(int(np.prod(t.dims)) for t in dedup.graph.initializer)
    # Storage counted once: the reference stores the biases the dedup model shares, nothing else.
    assert a_dedup.params_prunable <= a_dedup.params_total
    extra = a_ref.params_total - a_dedup.params_total
    assert extra > 0 and a_ref.params_prunable - a_dedup.params_prunable == extra
    prune_half(dedup)


def test_zero_slices_clones_only_the_aliased_read():
    """Zeroing an alias's slices leaves the weight's other readers with the stored values."""
    from construct.onnx_construct import zero_slices
    from graphcore.groups import ParamSlice

    def shared_random_bias(rng) -> Part:
        return [], [_t(_w(rng, H) + 1.0, "b1")]

    model = mlp(first=plain, bias1=shared_random_bias, bias2=lambda rng: ([], []), b2="b1")
    stored = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "b1"))
    zeroed = zero_slices(model, None, [ParamSlice("b1@Add_h2", 0, (0, 3))])
    inits = {t.name: numpy_helper.to_array(t) for t in zeroed.graph.initializer}
    reads = {n.name: n.input[1] for n in zeroed.graph.node if n.op_type == "Add"}
    assert reads["Add_h1"] == "b1" and np.array_equal(inits["b1"], stored)
    second = inits[reads["Add_h2"]]
    assert (
        reads["Add_h2"] != "b1" and (second[[0, 3]] == 0).all() and np.array_equal(second[1:3], stored[1:3])
    )
    onnx.checker.check_model(zeroed, full_check=True)


def test_weight_read_inside_a_subgraph_is_seen():
    """An If branch reads the first layer's weight from the outer scope: that read is an operand of the
    If node too, so the weight's channels are not pruned behind the branch's back."""
    model = mlp(first=plain)
    w1 = next(t for t in model.graph.initializer if t.name == "w1")
    branch = helper.make_graph(
        [helper.make_node("Identity", ["w1"], ["wout"])],
        "branch",
        [],
        [helper.make_tensor_value_info("wout", TensorProto.FLOAT, list(w1.dims))],
    )
    model.graph.node.append(
        helper.make_node("If", ["flag"], ["w_seen"], name="If_0", then_branch=branch, else_branch=branch)
    )
    model.graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    model.graph.output.append(helper.make_tensor_value_info("w_seen", TensorProto.FLOAT, list(w1.dims)))
    onnx.checker.check_model(model, full_check=True)
    graph = frontends.load(model)
    assert graph.values["w1"] in next(n for n in graph.nodes if n.op == "If").inputs
    a = graphcore.analyze(graph)
    first = next(g for g in a.groups if ("w1", 1) in g.params)
    assert not first.prunable


def test_constantofshape_width_is_rewritten_per_use():
    """Both layers' ConstantOfShape biases read one width literal; layers pruned to different widths
    each get their own literal."""
    model = mlp(**SOURCES["constantofshape-bias"])
    a = graphcore.analyze(frontends.load(model))
    first, second = _hidden_groups(a)
    chosen = np.concatenate([first.zig_ids[:3], second.zig_ids[:5]])
    small, plan = construct.prune_onnx(a, chosen)
    onnx.checker.check_model(small, full_check=True)
    assert construct.verify(model, small, plan.removed, rtol=1e-4).passed
    inits = {t.name: numpy_helper.to_array(t).tolist() for t in small.graph.initializer}
    widths = sorted(inits[n.input[0]] for n in small.graph.node if n.op_type == "ConstantOfShape")
    assert widths == [[H - 5], [H - 3]], widths


# -- shapes a file annotates -------------------------------------------------------------------------------


def _reshape_with_annotation(annotation, domain: str = "") -> onnx.ModelProto:
    """x[batch, 8, 4, 4] -> Reshape [0, 0, 16] -> r (annotated in value_info) -> Relu -> y."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "annotated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 16])],
        [_t(np.array([0, 0, 16]), "s")],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, annotation)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_stale_annotation_does_not_hide_an_inferred_size():
    """onnxruntime's quantizers annotate outputs with their own symbolic inference ('unk__29'); ONNX
    re-derives its own ops' outputs, and the file's guess must not replace what it derives."""
    graph = frontends.load(_reshape_with_annotation(["unk__1", "unk__2", "unk__3"]))
    assert graph.values["r"].shape == ("batch", 8, 16)


def test_annotation_fills_what_inference_leaves_unknown():
    """A dim ONNX cannot derive (a runtime-shaped Reshape) is taken from the file's annotation; a
    static inferred size is never overridden by it."""
    model = _reshape_with_annotation([None, 8, 16])
    model.graph.input.append(helper.make_tensor_value_info("s_in", TensorProto.INT64, [3]))
    model.graph.node[0].input[1] = "s_in"
    del model.graph.initializer[:]
    model.graph.value_info[0].CopyFrom(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["b", 8, 16]))
    assert frontends.load(model).values["r"].shape[1:] == (8, 16)
    stale = _reshape_with_annotation([7, 8, 16])  # wrong where ONNX knows better: ignored there
    assert frontends.load(stale).values["r"].shape == ("batch", 8, 16)
