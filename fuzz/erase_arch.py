"""Super-networks with removable branches, for fuzzing erasing mode, and what the grammar knows of them.

The specs are ``fuzz.arch`` specs (so they build, export and print like every other fuzzed network),
drawn from a grammar aimed at the erasing analysis: a stem, then blocks —

* ``residual``: ``x + body(x)`` with an identity shortcut;
* ``projection``: a residual whose body strides or changes the width, with a 1x1 conv shortcut;
* ``concat``: a channel concat skip (``cat(x, body(x))``, or several branches) feeding a conv;
* ``sum``: 2–4 parallel candidate ops summed (convs, separable convs, pools, identity: a DARTS cell);
* ``nested``: a residual whose body holds another block (a residual in a residual, a cell, a gate);
* ``gate``: ``x * f(body(x))`` — a branch into a Mul, never erasable;
* ``plain``: a few layers in a chain, nothing to erase.

Branch bodies are short chains of convs (plain or depthwise), batch norms (random statistics, so a
zeroed branch is not trivially zero before the check), 3x3 same-size pools and activations; half of
the bodies end in a *tail* after their last stem, where an activation with f(0) != 0 (sigmoid, exp,
x + 0.5, ...) makes the branch non-erasable.

What the spec says about erasability is read back by :func:`branch_facts` and :func:`gate_params`,
over torch parameter names (``fuzz.arch.build``'s module paths), so the properties can hold the
analysis to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import strategies as st

from fuzz.arch import ACTIVATIONS, SpecError, State, channels, input_state, step

__all__ = [
    "BLOCKS",
    "SIMPLE_ACTIVATIONS",
    "BranchFact",
    "EraseGrammar",
    "branch_facts",
    "erase_architectures",
    "gate_params",
    "is_plain",
    "plain_chains",
]

BLOCKS = ("plain", "residual", "projection", "concat", "sum", "nested", "gate")
"""Block kinds, simplest first (hypothesis shrinks a ``sampled_from`` towards its first element)."""

SIMPLE_ACTIVATIONS = frozenset({"relu", "leaky_relu", "tanh", "elu", "relu6", "hardtanh", "identity", "abs"})
"""Activations with f(0) = 0 that both frontends see as one operator. Others with f(0) = 0 are written
as ``x * g(x)`` by an exporter (SiLU, GELU, Mish, x²) — a joint inside the branch, after which the
analysis may rightly stop the structure — so only these make an "it must be erasable" claim."""

_STEMS = ("conv", "bn", "linear", "ln", "rms", "attn")
"""Layers whose parameters, all zero, make their output exactly zero whatever the input (attention: its
output projection)."""


@dataclass(frozen=True)
class EraseGrammar:
    """Bounds of the drawn super-networks: tiny, so that export and onnxruntime stay fast."""

    max_blocks: int = 4
    max_depth: int = 2
    max_channels: int = 8
    max_spatial: int = 6
    blocks: tuple[str, ...] = BLOCKS
    activations: tuple[str, ...] = tuple(ACTIVATIONS)


# -- drawing -----------------------------------------------------------------------------------------
def _conv(out: int, k: int = 1, groups: int = 1, bias: bool = True, stride: int = 1) -> dict:
    return {"op": "conv", "out": out, "k": k, "stride": stride, "groups": groups, "bias": bias}


def _stem(state: State, out: int, bias: bool = True) -> dict:
    """The width-setting layer of the stream: a 1x1 conv on images, a Linear on tokens."""
    if state[0] == "image":
        return _conv(out, 1, bias=bias)
    return {"op": "linear", "out": out, "bias": bias}


def _norm(state: State, draw: st.DrawFn) -> dict:
    if state[0] == "image":
        return {"op": "bn"}
    return {"op": draw(st.sampled_from(["ln", "rms"]))}


def _pool_or_norm(state: State, draw: st.DrawFn) -> dict:
    if state[0] == "image":
        return {"op": "pool", "kind": draw(st.sampled_from(["max", "avg"])), "same": True}
    return _norm(state, draw)


@st.composite
def _flat(draw: st.DrawFn, state: State, g: EraseGrammar) -> dict:
    """One layer that keeps the spatial size: a conv (plain or depthwise), a BN, a pool or an act; on
    tokens a Linear, a LayerNorm or RMSNorm, or an act."""
    kind = draw(st.sampled_from(["conv", "act", "bn", "conv", "pool"]))
    c = channels(state)
    if state[0] == "seq":
        if kind == "conv":
            return {"op": "linear", "out": draw(st.integers(1, g.max_channels)), "bias": draw(st.booleans())}
        if kind != "act":
            return _norm(state, draw)
    if kind == "conv":
        if draw(st.integers(0, 3)) == 0:
            return _conv(c, 3, groups=c, bias=draw(st.booleans()))
        width, k = draw(st.integers(1, g.max_channels)), draw(st.sampled_from([1, 3]))
        return _conv(width, k, bias=draw(st.booleans()))
    if kind == "act":
        return draw(_act(g))
    if kind == "bn":
        return {"op": "bn"}
    return {"op": "pool", "kind": draw(st.sampled_from(["max", "avg"])), "same": True}


@st.composite
def _act(draw: st.DrawFn, g: EraseGrammar) -> dict:
    """Two times in three a simple f(0) = 0 activation (when the grammar has one), else any: so that
    most branches stay erasable and a good share do not."""
    simple = [a for a in g.activations if a in SIMPLE_ACTIVATIONS]
    pool = simple if simple and draw(st.integers(0, 2)) > 0 else list(g.activations)
    return {"op": "act", "fn": draw(st.sampled_from(pool))}


@st.composite
def _tail(draw: st.DrawFn, g: EraseGrammar, state: State) -> list[dict]:
    """What follows a branch's last stem: nothing (half the time), an activation, a norm, a pool."""
    n = draw(st.sampled_from([0, 0, 1, 2]))
    out: list[dict] = []
    for _ in range(n):
        kind = draw(st.sampled_from(["act", "act", "norm", "pool"]))
        if kind == "act":
            out.append(draw(_act(g)))
        elif kind == "norm":
            out.append(_norm(state, draw))
        else:
            out.append(_pool_or_norm(state, draw))
    return out


