"""Hand-built super-networks for the erasing tests: each one's removal structures are known by hand.

Every model keeps its blocks as named submodules, so a test can name the structure it expects by the
module that holds its first operator (``head_module``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms (and LayerNorm affine terms): zeroed checks must not pass
    by accident, and exporters would store the fresh all-ones scales once for every layer."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm) and m.weight is not None:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


class Up(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class StackedUnets(nn.Module):
    """The replica of ALGORITHMS.md §3.3: two U-Nets from the input, merged by an Add, then a head.

    Left U-Net (max-pool down-sampling): A → B → C → D, Add20(D, C) → up → Add25(·, B) → E → Add34(E, A)
    → F. Right U-Net (strided convs): P → Q → R → S, Add57(S, R) → up → Add62(·, Q) → T → Add71(T, P)
    → U. Head: Add76(F, U) → global pool → Linear. Removal structures: D, E, F, S, T, U.
    """

    def __init__(self, c: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.A = nn.Sequential(
            nn.Conv2d(3, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1)
        )
        self.B = nn.Sequential(
            nn.MaxPool2d(2), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(),
            nn.BatchNorm2d(c),
        )  # fmt: skip
        self.C = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1))
        self.D = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1), Up())
        self.up24 = Up()
        self.E = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(), Up()
        )
        self.F = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.BatchNorm2d(c))
        self.P = nn.Sequential(*_cbr(3, c))
        self.Q = nn.Sequential(*_cbr(c, c, 2))
        self.R = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1))
        self.S = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), Up())
        self.up61 = Up()
        self.T = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(), Up()
        )
        self.U = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.BatchNorm2d(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.A(x)
        b = self.B(a)
        c = self.C(b)
        left = self.F(self.E(self.up24(self.D(c) + c) + b) + a)
        p = self.P(x)
        q = self.Q(p)
        r = self.R(q)
        right = self.U(self.T(self.up61(self.S(r) + r) + q) + p)
        y = (left + right).mean(dim=(2, 3))
        return self.fc(y)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(*_cbr(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.bn = nn.BatchNorm2d(cout)
        self.short = (
            None
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x if self.short is None else self.short(x)
        return torch.relu(self.bn(self.body(x)) + s)


class ResNetLike(nn.Module):
    """A stem, ``blocks`` identity residual blocks, one down-sampling block with a conv shortcut, a head."""

    def __init__(self, blocks: int = 3, c: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, c))
        self.blocks = nn.Sequential(*[ResBlock(c, c) for _ in range(blocks)], ResBlock(c, 2 * c, 2))
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class Nested(nn.Module):
    """outer(x) = x + conv_b(inner(conv_a(x))) with inner(y) = y + conv_i(y): erasing the outer body
    removes the inner block with it."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, 1, 1)
        self.conv_a = nn.Conv2d(c, c, 3, 1, 1)
        self.conv_i = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
        self.conv_b = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.conv_a(x)
        y = y + self.conv_i(y)
        x = x + self.conv_b(y)
        return self.head(x)


class DartsCell(nn.Module):
    """Parallel candidate operations summed (a DARTS-like mixed edge), twice in a row."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, 1, 1)
        self.edges = nn.ModuleList([self._edge(c) for _ in range(2)])
        self.head = nn.Conv2d(c, 4, 1)

    @staticmethod
    def _edge(c: int) -> nn.ModuleList:
        return nn.ModuleList(
            [
                nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c)),
                nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 5, 1, 2), nn.BatchNorm2d(c)),
                nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 2, dilation=2), nn.BatchNorm2d(c)),
                nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, c, 1)),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for edge in self.edges:
            y = edge[0](x)
            for op in edge[1:]:
                y = y + op(x)
            x = y
        return self.head(x)


class ConcatSkip(nn.Module):
    """Two branches concatenated along channels, then a 1×1 conv: each branch is erasable and takes its
    input channels of the 1×1 conv with it."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, c))
        self.b1 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU())
        self.b2 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, 2 * c, 1), nn.ReLU())
        self.mix = nn.Conv2d(3 * c, c, 1)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.b1(x), self.b2(x)], dim=1)
        return self.head(torch.relu(self.mix(y)))


class MulGate(nn.Module):
    """x * sigmoid(conv(x)) + x: the gate branch feeds a Mul and is never erasable."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, 1, 1)
        self.gate = nn.Conv2d(c, c, 1)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x * torch.sigmoid(self.gate(x)))


class Chain(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(*_cbr(3, c), *_cbr(c, c), nn.Conv2d(c, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNormBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, s, h, d // h).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.proj(y.transpose(1, 2).reshape(b, s, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class PreNormTransformer(nn.Module):
    """Token embedding, two pre-norm blocks, final norm, LM head: four erasable sub-blocks."""

    def __init__(self, vocab: int = 50, d: int = 16, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList([PreNormBlock(d, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))
