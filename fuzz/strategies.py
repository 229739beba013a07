"""Hypothesis strategies for random architectures (``fuzz.arch`` specs) and pruning choices.

Every strategy draws plain data. Shapes are tracked while drawing (``fuzz.arch.step``), so each drawn
spec is a valid network by construction and hypothesis can shrink it freely: a shrunk spec is still a
spec. Operators are listed simplest first because hypothesis shrinks a ``sampled_from`` towards its
first element — a failing 12-layer network shrinks to the two layers that matter.

Use them in your own tests::

    from hypothesis import given
    from fuzz.strategies import architectures

    @given(architectures(kinds=("image",), ops={"conv", "act", "bn"}))
    def test_my_rule(spec): ...
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

from hypothesis import strategies as st

from fuzz.arch import (
    ACTIVATIONS,
    BINOPS,
    EXPORTERS,
    HALF_EXPORTERS,
    WEIGHT_MODES,
    SpecError,
    State,
    channels,
    input_state,
    step,
)
from fuzz.erase_arch import erase_architectures, plain_chains

__all__ = [
    "ALL_OPS",
    "Grammar",
    "architectures",
    "erase_architectures",
    "exporters",
    "plain_chains",
    "removal_seeds",
]

ALL_OPS = frozenset({
    "act", "bn", "gn", "inorm", "ln", "rms", "conv", "convT", "pool", "residual", "concat", "split",
    "glu", "gate", "se", "shuffle", "scale", "shared", "cl_linear", "chanstat", "dropout", "to_seq",
    "flatten", "gap", "linear", "attn", "pos", "cls", "mean_seq", "first_token", "tap", "head",
    "tied_head", "upsample", "pad", "pixel_shuffle", "pixel_unshuffle", "lrn", "seq_conv", "wlinear",
    "wconv", "pick", "binop",
})  # fmt: skip
"""Every op of the grammar; pass a subset as ``ops=`` to focus a run."""

# Simplest first (what hypothesis shrinks towards). Stems are listed several times: a network needs two
# of them in a row for a prunable group, and most other ops pin or merely pass channels through.
_IMAGE_OPS = ["act", "conv", "bn", "conv", "pool", "residual", "conv", "concat", "split", "convT", "gn",
              "inorm", "ln", "glu", "gate", "se", "shuffle", "scale", "shared", "cl_linear", "chanstat",
              "dropout", "to_seq", "flatten", "gap", "tap", "upsample", "pad", "pixel_shuffle",
              "pixel_unshuffle", "lrn", "wconv", "pick", "binop", "conv"]  # fmt: skip
_SEQ_OPS = ["act", "linear", "ln", "linear", "residual", "attn", "linear", "concat", "split", "rms", "bn",
            "glu", "gate", "scale", "pos", "cls", "chanstat", "dropout", "mean_seq", "first_token", "tap",
            "seq_conv", "wlinear", "pick", "binop", "attn"]  # fmt: skip
_VEC_OPS = ["act", "linear", "bn", "linear", "ln", "residual", "concat", "split", "glu", "gate", "chanstat",
            "dropout", "tap", "wlinear", "pick", "binop", "linear"]  # fmt: skip
_KIND_CHANGING = {"to_seq", "flatten", "gap", "mean_seq", "first_token"}
_MIXING = frozenset(
    {"chanstat", "attn", "glu", "gate", "se", "ln", "rms", "gn", "inorm", "shuffle", "lrn", "pixel_shuffle"}
)
"""Ops that combine or normalize channels without a weight of their own: where a channel that is not
exactly zero (f(0) != 0 upstream) changes other channels' values."""
_NESTING = {"residual", "concat", "split", "gate", "binop"}


@dataclass(frozen=True)
class Grammar:
    """Bounds of the drawn networks: small enough that one export takes tens of milliseconds."""

    max_layers: int = 6
    max_depth: int = 2
    max_channels: int = 16
    max_spatial: int = 8
    max_seq: int = 8
    ops: frozenset[str] = field(default=ALL_OPS)
    activations: tuple[str, ...] = tuple(ACTIVATIONS)


