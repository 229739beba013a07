"""Hand-written torch models, one per pattern: random prunable ZIGs are zeroed and removed exactly.

For every model: trace + analyze, then for a few random selections (never emptying a group) zero the
selected ZIGs in a deep copy, build the small module with ``construct.to_torch`` and compare outputs
(max error relative to the output scale ≤ 1e-4). The user's module, its state dict and its training flag
must be unchanged afterwards, and the small module must be trainable.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphcore
from construct.torch_construct import to_torch
from construct.torch_verify import randomize_, verify_torch, zeroed_copy
from construct.torch_zeros import removed_from_zeros
from frontends.torch_frontend import load_torch
from graphcore.ops.head_dims import whole_heads


# -- models -----------------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.b = nn.Sequential(nn.Conv2d(24, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.b(self.a(y)))
        return self.head(F.adaptive_avg_pool2d(y, (1, 1)).flatten(1))


class ConcatSplit(nn.Module):
    """cat of two branches, chunk and split with literal sizes, a literal channel slice."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Conv2d(3, 8, 1)
        self.r = nn.Conv2d(3, 12, 3, padding=1)
        self.c1 = nn.Conv2d(10, 4, 1)
        self.c2 = nn.Conv2d(10, 4, 1)
        self.c3 = nn.Conv2d(12, 4, 1)
        self.c4 = nn.Conv2d(8, 4, 1)
        self.c5 = nn.Conv2d(20, 4, 1)

    def forward(self, x):
        y = torch.cat([torch.relu(self.l(x)), torch.relu(self.r(x))], dim=1)  # 20 channels
        a, b = y.chunk(2, dim=1)
        p, q = torch.split(y, [12, 8], dim=1)
        s = y[:, 4:16]
        return self.c1(a) + self.c2(b) + self.c3(p) + self.c4(q) + self.c3(s) + self.c5(y)


class Grouped(nn.Module):
    """Depthwise and grouped convolutions (MobileNet / ResNeXt style)."""

    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.gc = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.out = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        y = F.relu6(self.bn(self.pw(x)))
        y = F.hardswish(self.dw(y))
        y = F.silu(self.gc(y))
        return self.out(y)


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 24, 3, padding=1)
        self.fc1 = nn.Conv2d(24, 6, 1)
        self.fc2 = nn.Conv2d(6, 24, 1)
        self.proj = nn.Conv2d(24, 8, 1)

    def forward(self, x):
        y = F.gelu(self.conv(x))
        s = y.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return self.proj(y * s)


class FlattenLinear(nn.Module):
    """Flatten into a Linear, a view with a hard-coded channel count, a view with -1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(12, 10, 1)
        self.fc = nn.Linear(12 * 4 * 4, 7)
        self.fc2 = nn.Linear(10 * 16, 7)
        self.fc3 = nn.Linear(12 * 16, 7)

    def forward(self, x):
        y = torch.relu(self.conv(x))  # [N, 12, 4, 4]
        a = self.fc(torch.flatten(y, 1))
        b = self.fc2(self.conv2(y).view(x.size(0), 10 * 16))
        c = self.fc3(y.reshape(-1, 12 * 4 * 4))
        return a + b + c


class Tied(nn.Module):
    """One parameter used by two modules, a module used twice, a tied embedding / output head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.l1 = nn.Linear(16, 24)
        self.l2 = nn.Linear(24, 16)
        self.shared = nn.Linear(16, 16)
        self.head = nn.Linear(16, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids)
        h = h + self.l2(F.gelu(self.l1(h)))
        h = self.shared(torch.relu(self.shared(h)))
        return self.head(h)


