"""Windowed aggregates computed by the database: the SQL source's fast path.

This module owns the statements that make SQLite or PostgreSQL aggregate a rule's rows by its
``by`` labels and by time, and turning their few numeric rows into one values array per series
with numpy, without a Python object per raw row. Two shapes:

* **points**: for a fetch of a few points (a steady tick), one ``GROUP BY`` per point over exactly
  that point's window ``(t - window, t]``: one row per series and point;
* **buckets**: for a longer fetch (a cold start, a backtest), one ``GROUP BY`` over time buckets of
  ``g = gcd(step, window)`` (bucket ``k`` holds ``((k-1)·g, k·g]``), then each point's window is a
  run of whole buckets, reduced through cumulative sums (count, sum) or a sparse table (min, max),
  in blocks of series so that memory stays bounded.

Sums are added in another order than the raw-row path (``sql``), so they may differ from it in the
last bits; counts, min and max are identical. Quantiles need the rows and are not served here. It
does not own which rows a rule reads (``sql``) nor the trace references (``sql``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from ..core import FloatArray
from .windows import IntArray, factorize, range_reduce

AGGREGATES = ("count", "sum", "mean", "ratio", "min", "max")
"""The ``agg`` values the database computes (a quantile needs the rows)."""
POINT_QUERIES = 3
"""Fetches of at most this many points run one query per point; longer ones use buckets."""
_US = 1_000_000
_BLOCK_CELLS = 1 << 22


def bucket_us(agg: str, step_us: int, window_us: int) -> int | None:
    """Return the bucket width (µs, whole seconds) of a fetch, or None when the rows are needed."""
    if agg not in AGGREGATES or step_us <= 0 or window_us <= 0:
        return None
    g = math.gcd(step_us, window_us)
    return g if g % _US == 0 else None


def _measures(agg: str, value: Any, matched: Any) -> list[Any]:
    """Return the aggregate columns a rule needs after ``count(*)``."""
    if agg in ("sum", "mean"):
        return [sa.func.sum(value)]
    if agg == "ratio":
        return [sa.func.sum(matched)]
    if agg == "min":
        return [sa.func.min(value)]
    if agg == "max":
        return [sa.func.max(value)]
    return []


def bucket_column(ts: Any, dialect: str, g_us: int) -> Any:
    """Return the bucket index ``k`` of a row (``(k-1)·g < ts <= k·g``), computed exactly in SQL."""
    if dialect == "sqlite":
        g = g_us // _US
        # whole seconds from the stored text; any non-zero fraction moves the row past the edge
        secs = sa.cast(sa.func.strftime("%s", ts), sa.Integer)
        frac = sa.cast(sa.func.substr(ts, 21), sa.Integer) > 0
        return (secs + sa.case((frac, g), else_=g - 1)) / g
    us = sa.cast(sa.extract("epoch", ts) * _US, sa.BigInteger)
    return (us + (g_us - 1)) / g_us


def grouped(
    by: Sequence[Any],
    slot: Any | None,
    agg: str,
    value: Any,
    matched: Any,
    conds: Sequence[Any],
    from_: Any | None = None,
) -> sa.Select[Any]:
    """Return ``SELECT by…, [slot,] count(*), measure… [FROM from_] WHERE conds GROUP BY by…, [slot]``."""
    keys = [*by, *([slot] if slot is not None else [])]
    columns = [*keys, sa.func.count(), *_measures(agg, value, matched)]
    stmt = sa.select(*columns)
    if from_ is not None:
        stmt = stmt.select_from(from_)
    return stmt.where(*conds).group_by(*keys)


@dataclass
class Cells:
    """Aggregated rows: per row its group (label values) code, its slot, count and measure."""

    codes: IntArray
    slots: IntArray
    count: FloatArray
    measure: FloatArray
    groups: list[tuple[Any, ...]]


def cells(rows: Sequence[Sequence[Any]], nby: int, has_slot: bool, fixed_slot: int = 0) -> Cells:
    """Return the columns of aggregated rows (label values first, then slot, count, measure)."""
    # without GROUP BY columns, an aggregate over no rows is still one row, of count 0
    if nby == 0 and not has_slot:
        rows = [r for r in rows if r[0]]
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if n else [() for _ in range(nby + 2 + int(has_slot))]
    codes, groups = factorize(cols[:nby], n)
    at = nby
    if has_slot:
        slots = np.array(cols[at], dtype=np.int64)
        at += 1
    else:
        slots = np.full(n, fixed_slot, dtype=np.int64)
    count = np.array(cols[at], dtype=np.float64)
    measure = np.array(cols[at + 1], dtype=np.float64) if len(cols) > at + 1 else np.zeros(n)
    return Cells(codes, slots, count, measure, groups)


def merge(parts: Sequence[Cells]) -> Cells:
    """Return the cells of several queries with one group numbering (NULL and "" are one group)."""
    index: dict[tuple[Any, ...], int] = {}
    codes = []
    for part in parts:
        remap = np.array([index.setdefault(g, len(index)) for g in part.groups], dtype=np.int64)
        codes.append(remap[part.codes] if len(part.codes) else part.codes)
    return Cells(
        np.concatenate(codes) if codes else np.empty(0, dtype=np.int64),
        np.concatenate([p.slots for p in parts]) if parts else np.empty(0, dtype=np.int64),
        np.concatenate([p.count for p in parts]) if parts else np.empty(0),
        np.concatenate([p.measure for p in parts]) if parts else np.empty(0),
        list(index),
    )


def _dense(c: Cells, sel: IntArray, first: int, width: int, agg: str) -> tuple[FloatArray, FloatArray]:
    """Return ``[groups, width]`` count and measure grids of the cells ``sel`` (codes from ``first``)."""
    rows = c.codes[sel] - first
    ngroups = int(rows.max()) + 1 if len(rows) else 0
    flat = rows * width + c.slots[sel]
    count = np.zeros(ngroups * width)
    np.add.at(count, flat, c.count[sel])
    if agg == "min":
        measure = np.full(ngroups * width, np.inf)
        np.minimum.at(measure, flat, c.measure[sel])
    elif agg == "max":
        measure = np.full(ngroups * width, -np.inf)
        np.maximum.at(measure, flat, c.measure[sel])
    else:
        measure = np.zeros(ngroups * width)
        np.add.at(measure, flat, c.measure[sel])
    return count.reshape(ngroups, width), measure.reshape(ngroups, width)


def _finish(agg: str, count: FloatArray, total: FloatArray) -> FloatArray:
    """Return the window values from the window's count and measure (sum, matched, min or max)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if agg == "count":
            return count.copy()
        if agg in ("mean", "ratio"):
            return total / count
        return total