@st.composite
def _body(
    draw: st.DrawFn, state: State, g: EraseGrammar, depth: int, width: int | None, min_len: int = 1
) -> list[dict]:
    """A same-size chain from ``state``; with ``width`` it ends at that many channels (a 1x1 conv
    restores it when the drawn layers changed it, and the tail comes after that)."""
    layers: list[dict] = []
    n = draw(st.integers(min_len, 3))
    for _ in range(n):
        if depth > 0 and draw(st.integers(0, 3)) == 0:
            layer = draw(_block(state, g, depth - 1, nested=True))
        else:
            layer = draw(_flat(state, g))
        layers.append(layer)
        state = step(layer, state)
    if width is not None and channels(state) != width:
        layers.append(_stem(state, width))
    layers += draw(_tail(g, state))
    return layers


@st.composite
def _block(draw: st.DrawFn, state: State, g: EraseGrammar, depth: int, nested: bool = False) -> dict:
    """One block on ``state`` that keeps the spatial size (a projection may stride; see below)."""
    kinds = [b for b in g.blocks if depth > 0 or b != "nested"]
    if nested:  # inside a body the size must come back: a projection would change it
        kinds = [b for b in kinds if b not in ("projection", "plain")] or ["residual"]
    if state[0] != "image":  # a projection shortcut is a 1x1 conv: images only
        kinds = [b for b in kinds if b != "projection"] or ["residual"]
    kind = draw(st.sampled_from(kinds))
    c = channels(state)
    if kind == "residual" and state[0] == "seq" and draw(st.integers(0, 2)) == 0:
        # a pre-norm transformer sub-block: x + Attn(Norm(x)) or x + MLP(Norm(x))
        if draw(st.booleans()):
            kv = draw(st.sampled_from([1, 2]))
            attn = {"op": "attn", "heads": kv * draw(st.sampled_from([1, 2])), "kv_heads": kv,
                    "head_dim": draw(st.integers(1, 4)), "bias": draw(st.booleans())}  # fmt: skip
            return {"op": "residual", "body": [_norm(state, draw), attn]}
        hidden = {"op": "linear", "out": draw(st.integers(1, 2 * g.max_channels)), "bias": True}
        mlp = [_norm(state, draw), hidden, draw(_act(g)), _stem(state, c)]
        return {"op": "residual", "body": mlp + draw(_tail(g, state))}
    if kind == "plain":
        return {"op": "act", "fn": draw(st.sampled_from(g.activations))}
    if kind == "residual":
        return {"op": "residual", "body": draw(_body(state, g, depth, width=c))}
    if kind == "projection":
        out = draw(st.integers(1, g.max_channels))
        stride = 2 if state[2] >= 2 and state[3] >= 2 and draw(st.booleans()) else 1
        first = _conv(out, draw(st.sampled_from([1, 3])), stride=stride, bias=draw(st.booleans()))
        rest = draw(_body(step(first, state), g, depth, width=out, min_len=0))
        layer = {"op": "residual", "body": [first, *rest]}
        try:
            step(layer, state)
        except SpecError:  # an odd size the 1x1 shortcut cannot match: fall back to the identity
            return {"op": "residual", "body": draw(_body(state, g, depth, width=c))}
        return layer
    if kind == "concat":
        n = draw(st.integers(2, 3))
        branches = [draw(_body(state, g, depth, width=None, min_len=0)) for _ in range(n)]
        if all(branches) and draw(st.booleans()):
            branches[0] = []  # the classic concat skip: cat(x, body(x))
        return {"op": "concat", "branches": branches}
    if kind == "sum":
        n = draw(st.integers(2, 4))
        return {"op": "sum", "branches": [draw(_candidate(state, g)) for _ in range(n)]}
    if kind == "nested":
        before = draw(st.lists(_flat(state, g), max_size=1))
        mid = state
        for layer in before:
            mid = step(layer, mid)
        if channels(mid) != c:
            before.append(_stem(state, c))
        inner = draw(_block(state, g, depth - 1, nested=True))
        back = [] if channels(step(inner, state)) == c else [_stem(state, c)]  # a concat widens
        return {"op": "residual", "body": [*before, inner, *back, *draw(_tail(g, state))]}
    # gate: x * f(body(x)); the body holds parameters, so there is something the analysis could claim
    body = draw(_body(state, g, depth, width=c))
    if not any(layer["op"] in _STEMS for layer in body):
        body = [_stem(state, c), *body]
    return {"op": "gate", "body": body, "fn": draw(st.sampled_from(["sigmoid", "tanh", "relu"]))}