class Attention(nn.Module):
    """Heads from view/transpose with literal head counts, SDPA, merge with a literal width."""

    def __init__(self, dim: int = 32, heads: int = 4, head_dim: int = 8) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 64)
        self.fc2 = nn.Linear(64, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        q = q.view(b, n, 4, 8).transpose(1, 2)
        k = k.view(b, n, 4, 8).transpose(1, 2)
        v = v.view(b, n, 4, 8).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, 32))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ManualAttention(nn.Module):
    """Hand-written softmax attention with a scale from the original head size."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(16, 24)
        self.k = nn.Linear(16, 24)
        self.v = nn.Linear(16, 24)
        self.o = nn.Linear(24, 16)
        self.scale = 1.0 / math.sqrt(6)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).reshape(b, n, 4, 6).permute(0, 2, 1, 3)
        k = self.k(x).reshape(b, n, 4, 6).permute(0, 2, 3, 1)
        v = self.v(x).reshape(b, n, 4, 6).permute(0, 2, 1, 3)
        att = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)
        return self.o(torch.matmul(att, v).permute(0, 2, 1, 3).reshape(b, n, 24))


class Mha(nn.Module):
    """nn.MultiheadAttention, batch-first and sequence-first."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(12, 16)
        self.att = nn.MultiheadAttention(16, 4, batch_first=True)
        self.att2 = nn.MultiheadAttention(16, 2)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    def forward(self, x):
        h = self.inp(x)
        h = h + self.att(h, h, h, need_weights=False)[0]
        t = h.transpose(0, 1)
        out, w = self.att2(t, t, t)
        h = h + out.transpose(0, 1)
        return self.mlp(h) + w.sum()


class ChannelsLast(nn.Module):
    """ConvNeXt block: depthwise conv, permute → LayerNorm → Linear → GELU → Linear → permute."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, stride=2)
        self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.norm = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 64)
        self.fc2 = nn.Linear(64, 16)
        self.gamma = nn.Parameter(torch.full((16,), 0.5))

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class Misc(nn.Module):
    """GroupNorm, ConvTranspose, PReLU, functional conv with raw parameters, expand, in-place ops."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.up = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.act = nn.PReLU(12)
        self.w = nn.Parameter(torch.randn(10, 12, 1, 1) * 0.3)
        self.bias = nn.Parameter(torch.zeros(10))
        self.scale = nn.Parameter(torch.ones(1, 10, 1, 1))
        self.fc = nn.Linear(10, 4)
        self.bn1d = nn.BatchNorm1d(4)

    def forward(self, x):
        y = self.gn(self.c1(x))
        y.relu_()
        y = self.act(self.up(y))
        y = F.conv2d(y, self.w, self.bias)
        y += self.scale.expand(x.shape[0], -1, 1, 1)
        return self.bn1d(self.fc(y.amax(dim=(2, 3))))


class ShuffleBlock(nn.Module):
    """Channel shuffle with sizes computed from x.size(): the shuffled axis must stay pinned."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(16, 16, 1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        n, c, h, w = y.size()
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        l, r = y.chunk(2, dim=1)
        return torch.cat([l, self.c(r)], dim=1)


class SingleHead(nn.Module):
    """SDPA on un-split projections: the head width itself is prunable, the scale must not follow."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 12), nn.Linear(16, 12), nn.Linear(16, 10)
        self.o = nn.Linear(10, 16)

    def forward(self, x):
        return self.o(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x)))


class Regularized(nn.Module):
    """Functional dropout and torchvision stochastic depth, both driven by ``self.training``."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.a = nn.Linear(8, 32)
        self.b = nn.Linear(32, 8)
        self.sd = StochasticDepth(0.5, "row")

    def forward(self, x):
        h = F.dropout(F.relu(self.a(x)), 0.3, self.training)
        return x + self.sd(self.b(h))


class SuperResolution(nn.Module):
    """ESPCN-style: pixel shuffle (module and function), unshuffle, padding and upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.b = nn.Conv2d(4, 8, 3)
        self.c = nn.Conv2d(32, 12, 1)
        self.d = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        y = self.shuffle(torch.sigmoid(self.a(x)))  # 16 -> 4 channels, 2x size
        y = torch.relu(self.b(F.pad(y, (1, 1, 1, 1), mode="reflect")))
        y = F.pixel_unshuffle(y, 2)  # 8 -> 32 channels
        y = F.pixel_shuffle(self.c(y), 2)  # 12 -> 3 channels
        return self.d(F.interpolate(y, scale_factor=2.0, mode="nearest"))