def _widths(g: Grammar, low: int = 1) -> st.SearchStrategy[int]:
    return st.integers(min_value=low, max_value=g.max_channels)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _gn_groups(c: int, h: int, w: int) -> list[int]:
    """GroupNorm group counts whose groups hold more than one value."""
    return [d for d in _divisors(c) if (c // d) * h * w > 1]


def _allowed(op: str, state: State, g: Grammar, nested: bool, keep_spatial: bool) -> bool:
    """Can ``op`` follow ``state`` here (grammar bounds, nesting rules, size limits)?"""
    if op not in g.ops:
        return False
    if nested and (op in _KIND_CHANGING or op == "tap"):
        return False
    c = channels(state)
    if state[0] == "image":
        _, _, h, w = state
        if op == "pool":
            return not keep_spatial and h >= 2 and w >= 2
        if op == "flatten":
            return c * h * w <= 256
        if op == "glu":
            return c % 2 == 0
        if op == "convT":
            return True
        if op == "split":
            return c >= 2
        if op == "shuffle":
            return len(_divisors(c)) > 2
        if op == "inorm":  # statistics of one value are undefined (torch refuses to export them)
            return h * w > 1
        if op == "gn":
            return bool(_gn_groups(c, h, w))
        # Growing ops may go past max_spatial once: up to twice its area, so that they come up at all.
        if op in ("upsample", "pixel_shuffle"):
            fits = not keep_spatial and 8 * h * w <= g.max_spatial**2
            return fits and (op == "upsample" or c % 4 == 0)
        if op == "pixel_unshuffle":
            return not keep_spatial and h % 2 == 0 and w % 2 == 0 and 4 * c <= 2 * g.max_channels
        if op == "pad":
            return not keep_spatial and (h + 2) * (w + 2) <= 2 * g.max_spatial**2
    if state[0] == "seq":
        if op == "cls":  # grows the sequence: never inside a body that must keep its shape
            return not keep_spatial and state[1] < 16
        if op in ("glu",):
            return c % 2 == 0
        if op == "split":
            return c >= 2
    if op in ("upsample", "pad", "pixel_shuffle", "pixel_unshuffle", "lrn"):
        return state[0] == "image"
    if op == "seq_conv":
        return state[0] == "seq"
    if op == "wconv":
        return state[0] == "image"
    if state[0] == "vec" and op in ("glu",):
        return c % 2 == 0
    if state[0] == "vec" and op == "split":
        return c >= 2
    return True


@st.composite
def _conv(draw: st.DrawFn, state: State, g: Grammar, keep_spatial: bool, transposed: bool) -> dict:
    c, h, w = state[1], state[2], state[3]
    style = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
    out = draw(_widths(g))
    groups = 1
    if style == "depthwise":
        mult = draw(st.sampled_from([1, 2]))
        if c * mult <= g.max_channels:
            out, groups = c * mult, c
    elif style == "grouped":
        common = [d for d in _divisors(c) if d > 1 and out % d == 0]
        if common:
            groups = draw(st.sampled_from(common))
    if transposed:
        if not keep_spatial and h * 2 <= g.max_spatial and w * 2 <= g.max_spatial and draw(st.booleans()):
            k, stride = 2, 2
        else:
            k, stride = draw(st.sampled_from([1, 3])), 1
        return {
            "op": "convT",
            "out": out,
            "k": k,
            "stride": stride,
            "groups": groups,
            "bias": draw(st.booleans()),
        }
    k = draw(st.sampled_from([1, 3, 2]))
    stride = 1 if keep_spatial else draw(st.sampled_from([1, 2]))
    if keep_spatial and k == 2:
        k = 3
    bias = draw(st.booleans())
    layer = {"op": "conv", "out": out, "k": k, "stride": stride, "groups": groups, "bias": bias}
    if k == 3 and draw(st.integers(0, 3)) == 0:
        layer["dilation"] = 2
    return layer


@st.composite
def _layer(draw: st.DrawFn, state: State, g: Grammar, depth: int, nested: bool, keep_spatial: bool) -> dict:
    ops = {"image": _IMAGE_OPS, "seq": _SEQ_OPS, "vec": _VEC_OPS}[state[0]]
    ops = [o for o in ops if _allowed(o, state, g, nested, keep_spatial)]
    if depth <= 0:
        ops = [o for o in ops if o not in _NESTING]
    op = draw(st.sampled_from(ops or ["act"]))  # an activation fits every state
    c = channels(state)
    if op == "act":
        return {"op": "act", "fn": draw(st.sampled_from(list(g.activations)))}
    if op in ("conv", "convT"):
        return draw(_conv(state, g, keep_spatial, transposed=op == "convT"))
    if op in ("bn", "inorm", "ln", "rms", "dropout", "to_seq", "flatten", "gap", "mean_seq", "first_token",
              "tap", "pos", "cls"):  # fmt: skip
        layer = {"op": op}
        if op == "inorm":
            layer["affine"] = draw(st.booleans())
        return layer
    if op == "gn":
        return {"op": "gn", "groups": draw(st.sampled_from(_gn_groups(c, state[2], state[3])))}
    if op == "pool":
        return {"op": "pool", "kind": draw(st.sampled_from(["max", "avg"]))}
    if op == "shuffle":
        return {"op": "shuffle", "groups": draw(st.sampled_from([d for d in _divisors(c) if 1 < d < c]))}
    if op == "glu":
        return {"op": "glu", "fn": draw(st.sampled_from(["sigmoid", "relu", "tanh"]))}
    if op == "scale":
        return {"op": "scale", "mode": draw(st.sampled_from(["mul", "add"]))}
    if op == "se":
        return {"op": "se", "hidden": draw(st.integers(1, max(1, c))), "fc": draw(st.booleans()),
                "fn": draw(st.sampled_from(["sigmoid", "hardsigmoid", "relu"]))}  # fmt: skip
    if op == "shared":
        return {"op": "shared", "k": draw(st.sampled_from([1, 3]))}
    if op == "cl_linear":
        return {"op": "cl_linear", "out": draw(_widths(g)), "bias": draw(st.booleans())}
    if op == "chanstat":
        return {"op": "chanstat", "kind": draw(st.sampled_from(["sum", "mean", "max", "softmax", "l2norm"]))}
    if op == "upsample":
        return {"op": "upsample", "mode": draw(st.sampled_from(["nearest", "bilinear"]))}
    if op == "pad":
        modes = ["zeros", "const", "replicate"] + (["reflect"] if min(state[2], state[3]) >= 2 else [])
        return {"op": "pad", "mode": draw(st.sampled_from(modes))}
    if op in ("pixel_shuffle", "pixel_unshuffle"):
        return {"op": op}
    if op == "lrn":
        # torch's pooling refuses a window longer than the (unpadded) channel axis
        return {"op": "lrn", "size": draw(st.sampled_from([s for s in (3, 5) if s <= c] or [1]))}
    if op == "seq_conv":
        out = draw(_widths(g))
        common = [d for d in _divisors(c) if out % d == 0]
        return {"op": "seq_conv", "out": out, "k": draw(st.sampled_from([1, 3])),
                "groups": draw(st.sampled_from(common)), "bias": draw(st.booleans())}  # fmt: skip
    if op == "linear":
        return {"op": "linear", "out": draw(_widths(g)), "bias": draw(st.booleans())}
    if op == "wlinear":
        modes = [m for m in WEIGHT_MODES if m != "addmm" or state[0] == "vec"]
        return {"op": "wlinear", "out": draw(_widths(g)), "mode": draw(st.sampled_from(modes)),
                "bias": draw(st.booleans())}  # fmt: skip
    if op == "wconv":
        return {"op": "wconv", "out": draw(_widths(g)), "k": draw(st.sampled_from([1, 3])),
                "mode": draw(st.sampled_from(["wnorm", "scaled"])), "bias": draw(st.booleans())}  # fmt: skip
    if op == "pick":
        style = draw(st.sampled_from(["slice", "perm", "subset", "repeat"]))
        if style == "slice":
            lo = draw(st.integers(0, c - 1))
            index = list(range(lo, draw(st.integers(lo + 1, c))))
        elif style == "perm":
            index = draw(st.permutations(range(c)))
        elif style == "subset":
            index = sorted(draw(st.sets(st.integers(0, c - 1), min_size=1, max_size=c)))
        else:  # a channel read twice: one removal must drop both copies
            index = draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=min(2 * c, g.max_channels)))
        return {"op": "pick", "index": list(index)}
    if op == "binop":
        body, reached = draw(_body(state, g, depth - 1, keep_spatial=True))
        body, _ = _restore(body, reached, state, g)
        return {"op": "binop", "body": body, "fn": draw(st.sampled_from(list(BINOPS)))}
    if op == "attn":
        kv = draw(st.sampled_from([1, 2]))
        heads = kv * draw(st.sampled_from([1, 2]))
        return {"op": "attn", "heads": heads, "kv_heads": kv, "head_dim": draw(st.integers(1, 4)),
                "bias": draw(st.booleans())}  # fmt: skip
    if op == "residual":
        project = state[0] == "image" and not keep_spatial and draw(st.booleans())
        body, out = draw(_body(state, g, depth - 1, keep_spatial=not project))
        layer = {"op": "residual", "body": body}
        try:
            step(layer, state)
        except SpecError:  # a stride the 1x1 projection cannot match: odd sizes
            return {"op": "act", "fn": "relu"}
        if not project:
            layer["body"] = _restore(body, out, state, g)[0]
        return layer
    if op == "gate":
        body, out = draw(_body(state, g, depth - 1, keep_spatial=True))
        body, _ = _restore(body, out, state, g)
        return {"op": "gate", "body": body, "fn": draw(st.sampled_from(["sigmoid", "tanh", "relu"]))}
    if op == "concat":
        n = draw(st.integers(1, 3))
        branches = [draw(_body(state, g, depth - 1, keep_spatial=True))[0] for _ in range(n)]
        return _fit_widths({"op": "concat", "branches": branches}, state, g)
    if op == "split":
        n = draw(st.integers(2, min(3, c)))
        equal = c % n == 0 and draw(st.booleans())
        if equal:
            sizes = [c // n] * n
        else:
            cuts = sorted(draw(st.lists(st.integers(1, c - 1), min_size=n - 1, max_size=n - 1, unique=True)))
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, c])]
        ins = [_with_c(state, s) for s in sizes]
        branches = [draw(_body(s, g, depth - 1, keep_spatial=True))[0] for s in ins]
        layer = {"op": "split", "sizes": sizes, "branches": branches, "chunk": equal}
        return _fit_widths(layer, state, g)
    raise AssertionError(op)