@st.composite
def _candidate(draw: st.DrawFn, state: State, g: EraseGrammar) -> list[dict]:
    """A DARTS candidate op: identity, a pool, conv-BN-act, a separable conv, or a zero-free act."""
    c = channels(state)
    kind = draw(st.sampled_from(["conv", "identity", "pool", "separable", "act"]))
    if kind == "identity":
        return []
    if kind == "pool":
        return [_pool_or_norm(state, draw)]
    if kind == "act":
        return [draw(_act(g))]
    if state[0] == "seq":  # a Linear, or a bottleneck of two
        layers = [_stem(state, c, bias=draw(st.booleans()))]
        if kind == "separable":
            layers = [_stem(state, draw(st.integers(1, g.max_channels))), _stem(state, c)]
        return layers + draw(_tail(g, state))
    if kind == "conv":
        layers = [_conv(c, draw(st.sampled_from([1, 3])), bias=draw(st.booleans()))]
    else:
        layers = [_conv(c, 3, groups=c, bias=False), _conv(c, 1, bias=False)]
    if draw(st.booleans()):
        layers.append({"op": "bn"})
    return layers + draw(_tail(g, state))


@st.composite
def erase_architectures(
    draw: st.DrawFn,
    blocks: tuple[str, ...] = BLOCKS,
    max_blocks: int = 4,
    max_depth: int = 2,
    activations: tuple[str, ...] | None = None,
    head: bool | None = None,
    kinds: tuple[str, ...] = ("image", "seq"),
) -> dict:
    """A random super-network spec with removable branches (see the module docstring).

    ``blocks`` narrows the block kinds (``BLOCKS``), ``activations`` the activations drawn anywhere
    (``fuzz.arch.ACTIVATIONS``); ``head`` forces (True) or forbids (False) a pooling + Linear head;
    ``kinds``: images (``[1, C, H, W]``, one time in three when both) and token sequences (``[1, S, C]``,
    with pre-norm attention and MLP sub-blocks among the residuals).
    """
    unknown = set(blocks) - set(BLOCKS) | set(activations or ()) - set(ACTIVATIONS)
    if unknown:
        raise ValueError(f"not in the erasing grammar: {sorted(unknown)}")
    g = EraseGrammar(
        max_blocks=max_blocks,
        max_depth=max_depth,
        blocks=tuple(blocks),
        activations=tuple(ACTIVATIONS if activations is None else activations),
    )
    if not kinds or set(kinds) - {"image", "seq"}:
        raise ValueError(f"kinds must be drawn from ('image', 'seq'), got {kinds!r}")
    c_in = draw(st.integers(1, 3))
    image = "seq" not in kinds or ("image" in kinds and draw(st.integers(0, 2)) > 0)
    if image:
        h, w = draw(st.integers(2, g.max_spatial)), draw(st.integers(2, g.max_spatial))
        inp = {"kind": "image", "shape": [1, c_in, h, w]}
    else:
        inp = {"kind": "seq", "shape": [1, draw(st.integers(1, g.max_spatial)), c_in]}
    spec: dict = {"input": inp, "layers": [], "seed": 0}
    state = input_state(spec)
    if draw(st.integers(0, 3)) > 0:  # a stem; without one the first block sits on the graph input
        width = draw(st.integers(2, g.max_channels))
        first = _conv(width, 3) if image else _stem(state, width)
        stem = [first, _norm(state, draw), {"op": "act", "fn": "relu"}]
        for layer in stem:
            state = step(layer, state)
        spec["layers"] += stem
    for _ in range(draw(st.integers(1, g.max_blocks))):
        layer = draw(_block(state, g, g.max_depth))
        new = step(layer, state)
        if channels(new) > 2 * g.max_channels:
            continue
        spec["layers"].append(layer)
        state = new
        if layer["op"] == "concat":  # a concat skip feeds a conv, whose input channels go with a branch
            width = draw(st.integers(1, g.max_channels))
            conv = _conv(width, draw(st.sampled_from([1, 3]))) if image else _stem(state, width)
            spec["layers"].append(conv)
            state = step(conv, state)
        if draw(st.integers(0, 3)) == 0:  # between blocks, maybe an activation with f(0) != 0
            spec["layers"].append(draw(_act(g)))
    if head if head is not None else draw(st.booleans()):
        pool = {"op": "gap" if image else "mean_seq"}
        spec["layers"] += [pool, {"op": "head", "out": draw(st.integers(1, 4))}]
    spec["seed"] = draw(st.integers(0, 2**16))
    return spec


