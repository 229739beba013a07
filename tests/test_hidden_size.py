"""Hidden-size (embedding dimension) pruning, exact by construct (docs/hidden_size.md).

A pre-norm block with tied embeddings — token and position embeddings, a norm, an MLP written back into
the residual stream, a final norm and an LM head reading the token embedding transposed — built by hand
in ONNX (tests/onnx_builder.py) and as a small torch module, with every normalization variant: ONNX
LayerNormalization (opset 17 and 18), RMSNormalization (opset 23), RMSNorm written out (Pow, ReduceMean,
Add, Sqrt, Reciprocal, Mul), onnxruntime's SimplifiedLayerNormalization, SkipLayerNormalization and
SkipSimplifiedLayerNormalization; nn.LayerNorm, F.layer_norm, nn.RMSNorm and an HF-style RMSNorm module.
The expected groups are written out by hand; each model is pruned at half of every prunable group and
equals the zeroed original within 1e-4 (onnxruntime, torch), while the unzeroed original differs.
Tiny Hugging Face BERT, GPT-2 and LLaMA LM-head models gain a hidden-size group and prune exactly from
torch and from their ONNX export (slow).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

import graphcore
from construct.torch_save import load_small, save_small
from construct.torch_verify import randomize_
from construct.verify import compare_models
from frontends.torch_frontend import load_torch
from tests.helpers import analyze, assert_exact, group_of, params_of, random_removal
from tests.onnx_builder import G
from zigraph.prune_check import prune_check

V, S, D, F_ = 20, 6, 8, 12
MS = "com.microsoft"

# The hand-computed groups of the block (parameter, axis): the residual stream D is written by the
# token and position embeddings and the MLP's second layer, normalized by both norms, read by the MLP's
# first layer and by the LM head (the token embedding again, through its alias for the second read).
MLP = {("fc1.w", 1), ("fc1.b", 0), ("fc2.w", 0)}


def _hidden(norm: str) -> set[tuple[str, int]]:
    out = {("wte", 1), ("wpe", 1), ("fc1.w", 0), ("fc2.w", 1), ("fc2.b", 0), ("ln1.g", 0), ("lnf.g", 0)}
    if norm in ("ln", "ln17", "skip"):
        out |= {("ln1.b", 0), ("lnf.b", 0)}
    return out


def _norm(g: G, x: str, name: str, norm: str) -> str:
    scale = g.w(f"{name}.g", (D,), positive=True)
    if norm in ("ln", "ln17", "skip"):
        return g.op("LayerNormalization", [x, scale, g.w(f"{name}.b", (D,))], axis=-1, epsilon=1e-5)
    if norm == "rms":
        return g.op("RMSNormalization", [x, scale], axis=-1, epsilon=1e-5)
    if norm in ("simplified", "skipsimplified"):
        return g.op("SimplifiedLayerNormalization", [x, scale], axis=-1, epsilon=1e-5)
    assert norm == "written"  # HF LlamaRMSNorm as exported: x * 1 / sqrt(mean(x^2) + eps) * g
    mean = g.op(
        "ReduceMean", [g.op("Pow", [x, g.const(f"{name}.two", 2.0, np.float32)]), g.const(f"{name}.ax", [-1])]
    )
    eps = g.const(f"{name}.eps", 1e-5, np.float32)
    inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [mean, eps])])])
    return g.op("Mul", [g.op("Mul", [x, inv]), scale])


def block_onnx(norm: str) -> onnx.ModelProto:
    """ids -> wte[ids] + wpe -> x + fc2(relu(fc1(norm(x)))) -> norm -> @ wte^T (tied LM head)."""
    opset = {"ln17": 17, "rms": 23, "simplified": 17, "skip": 17, "skipsimplified": 17}.get(norm, 18)
    g = G(opset=opset)
    ids = g.input("ids", [1, S], TensorProto.INT64)
    wte = g.w("wte", (V, D))
    x = g.op("Add", [g.op("Gather", [wte, ids], axis=0), g.w("wpe", (S, D))])
    h = _norm(g, x, "ln1", norm)
    u = g.op("Relu", [g.op("Add", [g.op("MatMul", [h, g.w("fc1.w", (D, F_))]), g.w("fc1.b", (F_,))])])
    down = g.op("MatMul", [u, g.w("fc2.w", (F_, D))])
    if norm == "skip":  # LayerNorm(x + down + fc2.b), the sum unused
        args = [x, down, g.w("lnf.g", (D,), positive=True), g.w("lnf.b", (D,)), g.w("fc2.b", (D,))]
        h = g.op("SkipLayerNormalization", args, domain=MS, epsilon=1e-5)
        g.shape_of(h, [1, S, D])
    elif norm == "skipsimplified":  # RMSNorm(x + down + fc2.b), and the sum read by a second output
        args = [x, down, g.w("lnf.g", (D,), positive=True), g.w("fc2.b", (D,))]
        h, _, _, total = g.op("SkipSimplifiedLayerNormalization", args, n_out=4, domain=MS, epsilon=1e-5)
        g.shape_of(h, [1, S, D])
        g.shape_of(total, [1, S, D])
        g.output(g.op("ReduceSum", [total, g.const("sum.ax", [-1])], keepdims=0))
    else:
        x = g.op("Add", [x, g.op("Add", [down, g.w("fc2.b", (D,))])])
        h = _norm(g, x, "lnf", norm)
    logits = g.op("MatMul", [h, g.op("Transpose", [wte], perm=[1, 0])])
    g.output(logits)
    if norm not in ("simplified", "skip", "skipsimplified"):
        return g.model()
    model = g.model(domains={MS: 1})
    for out in model.graph.output:  # behind onnxruntime's ops ONNX's inference cannot give the shape
        if out.name == logits:
            out.type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, [1, S, V]))
    return model


ONNX_NORMS = ["ln", "ln17", "rms", "written", "simplified", "skip", "skipsimplified"]


@pytest.mark.parametrize("norm", ONNX_NORMS)
def test_onnx_block_hidden_group_prunes_exactly(norm):
    model = block_onnx(norm)
    a = analyze(model)
    assert not a.unknown_ops, a.unknown_ops
    hidden = group_of(a, "fc1.w", 0)
    expected = _hidden(norm)
    got = {(p.split("@")[0], ax) for p, ax in params_of(hidden)}
    assert hidden.prunable, hidden.reason
    assert hidden.size == D and got == expected, sorted(params_of(hidden))
    # the LM head's read of the tied embedding is in the same ZIG (an alias of 'wte')
    assert any(p.startswith("wte@") and ax == 1 for p, ax in params_of(hidden))
    mlp = group_of(a, "fc1.w", 1)
    assert mlp.prunable and params_of(mlp) == MLP
    assert group_of(a, "wte", 0).prunable is False  # vocabulary rows: indexed and a graph output
    removed = random_removal(a, np.random.default_rng(0), fraction=0.5)
    small, _, _ = assert_exact(a, removed, rtol=1e-4)
    assert not compare_models(model, small, rtol=1e-4).passed, "the unzeroed original equals the small model"
    embed = [t for t in small.graph.initializer if t.name.startswith("wte")]
    assert [list(t.dims) for t in embed] == [[V, D // 2]], "the tied embedding is one sliced tensor"


def _decomposed_layernorm(g: G, x: str, name: str) -> str:
    """LayerNorm as opset < 17 exporters write it: (x - mean) / sqrt(mean((x - mean)^2) + eps) * g + b."""
    centered = g.op("Sub", [x, g.op("ReduceMean", [x], axes=[-1])])  # opset 16: axes is an attribute
    var = g.op("ReduceMean", [g.op("Pow", [centered, g.const(f"{name}.two", 2.0, np.float32)])], axes=[-1])
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{name}.eps", 1e-5, np.float32)])])
    return g.op(
        "Add", [g.op("Mul", [g.op("Div", [centered, std]), g.w(f"{name}.g", (D,))]), g.w(f"{name}.b", (D,))]
    )


def test_decomposed_layernorm_keeps_the_hidden_size_with_its_reason():
    """x - mean is not zero at a removed channel, so the variance's mean would see it: unprunable, and
    the reason names the mean; the MLP still prunes exactly."""
    g = G(opset=16)
    x = g.input("x", [1, S, D])
    x = g.op("MatMul", [x, g.w("proj.w", (D, D))])
    h = _decomposed_layernorm(g, x, "ln")
    g.output(
        g.op("MatMul", [g.op("Relu", [g.op("MatMul", [h, g.w("fc1.w", (D, F_))])]), g.w("fc2.w", (F_, D))])
    )
    model = g.model()
    a = analyze(model)
    hidden = group_of(a, "proj.w", 1)
    assert not hidden.prunable and "ReduceMean" in hidden.reason, hidden.reason
    assert group_of(a, "fc1.w", 1).prunable
    removed = random_removal(a, np.random.default_rng(0), fraction=0.5)
    assert_exact(a, removed, rtol=1e-4)


def test_mean_of_a_channel_that_is_not_zero_stays_unprunable():
    """mean(sigmoid(x W)) over the channel axis: a removed channel is 0.5, not 0, so the mean counts it."""
    g = G()
    x = g.input("x", [2, D])
    y = g.op("Sigmoid", [g.op("MatMul", [x, g.w("w", (D, F_))])])
    g.output(g.op("ReduceMean", [y, g.const("ax", [1])], keepdims=1))
    a = analyze(g.model())
    grp = group_of(a, "w", 1)
    assert not grp.prunable and "ReduceMean averages over this axis" in grp.reason, grp.reason


def test_mean_over_a_zero_channel_is_rescaled():
    """mean(relu(x W + b)) over channels: exact once the mean keeps its count (ReduceMean * d / D)."""
    g = G()
    x = g.input("x", [2, D])
    y = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.w("w", (D, F_))]), g.w("b", (F_,))])])
    g.output(g.op("ReduceMean", [y, g.const("ax", [1])], keepdims=1))
    model = g.model()
    a = analyze(model)
    assert group_of(a, "w", 1).prunable
    removed = random_removal(a, np.random.default_rng(1), fraction=0.5)
    small, _, _ = assert_exact(a, removed, rtol=1e-4)
    assert not compare_models(model, small, rtol=1e-4).passed
    # pruned again: the second rewrite's node names must not collide with the first's
    again = analyze(small)
    assert_exact(again, random_removal(again, np.random.default_rng(2), fraction=0.5), rtol=1e-4)


@pytest.mark.parametrize("case", ["lp", "eps0"])
def test_unknown_or_unsafe_normalizations_stay_pinned(case):
    g = G()
    x = g.input("x", [1, S, D])
    x = g.op("MatMul", [x, g.w("proj.w", (D, D))])
    if case == "lp":
        h = g.op("LpNormalization", [x], axis=-1, p=2)
    else:
        h = g.op("LayerNormalization", [x, g.w("ln.g", (D,)), g.w("ln.b", (D,))], axis=-1, epsilon=0.0)
    g.output(g.op("MatMul", [h, g.w("out.w", (D, 3))]))
    grp = group_of(analyze(g.model()), "proj.w", 1)
    assert not grp.prunable
    assert ("LpNormalization" in grp.reason) if case == "lp" else ("epsilon 0" in grp.reason), grp.reason


# -- torch -----------------------------------------------------------------------------------------------
class WrittenRMSNorm(nn.Module):
    """Hugging Face's LlamaRMSNorm / T5LayerNorm: pow -> mean(-1) -> + eps -> rsqrt -> * x -> * weight."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


class FunctionalLayerNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, 1e-5)


class FunctionalRMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight)  # eps None: the dtype's machine epsilon


NORMS = {
    "layernorm": lambda: nn.LayerNorm(D),
    "functional": lambda: FunctionalLayerNorm(D),
    "rmsnorm": lambda: nn.RMSNorm(D, eps=1e-6),
    "functional_rms": lambda: FunctionalRMSNorm(D),
    "written": lambda: WrittenRMSNorm(D),
}


class Block(nn.Module):
    """The ONNX block above as a torch module, the LM head tied to the token embedding."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.wte = nn.Embedding(V, D)
        self.wpe = nn.Parameter(torch.randn(S, D))
        self.ln1, self.lnf = NORMS[norm](), NORMS[norm]()
        self.fc1, self.fc2 = nn.Linear(D, F_), nn.Linear(F_, D)
        self.head = nn.Linear(D, V, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe
        x = x + self.fc2(torch.relu(self.fc1(self.ln1(x))))
        return self.head(self.lnf(x))


class ExportedBlock(Block):
    """The block with Python control flow on a size: torch.fx cannot trace it, torch.export can, and its
    norms arrive as ATen ops (aten.layer_norm, aten.rms_norm, aten.mean)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe
        for _ in range(int(ids.shape[0])):
            x = x + self.fc2(torch.relu(self.fc1(self.ln1(x))))
        return self.head(self.lnf(x))


