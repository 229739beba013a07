"""Shape-value tracking: follow the small integer tensors that exports use to compute shapes.

Real exports compute Reshape targets, Expand shapes and masks with Shape → Gather → Unsqueeze → Concat
chains. Each element of such a tensor is tracked as an ``Entry``: a literal (with the constant it can be
rewritten in), a runtime copy of some axis's size, or a computed expression. Movement ops keep the
provenance; arithmetic keeps the value when it is known but pins the axes it read, because a pruned size
would silently change its result.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphcore.channels import ChannelGraph, Entry
from graphcore.ir import Node
from graphcore.ops.layout import slice_params, slice_range

__all__ = ["fold_literals", "fold_node"]

Folder = Callable[[ChannelGraph, Node, list[list[Entry] | None]], list[Entry] | None]
_FOLDERS: dict[str, Folder] = {}
_SCALAR_OUT: set[str] = set()


def _folder(*ops: str):
    def deco(fn: Folder) -> Folder:
        for op in ops:
            _FOLDERS[op] = fn
        return fn

    return deco


def fold_node(ctx: ChannelGraph, node: Node) -> None:
    """Compute the output entries of ``node`` when its tracked inputs allow it."""
    fn = _FOLDERS.get(node.op)
    if fn is not None and node.domain in ("", "ai.onnx") and node.outputs:
        ins = [ctx.get_entries(v, node, i) for i, v in enumerate(node.inputs)]
        out = fn(ctx, node, ins)
        if out is not None:
            ctx.set_entries(node.outputs[0], out, scalar=node.outputs[0].rank == 0)
            return
    fold_literals(ctx, node)


@_folder("Identity", "Cast", "CastLike")
def _copy(ctx: ChannelGraph, node: Node, ins):
    if ins and ins[0] is not None:
        ctx.handled(0)
        return list(ins[0])
    return None


@_folder("Unsqueeze", "Squeeze", "Reshape", "Flatten")
def _reshape_1d(ctx: ChannelGraph, node: Node, ins):
    if ins and ins[0] is not None and (node.outputs[0].rank or 0) <= 1:
        ctx.handled(0)
        return list(ins[0])
    return None


@_folder("Gather")
def _gather(ctx: ChannelGraph, node: Node, ins):
    data = ins[0] if ins else None
    idx = node.input(1)
    if data is None or idx is None or int(node.attr("axis", 0)) != 0:
        return None
    if idx.const is None:
        return None
    n = len(data)
    picks = np.asarray(idx.const).reshape(-1)
    try:
        out = [data[int(i) + n if int(i) < 0 else int(i)] for i in picks]
    except IndexError:
        return None
    ctx.handled(0)
    ctx.handled(1)
    return out


@_folder("Concat")
def _concat(ctx: ChannelGraph, node: Node, ins):
    if not ins or any(e is None for e in ins):
        return None
    for i in range(len(ins)):
        ctx.handled(i)
    return [e for part in ins for e in part]  # type: ignore[union-attr]


@_folder("Slice")
def _slice(ctx: ChannelGraph, node: Node, ins):
    data = ins[0] if ins else None
    if data is None:
        return None
    vals = []
    for i in (1, 2, 3, 4):
        v = node.input(i)
        vals.append(
            None if v is None or v.const is None else [int(x) for x in np.asarray(v.const).reshape(-1)]
        )
    if node.input(1) is None:
        vals = [node.attr("starts"), node.attr("ends"), node.attr("axes"), None]
    starts, ends, axes, steps = vals
    if starts is None or ends is None or (axes is not None and list(axes) not in ([0], [-1])):
        return None
    step = steps[0] if steps else 1
    ctx.handled(0)
    return (
        list(data[slice(starts[0], ends[0], step)]) if abs(ends[0]) < 2**62 else list(data[starts[0] :: step])
    )


def _arith(fn: Callable[[int, int], int]) -> Folder:
    def fold(ctx: ChannelGraph, node: Node, ins):
        if len(ins) < 2 or ins[0] is None or ins[1] is None:
            return None
        a, b = ins[0], ins[1]
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            return None
        n = max(len(a), len(b))
        out = []
        for k in range(n):
            ea, eb = a[k if len(a) > 1 else 0], b[k if len(b) > 1 else 0]
            refs = ea.sources() + eb.sources()
            val = None
            if ea.value is not None and eb.value is not None:
                try:
                    val = int(fn(ea.value, eb.value))
                except (ZeroDivisionError, OverflowError):
                    val = None
            if not refs and ea.kind == "lit" and eb.kind == "lit" and val is not None:
                out.append(Entry.lit(val))
            else:
                out.append(Entry("expr", val, refs=refs))
        return out

    return fold


_FOLDERS["Add"] = _arith(lambda a, b: a + b)
_FOLDERS["Sub"] = _arith(lambda a, b: a - b)
_FOLDERS["Mul"] = _arith(lambda a, b: a * b)
_FOLDERS["Div"] = _arith(lambda a, b: int(a / b) if b else 1 // 0)
_FOLDERS["Mod"] = _arith(lambda a, b: a % b)
_FOLDERS["Max"] = _arith(max)
_FOLDERS["Min"] = _arith(min)
_FOLDERS["Equal"] = _arith(lambda a, b: int(a == b))
_FOLDERS["Less"] = _arith(lambda a, b: int(a < b))
_FOLDERS["Greater"] = _arith(lambda a, b: int(a > b))


@_folder("Where")
def _where(ctx: ChannelGraph, node: Node, ins):
    if len(ins) < 3 or any(e is None for e in ins):
        return None
    c, a, b = ins
    n = max(len(c), len(a), len(b))  # type: ignore[arg-type]
    out = []
    for k in range(n):
        ec, ea, eb = (e[k if len(e) > 1 else 0] for e in (c, a, b))  # type: ignore[union-attr]
        refs = ec.sources() + ea.sources() + eb.sources()
        val = None
        if ec.value is not None:
            pick = ea if ec.value else eb
            val = pick.value
            if not ec.sources() and ec.kind == "lit":
                out.append(pick)
                continue
        out.append(Entry("expr", val, refs=refs))
    return out


@_folder("Neg", "Abs")
def _unary(ctx: ChannelGraph, node: Node, ins):
    if not ins or ins[0] is None:
        return None
    fn = (lambda x: -x) if node.op == "Neg" else abs
    return [Entry("expr", None if e.value is None else fn(e.value), refs=e.sources()) for e in ins[0]]


@_folder("ConstantOfShape")
def _const_of_shape(ctx: ChannelGraph, node: Node, ins):
    shape = ins[0] if ins else None
    if shape is None or len(shape) != 1 or shape[0].value is None or shape[0].value > 64:
        return None
    value = node.attr("value")
    fill = int(np.asarray(value).reshape(-1)[0]) if value is not None else 0
    if value is not None and np.asarray(value).dtype.kind not in "iub":
        return None
    return [Entry.lit(fill) for _ in range(shape[0].value)]


@_folder("Range")
def _range(ctx: ChannelGraph, node: Node, ins):
    if len(ins) < 3 or any(e is None or len(e) != 1 or e[0].value is None for e in ins):
        return None
    start, limit, delta = (e[0].value for e in ins)  # type: ignore[index]
    if not delta or abs((limit - start) // delta) > 64:  # type: ignore[operator]
        return None
    refs = tuple(r for e in ins for r in e[0].sources())  # type: ignore[index]
    return [Entry("expr", v, refs=refs) for v in range(start, limit, delta)]  # type: ignore[arg-type]


# -- literal folding ----------------------------------------------------------------------------------
# Exports build some constant operands with a small subgraph of movement ops on literals alone: the
# TorchScript ``F.pad`` writes its pads as Concat → Reshape(-1, 2) → Slice(step -1) → Transpose →
# Reshape(-1) → Cast. Entries track 1-D values only, so such a chain is evaluated here, once, with
# numpy. Only literals are folded (no runtime size, no trainable weight): the result does not change
# when the model is pruned, so a rule may read it like any constant.

_LITERAL_LIMIT = 4096
_CAST = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
         10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}  # fmt: skip


def _literal(ctx: ChannelGraph, v) -> np.ndarray | None:
    if v is None or v.const is None or v.trainable or v.const.size > _LITERAL_LIMIT:
        return None
    entries = ctx.entries.get(v.name)
    if entries is not None and any(e.kind != "lit" for e in entries):
        return None  # a runtime size or an expression of one: it must keep its provenance
    return np.asarray(v.const)


def _ints(a: np.ndarray | None, default=None):
    return default if a is None else [int(x) for x in a.reshape(-1)]


def _eval_literal(ctx: ChannelGraph, node: Node, xs: list[np.ndarray | None]) -> np.ndarray | None:
    op, x = node.op, xs[0] if xs else None
    if op == "Concat":
        if any(a is None for a in xs):
            return None
        return np.concatenate(xs, axis=int(node.attr("axis", 0)))  # type: ignore[arg-type]
    if x is None:
        return None
    if op == "Identity":
        return x
    if op == "Cast":
        to = _CAST.get(int(node.attr("to", 0)))
        return None if to is None else x.astype(to)
    if op == "Reshape":
        shape = _ints(xs[1] if len(xs) > 1 else None, node.attr("shape"))
        if shape is None:
            return None
        if not node.attr("allowzero", 0):
            shape = [x.shape[k] if d == 0 and k < x.ndim else d for k, d in enumerate(shape)]
        return x.reshape(shape)
    if op == "Transpose":
        perm = node.attr("perm")
        return np.transpose(x, None if perm is None else [int(p) for p in perm])
    if op == "Flatten":
        axis = int(node.attr("axis", 1)) % max(x.ndim, 1) if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    if op in ("Unsqueeze", "Squeeze"):
        axes = _ints(xs[1] if len(xs) > 1 else None, node.attr("axes"))
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(axes))
        if axes is None:
            return None
        out = x
        for a in sorted(a % (x.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Neg":
        return -x
    if op == "Abs":
        return np.abs(x)
    if op == "Slice":  # the Slice rule's own reading of the operands and ONNX's clamping
        params = slice_params(ctx, node, x.ndim)
        if params is None:
            return None
        for a, (s, e, st) in params.items():
            x = np.take(x, np.asarray(slice_range(s, e, st, x.shape[a]), dtype=np.int64), axis=a)
        return x
    if op == "Gather":
        if len(xs) < 2 or xs[1] is None:
            return None
        return np.take(x, xs[1].astype(np.int64), axis=int(node.attr("axis", 0)))
    return None


def fold_literals(ctx: ChannelGraph, node: Node) -> None:
    """Evaluate ``node`` when every operand is a small literal and its op is a movement op."""
    if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1 or node.outputs[0].const is not None:
        return
    if not node.inputs or node.op not in _LITERAL_OPS:
        return
    xs = [_literal(ctx, v) for v in node.inputs]
    if any(a is None and v is not None for a, v in zip(xs, node.inputs)):
        return
    try:
        with np.errstate(all="ignore"):
            out = _eval_literal(ctx, node, xs)
    except (ValueError, IndexError, TypeError, OverflowError):
        return  # a malformed operand: the op's rule judges the node as it stands
    if out is not None and out.size <= _LITERAL_LIMIT:
        node.outputs[0].const = np.asarray(out)


_LITERAL_OPS = frozenset({"Identity", "Cast", "Reshape", "Transpose", "Flatten", "Unsqueeze", "Squeeze",
                          "Neg", "Abs", "Concat", "Slice", "Gather"})  # fmt: skip