@st.composite
def plain_chains(draw: st.DrawFn, max_layers: int = 5) -> dict:
    """A network with no skip at all: conv, BN, pool and activation layers in a row (and a head)."""
    g = EraseGrammar()
    spec: dict = {
        "input": {"kind": "image", "shape": [1, draw(st.integers(1, 3)), 4, 4]},
        "layers": [],
        "seed": draw(st.integers(0, 2**16)),
    }
    state = input_state(spec)
    for _ in range(draw(st.integers(1, max_layers))):
        layer = draw(_flat(state, g))
        spec["layers"].append(layer)
        state = step(layer, state)
    if draw(st.booleans()):
        spec["layers"] += [{"op": "gap"}, {"op": "head", "out": 2}]
    return spec


# -- what the spec says ------------------------------------------------------------------------------
def _walk(layers: list[dict], prefix: str) -> Iterator[tuple[str, dict]]:
    """(module path prefix, layer) of every layer, depth first, as ``fuzz.arch.build`` names them."""
    for i, layer in enumerate(layers):
        here = f"{prefix}mods.{i}."
        yield here, layer
        if layer["op"] in ("residual", "gate"):
            yield from _walk(layer["body"], f"{here}body.")
        for b, branch in enumerate(layer.get("branches", [])):
            yield from _walk(branch, f"{here}branches.{b}.")


