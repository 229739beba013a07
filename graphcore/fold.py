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

__all__ = ["fold_node"]

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
    if fn is None or node.domain not in ("", "ai.onnx") or not node.outputs:
        return
    ins = [ctx.get_entries(v, node, i) for i, v in enumerate(node.inputs)]
    out = fn(ctx, node, ins)
    if out is not None:
        scalar = node.outputs[0].rank == 0
        ctx.set_entries(node.outputs[0], out, scalar=scalar)


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