@dataclass
class Windows:
    """One row of values and counts per group (in ``groups`` order) on the fetch's points."""

    groups: list[tuple[Any, ...]]
    values: FloatArray
    counts: FloatArray


def point_windows(c: Cells, npoints: int, agg: str) -> Windows:
    """Return the windows of a points-shaped fetch (slot = point index)."""
    ngroups = len(c.groups)
    if not len(c.codes):
        return Windows(c.groups, np.empty((0, npoints)), np.empty((0, npoints)))
    count, measure = _dense(c, np.arange(len(c.codes)), 0, npoints, agg)
    if count.shape[0] < ngroups:  # a group seen only with other label spellings is merged away
        pad = ngroups - count.shape[0]
        count = np.vstack([count, np.zeros((pad, npoints))])
        measure = np.vstack([measure, np.zeros((pad, npoints))])
    return Windows(c.groups, _finish(agg, count, measure), count)


def bucket_windows(c: Cells, hi: IntArray, lo: IntArray, nbuckets: int, agg: str) -> Windows:
    """Return the windows of a bucket-shaped fetch: point ``j`` spans buckets ``lo[j]:hi[j]``."""
    ngroups = len(c.groups)
    values = np.full((ngroups, len(hi)), math.nan)
    counts = np.zeros((ngroups, len(hi)))
    if not len(c.codes):
        return Windows(c.groups, values, counts)
    order = np.argsort(c.codes, kind="stable")
    bounds = np.searchsorted(c.codes[order], np.arange(ngroups + 1))
    per_block = max(1, _BLOCK_CELLS // max(nbuckets, 1))
    for first in range(0, ngroups, per_block):
        last = min(first + per_block, ngroups)
        sel = order[bounds[first] : bounds[last]]
        count, measure = _dense(c, sel, first, nbuckets, agg)
        k = count.shape[0]
        cc = np.concatenate([np.zeros((k, 1)), np.cumsum(count, axis=1)], axis=1)
        n = cc[:, hi] - cc[:, lo]
        if agg in ("min", "max"):
            fn = np.minimum if agg == "min" else np.maximum
            offsets = (np.arange(k) * nbuckets)[:, None]
            total = range_reduce(measure.ravel(), (lo + offsets).ravel(), (hi + offsets).ravel(), fn)
            total = total.reshape(k, len(hi))
        else:
            cm = np.concatenate([np.zeros((k, 1)), np.cumsum(measure, axis=1)], axis=1)
            total = cm[:, hi] - cm[:, lo]
        values[first : first + k] = _finish(agg, n, total)
        counts[first : first + k] = n
    return Windows(c.groups, values, counts)


def mask_sparse(w: Windows, min_count: int) -> npt.NDArray[np.bool_]:
    """Return the points of too few rows (NaN in both paths), and NaN them in ``w.values``."""
    few = w.counts < max(min_count, 1)
    w.values[few] = math.nan
    return few


__all__ = [
    "AGGREGATES",
    "POINT_QUERIES",
    "Cells",
    "Windows",
    "bucket_column",
    "bucket_us",
    "bucket_windows",
    "cells",
    "grouped",
    "mask_sparse",
    "merge",
    "point_windows",
]
