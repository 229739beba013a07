"""Indexing handlers: ``x[...]`` on tensors and on shapes, as Slice, Gather and Unsqueeze nodes.

A literal slice bound is recorded where it sits (``LitSite``, path into the index tuple) so construct
can rewrite it; a bound computed at run time pins the sliced axis instead.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch.fx as fx

from frontends.torch_lower import INT64_MAX, Builder, Unsupported, on_function, static_size
from frontends.torch_meta import LitSite
from frontends.torch_ops.common import rank, shape_of
from frontends.torch_ops.shapes import emit_pick
from graphcore.ir import Value
from graphcore.ops.joins import slice_range

__all__: list[str] = []


@on_function(operator.getitem)
def _getitem(b: Builder, n: fx.Node) -> Any:
    base = b.arg(n, 0)
    idx = b.arg(n, 1)
    if isinstance(base, list | tuple):
        if isinstance(idx, int | slice):
            return base[idx]
        raise Unsupported("index into a sequence")
    if not isinstance(base, Value):
        raise Unsupported("index into a non-tensor")
    if base.dtype == "int64" and base.rank == 1 and base.name in b.dims:
        return _index_shape(b, n, base, idx)
    return _index_tensor(b, n, base, n.args[1], idx)


def _index_shape(b: Builder, n: fx.Node, s: Value, idx: Any) -> Value:
    if isinstance(idx, int):
        return emit_pick(b, n, s, idx, b.out(n))
    if isinstance(idx, slice) and all(isinstance(v, int | None) for v in (idx.start, idx.stop, idx.step)):
        k = static_size(s, 0)
        picks = list(range(k))[idx]
        y = b.out(n)
        b.emit(n, "Gather", [s, b.const(n, picks, "idx", np.int64)], [y], axis=0)
        src = b.dims.get(s.name)
        b.dims[y.name] = [src[i] if src else None for i in picks]
        return y
    raise Unsupported("index into a shape")


def _index_tensor(b: Builder, n: fx.Node, x: Value, raw_idx: Any, idx: Any) -> Value:
    items = list(idx) if isinstance(idx, tuple) else [idx]
    real = sum(1 for it in items if it is not None and it is not Ellipsis)
    r = rank(x)
    if real > r or sum(1 for it in items if it is Ellipsis) > 1:
        raise Unsupported("too many indices")
    expanded: list[tuple[Any, tuple | None]] = []
    for k, it in enumerate(items):
        if it is Ellipsis:
            expanded.extend((slice(None), None) for _ in range(r - real))
        else:
            expanded.append((it, ("args", 1, k) if isinstance(raw_idx, tuple) else ("args", 1)))
    expanded.extend((slice(None), None) for _ in range(r - sum(1 for it, _ in expanded if it is not None)))
    cur = x
    shape = list(shape_of(x))
    axis = 0
    gathers: list[tuple[int, Any]] = []
    unsq: list[int] = []
    out_pos = 0
    for it, path in expanded:
        if it is None:
            unsq.append(out_pos)
            out_pos += 1
            continue
        if isinstance(it, slice):
            if not (it.start is None and it.stop is None and it.step is None):
                cur = _emit_slice(b, n, cur, shape, axis, it, path)
            axis += 1
            out_pos += 1
            continue
        if isinstance(it, int) or (
            isinstance(it, Value) and it.rank == 0 and (it.dtype or "").startswith("int")
        ):
            gathers.append((axis, it))
            axis += 1
            continue
        raise Unsupported("advanced indexing")
    final = b.out(n)
    steps: list[tuple[str, dict, Any]] = []
    for a, it in reversed(gathers):
        steps.append(("Gather", {"axis": a}, it))
    if unsq:
        steps.append(("Unsqueeze", {"axes": unsq}, None))
    if not steps and cur is x:
        b.emit(n, "Identity", [x], [final])
        return final
    if not steps:
        b.graph.replace_output(cur, final)  # the last Slice writes the node's result itself
        return final
    for k, (op, attrs, it) in enumerate(steps):
        last = k == len(steps) - 1
        if op == "Gather":
            del shape[attrs["axis"]]
            nxt = final if last else b.tmp(n, "g", tuple(shape), x.dtype)
            ind = it if isinstance(it, Value) else b.const(n, int(it), "index", np.int64)
            b.emit(n, "Gather", [cur, ind], [nxt], **attrs)
        else:
            for p in attrs["axes"]:
                shape.insert(p, 1)
            nxt = final if last else b.tmp(n, "u", tuple(shape), x.dtype)
            b.emit(n, "Unsqueeze", [cur, b.axes(n, attrs["axes"])], [nxt])
        cur = nxt
    return final


def _emit_slice(
    b: Builder, n: fx.Node, x: Value, shape: list[int], axis: int, sl: slice, path: tuple | None
) -> Value:
    dim = shape[axis]
    start, stop, step = sl.start, sl.stop, sl.step
    if step is not None and not isinstance(step, int):
        raise Unsupported("traced slice step")
    step = 1 if step is None else step
    if step <= 0:
        raise Unsupported("negative slice step")
    vals: list[Value] = []
    sites: list[LitSite | None] = []
    for which, bound, default in (("start", start, 0), ("end", stop, INT64_MAX)):
        site = None
        if bound is None:
            vals.append(b.const(n, [default], which, np.int64))
        elif isinstance(bound, int):
            site = LitSite(n.name, (*path, which), bound) if path is not None else None
            vals.append(b.lit(n, [bound], [site], f"{which}{axis}"))
        elif isinstance(bound, Value) and bound.rank == 0:
            u = b.tmp(n, which, (1,), "int64")
            b.emit(n, "Unsqueeze", [bound, b.axes(n, [0])], [u])
            vals.append(u)
            b.pin(n, x, [axis], "sliced at a bound computed at run time")
        else:
            raise Unsupported("slice bound")
        sites.append(site)
    lo = start if isinstance(start, int) else (0 if start is None else b.static_int(start))
    hi = stop if isinstance(stop, int) else (INT64_MAX if stop is None else b.static_int(stop))
    size = len(slice_range(lo, hi if hi < INT64_MAX else dim, step, dim))
    shape[axis] = size
    y = b.tmp(n, "slice", tuple(shape), x.dtype)
    node = b.emit(n, "Slice", [x, vals[0], vals[1], b.const(n, [axis], "axes", np.int64),
                               b.const(n, [step], "steps", np.int64)], [y])  # fmt: skip
    b.operand(node, 1, sites[:1])
    b.operand(node, 2, sites[1:])
    return y