def _with_c(state: State, c: int) -> State:
    if state[0] == "image":
        return ("image", c, state[2], state[3])
    if state[0] == "seq":
        return ("seq", state[1], c)
    return ("vec", c)


def _restore(body: list[dict], out: State, state: State, g: Grammar) -> tuple[list[dict], State]:
    """Append the layer that brings a body's output back to ``state`` (same width, same size)."""
    if out == state:
        return body, out
    if state[0] == "image":
        return [*body, {"op": "conv", "out": state[1], "k": 1, "stride": 1, "groups": 1, "bias": True}], state
    return [*body, {"op": "linear", "out": channels(state), "bias": True}], state


def _fit_widths(layer: dict, state: State, g: Grammar) -> dict:
    """Keep a concat within the channel bound by trimming branch widths with a 1x1 projection."""
    try:
        out = step(layer, state)
    except SpecError:
        return {"op": "act", "fn": "relu"}
    total = channels(out)
    if total <= 2 * g.max_channels:
        return layer
    return {"op": "act", "fn": "relu"}


@st.composite
def _steps(draw: st.DrawFn, state: State, g: Grammar, depth: int, nested: bool, keep_spatial: bool) -> list:
    """One drawn layer; half of the activations come as "stem, activation, next op" (a motif), the
    next op half of the time one that mixes channels (``_MIXING``).

    A rule about f(0) only matters between a stem that zeroes a channel and the op that consumes or
    reduces it. Left to chance that chain is rare — hypothesis tends to repeat its last choice
    ("linear linear", "act act"), and a deliberately wrong Sigmoid rule survived hundreds of examples.
    Drawing the chain as one unit makes it common.
    """
    layer = draw(_layer(state, g, depth, nested, keep_spatial))
    stem = "conv" if state[0] == "image" else "linear"
    if layer["op"] != "act" or stem not in g.ops or not draw(st.booleans()):
        return [layer]
    first = draw(_layer(state, replace(g, ops=frozenset({stem})), 0, nested, keep_spatial))
    try:
        mid = step(layer, step(first, state))
    except SpecError:
        return [first, layer]
    mixers = g.ops & _MIXING
    if mixers and draw(st.booleans()):  # half the time, an op that mixes channels without weights
        then = draw(_layer(mid, replace(g, ops=mixers), depth, nested, keep_spatial))
    else:
        then = draw(_layer(mid, g, depth, nested, keep_spatial))
    return [first, layer, then]


