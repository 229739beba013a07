"""The channel-element graph: every index of every static tensor axis is one element.

Op rules (``graphcore.ops``) say which elements are the same channel (``link``), which axes may never
shrink (``pin``), and which elements are exactly zero once the parameters of their channel are zeroed
(``set_zero``). Connected components of linked elements are the ZIGs. Building everything as numpy index
arrays keeps the analysis linear in graph size: each rule emits O(axis size) work in vectorized form and
the components come from one sparse connected-components call.

Most links tie two whole axes element for element (a residual Add, an activation, a matmul's shared
dimension). Those are kept as pairs of *slots* (one list entry per link) instead of two index arrays of
the axis's length: a LLaMA-7B-shaped graph ties thousands of 4096- and 11008-wide axes, and the element
arrays were most of its time and memory. ``fold`` finds the classes of slots linked whole (connected
components over slots), folds every slot onto its class's earliest slot and runs connected components
over elements only for the links between individual elements (index maps, blocks); the labels are then
spread back to every element.

Zero tracking (``zero``) is evaluated for all channels at once. That is exact per channel because an
element's zero-ness only ever depends on elements it is linked to, i.e. on its own channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from graphcore.ir import Node, Value

__all__ = ["ChannelGraph", "Entry", "SlotKey", "spans"]

SlotKey = tuple[str, int]

MAX_AXIS = 1 << 24
"""Axes longer than this are never channels (no weight has 16M rows); they are treated as unknown so
that absurd dimensions in a malformed model cost no memory."""
MAX_ELEMENTS = 1 << 27
_NO_FLAGS = np.zeros(0, dtype=bool)
_NO_FLAGS.flags.writeable = False
_BOOL = np.dtype(bool)


class Entry(NamedTuple):
    """One element of a tracked shape value (a 0-D or 1-D integer tensor).

    kind ``lit``: a literal; ``src`` = (constant value name, flat index) when it can be rewritten there.
    kind ``dim``: the runtime size of axis ``ref[1]`` of value ``ref[0]`` (``value`` = its static size).
    kind ``expr``: computed by arithmetic; ``value`` when known, ``refs`` are the axes it was computed from.

    A named tuple, immutable like the frozen dataclass it was, and ten times cheaper to build: entries
    are made for every use of every small constant.
    """

    kind: str
    value: int | None
    src: tuple | None = None
    ref: SlotKey | None = None
    refs: tuple[SlotKey, ...] = ()

    @staticmethod
    def lit(v: int, src: tuple | None = None) -> Entry:
        return Entry("lit", int(v), src=src)

    @staticmethod
    def dim(value: Value, axis: int) -> Entry:
        d = value.shape[axis] if value.shape is not None else None
        return Entry("dim", d if isinstance(d, int) else None, ref=(value.name, axis))

    def sources(self) -> tuple[SlotKey, ...]:
        if self.kind == "dim" and self.ref is not None:
            return (self.ref,)
        return self.refs


class ChannelGraph:
    """Accumulates elements, links, pins and zero flags while op rules run in topological order."""

    def __init__(self) -> None:
        self.offset: dict[SlotKey, int] = {}
        self.size: dict[SlotKey, int] = {}
        self.values: dict[str, Value] = {}
        self.param_keys: list[SlotKey] = []  # the slots of parameters, in allocation (offset) order
        self.total = 0
        self._links_a: list[np.ndarray] = []
        self._links_b: list[np.ndarray] = []
        self._spans: list[tuple[int, int, int]] = []  # (element of a, element of b, length): link_range
        self._pairs_a: list[SlotKey] = []  # whole axes linked element for element
        self._pairs_b: list[SlotKey] = []
        self.pins: dict[SlotKey, str] = {}
        self.structural: set[SlotKey] = set()
        self.zeros: dict[SlotKey, np.ndarray] = {}
        self.requirements: list[tuple[list[SlotKey], str]] = []
        self.entries: dict[str, list[Entry]] = {}
        self.touched: set[SlotKey] = set()
        self.handled_shape_inputs: set[int] = set()
        self.node: Node | None = None
        self.shape_operands: list[tuple[str, int, str, list[Entry]]] = []
        self.subst: dict[str, int] = {}
        self.input_symbols: set[str] = set()
        self.pending_pins: dict[SlotKey, str] = {}
        self._uniform: dict[tuple[int, bool], np.ndarray] = {}
        self._const_cache: dict[str, tuple[np.ndarray, list[Entry] | None]] = {}
        self._released = False
        self._where_of: Node | None = None
        self._where_text = ""

    def resolve_symbols(self, node: Node) -> None:
        """Apply symbol sizes learned upstream (e.g. a head count) to this node's values."""
        if not self.subst:
            return
        for v in [*node.inputs, *node.outputs]:
            if v is not None and v.shape is not None and any(isinstance(d, str) for d in v.shape):
                v.shape = tuple(self.subst.get(d, d) if isinstance(d, str) else d for d in v.shape)

    # -- slots ------------------------------------------------------------------------------------
    def slot(self, v: Value | None, axis: int) -> SlotKey | None:
        """The key of axis ``axis`` of ``v`` when that axis has a static size, else None."""
        if v is None:
            return None
        shape = v.shape
        if shape is None:
            return None
        if axis < 0:
            axis += len(shape)
        key = (v.name, axis)
        if key in self.offset:  # asked for tens of times per node: the common case is one lookup
            return key
        if not 0 <= axis < len(shape):
            return None
        d = shape[axis]
        if not isinstance(d, int) or d < 0 or d > MAX_AXIS:
            return None
        if self.total + d > MAX_ELEMENTS:
            from graphcore.errors import AnalysisError

            raise AnalysisError(
                f"the model has more than {MAX_ELEMENTS} channel indices in total; it is too large to analyze"
            )
        self.offset[key] = self.total
        self.size[key] = d
        self.values[v.name] = v
        if v.is_param:
            self.param_keys.append(key)
        self.total += d
        if self.pending_pins and key in self.pending_pins:
            self.pins.setdefault(key, self.pending_pins.pop(key))
        return key

    def elements(self, key: SlotKey) -> np.ndarray:
        o = self.offset[key]
        return np.arange(o, o + self.size[key], dtype=np.int64)

    # -- relations ----------------------------------------------------------------------------------
    def touch(self, v: Value | None, axis: int) -> None:
        k = self.slot(v, axis)
        if k is not None:
            self.touched.add(k)

    def link(self, a: Value | None, axis_a: int, b: Value | None, axis_b: int) -> bool:
        """Element i of axis ``axis_a`` of ``a`` is the same channel as element i of ``b``'s axis."""
        # The common case inline (tens of thousands of calls): both axes static (one of them often
        # new: a rule's output, a weight read first here), of one size; or both symbolic.
        if a is not None and b is not None and axis_a >= 0 and axis_b >= 0:
            size = self.size
            ka, kb = (a.name, axis_a), (b.name, axis_b)
            d = size.get(ka)
            if d is None and self.slot(a, axis_a) is not None:
                d = size[ka]
            db = size.get(kb)
            if db is None and self.slot(b, axis_b) is not None:
                db = size[kb]
            if d is None and db is None:
                return True  # neither axis is static: nothing to tie
            if d is not None and d == db:
                touched = self.touched
                touched.add(ka)
                touched.add(kb)
                if ka != kb:  # classes of whole-axis links are found once, by ``fold``
                    self._pairs_a.append(ka)
                    self._pairs_b.append(kb)
                return True
        return self._link(a, axis_a, b, axis_b)

    def link_axes(self, src: Value, dst: Value, rank: int, zeros: bool | None) -> None:
        """``link(src, a, dst, a)`` for every axis ``a < rank``; where linked, ``dst``'s zero flags are
        ``src``'s (``zeros`` True), all False (False) or left alone (None). An elementwise op's or a
        normalization's axes, with the common case of ``link``, ``zero`` and ``set_zero`` inline: a
        rule made three calls per axis. Anything unusual (an axis not static, sizes that differ, a shape
        not known) goes through ``link`` and ``set_zero`` themselves."""
        size, flags, touched = self.size, self.zeros, self.touched
        sname, dname = src.name, dst.name
        for a in range(rank):
            ks, kd = (sname, a), (dname, a)
            d = size.get(ks)
            if d is not None and src.shape is not None and dst.shape is not None:
                dd = size.get(kd)
                if dd is None and self.slot(dst, a) is not None:
                    dd = size[kd]
                if d == dd:
                    touched.add(ks)
                    touched.add(kd)
                    if ks != kd:
                        self._pairs_a.append(ks)
                        self._pairs_b.append(kd)
                    if zeros:
                        z = flags.get(ks)
                        flags[kd] = z if z is not None else self.zero(src, a)
                    elif zeros is not None:
                        flags[kd] = self.uniform(d, False)
                    continue
            if self.link(src, a, dst, a) and zeros is not None:
                self.set_zero(dst, a, self.zero(src, a) if zeros else False)

    def link_parts(
        self, parts: Sequence[Value], axis: int, whole: Value, whole_axis: int
    ) -> list[np.ndarray]:
        """``link(part, axis, whole, whole_axis)`` for each part, and the zero flags (``zero``) of each
        part it linked, in order: a Concat ties every input's other axes to the output's. One call per
        axis instead of two per part and axis (a DenseNet concatenates hundreds of parts)."""
        flags: list[np.ndarray] = []
        if axis < 0 or whole_axis < 0:
            return [self.zero(v, axis) for v in parts if self.link(v, axis, whole, whole_axis)]
        size, zeros, touched = self.size, self.zeros, self.touched
        kb = (whole.name, whole_axis)
        for v in parts:
            ka = (v.name, axis)
            d = size.get(ka)
            if d is not None and d == size.get(kb):  # ``link``'s common case, inline
                touched.add(ka)
                touched.add(kb)
                if ka != kb:
                    self._pairs_a.append(ka)
                    self._pairs_b.append(kb)
                z = zeros.get(ka) if v.shape is not None else None
                flags.append(z if z is not None else self.zero(v, axis))
            elif self.link(v, axis, whole, whole_axis):
                flags.append(self.zero(v, axis))
        return flags

    def _link(self, a: Value | None, axis_a: int, b: Value | None, axis_b: int) -> bool:
        """``link`` where an axis is new, symbolic or of another size."""
        offset = self.offset
        ka = (a.name, axis_a) if a is not None and axis_a >= 0 else None
        if ka not in offset:
            ka = self.slot(a, axis_a)
        kb = (b.name, axis_b) if b is not None and axis_b >= 0 else None
        if kb not in offset:
            kb = self.slot(b, axis_b)
        if ka is None and kb is not None:
            ka = self._learn(a, axis_a, self.size[kb])
        elif kb is None and ka is not None:
            kb = self._learn(b, axis_b, self.size[ka])
        if ka is None and kb is None:
            return True
        if ka is None or kb is None or self.size[ka] != self.size[kb]:
            for k in (ka, kb):
                if k is not None:
                    self.pin_key(k, "linked to an axis whose size is unknown or different")
            return False
        self.touched.add(ka)
        self.touched.add(kb)
        if ka != kb:
            self._pairs_a.append(ka)
            self._pairs_b.append(kb)
        return True

    def _learn(self, v: Value | None, axis: int, size: int) -> SlotKey | None:
        """An inferred symbol (not a graph input's) linked to a static axis must have that size."""
        if v is None or v.shape is None:
            return None
        d = v.shape[axis]
        if not isinstance(d, str) or d in self.input_symbols or d in self.subst:
            return None
        self.subst[d] = size
        v.shape = tuple(size if x == d else x for x in v.shape)
        return self.slot(v, axis)

    def _both_slots(
        self, a: Value | None, axis_a: int, b: Value | None, axis_b: int
    ) -> tuple[SlotKey, SlotKey] | None:
        """Both axes' slots for an index link; when one has no static size, the other is pinned."""
        ka, kb = self.slot(a, axis_a), self.slot(b, axis_b)
        if ka is None or kb is None:
            for k in (ka, kb):
                if k is not None:
                    self.pin_key(k, "linked to an axis whose size is unknown")
            return None
        return ka, kb

    def link_index(
        self, a: Value | None, axis_a: int, idx_a: np.ndarray, b: Value | None, axis_b: int, idx_b: np.ndarray
    ) -> bool:
        """Element ``idx_a[i]`` of a's axis is the same channel as element ``idx_b[i]`` of b's axis."""
        keys = self._both_slots(a, axis_a, b, axis_b)
        if keys is None:
            return False
        ka, kb = keys
        ia, ib = np.asarray(idx_a, dtype=np.int64), np.asarray(idx_b, dtype=np.int64)
        fits = ia.shape == ib.shape and (
            not ia.size
            or (min(ia.min(), ib.min()) >= 0 and ia.max() < self.size[ka] and ib.max() < self.size[kb])
        )
        if not fits:
            # Declared shapes that contradict each other (a malformed model): an index past the end
            # would land on another axis's elements. Block both axes instead.
            self.pin_key(ka, "linked by indices that do not fit the declared shapes")
            self.pin_key(kb, "linked by indices that do not fit the declared shapes")
            return False
        self.touched.add(ka)
        self.touched.add(kb)
        self._links_a.append(self.offset[ka] + ia)
        self._links_b.append(self.offset[kb] + ib)
        return True

    def link_range(self, a: Value | None, axis_a: int, b: Value | None, axis_b: int, offset: int) -> bool:
        """Element i of a's axis is the same channel as element ``offset + i`` of b's (a part and its
        place in a concatenation): ``link_index`` with two ranges, without building and checking them."""
        keys = self._both_slots(a, axis_a, b, axis_b)
        if keys is None:
            return False
        ka, kb = keys
        d = self.size[ka]
        if d and (offset < 0 or offset + d > self.size[kb]):
            self.pin_key(ka, "linked by indices that do not fit the declared shapes")
            self.pin_key(kb, "linked by indices that do not fit the declared shapes")
            return False
        self.touched.add(ka)
        self.touched.add(kb)
        # Kept as a span (expanded by ``links`` for all of them at once): two aranges per part of
        # every concatenation were most of a DenseNet's link cost.
        self._spans.append((self.offset[ka], self.offset[kb] + offset, d))
        return True

    def tie_blocks(self, v: Value | None, axis: int, block: int) -> None:
        """Consecutive blocks of ``block`` elements must be removed together."""
        k = self.slot(v, axis)
        if k is None or block <= 1:
            if k is not None:
                self.touched.add(k)
            return
        e = self.elements(k)
        n = (len(e) // block) * block
        starts = e[:n].reshape(-1, block)
        self._links_a.append(starts[:, :-1].ravel())
        self._links_b.append(starts[:, 1:].ravel())
        self.touched.add(k)

    def pin(self, v: Value | None, axis: int, reason: str) -> None:
        k = self.slot(v, axis)
        if k is not None:
            self.pin_key(k, reason)
        elif v is not None and v.shape is not None and -len(v.shape) <= axis < len(v.shape):
            # A symbolic axis may become static later (a learned size): the pin must still hold then.
            a = axis % len(v.shape)
            where = self._where()
            self.pending_pins.setdefault((v.name, a), reason + where)

    def pin_key(self, k: SlotKey, reason: str) -> None:
        self.touched.add(k)
        if k not in self.pins:
            where = self._where()
            self.pins[k] = reason + where

    def _where(self) -> str:
        """`` (<the node's label>)``, said by every pin of the node: built once per node."""
        node = self.node
        if node is None:
            return ""
        if self._where_of is not node:
            self._where_of, self._where_text = node, f" ({node.label})"
        return self._where_text

    def fix(self, v: Value | None, axis: int, reason: str) -> None:
        """An axis that is structure, not channels (kernel taps): never removed, never reported."""
        k = self.slot(v, axis)
        if k is not None:
            self.pin_key(k, reason)
            self.structural.add(k)

    def pin_all(self, v: Value | None, reason: str) -> None:
        if v is None or v.shape is None:
            return
        for a in range(len(v.shape)):
            self.pin(v, a, reason)

    def is_pinned(self, v: Value | None, axis: int) -> bool:
        k = self.slot(v, axis)
        return k is not None and k in self.pins

    def require_zero(self, slots: Sequence[tuple[Value | None, int]], reason: str) -> None:
        """The elements are reduced over: removal is exact only where one of the operands is zero."""
        keys = [k for k in (self.slot(v, a) for v, a in slots) if k is not None]
        for k in keys:
            self.touched.add(k)
        if len({self.size[k] for k in keys}) > 1:  # contradicting declared shapes (a malformed model)
            for k in keys:
                self.pin_key(k, reason + ": the reduced axes differ in size")
            return
        if keys:
            where = self._where()
            self.requirements.append((keys, reason + where))

    # -- zero tracking -----------------------------------------------------------------------------
    def zero(self, v: Value | None, axis: int) -> np.ndarray:
        """Per element of the axis: is the whole slice exactly zero once its channel is zeroed.

        The array is read-only (it may be shared with other axes): a rule combines flags into a copy."""
        if v is not None and axis >= 0 and v.shape is not None:
            z = self.zeros.get((v.name, axis))  # the common case: flags set by the producer's rule
            if z is not None:
                return z
        if self._released:
            raise RuntimeError("the zero flags were released when the analysis finished")
        k = self.slot(v, axis)
        if k is None:
            return _NO_FLAGS
        z = self.zeros.get(k)
        if z is None:
            assert v is not None
            z = self.uniform(self.size[k], bool(v.is_param and v.trainable))
            self.zeros[k] = z
        return z

    def set_zero(self, v: Value | None, axis: int, z: np.ndarray | bool) -> None:
        n = None
        if v is not None and axis >= 0 and v.shape is not None:
            k: SlotKey = (v.name, axis)
            n = self.size.get(k)  # the common case: an axis the rule has just linked
        if n is None:
            found = self.slot(v, axis)
            if found is None:
                return
            k, n = found, self.size[found]
        if z.__class__ is bool or isinstance(z, np.bool_):
            self.zeros[k] = self.uniform(n, bool(z))
            return
        if z.__class__ is np.ndarray and z.dtype is _BOOL:
            arr = z  # flags from ``zero`` or a rule's combination: no conversion to make
        else:
            arr = np.asarray(z, dtype=bool)
        if arr.shape == (n,) and not arr.flags.writeable and arr.base is None:
            self.zeros[k] = arr  # already frozen and owned by no one else (another axis's flags)
            return
        arr = np.broadcast_to(arr, (n,)).copy()
        arr.flags.writeable = False
        self.zeros[k] = arr

    def uniform(self, n: int, flag: bool) -> np.ndarray:
        """A read-only array of ``n`` equal flags, one per (size, flag): most axes are all zero or all not,
        and building a fresh array for each of them was a third of a rule's time."""
        key = (n, flag)
        arr = self._uniform.get(key)
        if arr is None:
            arr = np.full(n, flag, dtype=bool)
            arr.flags.writeable = False
            self._uniform[key] = arr
        return arr

    # -- shape values ------------------------------------------------------------------------------
    def get_entries(self, v: Value | None, node: Node | None = None, index: int = -1) -> list[Entry] | None:
        """The tracked elements of ``v``; literals read straight from a constant remember the use site
        (``node``, ``index``) so that construct can rewrite them for this use only."""
        if v is None:
            return None
        e = self.entries.get(v.name)
        if e is None and v.const is not None:
            cached = self._const_cache.get(v.name)
            if cached is not None and cached[0] is v.const:
                e = cached[1]
            else:
                e = self._const_entries(v)
                self._const_cache[v.name] = (v.const, e)
        if e is None or node is None:
            return e
        return [
            Entry(x.kind, x.value, src=(*x.src, node.name, index), ref=x.ref, refs=x.refs)
            if x.kind == "lit" and x.src is not None and len(x.src) == 2
            else x
            for x in e
        ]

    def _const_entries(self, v: Value) -> list[Entry] | None:
        if v.const is not None and v.const.ndim <= 1 and v.const.size <= 64 and v.const.dtype.kind in "iu":
            src = v.name if (v.is_param or (v.producer is not None and v.producer.op == "Constant")) else None
            flat = v.const.reshape(-1)
            return [Entry.lit(int(x), (src, i) if src else None) for i, x in enumerate(flat)]
        return None

    def set_entries(self, v: Value, entries: list[Entry], scalar: bool = False) -> None:
        self.entries[v.name] = entries
        if all(e.value is not None for e in entries) and v.const is None:
            arr = np.array([e.value for e in entries], dtype=np.int64)
            v.const = arr.reshape(()) if scalar and arr.size == 1 else arr

    def handled(self, index: int) -> None:
        """The current rule consumed the shape value of input ``index`` knowingly."""
        self.handled_shape_inputs.add(index)

    def release(self) -> None:
        """The analysis has read what the rules left behind: drop what only it needed (zero flags, link
        lists, caches), so that the ``ChannelMap`` construct keeps holds only where channels live.
        On a 100k-node graph that is tens of MB of the analysis's peak."""
        self.zeros = {}
        self._pairs_a, self._pairs_b = [], []
        self._links_a, self._links_b = [], []
        self._spans = []
        self._const_cache = {}
        self._uniform = {}
        self.requirements = []
        self.touched = set()
        self._released = True

    # -- results -----------------------------------------------------------------------------------
    def links(self) -> tuple[np.ndarray, np.ndarray]:
        """The links between individual elements (index maps, blocks); whole-axis links are slot
        pairs, which ``fold`` applies."""
        parts_a, parts_b = list(self._links_a), list(self._links_b)
        if self._spans:
            sa, sb, sn = (np.array(c, dtype=np.int64) for c in zip(*self._spans))
            _span_links(sa, sb, sn, parts_a, parts_b)
        if not parts_a:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(parts_a), np.concatenate(parts_b)

    def fold(self) -> Folded:
        """Connected components over the *folded* elements: each class of slots linked whole is one
        range of elements (its earliest slot's), so a LLaMA-7B's hundreds of 4096-wide axes tied by
        residual adds cost 4096 elements, not 4096 per axis. The classes are the connected components of
        the whole-axis links (one sparse call over slots); only the links between individual elements
        (index maps, blocks) go to the second call, over the folded elements."""
        keys = list(self.offset)  # allocation order: offsets ascending
        n_slots = len(keys)
        # ``slot`` writes both dicts at once, so their values are in the same (key) order.
        sizes = np.fromiter(self.size.values(), dtype=np.int64, count=n_slots)
        offsets = np.fromiter(self.offset.values(), dtype=np.int64, count=n_slots)
        order = np.arange(n_slots, dtype=np.int64)
        if self._pairs_a:
            index = dict(zip(keys, range(n_slots)))
            pa = np.fromiter(map(index.__getitem__, self._pairs_a), dtype=np.int64, count=len(self._pairs_a))
            pb = np.fromiter(map(index.__getitem__, self._pairs_b), dtype=np.int64, count=len(self._pairs_b))
            graph = coo_matrix((np.ones(len(pa), dtype=np.int8), (pa, pb)), shape=(n_slots, n_slots))
            n_cls, cls = connected_components(graph, directed=False)
            first_slot = np.empty(n_cls, dtype=np.int64)
            first_slot[cls[::-1]] = order[::-1]  # the last write wins: each class's earliest slot
            root_of = first_slot[cls]
        else:
            root_of = order
        is_root = root_of == order
        root_sizes = sizes[is_root]
        root_start = np.zeros(n_slots, dtype=np.int64)
        root_start[is_root] = np.cumsum(root_sizes) - root_sizes
        slot_start = root_start[root_of]
        m = int(root_sizes.sum())
        start: dict[SlotKey, int] = dict(zip(keys, slot_start.tolist()))
        # Each element moves by its slot's shift. An index link's slots are found per element; a span
        # (``link_range``) lies in one slot of each side, so its slots are found once per span.
        shift = slot_start - offsets
        parts_a: list[np.ndarray] = []
        parts_b: list[np.ndarray] = []
        if self._links_a:
            a, b = np.concatenate(self._links_a), np.concatenate(self._links_b)
            parts_a.append(a + shift[np.searchsorted(offsets, a, side="right") - 1])
            parts_b.append(b + shift[np.searchsorted(offsets, b, side="right") - 1])
        if self._spans:
            sa, sb, sn = (np.array(c, dtype=np.int64) for c in zip(*self._spans))
            sa = sa + shift[np.searchsorted(offsets, sa, side="right") - 1]
            sb = sb + shift[np.searchsorted(offsets, sb, side="right") - 1]
            _span_links(sa, sb, sn, parts_a, parts_b)
        a = np.concatenate(parts_a) if parts_a else np.zeros(0, dtype=np.int64)
        if a.size:
            b = np.concatenate(parts_b)
            mat = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(m, m))
            _, labels = connected_components(mat, directed=False)
            labels = labels.astype(np.int64)
        else:
            labels = np.arange(m, dtype=np.int64)
        # A class's earliest slot is its root, so the smallest original element folded onto element j
        # of the root's range is element j of the root.
        first = np.arange(m, dtype=np.int64) + np.repeat(offsets[is_root] - root_start[is_root], root_sizes)
        return Folded(labels=labels, start=start, first=first, ctx=self)


