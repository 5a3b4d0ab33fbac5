"""Windowed aggregates over time-sorted rows, in numpy: the kernels behind the SQL source.

This module owns grouping rows by their label values, and per-window reductions given each
window's row bounds ``lo:hi`` (``searchsorted`` on sorted timestamps): min/max through a sparse
table, quantiles through blocked sorts, and the top rows by a key. Every function is pure and
vectorised, with memory bounded by blocks of about a million cells. It does not own which rows are
read nor what a window means (``sql``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core import FloatArray

IntArray = npt.NDArray[np.int64]

_BLOCK_CELLS = 1 << 20


def factorize(by_cols: Sequence[Sequence[Any]], n: int) -> tuple[IntArray, list[tuple[Any, ...]]]:
    """Return each row's group code and the groups' label values (NULL and "" are one value)."""
    nby = len(by_cols)
    keys: Sequence[Any] = list(zip(*by_cols, strict=True)) if nby != 1 else by_cols[0]
    if nby == 0:
        keys = [()] * n
    groups: dict[tuple[Any, ...], int] = {}
    index = {
        k: groups.setdefault(tuple("" if v is None else v for v in ((k,) if nby == 1 else k)), len(groups))
        for k in dict.fromkeys(keys)
    }
    codes = np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(keys))
    return codes, list(groups)


def group_rows(
    ts: IntArray, codes: IntArray, groups: Sequence[tuple[Any, ...]]
) -> Iterator[tuple[tuple[Any, ...], IntArray]]:
    """Yield each group that has rows with their indices, sorted by ts (ties keep the row order)."""
    order = np.lexsort((ts, codes))
    bounds = np.searchsorted(codes[order], np.arange(len(groups) + 1))
    for g, key in enumerate(groups):
        if bounds[g + 1] > bounds[g]:
            yield key, order[bounds[g] : bounds[g + 1]]


def range_reduce(
    v: FloatArray, lo: IntArray, hi: IntArray, fn: Callable[[FloatArray, FloatArray], FloatArray]
) -> FloatArray:
    """Return ``fn``-reduction (min or max) of ``v[lo:hi]`` per window via a sparse table."""
    n = hi - lo
    out = np.full(len(lo), math.nan)
    ok = np.flatnonzero(n)
    if len(ok) == 0:
        return out
    level = np.frexp(n[ok].astype(np.float64))[1] - 1  # floor(log2(n)), exact for integers
    table = [v]
    while len(table) <= level.max():
        prev, half = table[-1], 1 << (len(table) - 1)
        table.append(fn(prev[:-half], prev[half:]))
    for lvl in np.unique(level):
        sel = ok[level == lvl]
        t = table[lvl]
        out[sel] = fn(t[lo[sel]], t[hi[sel] - (1 << int(lvl))])
    return out


def _blocks(rows: int, width: int) -> Iterator[slice]:
    """Yield slices of ``rows`` so that each block of ``width`` columns stays small in memory."""
    size = max(1, _BLOCK_CELLS // max(width, 1))
    for first in range(0, rows, size):
        yield slice(first, first + size)


def range_quantile(v: FloatArray, lo: IntArray, hi: IntArray, level: float) -> FloatArray:
    """Return the ``level`` quantile of ``v[lo:hi]`` per window (linear interpolation, as numpy)."""
    n = hi - lo
    out = np.full(len(lo), math.nan)
    ok = np.flatnonzero(n)
    if len(ok) == 0:
        return out
    cols = np.arange(int(n[ok].max()))
    for part in _blocks(len(ok), len(cols)):
        sel = ok[part]
        ns = n[sel]
        valid = cols < ns[:, None]
        block = np.where(valid, v[np.where(valid, lo[sel, None] + cols, 0)], np.inf)
        block.sort(axis=1)
        rank = level * (ns - 1)
        below = np.floor(rank).astype(np.int64)
        r = np.arange(len(sel))
        a, b = block[r, below], block[r, np.minimum(below + 1, ns - 1)]
        out[sel] = a + (b - a) * (rank - below)
    return out


def top_by_key(cand: IntArray, key: FloatArray, start: IntArray, n: IntArray, top: int) -> IntArray:
    """Return, per window ``cand[start:start+n]``, the ``top`` rows of highest key (-1 pads)."""
    out = np.full((len(start), top), -1, dtype=np.int64)
    rev = np.arange(int(n.max()))[::-1]  # newest first, so the stable sort breaks ties by recency
    for part in _blocks(len(start), len(rev)):
        valid = rev < n[part, None]
        rows = cand[np.where(valid, start[part, None] + rev, 0)]
        keys = np.where(valid, key[rows], -np.inf)
        order = np.argsort(-keys, axis=1, kind="stable")[:, :top]
        got = np.where(np.take_along_axis(valid, order, axis=1), np.take_along_axis(rows, order, axis=1), -1)
        out[part, : got.shape[1]] = got
    return out


__all__ = ["IntArray", "factorize", "group_rows", "range_quantile", "range_reduce", "top_by_key"]