@st.composite
def _body(draw: st.DrawFn, state: State, g: Grammar, depth: int, keep_spatial: bool) -> tuple[list, State]:
    n = draw(st.integers(0, 3))
    layers: list[dict] = []
    for _ in range(n):
        for layer in draw(_steps(state, g, depth, nested=True, keep_spatial=keep_spatial)):
            new = step(layer, state)
            if channels(new) > 2 * g.max_channels:
                break
            layers.append(layer)
            state = new
    return layers, state


@st.composite
def _input(draw: st.DrawFn, kinds: Collection[str], g: Grammar) -> dict:
    kind = draw(st.sampled_from(sorted(kinds)))
    if kind == "image":
        c = draw(st.integers(1, 4))
        h = draw(st.integers(1, g.max_spatial))
        w = draw(st.integers(1, g.max_spatial))
        return {"kind": "image", "shape": [1, c, h, w]}
    if kind == "seq":
        return {"kind": "seq", "shape": [1, draw(st.integers(1, g.max_seq)), draw(st.integers(1, 8))]}
    return {"kind": "tokens", "vocab": draw(st.integers(2, 12)), "seq": draw(st.integers(1, g.max_seq)),
            "dim": draw(st.integers(1, g.max_channels))}  # fmt: skip


@st.composite
def _swarm(draw: st.DrawFn, g: Grammar) -> Grammar:
    """Swarm testing: each network draws from a random half of the grammar (or, one time in three, all
    of it). With fewer ops in play, chains of the same few ops — a stem, an activation with f(0) != 0, a
    reduction — come up far more often than under one fixed mix, and such chains are where rules fail.
    """
    if draw(st.integers(0, 2)) == 0:
        return g
    ops = frozenset(op for op in sorted(g.ops) if op in ("act", "head") or draw(st.booleans()))
    acts = tuple(a for a in g.activations if draw(st.booleans())) or g.activations[:1]
    return replace(g, ops=ops, activations=acts)