@dataclass
class Folded:
    """Components of the folded element space (``ChannelGraph.fold``).

    ``start[k]``: where slot ``k``'s elements begin in the folded space (its class root's range);
    ``labels``: the component of each folded element; ``first``: for each folded element, the smallest
    original element id folded onto it (so components can be ordered as the unfolded ones were).
    """

    labels: np.ndarray
    start: dict[SlotKey, int]
    first: np.ndarray
    ctx: ChannelGraph

    def of(self, key: SlotKey) -> np.ndarray:
        """The folded element ids of slot ``key``."""
        o = self.start[key]
        return np.arange(o, o + self.ctx.size[key], dtype=np.int64)

    def expand(self) -> np.ndarray:
        """The component of every original element (what ``ChannelMap.labels`` holds)."""
        ctx = self.ctx
        if ctx.total == 0:
            return np.zeros(0, dtype=np.int64)
        keys = list(ctx.offset)
        sizes = np.fromiter((ctx.size[k] for k in keys), dtype=np.int64, count=len(keys))
        shift = np.fromiter((self.start[k] - ctx.offset[k] for k in keys), dtype=np.int64, count=len(keys))
        return self.labels[np.arange(ctx.total, dtype=np.int64) + np.repeat(shift, sizes)]


def spans(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``arange(start, start + size)`` for each span, concatenated, and for each element its span."""
    which = np.repeat(np.arange(len(starts), dtype=np.int64), sizes)
    first = np.cumsum(sizes) - sizes
    return np.arange(int(sizes.sum()), dtype=np.int64) - first[which] + starts[which], which


def _span_links(
    sa: np.ndarray, sb: np.ndarray, sn: np.ndarray, parts_a: list[np.ndarray], parts_b: list[np.ndarray]
) -> None:
    """Element i of each span at ``sa`` is linked to element i of its span at ``sb`` (``sn`` long)."""
    ea, which = spans(sa, sn)
    parts_a.append(ea)
    parts_b.append(ea + (sb - sa)[which])
