"""Construct for erasing: hand-built super-networks lose whole structures, from torch and from ONNX.

Every case erases real structures, checks that the result is smaller (fewer operators, fewer
parameters), that ONNX results pass the checker, and that the outputs equal the original's with the
plan's ``removed`` slices zeroed — and differ from the untouched original, so the check can fail.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import construct
import frontends
import graphcore
from construct.erase_torch import zeroed_by_slices
from construct.torch_verify import randomize_, run_torch, verify_torch
from graphcore.erase import EraseAnalysis

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- the super-networks --------------------------------------------------------------------------------
def cbr(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.BatchNorm2d(cout), nn.ReLU())


class Res(nn.Module):
    """torchvision style: ``out += identity`` and an in-place ReLU after the joint."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(c, c), nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        out += x
        return self.relu(out)


class Head(nn.Module):
    def __init__(self, c: int, k: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(c, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class Stacked(nn.Module):
    def __init__(self, c: int = 8, n: int = 3) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.blocks = nn.Sequential(*[Res(c) for _ in range(n)])
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Outer(nn.Module):
    """``x + post(inner(pre(x)))`` with a residual ``inner``: erasing ``post`` takes the inner block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.pre = cbr(c, c)
        self.inner = Res(c)
        self.post = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.post(self.inner(self.pre(x)))


class Nested(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.outer = Outer(c)
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.outer(self.stem(x)))


class Cell(nn.Module):
    """DARTS-like: candidate operations on the same input, summed."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList([cbr(c, c, 1), cbr(c, c, 3), cbr(c, c, 5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ops[0](x)
        for op in self.ops[1:]:
            out = out + op(x)
        return out


class Darts(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.cell = Cell(c)
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cell(self.stem(x)))


class ConcatSkip(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.a = cbr(c, 4)
        self.b = cbr(c, 6)
        self.mix = nn.Conv2d(c + 10, 7, 1)
        self.head = Head(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.head(self.mix(torch.cat([h, self.a(h), self.b(h)], 1)))


class ConcatFlat(nn.Module):
    """Concat, then a flatten with a literal width into a Linear: the literal follows the erasure."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.a = cbr(8, 4)
        self.b = cbr(8, 6)
        self.fc = nn.Linear(160, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.fc(torch.cat([self.a(h), self.b(h)], 1).reshape(x.shape[0], 160))


class Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            cbr(cin, cout, 3, 2), nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout)
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


class ConvShortcut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.down = Down(8, 12)
        self.head = Head(12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.stem(x)))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, d: int = 16, heads: int = 2, n: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(6, d)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(n)])
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.blocks(self.embed(x))))


class Tied(nn.Module):
    """Two residual blocks whose first convolutions share one weight."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.blocks = nn.Sequential(Res(c), Res(c))
        self.blocks[1].body[0][0].weight = self.blocks[0].body[0][0].weight
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Alias(nn.Module):
    """The joint's result is rewritten in place and the joint's input is read again afterwards: once
    the joint is bypassed, the in-place ReLU must not write into that input."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.g = nn.Conv2d(c, c, 1)
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x) - 0.5
        y = torch.relu_(h + self.f(h))
        return self.head(self.g(h) + y)


class Tail(nn.Module):
    """The joint is the graph output: its name must survive the bypass."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return h + self.f(h)


class MethodInPlace(nn.Module):
    """``out.add_(x)`` and then ``out`` read again: the in-place joint's operand stands for its result."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        out = self.body(h)
        out.add_(h)
        return self.head(torch.relu(out))


class ReluAfterJoint(nn.Module):
    """``s.relu_()`` on the joint's result, with ``s`` read afterwards: once the joint is bypassed the
    ReLU must not write into ``h`` (read again by ``g``), and ``s``'s later reader must see the ReLU."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.g = nn.Conv2d(c, c, 1)
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x) - 0.5
        s = h + self.f(h)
        s.relu_()
        return self.head(s + self.g(h))


class InputSkip(nn.Module):
    """The joint reads the graph input and is the graph output: ONNX needs an Identity to keep the name."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


# -- cases ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """A structure, told apart by names: ``torch`` is the module path its parameters start with (any
    tracer keeps parameter names), ``onnx`` a part of the exported node names (the exporter folds and
    renames weights but keeps module scopes in node names)."""

    torch: str
    onnx: str


@dataclass(frozen=True)
class Case:
    factory: Callable[[], nn.Module]
    shape: tuple[int, ...]
    erase: tuple[Mark, ...]


def _blocks(i: int) -> Mark:
    return Mark(f"blocks.{i}.body.", f"/blocks.{i}/body/")


CASES = {
    "stacked-1": Case(Stacked, (2, 3, 8, 8), (_blocks(1),)),
    "stacked-2": Case(Stacked, (2, 3, 8, 8), (_blocks(0), _blocks(2))),
    "nested-inner": Case(Nested, (2, 3, 8, 8), (Mark("outer.inner.body.", "/inner/body/"),)),
    "nested-outer": Case(Nested, (2, 3, 8, 8), (Mark("outer.post.", "/outer/post/"),)),
    "darts-one": Case(Darts, (2, 3, 8, 8), (Mark("cell.ops.1.", "/ops.1/"),)),
    "darts-all-but-one": Case(
        Darts, (2, 3, 8, 8), (Mark("cell.ops.0.", "/ops.0/"), Mark("cell.ops.2.", "/ops.2/"))
    ),
    "concat-skip": Case(ConcatSkip, (2, 3, 8, 8), (Mark("b.", "/b/"),)),
    "concat-both": Case(ConcatSkip, (2, 3, 8, 8), (Mark("a.", "/a/"), Mark("b.", "/b/"))),
    "concat-flatten": Case(ConcatFlat, (2, 3, 4, 4), (Mark("a.", "/a/"),)),
    "conv-shortcut-branch": Case(ConvShortcut, (2, 3, 8, 8), (Mark("down.branch.", "/branch/"),)),
    "conv-shortcut-shortcut": Case(ConvShortcut, (2, 3, 8, 8), (Mark("down.shortcut.", "/shortcut/"),)),
    "transformer-attn": Case(Transformer, (2, 5, 6), (Mark("blocks.0.attn.", "/blocks.0/attn/"),)),
    "transformer-mlp": Case(Transformer, (2, 5, 6), (Mark("blocks.1.mlp.", "/blocks.1/mlp/"),)),
    "transformer-both": Case(
        Transformer,
        (2, 5, 6),
        (Mark("blocks.1.attn.", "/blocks.1/attn/"), Mark("blocks.0.mlp.", "/blocks.0/mlp/")),
    ),
    "alias": Case(Alias, (2, 3, 8, 8), (Mark("f.", "/f/"),)),
    "tail": Case(Tail, (2, 3, 8, 8), (Mark("f.", "/f/"),)),
    "method-in-place": Case(MethodInPlace, (2, 3, 8, 8), (Mark("body.", "/body/"),)),
    "relu-after-joint": Case(ReluAfterJoint, (2, 3, 8, 8), (Mark("f.", "/f/"),)),
    "input-skip": Case(InputSkip, (2, 3, 8, 8), (Mark("f.", "/f/"),)),
}


def _model(case: Case, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_(case.factory().eval(), seed)  # random BN statistics: nothing cancels by luck


def _inputs(case: Case, n: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(case.shape, generator=gen) for _ in range(n)]


def _export(model: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.randn(shape),), buf, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _erase_analysis(graph: graphcore.Graph) -> EraseAnalysis:
    a = graphcore.analyze(graph, mode="erase")
    assert isinstance(a, EraseAnalysis)
    return a


def _structure(analysis: EraseAnalysis, mark: str, onnx_names: bool = False) -> int:
    """The erasable structure that takes the most of what ``mark`` names with it (and least else)."""
    best, best_key = None, (0, 0)
    for s in analysis.structures:
        if not s.erasable or not analysis.valid([s.id]):
            continue
        plan = analysis.plan([s.id])
        if onnx_names:
            key = (sum(1 for n in plan.removed_nodes if mark in n), -len(plan.removed_nodes))
        else:
            key = (sum(1 for p in plan.removed_params if p.startswith(mark)), -len(plan.removed_nodes))
        if key[0] and (best is None or key > best_key):
            best, best_key = s.id, key
    assert best is not None, (
        f"no erasable structure takes {mark!r}: {[s.segment for s in analysis.structures]}"
    )
    return best


def _num_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _fx_ops(m: torch.fx.GraphModule) -> int:
    return sum(1 for n in m.graph.nodes if n.op not in ("placeholder", "output", "get_attr"))


# -- torch -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_erase(name: str) -> None:
    case = CASES[name]
    model = _model(case)
    before = copy.deepcopy(model.state_dict())
    graph = frontends.load(model, (torch.randn(case.shape),))
    analysis = _erase_analysis(graph)
    erased = sorted({_structure(analysis, m.torch) for m in case.erase})
    plan = analysis.plan(erased)
    small = construct.to_torch(model, analysis, erased)

    for k, v in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k]), k
    assert _num_params(small) < _num_params(model)
    traced = graph.meta["torch"].gm
    assert _fx_ops(small) < _fx_ops(traced)
    names = {n for n, _ in small.named_parameters()}
    assert not any(n.startswith(m.torch) for n in names for m in case.erase), names

    inputs = _inputs(case)
    rep = verify_torch(zeroed_by_slices(model, plan.removed), small, inputs)
    assert rep.passed, rep
    untouched = verify_torch(model, small, inputs)
    assert not untouched.passed, "the erased structures made no difference: the check cannot fail"

    if not _num_params(small):
        return
    small.train()  # trainable: gradients reach every parameter that is left
    out = small(inputs[0])
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in small.parameters())


@pytest.mark.parametrize("name", ["stacked-2", "darts-all-but-one", "concat-skip", "transformer-mlp"])
def test_torch_erase_from_zeros(name: str) -> None:
    """Structures whose variables are exactly zero are found and erased (what H2SPG leaves behind)."""
    case = CASES[name]
    model = _model(case)
    analysis = _erase_analysis(frontends.load(model, (torch.randn(case.shape),)))
    erased = sorted({_structure(analysis, m.torch) for m in case.erase})
    params = dict(model.named_parameters())
    with torch.no_grad():
        for sid in erased:
            for p in analysis.structures[sid].params:
                params[p].zero_()
    assert construct.erased_structures(model, analysis) == erased
    small = construct.to_torch(model, analysis)
    assert _num_params(small) < _num_params(model)
    rep = verify_torch(model, small, _inputs(case))
    assert rep.passed, rep


def test_torch_shared_weight_stays() -> None:
    """A weight the erased block shares with a surviving block is kept (the same tensor, trained)."""
    model = _model(Case(Tied, (2, 3, 8, 8), ()))
    shape = (2, 3, 8, 8)
    analysis = _erase_analysis(frontends.load(model, (torch.randn(shape),)))
    sid = _structure(analysis, "blocks.0.body.")
    shared = "blocks.0.body.0.0.weight"
    assert shared not in analysis.structures[sid].params
    plan = analysis.plan([sid])
    assert shared not in plan.removed_params
    small = construct.to_torch(model, analysis, [sid])
    kept = dict(small.named_parameters(remove_duplicate=False))
    assert "blocks.1.body.0.0.weight" in kept
    assert torch.equal(kept["blocks.1.body.0.0.weight"], model.blocks[1].body[0][0].weight)
    assert not any(n.startswith("blocks.0.") for n in kept)
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randn(shape, generator=gen) for _ in range(2)]
    rep = verify_torch(zeroed_by_slices(model, plan.removed), small, inputs)
    assert rep.passed, rep


def test_torch_erase_nothing_is_a_copy() -> None:
    case = CASES["stacked-1"]
    model = _model(case)
    analysis = _erase_analysis(frontends.load(model, (torch.randn(case.shape),)))
    small = construct.to_torch(model, analysis, [])
    assert _num_params(small) == _num_params(model)
    x = _inputs(case, 1)
    np.testing.assert_array_equal(run_torch(small, (x[0],))[0], run_torch(model, (x[0],))[0])


# -- ONNX ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_erase(name: str) -> None:
    case = CASES[name]
    source = _export(_model(case), case.shape)
    original = source.SerializeToString()
    analysis = _erase_analysis(frontends.load(source))
    erased = sorted({_structure(analysis, m.onnx, onnx_names=True) for m in case.erase})
    plan = analysis.plan(erased)
    small = construct.erase_onnx(source, analysis, erased)

    assert source.SerializeToString() == original  # the input is untouched
    onnx.checker.check_model(small, full_check=True)
    assert len(small.graph.node) < len(source.graph.node)
    size = {t.name: int(np.prod(t.dims)) for t in small.graph.initializer}
    assert sum(size.values()) < sum(int(np.prod(t.dims)) for t in source.graph.initializer)
    assert [o.name for o in small.graph.output] == [o.name for o in source.graph.output]
    left = {n.name for n in small.graph.node}
    assert not left & set(plan.removed_nodes)
    produced = {o for n in small.graph.node for o in n.output} | {i.name for i in small.graph.input}
    assert all(vi.name in produced for vi in small.graph.value_info)

    rep = construct.verify(source, small, plan.removed)
    assert rep.passed, rep
    assert rep.max_rel <= 1e-4
    assert not construct.verify(source, small, []).passed, "the check cannot fail"


def test_onnx_erase_from_zeros() -> None:
    """``erase_onnx`` without ids erases the structures that are exactly zero in the given model."""
    case = CASES["concat-skip"]
    source = _export(_model(case), case.shape)
    analysis = _erase_analysis(frontends.load(source))
    sid = _structure(analysis, "/b/", onnx_names=True)
    trained = onnx.ModelProto()
    trained.CopyFrom(source)
    for t in trained.graph.initializer:
        if t.name in analysis.structures[sid].params:
            t.CopyFrom(onnx.numpy_helper.from_array(np.zeros(tuple(t.dims), np.float32), t.name))
    assert construct.erased_structures(trained, analysis) == [sid]
    small = construct.erase_onnx(trained, analysis)
    onnx.checker.check_model(small, full_check=True)
    assert len(small.graph.node) < len(source.graph.node)
    assert construct.verify(trained, small, []).passed


def test_onnx_erase_refuses_another_model() -> None:
    case = CASES["stacked-1"]
    analysis = _erase_analysis(frontends.load(_export(_model(case), case.shape)))
    other = _export(_model(CASES["darts-one"]), case.shape)
    with pytest.raises(graphcore.ZigraphError, match="not the one the analysis"):
        construct.erase_onnx(other, analysis, [])


def test_onnx_erase_runs_in_onnxruntime_with_symbolic_batch() -> None:
    import onnxruntime as ort

    case = CASES["stacked-2"]
    model = _model(case)
    buf = io.BytesIO()
    torch.onnx.export(
        model, (torch.randn(case.shape),), buf, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}}
    )
    source = onnx.load_from_string(buf.getvalue())
    analysis = _erase_analysis(frontends.load(source))
    erased = sorted({_structure(analysis, m.onnx, onnx_names=True) for m in case.erase})
    small = construct.erase_onnx(source, analysis, erased)
    sess = ort.InferenceSession(small.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    (y,) = sess.run(None, {"x": x})
    assert y.shape == (5, 5)


EXPORTED = ["stacked-2", "concat-skip", "darts-all-but-one", "transformer-attn", "alias", "method-in-place"]


@pytest.mark.parametrize("name", EXPORTED)
def test_torch_erase_through_torch_export(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module symbolic_trace cannot take is traced by torch.export (ATen ops): the same erasure works."""
    import frontends.torch_trace as torch_trace

    monkeypatch.setattr(torch_trace, "_trace_fx", lambda module, inputs, kwargs: RuntimeError("forced"))
    case = CASES[name]
    model = _model(case)
    graph = frontends.load(model, (torch.randn(case.shape),))
    assert graph.meta["tracer"] == "export"
    analysis = _erase_analysis(graph)
    erased = sorted({_structure(analysis, m.torch) for m in case.erase})
    plan = analysis.plan(erased)
    small = construct.to_torch(model, analysis, erased)
    assert _num_params(small) < _num_params(model)
    assert _fx_ops(small) < _fx_ops(graph.meta["torch"].gm)
    inputs = _inputs(case)
    rep = verify_torch(zeroed_by_slices(model, plan.removed), small, inputs)
    assert rep.passed, rep
    assert not verify_torch(model, small, inputs).passed


def test_erasing_the_outer_block_takes_the_inner() -> None:
    case = CASES["nested-outer"]
    model = _model(case)
    analysis = _erase_analysis(frontends.load(model, (torch.randn(case.shape),)))
    outer = _structure(analysis, "outer.post.")
    inner = _structure(analysis, "outer.inner.body.")
    assert analysis.structures[inner].parent == outer
    small = construct.to_torch(model, analysis, [outer])
    assert not [n for n, _ in small.named_parameters() if n.startswith("outer.")]
    assert not [n for n, _ in small.named_modules() if n.startswith("outer")]


class PlainRes(nn.Module):
    def __init__(self, c: int, first: nn.Conv2d) -> None:
        super().__init__()
        self.first = first
        self.second = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(torch.relu(self.first(x)))


class TiedPlain(nn.Module):
    """Both blocks call the same first convolution (one initializer in ONNX)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = cbr(3, c)
        shared = nn.Conv2d(c, c, 3, padding=1)
        self.blocks = nn.Sequential(PlainRes(c, shared), PlainRes(c, shared))
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def test_onnx_shared_weight_stays() -> None:
    shape = (2, 3, 8, 8)
    source = _export(_model(Case(TiedPlain, shape, ())), shape)
    analysis = _erase_analysis(frontends.load(source))
    sid = _structure(analysis, "/blocks.0/", onnx_names=True)
    plan = analysis.plan([sid])
    first = [n for n in source.graph.node if "/blocks.0/first/" in n.name]
    assert (
        first
        and first[0].input[1] == next(n for n in source.graph.node if "/blocks.1/first/" in n.name).input[1]
    )
    shared = first[0].input[1]
    # A shared ONNX constant is a value, not a tie: block 0's read is erased with block 0, block 1 reads
    # its own alias of the weight, which stays.
    assert not [p for p in plan.removed_params if p.startswith(f"{shared}@")]
    small = construct.erase_onnx(source, analysis, [sid])
    onnx.checker.check_model(small, full_check=True)
    assert shared in {t.name for t in small.graph.initializer}
    assert not [n for n in small.graph.node if "/blocks.0/" in n.name]
    assert construct.verify(source, small, plan.removed).passed


def test_onnx_erase_reads_external_data(tmp_path) -> None:
    """Weights stored next to the model are read for the erased copy, which holds them itself."""
    case = CASES["concat-skip"]
    source = _export(_model(case), case.shape)
    path = tmp_path / "model.onnx"
    onnx.save_model(source, str(path), save_as_external_data=True, location="model.data", size_threshold=0)
    analysis = _erase_analysis(frontends.load(str(path)))
    sid = _structure(analysis, "/b/", onnx_names=True)
    small = construct.erase_onnx(str(path), analysis, [sid])
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in small.graph.initializer)
    onnx.checker.check_model(small, full_check=True)
    assert construct.verify(str(path), small, analysis.plan([sid]).removed).passed
    construct.save_onnx(small, tmp_path / "small.onnx")
    assert construct.verify(str(path), str(tmp_path / "small.onnx"), analysis.plan([sid]).removed).passed


def test_erased_structures_is_a_valid_selection() -> None:
    """Every candidate of a DARTS cell at zero cannot all go: the zero structures are taken in id
    order while the erasure stays valid, so one candidate (zero, harmless) stays."""
    case = CASES["darts-one"]
    model = _model(case)
    analysis = _erase_analysis(frontends.load(model, (torch.randn(case.shape),)))
    ops = sorted({_structure(analysis, f"cell.ops.{i}.") for i in range(3)})
    assert len(ops) == 3 and not analysis.valid(ops)
    arrays = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    for sid in ops:
        for p in analysis.structures[sid].params:
            arrays[p][...] = 0
    chosen = construct.erased_structures(arrays, analysis)
    assert chosen == ops[:2] and analysis.valid(chosen)