@pytest.mark.parametrize(
    "norm",
    [
        *NORMS,
        *(pytest.param(f"export-{n}", marks=pytest.mark.slow) for n in ("layernorm", "rmsnorm", "written")),
    ],
)
def test_torch_block_hidden_group_prunes_exactly(norm, tmp_path):
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    exported = norm.startswith("export-")
    norm = norm.removeprefix("export-")
    model = randomize_(ExportedBlock(norm) if exported else Block(norm)).eval()
    ids = torch.randint(0, V, (1, S))
    graph = load_torch(model, (ids,))
    assert graph.meta["tracer"] == ("export" if exported else "symbolic_trace")
    a = graphcore.analyze(graph)
    hidden = group_of(a, "fc1.weight", 1)
    expected = {("wte.weight", 1), ("wpe", 1), ("fc1.weight", 1), ("fc2.weight", 0), ("fc2.bias", 0)}
    expected |= {("ln1.weight", 0), ("lnf.weight", 0)}
    if norm in ("layernorm", "functional"):
        expected |= {("ln1.bias", 0), ("lnf.bias", 0)}
    assert hidden.prunable and hidden.size == D and params_of(hidden) == expected, hidden
    assert params_of(group_of(a, "fc1.weight", 0)) == {("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)}
    r = prune_check(
        model, (ids,), sparsity=0.5, criterion="random", onnx_path=str(tmp_path / "small.onnx"), multiple=1
    )
    assert r.torch_rel <= 1e-4 and r.ort_rel is not None and r.ort_rel <= 1e-4, r
    small = r.small
    with torch.no_grad():
        assert not torch.allclose(small(ids), model(ids), rtol=1e-4, atol=1e-4)
    if exported:  # a torch.export graph module: saved by torch.export, not by save_small
        return
    assert small.wte.weight.shape == (V, D // 2) and small.head.weight is small.wte.weight
    save_small(small, tmp_path / "small.pt")
    again = load_small(tmp_path / "small.pt")
    with torch.no_grad():
        torch.testing.assert_close(again(ids), small(ids))


@pytest.mark.parametrize("case", ["shared", "no_weight"])
def test_torch_rmsnorm_called_twice_or_without_weight(case, tmp_path):
    """One nn.RMSNorm module called at both places is folded once; one without weight is rewritten at
    each call (nothing to fold into)."""
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = Block("rmsnorm")
    if case == "shared":
        model.lnf = model.ln1
    else:
        model.ln1, model.lnf = (
            nn.RMSNorm(D, elementwise_affine=False),
            nn.RMSNorm(D, elementwise_affine=False),
        )
    model = randomize_(model).eval()
    ids = torch.randint(0, V, (1, S))
    a = graphcore.analyze(load_torch(model, (ids,)))
    hidden = group_of(a, "fc1.weight", 1)
    assert hidden.prunable and (("ln1.weight", 0) in hidden.params) == (case == "shared"), hidden
    r = prune_check(
        model, (ids,), sparsity=0.5, criterion="random", onnx_path=str(tmp_path / "small.onnx"), multiple=1
    )
    assert r.torch_rel <= 1e-4 and r.ort_rel is not None and r.ort_rel <= 1e-4, r
    with torch.no_grad():
        assert not torch.allclose(r.small(ids), model(ids), rtol=1e-4, atol=1e-4)


# -- Hugging Face ----------------------------------------------------------------------------------------
def hf_lm(name: str) -> nn.Module:
    """The small Hugging Face LM ``name`` with random weights (seeded), in eval mode."""
    pytest.importorskip("transformers")
    from bench.hidden_size import hf_lm as build

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    return randomize_(build(name)).eval()


def _hidden_groups(a) -> list:
    return [g for g in a.groups if g.size == 32 and g.prunable]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_hf_hidden_size_prunes_exactly_from_torch(name, tmp_path):
    model = hf_lm(name)
    ids = torch.randint(0, 100, (1, 8))
    a = graphcore.analyze(load_torch(model, (ids,)))
    assert _hidden_groups(a), [(g.size, g.reason) for g in a.groups]
    r = prune_check(
        model, (ids,), sparsity=0.5, criterion="l2", onnx_path=str(tmp_path / "small.onnx"), multiple=1
    )
    assert r.torch_rel <= 1e-4 and r.ort_rel is not None and r.ort_rel <= 1e-4, r
    assert r.kept <= 0.45, r  # heads and MLP widths alone keep 58-67%


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_hf_hidden_size_prunes_exactly_from_onnx(name, tmp_path):
    model = hf_lm(name)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (torch.randint(0, 100, (1, 8)),), str(path), dynamo=True, opset_version=18,
                      external_data=False, verbose=False)  # fmt: skip
    full = onnx.load(path)
    a = analyze(full)
    assert _hidden_groups(a), [(g.size, g.reason) for g in a.groups]
    removed = random_removal(a, np.random.default_rng(0), fraction=0.5)
    small, _, _ = assert_exact(a, removed, rtol=1e-4)
    assert not compare_models(full, small, rtol=1e-4).passed
    assert any(n.op_type in ("LayerNormalization", "ReduceMean") for n in full.graph.node)