def _hidden_mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """A helper torch.fx keeps as one call (``torch.fx.wrap``, as torchvision's swin attention is)."""
    return F.linear(torch.relu(F.linear(x, w1, b1)), w2)


def _data_dependent(x: torch.Tensor) -> torch.Tensor:
    """A wrapped helper torch.export cannot trace either: it branches on a tensor's value."""
    return x * 2 if bool(x.sum() > 0) else x


torch.fx.wrap("_hidden_mlp")
torch.fx.wrap("_data_dependent")


class WrappedHelper(nn.Module):
    """The hidden width of ``fc1``/``fc2`` lives only inside a function torch.fx does not open."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 12, bias=False)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        return self.head(_hidden_mlp(x, self.fc1.weight, self.fc1.bias, self.fc2.weight))


def _rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return table[idx]


torch.fx.wrap("_rows")


class IndexedTable(nn.Module):
    """A position table read by an index tensor (swin's relative position bias): ``aten.index`` on
    the rows, so the table's columns follow the channels they are added to."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.table = nn.Parameter(torch.randn(7, 16))
        self.register_buffer("idx", torch.tensor([6, 0, 3, 3, -2]))
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x) + _rows(self.table, self.idx)))


class ZerosState(nn.Module):
    """A zero state sized by the hidden width (Mamba's ``torch.zeros(batch, intermediate, state)``):
    the created tensor follows the channel, its literal is rewritten."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        s = torch.zeros((x.size(0), 16, 3)).transpose(1, 2) + torch.ones(size=(x.size(0), 3, 16))
        return self.fc2(torch.relu(self.fc1(x) * s))


def _state(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], 3, 16) + 0.5


torch.fx.wrap("_state")


class ZerosStateExported(ZerosState):
    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x) + _state(x)))


class OpaqueHelper(WrappedHelper):
    def forward(self, x):
        return self.head(_data_dependent(self.fc2(torch.relu(self.fc1(x)))))


CASES = {
    "residual": (Residual, lambda: torch.randn(2, 3, 8, 8)),
    "concat_split": (ConcatSplit, lambda: torch.randn(2, 3, 6, 6)),
    "grouped": (Grouped, lambda: torch.randn(2, 3, 6, 6)),
    "squeeze_excite": (SqueezeExcite, lambda: torch.randn(2, 3, 6, 6)),
    "flatten_linear": (FlattenLinear, lambda: torch.randn(2, 3, 8, 8)),
    "tied": (Tied, lambda: torch.randint(0, 20, (2, 5))),
    "attention": (Attention, lambda: torch.randn(2, 5, 32)),
    "manual_attention": (ManualAttention, lambda: torch.randn(2, 5, 16)),
    "mha": (Mha, lambda: torch.randn(2, 5, 12)),
    "channels_last": (ChannelsLast, lambda: torch.randn(2, 3, 8, 8)),
    "misc": (Misc, lambda: torch.randn(2, 3, 6, 6)),
    "shuffle": (ShuffleBlock, lambda: torch.randn(2, 3, 6, 6)),
    "single_head": (SingleHead, lambda: torch.randn(2, 5, 16)),
    "regularized": (Regularized, lambda: torch.randn(4, 8)),
    "super_resolution": (SuperResolution, lambda: torch.randn(2, 3, 4, 4)),
    "wrapped_helper": (WrappedHelper, lambda: torch.randn(2, 5, 12)),
    "indexed_table": (IndexedTable, lambda: torch.randn(2, 5, 12)),
    "zeros_state": (ZerosState, lambda: torch.randn(2, 3, 12)),
    "zeros_state_exported": (ZerosStateExported, lambda: torch.randn(2, 3, 12)),
}


def _random_removal(analysis, rng: np.random.Generator) -> np.ndarray:
    chosen: list[int] = []
    for g in analysis.groups:
        if g.prunable:
            k = int(rng.integers(1, g.size - g.min_keep + 1)) if g.size > g.min_keep else 0
            chosen.extend(rng.choice(g.zig_ids, size=k, replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def _build(name: str, train: bool = False):
    torch.manual_seed(0)
    cls, make_x = CASES[name]
    model = randomize_(cls(), seed=1)
    model.train(train)
    return model, make_x()


def _group_with(analysis, param: str, axis: int):
    hits = [g for g in analysis.groups if (param, axis) in g.params]
    assert len(hits) == 1, f"{param} axis {axis}: {[g.params for g in analysis.groups]}"
    return hits[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_pattern_is_pruned_exactly(name):
    model, x = _build(name, train=(name == "residual"))
    flags = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analysis = graphcore.analyze(load_torch(model, x))
    assert analysis.prunable_groups, [(g.params, g.reason) for g in analysis.groups]
    rng = np.random.default_rng(0)
    for _ in range(3):
        sel = _random_removal(analysis, rng)
        zeroed = zeroed_copy(model, analysis, sel)
        assert set(removed_from_zeros(zeroed, analysis).tolist()) == set(sel.tolist())
        small = to_torch(zeroed, analysis)
        rep = verify_torch(zeroed, small, x)
        assert rep.max_rel <= 1e-4, (name, rep)
        n_small = sum(p.numel() for p in small.parameters())
        assert n_small < sum(p.numel() for p in model.parameters())
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_small_module_is_trainable():
    model, x = _build("residual")
    analysis = graphcore.analyze(load_torch(model, x))
    sel = _random_removal(analysis, np.random.default_rng(1))
    small = to_torch(zeroed_copy(model, analysis, sel), analysis)
    assert small.training == model.training
    params = list(small.parameters())
    assert params and all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    small.train()
    opt = torch.optim.SGD(small.parameters(), lr=0.1)
    loss = small(x).pow(2).mean()
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in params)


def test_expected_groups():
    """The structures the patterns are about: residual ties, heads, hidden widths, pinned shuffles."""
    a = graphcore.analyze(load_torch(*_build("residual")))
    tied = _group_with(a, "stem.0.weight", 0)
    assert ("b.0.weight", 0) in tied.params and ("head.weight", 1) in tied.params and tied.prunable

    a = graphcore.analyze(load_torch(*_build("attention")))
    dims = _group_with(a, "proj.weight", 1)  # value/output head dimension j of every head is one channel
    assert dims.size == 8 and dims.prunable
    with whole_heads():
        a = graphcore.analyze(load_torch(*_build("attention")))
    heads = _group_with(a, "proj.weight", 1)
    assert heads.size == 4 and heads.prunable
    assert _group_with(a, "fc1.weight", 0).prunable
    assert not _group_with(a, "norm.weight", 0).prunable  # LayerNorm over the residual width

    with whole_heads():
        a = graphcore.analyze(load_torch(*_build("mha")))
    assert _group_with(a, "att.out_proj.weight", 1).size == 4
    assert _group_with(a, "att.out_proj.weight", 1).prunable

    a = graphcore.analyze(load_torch(*_build("flatten_linear")))
    g = _group_with(a, "conv.weight", 0)
    assert g.prunable and ("fc.weight", 1) in g.params and ("fc3.weight", 1) in g.params

    a = graphcore.analyze(load_torch(*_build("shuffle")))
    assert not _group_with(a, "b.weight", 0).prunable

    a = graphcore.analyze(load_torch(*_build("grouped")))
    assert _group_with(a, "pw.weight", 0).size == 4  # 4 groups of the grouped conv, depthwise in between

    a = graphcore.analyze(load_torch(*_build("super_resolution")))
    shallow = _group_with(a, "a.weight", 0)  # torch's pixel shuffle: a channel owns 4 consecutive ones
    assert shallow.prunable and shallow.size == 4 and ("b.weight", 1) in shallow.params
    assert _group_with(a, "b.weight", 0).prunable and ("c.weight", 1) in _group_with(a, "b.weight", 0).params

    a = graphcore.analyze(load_torch(*_build("tied")))
    assert "head.weight" not in a.param_shapes and "emb.weight" in a.param_shapes


def test_wrapped_helpers_are_traced_through():
    """A ``torch.fx.wrap`` function is opaque to torch.fx; torch.export opens it, so the channels it
    reads are prunable (swin's ``shifted_window_attention`` left every attention width pinned). When
    torch.export cannot trace it either, the torch.fx graph stands and the call blocks its channels."""
    model, x = _build("wrapped_helper")
    graph = load_torch(model, x)
    assert graph.meta["tracer"] == "export"
    a = graphcore.analyze(graph)
    hidden = _group_with(a, "fc1.weight", 0)
    assert hidden.prunable and ("fc2.weight", 1) in hidden.params

    a = graphcore.analyze(load_torch(*_build("indexed_table")))
    assert ("table", 1) in _group_with(a, "fc1.weight", 0).params and _group_with(a, "fc1.weight", 0).prunable

    for name in ("zeros_state", "zeros_state_exported"):
        assert _group_with(graphcore.analyze(load_torch(*_build(name))), "fc1.weight", 0).prunable, name

    model = randomize_(OpaqueHelper(), seed=1).eval()
    graph = load_torch(model, x)
    assert graph.meta["tracer"] == "symbolic_trace"
    a = graphcore.analyze(graph)
    assert _group_with(a, "fc1.weight", 0).prunable  # read by fc2 only: not blocked by the opaque call
    blocked = _group_with(a, "fc2.weight", 0)
    assert not blocked.prunable and "_data_dependent" in (blocked.reason or "")


def test_mha_heads_shrink_into_pruned_module():
    from construct.torch_modules import PrunedMultiheadAttention

    model, x = _build("mha")
    with whole_heads():
        a = graphcore.analyze(load_torch(model, x))
    heads = _group_with(a, "att.out_proj.weight", 1)
    sel = heads.zig_ids[:2]
    small = to_torch(zeroed_copy(model, a, sel), a)
    att = small.get_submodule("att")
    assert isinstance(att, PrunedMultiheadAttention) and att.num_heads == 2 and att.head_dim == 4
    assert verify_torch(zeroed_copy(model, a, sel), small, x).max_rel <= 1e-4


def test_removed_never_empties_a_group():
    model, x = _build("squeeze_excite")
    a = graphcore.analyze(load_torch(model, x))
    g = _group_with(a, "fc1.weight", 0)
    zeroed = zeroed_copy(model, a, g.zig_ids)  # every channel of the group is zero
    removed = removed_from_zeros(zeroed, a)
    assert len(set(removed.tolist()) & set(g.zig_ids.tolist())) == g.size - g.min_keep
    small = to_torch(zeroed, a)
    assert small.get_submodule("fc1").out_channels == g.min_keep
    assert verify_torch(zeroed, small, x).max_rel <= 1e-4


def test_user_module_untouched_by_tracing_in_train_mode():
    model, x = _build("misc", train=True)
    sd = copy.deepcopy(model.state_dict())
    load_torch(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_single_head_attention_keeps_its_scale():
    model, x = _build("single_head")
    a = graphcore.analyze(load_torch(model, x))
    g = _group_with(a, "q.weight", 0)
    assert g.prunable and ("k.weight", 0) in g.params
    small = to_torch(zeroed_copy(model, a, g.zig_ids[:5]), a)
    sdpa = next(n for n in small.graph.nodes if n.target is F.scaled_dot_product_attention)
    assert sdpa.kwargs["scale"] == pytest.approx(1 / math.sqrt(12))
    assert verify_torch(zeroed_copy(model, a, g.zig_ids[:5]), small, x).max_rel <= 1e-4


def test_training_switches_follow_the_small_module():
    model, x = _build("regularized")
    a = graphcore.analyze(load_torch(model, x))
    small = to_torch(zeroed_copy(model, a, _group_with(a, "a.weight", 0).zig_ids[:10]), a)
    kinds = {type(m).__name__ for n, m in small.named_children() if n.startswith("train_")}
    assert kinds == {"Dropout", "StochasticDepth"}
    small.train()
    torch.manual_seed(0)
    first = small(x)
    assert not torch.equal(first, small(x))  # dropout and stochastic depth are live again
    small.eval()
    assert torch.equal(small(x), small(x))
