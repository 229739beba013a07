"""Architecture specs: a small printable grammar of networks, built into ``nn.Module`` and ONNX.

A spec is plain data (dicts, lists, ints, strings), so a failing example prints as a Python literal
that a regression test can paste verbatim. ``build(spec)`` turns it into a module with random weights
drawn from ``spec["seed"]`` (random batch-norm statistics included: zero-initialised or equal weights
would make the equivalence checks vacuous, and exporters deduplicate identical initializers, which
would tie unrelated layers together). ``export(...)`` writes the ONNX model.

The stream a layer sees is one of three *states*:

* ``("image", C, H, W)`` — an ``[N, C, H, W]`` feature map,
* ``("seq", S, C)`` — tokens ``[N, S, C]``, channels last,
* ``("vec", C)`` — features ``[N, C]``.

``step(layer, state)`` gives the state after a layer; the strategies use it to draw only valid
networks and ``build`` checks it while it builds.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BINOPS",
    "EXPORTERS",
    "HALF_EXPORTERS",
    "WEIGHT_MODES",
    "Built",
    "SpecError",
    "build",
    "export",
    "input_state",
    "step",
]

State = tuple
Spec = dict[str, Any]
Layer = dict[str, Any]

# name -> f(0) == 0 ? (documentation; the op table decides what the engine believes)
ACTIVATIONS: dict[str, bool] = {
    "relu": True, "leaky_relu": True, "gelu": True, "silu": True, "tanh": True, "elu": True,
    "hardswish": True, "relu6": True, "identity": True, "softsign": True,
    "square": True, "abs": True, "mish": True, "selu": True, "hardtanh": True,
    "sigmoid": False, "softplus": False, "exp": False, "hardsigmoid": False, "cos": False, "shift": False,
}  # fmt: skip

EXPORTERS = ("torchscript", "torchscript-preserve", "dynamo")
"""``torchscript``: eval-mode export (folds BN into convs, renames those weights). ``torchscript-preserve``:
keeps every module and its parameter names (``training=PRESERVE``), so names match the torch frontend.
``dynamo``: ``torch.export`` based, slower (about a second per tiny model) but what users get by default."""

HALF_EXPORTERS = ("torchscript-fp16",)
"""The eval export converted to float16 by ``onnxruntime.transformers.float16`` (inputs and outputs kept
float32, so Casts at both ends): what a user's fp16 file looks like. Verified at the fp16 tolerance, so
only the pruning properties draw it."""


WEIGHT_MODES = ("t", "addmm", "wt", "wnorm", "scaled")
"""How ``wlinear`` computes with its weight: stored ``[in, out]`` and multiplied (``t``: MatMul; ``addmm``:
a Gemm without transB), stored ``[in, out]`` and transposed in the graph (``wt``), weight-normalized
(``wnorm``: g * v / |v| per output row) or scaled by a constant (``scaled``). The last three compute the
weight at run time, so a TorchScript ``PRESERVE`` export keeps the arithmetic on the initializers in the
graph (an eval export folds it)."""

BINOPS = ("sub", "rsub", "max", "min")
"""``binop``: ``x - body(x)``, ``body(x) - x``, ``max(x, body(x))``, ``min(x, body(x))`` (every one maps
two zeros to zero)."""


class SpecError(ValueError):
    """The spec does not describe a valid network (a bug in the strategy or a hand-edited spec)."""


# -- states ------------------------------------------------------------------------------------------
def input_state(spec: Spec) -> State:
    inp = spec["input"]
    kind = inp["kind"]
    if kind == "image":
        _, c, h, w = inp["shape"]
        return ("image", c, h, w)
    if kind == "seq":
        _, s, c = inp["shape"]
        return ("seq", s, c)
    if kind == "tokens":
        return ("seq", inp["seq"], inp["dim"])
    raise SpecError(f"unknown input kind {kind!r}")


def channels(state: State) -> int:
    return state[1] if state[0] == "image" else state[-1]


def with_channels(state: State, c: int) -> State:
    if state[0] == "image":
        return ("image", c, state[2], state[3])
    if state[0] == "seq":
        return ("seq", state[1], c)
    return ("vec", c)


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def step(layer: Layer, state: State) -> State:
    """The state after ``layer``; raises SpecError when the layer does not fit ``state``."""
    op = layer["op"]
    kind = state[0]
    c = channels(state)

    def need(cond: bool, why: str) -> None:
        if not cond:
            raise SpecError(f"{op} on {state}: {why}")

    if op in ("act", "tap", "dropout", "scale"):
        return state
    if op in ("bn", "ln", "rms", "chanstat", "glu_gate"):
        return state
    if op == "conv":
        need(kind == "image", "needs an image")
        g = layer["groups"]
        need(c % g == 0 and layer["out"] % g == 0, "groups must divide both widths")
        k, s, d = layer["k"], layer["stride"], layer.get("dilation", 1)
        span = d * (k - 1) + 1
        h, w = _conv_out(state[2], span, s, d * (k // 2)), _conv_out(state[3], span, s, d * (k // 2))
        need(h >= 1 and w >= 1, "spatial size vanishes")
        return ("image", layer["out"], h, w)
    if op == "convT":
        need(kind == "image", "needs an image")
        g = layer["groups"]
        need(c % g == 0 and layer["out"] % g == 0, "groups must divide both widths")
        if layer["stride"] == 2:
            need(layer["k"] == 2, "stride 2 uses k=2")
            return ("image", layer["out"], state[2] * 2, state[3] * 2)
        need(layer["k"] % 2 == 1, "stride 1 uses an odd kernel")
        return ("image", layer["out"], state[2], state[3])
    if op in ("gn",):
        need(kind == "image" and c % layer["groups"] == 0, "groups must divide C")
        return state
    if op == "lrn":
        need(kind == "image", "needs an image")
        return state
    if op == "upsample":
        need(kind == "image", "needs an image")
        return ("image", c, state[2] * 2, state[3] * 2)
    if op == "pad":
        need(kind == "image", "needs an image")
        if layer["mode"] == "reflect":
            need(state[2] >= 2 and state[3] >= 2, "reflect padding needs 2x2")
        return ("image", c, state[2] + 2, state[3] + 2)
    if op == "pixel_shuffle":
        need(kind == "image" and c % 4 == 0, "needs an image with C divisible by 4")
        return ("image", c // 4, state[2] * 2, state[3] * 2)
    if op == "pixel_unshuffle":
        need(kind == "image" and state[2] % 2 == 0 and state[3] % 2 == 0, "needs an even image")
        return ("image", c * 4, state[2] // 2, state[3] // 2)
    if op == "seq_conv":
        need(kind == "seq", "needs tokens")
        g = layer["groups"]
        need(c % g == 0 and layer["out"] % g == 0, "groups must divide both widths")
        need(layer["k"] % 2 == 1, "an odd kernel keeps the length")
        return ("seq", state[1], layer["out"])
    if op in ("inorm", "ln_cl", "shuffle", "se", "shared"):
        need(kind == "image", "needs an image")
        if op == "shuffle":
            need(c % layer["groups"] == 0, "groups must divide C")
        return state
    if op == "pool":
        if layer.get("same"):  # 3x3, stride 1, padding 1: a DARTS candidate op that keeps the size
            need(kind == "image", "needs an image")
            return state
        need(kind == "image" and state[2] >= 2 and state[3] >= 2, "needs an image of at least 2x2")
        return ("image", c, state[2] // 2, state[3] // 2)
    if op == "cl_linear":
        need(kind == "image", "needs an image")
        return ("image", layer["out"], state[2], state[3])
    if op == "to_seq":
        need(kind == "image", "needs an image")
        return ("seq", state[2] * state[3], c)
    if op == "flatten":
        need(kind == "image", "needs an image")
        return ("vec", c * state[2] * state[3])
    if op == "gap":
        need(kind == "image", "needs an image")
        return ("vec", c)
    if op == "linear":
        need(kind in ("seq", "vec"), "needs tokens or features")
        return with_channels(state, layer["out"])
    if op == "wlinear":
        need(kind in ("seq", "vec"), "needs tokens or features")
        need(layer["mode"] in WEIGHT_MODES, f"mode must be one of {WEIGHT_MODES}")
        need(layer["mode"] != "addmm" or kind == "vec", "addmm needs features")
        return with_channels(state, layer["out"])
    if op == "wconv":
        need(kind == "image", "needs an image")
        need(layer["mode"] in ("wnorm", "scaled"), "mode must be wnorm or scaled")
        need(layer["k"] % 2 == 1, "an odd kernel keeps the size")
        return ("image", layer["out"], state[2], state[3])
    if op == "pick":
        index = layer["index"]
        need(len(index) >= 1 and all(0 <= i < c for i in index), "indices must be channels")
        return with_channels(state, len(index))
    if op == "binop":
        need(layer["fn"] in BINOPS, f"fn must be one of {BINOPS}")
        need(_run(layer["body"], state) == state, "the body must keep the shape")
        return state
    if op == "attn":
        need(kind == "seq", "needs tokens")
        need(layer["heads"] % layer["kv_heads"] == 0, "kv_heads must divide heads")
        return state
    if op == "pos":
        need(kind == "seq", "needs tokens")
        return state
    if op == "cls":
        need(kind == "seq", "needs tokens")
        return ("seq", state[1] + 1, c)
    if op in ("mean_seq", "first_token"):
        need(kind == "seq", "needs tokens")
        return ("vec", c)
    if op == "glu":
        need(c % 2 == 0, "needs an even width")
        return with_channels(state, c // 2)
    if op == "residual":
        out = _run(layer["body"], state)
        if out != state:
            need(kind == "image" and out[0] == "image", "a projection shortcut needs images")
            stride = max(state[2] // out[2], 1)  # what the 1x1 projection shortcut uses (see _layer)
            same = (state[2] - 1) // stride + 1 == out[2] and (state[3] - 1) // stride + 1 == out[3]
            need(same, "the 1x1 projection shortcut cannot match the body's output size")
        return out
    if op == "gate":
        need(_run(layer["body"], state) == state, "the gate body must keep the shape")
        return state
    if op == "sum":  # parallel candidate ops on the same input, summed (a DARTS-like cell)
        need(len(layer["branches"]) >= 1, "at least one branch")
        need(all(_run(b, state) == state for b in layer["branches"]), "every branch must keep the shape")
        return state
    if op in ("concat", "split"):
        if op == "split":
            need(sum(layer["sizes"]) == c and len(layer["sizes"]) == len(layer["branches"]), "sizes")
            ins = [with_channels(state, s) for s in layer["sizes"]]
        else:
            ins = [state] * len(layer["branches"])
        outs = [_run(b, s) for b, s in zip(layer["branches"], ins)]
        need(all(o[0] == kind for o in outs), "branches must keep the kind")
        need(len({(o[:1] + o[2:]) if kind == "image" else o[:-1] for o in outs}) == 1, "branch shapes")
        return with_channels(outs[0], sum(channels(o) for o in outs))
    if op == "head":
        need(kind in ("seq", "vec"), "needs tokens or features")
        return with_channels(state, layer["out"])
    if op == "tied_head":
        need(kind == "seq", "needs tokens")
        return with_channels(state, layer["vocab"])
    raise SpecError(f"unknown op {op!r}")


def _run(layers: list[Layer], state: State) -> State:
    for layer in layers:
        state = step(layer, state)
    return state


def output_states(spec: Spec) -> State:
    return _run(spec["layers"], input_state(spec))


# -- modules -----------------------------------------------------------------------------------------
def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "identity":
        return x
    if name == "exp":
        return torch.exp(torch.clamp(x, max=3.0))
    if name == "cos":
        return torch.cos(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.1)
    if name == "square":
        return x * x
    if name == "abs":
        return torch.abs(x)
    if name == "shift":  # an affine map with a constant: f(0) = 0.5
        return x + 0.5
    return getattr(F, name)(x)


class Act(nn.Module):
    def __init__(self, fn: str) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _act(self.fn, x)


class Chain(nn.Module):
    """Layers applied in order; ``tap`` layers add the current value to the network's outputs."""

    def __init__(self, mods: list[nn.Module], taps: list[bool]) -> None:
        super().__init__()
        self.mods = nn.ModuleList(mods)
        self.taps = taps

    def forward(self, x: torch.Tensor) -> Any:
        outs = []
        for m, tap in zip(self.mods, self.taps):
            if tap:
                outs.append(x)
            else:
                x = m(x)
        if outs:
            return (x, *outs)
        return x


