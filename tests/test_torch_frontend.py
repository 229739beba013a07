"""The torch frontend: ONNX names and conventions, FQN parameters, literals, tracers and clear errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import frontends
import graphcore
from construct.torch_construct import to_torch
from construct.torch_verify import randomize_, verify_torch, zeroed_copy
from frontends.torch_frontend import load_factory, load_torch
from graphcore.errors import ModelLoadError
from graphcore.ops import rule_for
from tests.test_torch_patterns import CASES, _build


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.ln = nn.LayerNorm([8])
        self.gn = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8 * 4 * 4, 6)

    def forward(self, x):
        y = self.gn(self.dw(self.features(x)))
        z = self.ln(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(z.reshape(x.shape[0], 8 * 4 * 4))


def _node(graph, op):
    hits = graph.find(op)
    assert hits, f"no {op} in {graph.summary_ops()}"
    return hits[0]


def test_ir_uses_onnx_names_and_conventions():
    m = Small().eval()
    g = load_torch(m, torch.randn(2, 3, 4, 4))
    assert g.format == "torch"
    conv = _node(g, "Conv")
    assert conv.inputs[1].name == "features.0.weight" and conv.inputs[1].is_param
    assert conv.origin == "features_0"
    dw = [n for n in g.find("Conv") if n.attr("group") == 8]
    assert dw and dw[0].inputs[1].shape == (8, 1, 3, 3)
    bn = _node(g, "BatchNormalization")
    names = [v.name for v in bn.inputs[1:]]
    stats = ["features.1.weight", "features.1.bias", "features.1.running_mean", "features.1.running_var"]
    assert names == stats
    assert bn.inputs[1].trainable and not bn.inputs[3].trainable
    assert _node(g, "LayerNormalization").attr("axis") == -1
    assert _node(g, "GroupNormalization").attr("num_groups") == 2
    gemm = _node(g, "Gemm")
    assert gemm.attr("transB") == 1 and gemm.inputs[1].name == "fc.weight"
    reshape = _node(g, "Reshape")
    shape_v = reshape.inputs[1]
    assert shape_v.shape == (2,)
    lits = [v for v in g.values.values() if v.name.startswith("lit::")]
    assert lits and all(v.const is not None and not v.is_param for v in lits)
    assert _node(g, "Shape").inputs[0].name == "x"
    for v in g.values.values():
        if v.producer is not None or v.is_param or v in g.inputs:
            assert v.shape is not None, v.name
    params = {v.name for v in g.params}
    assert params == {k for k, _ in m.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_linear_on_tokens_uses_matmul_with_transposed_weight():
    m = nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 3))
    g = load_torch(m, torch.randn(2, 5, 6))
    mm = _node(g, "MatMul")
    t = mm.inputs[1].producer
    assert t is not None and t.op == "Transpose" and t.inputs[0].name == "0.weight"
    assert _node(g, "Gelu")


def test_embedding_is_gather_and_silu_is_sigmoid_mul():
    class E(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.act = nn.SiLU()

        def forward(self, ids):
            return self.act(self.emb(ids))

    g = load_torch(E(), torch.randint(0, 10, (2, 3)))
    gather = _node(g, "Gather")
    assert gather.inputs[0].name == "emb.weight" and gather.attr("axis") == 0
    assert _node(g, "Sigmoid") and _node(g, "Mul")


def mystery(x):
    return x * 2


torch.fx.wrap("mystery")


def test_unknown_function_blocks_its_neighbours():
    class U(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(mystery(self.a(x)))

    # torch.export would open ``mystery`` (see test_torch_patterns' wrapped helpers); torch.fx alone
    # keeps it one call, which is what this test is about
    g = load_torch(U(), torch.randn(1, 3, 4, 4), allow_export=False)
    a = graphcore.analyze(g)
    assert a.unknown_ops == {"torch::mystery": 1}
    grp = next(gr for gr in a.groups if ("a.weight", 0) in gr.params)
    assert not grp.prunable and "mystery" in grp.reason


def test_a_handler_that_gives_up_half_way_leaves_nothing_behind():
    """``x[:, 1:3, idx]`` emits the slice's nodes before it meets the tensor index it cannot express;
    the rollback takes them out again (nodes, Values, literal sites, links) and one unknown op remains."""

    class Advanced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("idx", torch.tensor([0, 2]))

        def forward(self, x):
            return x[:, 1:3, self.idx] * 2

    g = load_torch(Advanced(), torch.randn(2, 4, 3))
    assert g.summary_ops() == {"torch::getitem": 1, "Mul": 1}
    unknown = _node(g, "getitem")
    assert unknown.attr("reason") == "advanced indexing"
    assert not g.meta["torch"].sites and not any(name.startswith("lit::") for name in g.values)
    for node in g.nodes:
        for i, v in enumerate(node.inputs):
            assert v is None or ((node, i) in v.consumers and g.values[v.name] is v)
        for v in node.outputs:
            assert v.producer is node and g.values[v.name] is v
    for v in g.values.values():
        assert v.producer is None or v.producer in g.nodes
        assert all(c in g.nodes for c, _ in v.consumers)


def test_shared_parameter_appears_once():
    class T(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    m = T()
    g = load_torch(m, torch.randn(2, 4))
    gemms = g.find("Gemm")
    assert gemms[0].inputs[1] is gemms[1].inputs[1]
    assert gemms[0].inputs[1].name == "a.weight"
    assert g.meta["torch"].aliases == {"b.weight": "a.weight"}


def test_training_flags_and_weights_untouched():
    m = Small().train()
    m.features[1].eval()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    flags = [x.training for x in m.modules()]
    load_torch(m, torch.randn(2, 3, 4, 4))
    assert [x.training for x in m.modules()] == flags
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())


class Branchy(nn.Module):
    """Python control flow on a shape: torch.fx cannot trace it, torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 6, 1)
        self.c = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        if y.shape[1] > 4:
            y = y * 2
        z = self.b(y)
        return self.c(F.relu(z[:, :6]))