def _own_params(prefix: str, layer: dict) -> list[str]:
    """Torch parameter names of a flat layer (a container's parameters are its children's)."""
    if layer["op"] == "conv":
        return [f"{prefix}weight"] + ([f"{prefix}bias"] if layer["bias"] else [])
    if layer["op"] == "bn":
        return [f"{prefix}weight", f"{prefix}bias"]
    if layer["op"] == "linear":
        return [f"{prefix}weight"] + ([f"{prefix}bias"] if layer.get("bias", True) else [])
    if layer["op"] == "ln":  # nn.LayerNorm on tokens
        return [f"{prefix}weight", f"{prefix}bias"]
    if layer["op"] == "rms":
        return [f"{prefix}weight"]
    if layer["op"] == "attn":
        names = [f"{prefix}{p}.weight" for p in "qkvo"]
        return names + ([f"{prefix}{p}.bias" for p in "qkvo"] if layer.get("bias", True) else [])
    return []


def _flat_only(body: list[dict]) -> bool:
    return all(layer["op"] in ("conv", "bn", "act", "pool", "linear", "ln", "rms", "attn") for layer in body)


def _ends_in_zero(body: list[dict]) -> bool | None:
    """Whether zeroing the body's parameters zeroes its output: True, False, or None (no parameters)."""
    last = max((i for i, layer in enumerate(body) if layer["op"] in _STEMS), default=None)
    if last is None:
        return None
    return all(layer["op"] != "act" or ACTIVATIONS[layer["fn"]] for layer in body[last + 1 :])


@dataclass
class BranchFact:
    """One branch of an Add (a residual body, its shortcut, a summed candidate) made of flat layers."""

    where: str
    params: frozenset[str]
    erasable: bool
    """False: zeroing its parameters leaves an f(0) != 0 after the last stem — never erasable.
    True: it must be a removal structure of its own."""
    certain: bool = field(default=False)
    """A claim of erasability the properties enforce: only with simple activations
    (``SIMPLE_ACTIVATIONS``), so that no frontend or exporter writes a joint inside the branch."""


def branch_facts(spec: dict) -> list[BranchFact]:
    """The Add branches of flat layers with parameters, with what the spec says of their erasability."""
    out: list[BranchFact] = []
    for prefix, layer in _walk(spec["layers"], "body."):
        if layer["op"] == "residual":
            bodies = [(f"{prefix}body.", layer["body"])]
        elif layer["op"] == "sum":
            bodies = [(f"{prefix}branches.{b}.", br) for b, br in enumerate(layer["branches"])]
        else:
            continue
        for where, body in bodies:
            zero = _ends_in_zero(body) if _flat_only(body) else None
            if zero is None:
                continue
            params = frozenset(p for i, sub in enumerate(body) for p in _own_params(f"{where}mods.{i}.", sub))
            # RMSNorm written out multiplies x by a function of x, attention multiplies q by k: joints
            # inside the branch, after which the analysis may rightly cut it into several structures.
            simple = all(
                (sub["op"] != "act" or sub["fn"] in SIMPLE_ACTIVATIONS) and sub["op"] not in ("rms", "attn")
                for sub in body
            )
            out.append(BranchFact(where, params, zero, certain=zero and simple))
    return out


def gate_params(spec: dict) -> set[str]:
    """Torch parameter names of layers directly in a gate's body (not inside a block there): whatever
    holds them ends in the gate's Mul, so it must never be erasable."""
    out: set[str] = set()
    for prefix, layer in _walk(spec["layers"], "body."):
        if layer["op"] == "gate":
            for i, sub in enumerate(layer["body"]):
                out.update(_own_params(f"{prefix}body.mods.{i}.", sub))
    return out


def is_plain(spec: dict) -> bool:
    """No skip, branch or gate anywhere: nothing can be erased."""
    return all(layer["op"] not in ("residual", "gate", "sum", "concat", "split") for layer in spec["layers"])