class Residual(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Gate(nn.Module):
    def __init__(self, body: nn.Module, fn: str) -> None:
        super().__init__()
        self.body = body
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _act(self.fn, self.body(x))


class Branches(nn.Module):
    """Concat of branches on the same input (``sizes`` None) or on a channel split of it."""

    def __init__(self, branches: list[nn.Module], sizes: list[int] | None, dim: int, chunk: bool) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.sizes = sizes
        self.dim = dim
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sizes is None:
            parts = [x] * len(self.branches)
        elif self.chunk:
            parts = list(torch.chunk(x, len(self.sizes), dim=self.dim))
        else:
            parts = list(torch.split(x, self.sizes, dim=self.dim))
        return torch.cat([b(p) for b, p in zip(self.branches, parts)], dim=self.dim)


class SumBranches(nn.Module):
    """Branches on the same input, summed: an empty branch is the identity (a skip)."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.branches[0](x)
        for b in self.branches[1:]:
            total = total + b(x)
        return total


class Glu(nn.Module):
    def __init__(self, dim: int, fn: str) -> None:
        super().__init__()
        self.dim = dim
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(x, 2, dim=self.dim)
        return a * _act(self.fn, b)


class ChanStat(nn.Module):
    """``x + stat(x over channels)``: a reduction across the pruned axis."""

    def __init__(self, dim: int, kind: str) -> None:
        super().__init__()
        self.dim = dim
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "softmax":  # every output channel depends on every input channel
            return torch.softmax(x, dim=self.dim)
        if self.kind == "l2norm":  # a zero channel adds nothing to the norm
            return F.normalize(x, dim=self.dim)
        if self.kind == "sum":
            s = x.sum(dim=self.dim, keepdim=True)
        elif self.kind == "mean":
            s = x.mean(dim=self.dim, keepdim=True)
        else:
            s = x.amax(dim=self.dim, keepdim=True)
        return x + s


class LayerNormCL(nn.Module):
    """Channels-last LayerNorm on an image: permute, normalize the last axis, permute back."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LinearCL(nn.Module):
    """A Linear on the channel axis of an image through a channels-last permute (ConvNeXt style)."""

    def __init__(self, c: int, out: int, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(c, out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Shuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2)
        return x.reshape(n, c, h, w)


class SE(nn.Module):
    def __init__(self, c: int, hidden: int, fc: bool, fn: str) -> None:
        super().__init__()
        self.fc = fc
        self.fn = fn
        if fc:
            self.f1, self.f2 = nn.Linear(c, hidden), nn.Linear(hidden, c)
        else:
            self.f1, self.f2 = nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        if self.fc:
            s = self.f2(F.relu(self.f1(s.flatten(1))))[:, :, None, None]
        else:
            s = self.f2(F.relu(self.f1(s)))
        return x * _act(self.fn, s)


class Shared(nn.Module):
    """One convolution used twice: the same weight produces and consumes the same channels."""

    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.conv(x)))


