"""Matching the axes of two shapes that hold the same elements (Reshape, Flatten): which input axes
become which output axes. Shared by the Reshape rule (``layout.py``) and the head-dimension walk
(``head_dims.py``), which must agree on it.
"""

from __future__ import annotations

from graphcore.ir import Dim
from graphcore.ops.common import int_dim

__all__ = ["Groups", "factorize"]

Groups = list[tuple[list[int], list[int]]]


def _greedy(a: list[Dim], b: list[Dim]) -> tuple[Groups, int, int]:
    """Match leading axes of ``a`` and ``b`` by products; stop at the first axis that cannot match."""
    groups: Groups = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == 1 and b[j] != 1:
            groups.append(([i], []))
            i += 1
            continue
        if b[j] == 1 and a[i] != 1:
            groups.append(([], [j]))
            j += 1
            continue
        if not isinstance(a[i], int) or not isinstance(b[j], int):
            if a[i] is not None and a[i] == b[j]:
                groups.append(([i], [j]))
                i += 1
                j += 1
                continue
            break
        pa, pb = int_dim(a[i]), int_dim(b[j])
        ia, ib = [i], [j]
        ii, jj = i + 1, j + 1
        ok = True
        while pa != pb:
            if pa < pb:
                if ii >= len(a) or not isinstance(a[ii], int):
                    ok = False
                    break
                pa *= int_dim(a[ii])
                ia.append(ii)
                ii += 1
            else:
                if jj >= len(b) or not isinstance(b[jj], int):
                    ok = False
                    break
                pb *= int_dim(b[jj])
                ib.append(jj)
                jj += 1
        if not ok:
            break
        groups.append((ia, ib))
        i, j = ii, jj
    while i < len(a) and a[i] == 1 and j == len(b):
        groups.append(([i], []))
        i += 1
    while j < len(b) and b[j] == 1 and i == len(a):
        groups.append(([], [j]))
        j += 1
    return groups, i, j


def factorize(a: list[Dim], b: list[Dim]) -> Groups:
    """Pair axis groups of two shapes with equal element counts; an unmatched middle is one group."""
    head, i, j = _greedy(a, b)
    if i == len(a) and j == len(b):
        return head
    ra, rb = a[i:][::-1], b[j:][::-1]
    tail, ti, tj = _greedy(ra, rb)
    na, nb = len(a), len(b)
    tail_groups = [([na - 1 - x for x in ia][::-1], [nb - 1 - y for y in ib][::-1]) for ia, ib in tail][::-1]
    middle = (list(range(i, na - ti)), list(range(j, nb - tj)))
    return [*head, middle, *tail_groups]