def test_export_fallback_traces_and_prunes():
    m = randomize_(Branchy()).eval()
    x = torch.randn(2, 3, 5, 5)
    g = load_torch(m, x)
    assert g.meta["tracer"] == "export"
    assert _node(g, "Conv").inputs[1].name == "a.weight"
    a = graphcore.analyze(g)
    grp = next(gr for gr in a.groups if ("a.weight", 0) in gr.params)
    assert grp.prunable
    sel = grp.zig_ids[:3]
    z = zeroed_copy(m, a, sel)
    small = to_torch(z, a)
    assert verify_torch(z, small, x).max_rel <= 1e-4
    assert small.get_parameter("a.weight").shape[0] == 5


class LegacySpelled(nn.Module):
    """Every op whose axes or bounds older ONNX opsets spell as attributes, written in torch."""

    def __init__(self, branch: bool = False) -> None:
        super().__init__()
        self.branch = branch
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.hardtanh = nn.Hardtanh(-2.0, 3.0)
        self.relu6 = nn.ReLU6()
        self.prelu = nn.PReLU(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.relu6(self.a(x))
        if self.branch and y.shape[1] > 4:  # control flow on a shape: only torch.export traces it
            y = y * 2
        y = self.hardtanh(self.b(y)) + torch.clamp(y, min=0.0) + y.clamp(max=1.5) + F.hardtanh(y)
        s = y.mean((2, 3), keepdim=True) + y.sum(2, keepdim=True).amax(3, keepdim=True)
        z = (y * s).unsqueeze(1).squeeze(1)
        out = z.amin((2, 3)) + z[:, None, :, 0, 0].squeeze(1)
        if not self.branch:  # no handler declares torch.export's aten relu6, prelu, max.dim, unbind
            z = self.prelu(F.relu6(z))
            lo, hi = torch.stack([z.amin((2, 3)), z.flatten(2).max(2)[0]], dim=-1).unbind(-1)
            out = out + lo + hi
        return self.head(out)


def _legacy_attrs_left(graph) -> list[tuple[str, str]]:
    """Nodes that still spell an operand the way an older ONNX opset did (``OpRule.legacy_attrs``)."""
    left = []
    for node in graph.nodes:
        rule = rule_for(node)
        left += [(node.name, x.name) for x in (rule.legacy_attrs if rule else ()) if x.name in node.attrs]
    return left


def _bound(node, index: int) -> float | None:
    v = node.input(index)
    return None if v is None else float(v.const)


@pytest.mark.parametrize(("branch", "tracer"), [(False, "symbolic_trace"), (True, "export")])
def test_axes_and_clip_bounds_are_operands(branch, tracer):
    """The torch frontend writes the one form the rules read: no legacy attribute, constant operands."""
    m = randomize_(LegacySpelled(branch)).eval()
    x = torch.randn(2, 3, 5, 5)
    g = frontends.load(m, x)
    assert g.meta["tracer"] == tracer
    ops = {node.op for node in g.nodes}
    assert {"Squeeze", "Unsqueeze", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Clip"} <= ops
    assert _legacy_attrs_left(g) == []
    for node in g.nodes:
        if node.op in ("Squeeze", "Unsqueeze") or node.op.startswith("Reduce"):
            axes = node.input(1)
            assert axes is not None and axes.const is not None and axes.dtype == "int64", node.name
            assert not axes.name.startswith("lit::")  # an axis is no size: construct never rewrites it
    bounds = {(_bound(c, 1), _bound(c, 2)) for c in g.find("Clip")}
    assert bounds == {(0.0, 6.0), (-2.0, 3.0), (0.0, None), (None, 1.5), (-1.0, 1.0)}
    assert all(c.inputs[k].dtype == "float32" for c in g.find("Clip") for k in (1, 2) if c.input(k))
    a = graphcore.analyze(g)
    grp = next(gr for gr in a.groups if ("a.weight", 0) in gr.params)
    assert grp.prunable
    z = zeroed_copy(m, a, grp.zig_ids[:3])
    small = to_torch(z, a)
    assert verify_torch(z, small, x).max_rel <= 1e-4
    assert small.get_parameter("a.weight").shape[0] == 5


def test_pattern_models_carry_no_legacy_attribute():
    covered: set[str] = set()
    for name in sorted(CASES):
        g = frontends.load(*_build(name))
        assert _legacy_attrs_left(g) == [], name
        covered |= {node.op for node in g.nodes if (rule := rule_for(node)) and rule.legacy_attrs}
    assert {"Unsqueeze", "ReduceMean", "Clip", "Split", "Slice"} <= covered  # the check read such nodes


def test_untraceable_model_names_the_blocker():
    class Bad(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x + 1
            return x - 1

    with pytest.raises(ModelLoadError) as err:
        load_torch(Bad(), torch.randn(2, 3))
    msg = str(err.value)
    assert "Bad" in msg and "torch.fx" in msg and "torch.export" in msg and "\n" not in msg


def test_frontends_load_dispatches_torch():
    g = frontends.load(Small(), torch.randn(1, 3, 4, 4))
    assert g.format == "torch"
    with pytest.raises(ModelLoadError):
        frontends.load(Small())


def test_load_factory_and_its_errors(monkeypatch):
    mod = types.ModuleType("zigraph_test_factories")
    mod.small = Small
    mod.not_callable = 3
    mod.not_module = lambda: "nope"
    monkeypatch.setitem(sys.modules, "zigraph_test_factories", mod)
    model, inputs = load_factory("zigraph_test_factories:small", [(1, 3, 4, 4)])
    assert isinstance(model, Small) and inputs[0].shape == (1, 3, 4, 4)
    g = load_torch(model, inputs)
    assert g.find("Conv")
    cases = {
        "no_colon_here": "package.module:factory",
        "zigraph_no_such_module_xyz:f": "cannot import",
        "zigraph_test_factories:missing": "no attribute",
        "zigraph_test_factories:not_callable": "not callable",
        "zigraph_test_factories:not_module": "not a torch.nn.Module",
    }
    for spec, text in cases.items():
        with pytest.raises(ModelLoadError, match=text):
            load_factory(spec, [(1, 3, 4, 4)])
    with pytest.raises(ModelLoadError, match="--input-shape"):
        load_factory("zigraph_test_factories:small", [])
    with pytest.raises(ModelLoadError, match="positive"):
        load_factory("zigraph_test_factories:small", [(1, 0)])