class Scale(nn.Module):
    def __init__(self, shape: tuple[int, ...], mode: str) -> None:
        super().__init__()
        self.param = nn.Parameter(torch.ones(shape))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.param if self.mode == "mul" else x + self.param


class Pool(nn.Module):
    def __init__(self, kind: str, same: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.same = same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            if self.kind == "max":
                return F.max_pool2d(x, 3, 1, 1)
            return F.avg_pool2d(x, 3, 1, 1)
        return F.max_pool2d(x, 2) if self.kind == "max" else F.avg_pool2d(x, 2)


class Resample(nn.Module):
    """Spatial resampling that keeps channels apart: upsampling, padding, pixel (un)shuffle."""

    def __init__(self, op: str, mode: str = "", size: tuple[int, int, int] = (0, 0, 0)) -> None:
        super().__init__()
        self.op, self.mode, self.size = op, mode, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "upsample":
            if self.mode == "nearest":
                return F.interpolate(x, scale_factor=2.0, mode="nearest")
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if self.op == "pad":
            c, h, w = self.size
            if self.mode == "const":  # a non-zero fill: a zeroed channel is no longer zero
                y = F.pad(x, (1, 1, 1, 1), value=0.5)
            elif self.mode == "zeros":
                y = F.pad(x, (1, 1, 1, 1))
            else:
                y = F.pad(x, (1, 1, 1, 1), mode=self.mode)
            # TorchScript computes the pads at run time and loses the shape, after which it cannot
            # export an InstanceNorm: a reshape to the literal sizes (batch 1, as every fuzzed
            # input has) restores it.
            return y.reshape(1, c, h + 2, w + 2)
        if self.op == "pixel_shuffle":
            return F.pixel_shuffle(x, 2)
        return F.pixel_unshuffle(x, 2)


class LocalResponseNorm(nn.Module):
    """``nn.LocalResponseNorm`` written with static shapes: torch's own version reshapes with sizes
    read at run time, after which the TorchScript exporter cannot export an instance norm.

    The squares are pooled over a window of neighbouring channels (a pooling over the channel axis,
    zero-padded by the pooling itself), so removing a channel changes its neighbours.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # An odd window (an explicit F.pad on the channel axis loses the shapes in TorchScript too).
        pad = (self.size // 2, 0, 0)
        div = F.avg_pool3d((x * x).unsqueeze(1), (self.size, 1, 1), stride=1, padding=pad).squeeze(1)
        return x / (1.0 + div).pow(0.75)  # alpha = 1: a wrong rule shows above the tolerance


class SeqConv(nn.Module):
    """A 1-d convolution over a token sequence through a transpose (wav2vec / ConvMixer style)."""

    def __init__(self, c: int, out: int, k: int, groups: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c, out, k, padding=k // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class Lambda(nn.Module):
    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.what == "to_seq":
            return x.flatten(2).transpose(1, 2)
        if self.what == "flatten":
            return x.flatten(1)
        if self.what == "gap":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.what == "mean_seq":
            return x.mean(dim=1)
        if self.what == "first_token":
            return x[:, 0]
        return x


class Cls(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


class Attention(nn.Module):
    """Multi-head (grouped-query when kv_heads < heads) self-attention written out with Linear layers."""

    def __init__(self, c: int, heads: int, kv_heads: int, head_dim: int, bias: bool) -> None:
        super().__init__()
        self.h, self.kvh, self.d = heads, kv_heads, head_dim
        self.q = nn.Linear(c, heads * head_dim, bias=bias)
        self.k = nn.Linear(c, kv_heads * head_dim, bias=bias)
        self.v = nn.Linear(c, kv_heads * head_dim, bias=bias)
        self.o = nn.Linear(heads * head_dim, c, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, _ = x.shape
        q = self.q(x).reshape(n, s, self.h, self.d).transpose(1, 2)
        k = self.k(x).reshape(n, s, self.kvh, self.d).transpose(1, 2)
        v = self.v(x).reshape(n, s, self.kvh, self.d).transpose(1, 2)
        if self.kvh != self.h:
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(n, s, self.h * self.d)
        return self.o(y)


class TiedHead(nn.Module):
    """Output projection that reuses the embedding table (tied input/output embeddings)."""

    def __init__(self, emb: nn.Embedding) -> None:
        super().__init__()
        self.emb = [emb]  # not a submodule: the parameter is shared, registered once by the embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.emb[0].weight)


class WLinear(nn.Module):
    """A Linear whose weight is stored transposed or computed in the graph (see ``WEIGHT_MODES``)."""

    def __init__(self, c: int, out: int, mode: str, bias: bool) -> None:
        super().__init__()
        self.mode = mode
        rows, cols = (out, c) if mode in ("wnorm", "scaled") else (c, out)
        self.weight = nn.Parameter(torch.empty(rows, cols))
        self.gain = nn.Parameter(torch.empty(out, 1)) if mode == "wnorm" else None
        self.bias = nn.Parameter(torch.empty(out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w: torch.Tensor = self.weight
        if self.mode == "addmm":
            b = self.bias if self.bias is not None else torch.zeros(w.shape[1])
            return torch.addmm(b, x, w)
        if self.mode == "t":
            y = x @ w
            return y + self.bias if self.bias is not None else y
        if self.mode == "wt":
            w = w.t()
        elif self.mode == "wnorm":
            assert self.gain is not None
            w = self.gain * w / w.norm(dim=1, keepdim=True)
        else:
            w = w * 0.5
        return F.linear(x, w, self.bias)


class WConv(nn.Module):
    """A convolution whose weight is computed in the graph: weight-normalized or scaled by a constant."""

    def __init__(self, c: int, out: int, k: int, mode: str, bias: bool) -> None:
        super().__init__()
        self.mode, self.k = mode, k
        self.weight = nn.Parameter(torch.empty(out, c, k, k))
        self.gain = nn.Parameter(torch.empty(out, 1, 1, 1)) if mode == "wnorm" else None
        self.bias = nn.Parameter(torch.empty(out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w: torch.Tensor = self.weight
        if self.gain is not None:
            w = self.gain * w / w.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        else:
            w = w * 0.5
        return F.conv2d(x, w, self.bias, padding=self.k // 2)


class Pick(nn.Module):
    """Channels picked by index: a contiguous run is a Slice, any other list a Gather (repeats allowed)."""

    def __init__(self, index: list[int], dim: int) -> None:
        super().__init__()
        self.index, self.dim = list(index), dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, n = self.index[0], len(self.index)
        if self.index == list(range(lo, lo + n)):
            return x.narrow(self.dim, lo, n)
        return x.index_select(self.dim, torch.tensor(self.index))


class BinOp(nn.Module):
    """``x`` combined with ``body(x)`` by a binary op other than + and * (``BINOPS``)."""

    def __init__(self, body: nn.Module, fn: str) -> None:
        super().__init__()
        self.body, self.fn = body, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.fn == "sub":
            return x - y
        if self.fn == "rsub":
            return y - x
        if self.fn == "max":
            return torch.maximum(x, y)
        return torch.minimum(x, y)


class Net(nn.Module):
    def __init__(self, embed: nn.Module | None, body: Chain) -> None:
        super().__init__()
        self.embed = embed
        self.body = body

    def forward(self, x: torch.Tensor) -> Any:
        if self.embed is not None:
            x = self.embed(x)
        return self.body(x)


def _norm(layer: Layer, state: State) -> nn.Module:
    op, kind, c = layer["op"], state[0], channels(state)
    if op == "bn":
        return nn.BatchNorm2d(c) if kind == "image" else _BN1d(c, kind)
    if op == "gn":
        return nn.GroupNorm(layer["groups"], c, affine=layer.get("affine", True))
    if op == "inorm":
        return nn.InstanceNorm2d(c, affine=layer.get("affine", True))
    if op == "ln":
        return LayerNormCL(c) if kind == "image" else nn.LayerNorm(c)
    if op == "rms":
        return _RMS(c)
    raise SpecError(op)


class _BN1d(nn.Module):
    def __init__(self, c: int, kind: str) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(c)
        self.seq = kind == "seq"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.seq:
            return self.bn(x.transpose(1, 2)).transpose(1, 2)
        return self.bn(x)


class _RMS(nn.Module):
    """RMSNorm written out (exports to every opset; ``nn.RMSNorm`` needs opset 23 in ONNX)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def _chain(layers: list[Layer], state: State, ctx: dict) -> tuple[Chain, State]:
    mods: list[nn.Module] = []
    taps: list[bool] = []
    for layer in layers:
        m, state = _layer(layer, state, ctx)
        mods.append(m)
        taps.append(layer["op"] == "tap")
    return Chain(mods, taps), state


def _layer(layer: Layer, state: State, ctx: dict) -> tuple[nn.Module, State]:
    op = layer["op"]
    out = step(layer, state)
    kind, c = state[0], channels(state)
    cdim = 1 if kind == "image" else -1
    if op == "tap":
        if ctx["nested"]:
            raise SpecError("tap is only allowed at the top level")
        return nn.Identity(), out
    if op == "act":
        return Act(layer["fn"]), out
    if op == "dropout":
        return nn.Dropout(0.5), out
    if op == "conv":
        d = layer.get("dilation", 1)
        return nn.Conv2d(c, layer["out"], layer["k"], layer["stride"], d * (layer["k"] // 2), dilation=d,
                         groups=layer["groups"], bias=layer["bias"]), out  # fmt: skip
    if op == "seq_conv":
        return SeqConv(c, layer["out"], layer["k"], layer["groups"], layer.get("bias", True)), out
    if op in ("upsample", "pad", "pixel_shuffle", "pixel_unshuffle"):
        return Resample(op, layer.get("mode", ""), (c, state[2], state[3])), out
    if op == "lrn":
        return LocalResponseNorm(layer.get("size", 3)), out
    if op == "convT":
        pad = 0 if layer["stride"] == 2 else layer["k"] // 2
        return nn.ConvTranspose2d(c, layer["out"], layer["k"], layer["stride"], pad,
                                  groups=layer["groups"], bias=layer["bias"]), out  # fmt: skip
    if op in ("bn", "gn", "inorm", "ln", "rms"):
        return _norm(layer, state), out
    if op == "ln_cl":
        return LayerNormCL(c), out
    if op == "pool":
        return Pool(layer["kind"], bool(layer.get("same", False))), out
    if op == "shuffle":
        return Shuffle(layer["groups"]), out
    if op == "se":
        return SE(c, layer["hidden"], layer["fc"], layer.get("fn", "sigmoid")), out
    if op == "shared":
        return Shared(c, layer["k"]), out
    if op == "scale":
        shape = (c, 1, 1) if kind == "image" else (c,)
        return Scale(shape, layer.get("mode", "mul")), out
    if op == "cl_linear":
        return LinearCL(c, layer["out"], layer.get("bias", True)), out
    if op in ("to_seq", "flatten", "gap", "mean_seq", "first_token"):
        return Lambda(op), out
    if op in ("linear", "head"):
        return nn.Linear(c, layer["out"], bias=layer.get("bias", True)), out
    if op == "wlinear":
        return WLinear(c, layer["out"], layer["mode"], layer.get("bias", True)), out
    if op == "wconv":
        return WConv(c, layer["out"], layer["k"], layer["mode"], layer.get("bias", True)), out
    if op == "pick":
        return Pick(layer["index"], cdim), out
    if op == "binop":
        body, _ = _chain(layer["body"], state, dict(ctx, nested=True))
        return BinOp(body, layer["fn"]), out
    if op == "attn":
        return Attention(
            c, layer["heads"], layer["kv_heads"], layer["head_dim"], layer.get("bias", True)
        ), out
    if op == "pos":
        return Scale((state[1], c), "add"), out
    if op == "cls":
        return Cls(c), out
    if op == "glu":
        return Glu(cdim, layer.get("fn", "sigmoid")), out
    if op == "chanstat":
        return ChanStat(cdim, layer["kind"]), out
    if op == "residual":
        inner = dict(ctx, nested=True)
        body, _ = _chain(layer["body"], state, inner)
        shortcut = None
        if out != state:
            stride = max(state[2] // out[2], 1)
            shortcut = nn.Conv2d(c, channels(out), 1, stride, bias=False)
        return Residual(body, shortcut), out
    if op == "gate":
        body, _ = _chain(layer["body"], state, dict(ctx, nested=True))
        return Gate(body, layer.get("fn", "sigmoid")), out
    if op == "sum":
        inner = dict(ctx, nested=True)
        return SumBranches([_chain(b, state, inner)[0] for b in layer["branches"]]), out
    if op in ("concat", "split"):
        inner = dict(ctx, nested=True)
        sizes = layer.get("sizes")
        ins = [with_channels(state, s) for s in sizes] if sizes else [state] * len(layer["branches"])
        branches = [_chain(b, s, inner)[0] for b, s in zip(layer["branches"], ins)]
        chunk = bool(sizes) and len(set(sizes)) == 1 and layer.get("chunk", False)
        return Branches(branches, sizes, cdim, chunk), out
    if op == "tied_head":
        if ctx["embed"] is None or ctx["embed"].weight.shape != (layer["vocab"], c):
            raise SpecError("tied_head needs a token input whose embedding width is the stream width")
        return TiedHead(ctx["embed"]), out
    raise SpecError(f"unknown op {op!r}")


# -- building ----------------------------------------------------------------------------------------
@dataclass
class Built:
    """A spec materialized: the eval-mode module and one example input tuple."""

    spec: Spec
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    output_names: list[str]


def build(spec: Spec) -> Built:
    """The network of ``spec`` with seeded random weights, in eval mode."""
    inp = spec["input"]
    embed = None
    if inp["kind"] == "tokens":
        embed = nn.Embedding(inp["vocab"], inp["dim"])
    ctx = {"embed": embed, "nested": False}
    body, _ = _chain(spec["layers"], input_state(spec), ctx)
    net = Net(embed, body)
    randomize(net, int(spec.get("seed", 0)))
    g = torch.Generator().manual_seed(int(spec.get("seed", 0)) + 1)
    if inp["kind"] == "tokens":
        x = torch.randint(0, inp["vocab"], (1, inp["seq"]), generator=g)
    else:
        x = torch.randn(*inp["shape"], generator=g)
    n_out = 1 + sum(1 for layer in spec["layers"] if layer["op"] == "tap")
    return Built(spec, net.eval(), (x,), [f"y{i}" for i in range(n_out)])


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Distinct random weights and batch-norm statistics, scaled so activations stay near unit size."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("token", "param")):
                p.copy_(0.5 + 0.5 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:
                fan_in = 1 if name.startswith("embed") else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if b.dtype.is_floating_point:
                if name.endswith("running_var"):
                    b.copy_(torch.rand(b.shape, generator=g) + 0.5)
                else:
                    b.copy_(0.3 * torch.randn(b.shape, generator=g))
    return module


def export(built: Built, exporter: str = "torchscript", opset: int | None = None) -> bytes:
    """The ONNX export of ``built`` as serialized bytes (the module itself is never modified)."""
    if exporter in HALF_EXPORTERS:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        full = onnx.load_from_string(export(built, exporter.removesuffix("-fp16"), opset))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter warns about values it clamps to fp16's range
            return convert_float_to_float16(full, keep_io_types=True).SerializeToString()
    module = copy.deepcopy(built.module).eval()
    names = ["x"]
    outs = built.output_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            import logging

            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            prog = torch.onnx.export(
                module, built.inputs, dynamo=True, opset_version=opset or 18, verbose=False,
                input_names=names, output_names=outs,
            )  # fmt: skip
            return prog.model_proto.SerializeToString()
        if exporter not in ("torchscript", "torchscript-preserve"):
            raise SpecError(f"unknown exporter {exporter!r}; choose one of {EXPORTERS + HALF_EXPORTERS}")
        mode = (
            torch.onnx.TrainingMode.PRESERVE
            if exporter.endswith("preserve")
            else torch.onnx.TrainingMode.EVAL
        )
        f = io.BytesIO()
        torch.onnx.export(
            module, built.inputs, f, dynamo=False, opset_version=opset or 17, input_names=names,
            output_names=outs, training=mode,
        )  # fmt: skip
        return f.getvalue()