@st.composite
def architectures(
    draw: st.DrawFn,
    kinds: Collection[str] = ("image", "seq", "tokens"),
    ops: Collection[str] | None = None,
    max_layers: int = 6,
    max_depth: int = 2,
    max_channels: int = 16,
    activations: Collection[str] | None = None,
) -> dict:
    """A random network spec (see ``fuzz.arch``): input, layers, an optional head, a weight seed.

    ``ops`` restricts the grammar (``ALL_OPS`` by default), ``activations`` the ``act`` functions
    (``fuzz.arch.ACTIVATIONS``); ``kinds`` picks the input kinds. Narrowing both is how to aim the
    fuzzer at one rule: a rule is only exercised when the ops around it are drawn too.
    """
    unknown = set(ops or ()) - ALL_OPS | set(activations or ()) - set(ACTIVATIONS)
    if unknown:
        raise ValueError(f"not in the grammar: {sorted(unknown)}")
    g = Grammar(
        max_layers=max_layers,
        max_depth=max_depth,
        max_channels=max_channels,
        ops=frozenset(ALL_OPS if ops is None else ops),
        activations=tuple(ACTIVATIONS if activations is None else activations),
    )
    g = draw(_swarm(g))
    inp = draw(_input(kinds, g))
    spec: dict = {"input": inp, "layers": [], "seed": draw(st.integers(0, 2**16))}
    state = input_state(spec)
    n = draw(st.integers(1, g.max_layers))
    taps = 0
    for _ in range(n):
        for layer in draw(_steps(state, g, g.max_depth, nested=False, keep_spatial=False)):
            if layer["op"] == "tap":
                taps += 1
                if taps > 2:
                    break
            new = step(layer, state)
            if channels(new) > 2 * g.max_channels or (new[0] == "vec" and channels(new) > 256):
                break
            spec["layers"].append(layer)
            state = new
    if state[0] == "image" and "head" in g.ops and "gap" in g.ops and draw(st.booleans()):
        spec["layers"].append({"op": "gap"})
        state = step({"op": "gap"}, state)
    if state[0] != "image" and "head" in g.ops and draw(st.integers(0, 3)) > 0:
        tied = (
            inp["kind"] == "tokens"
            and "tied_head" in g.ops
            and state[0] == "seq"
            and channels(state) == inp["dim"]
            and draw(st.booleans())
        )
        if tied:
            spec["layers"].append({"op": "tied_head", "vocab": inp["vocab"]})
        else:
            spec["layers"].append({"op": "head", "out": draw(st.integers(1, 6))})
    return spec


def exporters(slow: bool = False, half: bool = False) -> st.SearchStrategy[str]:
    """TorchScript exports (tens of milliseconds); with ``slow`` also the dynamo exporter (~1 s); with
    ``half`` also the fp16 conversion of the eval export (checked at the fp16 tolerance, so only for
    the pruning properties)."""
    choices = list(EXPORTERS) if slow else [e for e in EXPORTERS if e != "dynamo"]
    return st.sampled_from(choices + (list(HALF_EXPORTERS) if half else []))


def removal_seeds() -> st.SearchStrategy[int]:
    """Seeds for ``fuzz.properties.random_removal`` (which ZIGs of which groups to remove)."""
    return st.integers(0, 2**16)
