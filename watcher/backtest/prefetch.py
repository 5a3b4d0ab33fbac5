"""The whole-range fetches of a replay: which rules are fetched together, in which chunks, and joining.

This module owns planning a replay's fetches: each rule needs its series from its first lookback
to the end of the range, without trace references; SQL rules are read in consecutive chunks
(bounded memory), and SQL rules that read the same rows (the same table and filters, see
``SqlSource.shared_key``) from about the same time on are read by one query per chunk. It also
owns joining the chunks back into whole-range series. It does not own the cache that serves the
series to the evaluator (``replay.CachedSource``) nor running the fetches in worker processes
(``parallel``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ..core import Labels, Series
from ..rules.schema import NO_TRACES as NO_TRACES
from ..rules.schema import Rule
from ..sources.base import Source, step_grid
from .batch import SQL_SOURCES

PREFETCH_CHUNK = timedelta(days=2)
"""SQL rules are fetched for the whole range in chunks of this length: the rows in memory at once
are those of one chunk (a 30-day, 50-series range needs ~1.3 GB in one piece), for the same CPU."""
SHARE_WITHIN = timedelta(hours=6)
"""Rules share a query per chunk when their first points are this close (their chunks then overlap
almost entirely, so the union of their rows is read once with little more than either's rows)."""

Request = tuple[Rule, datetime, datetime, timedelta]


@dataclass
class Wanted:
    """One whole-range fetch a replay needs: a rule (without traces) from ``first`` to the end."""

    key: tuple[Any, ...]
    """What the fetch depends on (``replay._fetch_key``): equal keys are fetched once."""
    rule: Rule
    first: datetime
    step: timedelta


@dataclass
class FetchSet:
    """Fetches made together: one rule, or SQL rules reading the same rows (one query per chunk)."""

    wanted: list[Wanted]
    chunks: list[list[tuple[datetime, datetime]]]
    """Per fetch, its consecutive ``(lo, hi]`` ranges; chunk k of every fetch is read at once."""
    shared: bool

    @property
    def n_chunks(self) -> int:
        """Return how many queries the set takes."""
        return max(len(c) for c in self.chunks)

    def fetch_chunk(self, source: Source, k: int) -> list[list[Series] | None]:
        """Fetch chunk ``k`` of every fetch of the set; None for a fetch that has no chunk ``k``."""
        at = [i for i, c in enumerate(self.chunks) if k < len(c)]
        requests: list[Request] = [(self.wanted[i].rule, *self.chunks[i][k], self.wanted[i].step) for i in at]
        # One query for the whole set when its rules read the same rows (``SqlSource.fetch_shared``).
        shared = source.fetch_shared if self.shared else None  # type: ignore[attr-defined]
        got = shared(requests) if shared is not None else [source.fetch(*r) for r in requests]
        out: list[list[Series] | None] = [None] * len(self.wanted)
        for i, series in zip(at, got, strict=True):
            out[i] = series
        return out


def chunks_of(rule: Rule, first: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Return the ranges a rule's whole-range fetch is made of: 2-day chunks for SQL, else one."""
    if rule.source not in SQL_SOURCES:  # a PromQL source splits the range into 11,000-point queries itself
        return [(first, end)]
    out = []
    lo = first
    while lo < end:
        hi = min(end, lo + PREFETCH_CHUNK)
        out.append((lo, hi))
        lo = hi
    return out


def plan_sets(source: Source, wanted: Sequence[Wanted], end: datetime) -> list[FetchSet]:
    """Group ``wanted`` (distinct keys) into fetch sets: SQL rules that can share a query together."""
    shared_key = getattr(source, "shared_key", None)
    can_share = callable(shared_key) and callable(getattr(source, "fetch_shared", None))
    by_rows: dict[Any, list[Wanted]] = {}
    sets: list[FetchSet] = []
    for w in wanted:
        rows = shared_key(w.rule) if can_share and w.rule.source in SQL_SOURCES else None  # type: ignore[misc]
        if rows is None:
            sets.append(FetchSet([w], [chunks_of(w.rule, w.first, end)], shared=False))
        else:
            by_rows.setdefault(rows, []).append(w)
    for group in by_rows.values():
        group.sort(key=lambda w: w.first)
        runs: list[list[Wanted]] = []
        for w in group:
            if runs and w.first - runs[-1][0].first <= SHARE_WITHIN:
                runs[-1].append(w)
            else:
                runs.append([w])
        for run in runs:
            chunks = [chunks_of(x.rule, x.first, end) for x in run]
            sets.append(FetchSet(run, chunks, shared=len(run) > 1))
    return sets


class Joiner:
    """Joins the chunks of one fetch into whole-range series on its step grid.

    Each point aggregates only the rows of its own window, so the joined series equal one fetch of
    the whole range. A label set without rows in a chunk has, there, what the source gives a point
    without rows: no value and a count of 0.
    """

    def __init__(self, first: datetime, end: datetime, step: timedelta) -> None:
        self.grid = step_grid(first, end, step)
        self.step_s = step.total_seconds()
        self.values: dict[Labels, np.ndarray[Any, Any]] = {}
        self.counts: dict[Labels, np.ndarray[Any, Any]] = {}
        self.counted: set[Labels] = set()  # label sets whose source gave counts (SQL always does)

    def add(self, chunk: Sequence[Series]) -> None:
        """Lay one chunk's series over the grid."""
        grid = self.grid
        for s in chunk:
            at = round(float(s.timestamps[0] - grid[0]) / self.step_s) if len(s) else 0
            v = self.values.get(s.labels)
            if v is None:
                v = self.values[s.labels] = np.full(len(grid), math.nan)
                self.counts[s.labels] = np.zeros(len(grid))
            v[at : at + len(s)] = s.values
            if s.counts is not None:
                self.counts[s.labels][at : at + len(s)] = s.counts
                self.counted.add(s.labels)

    def series(self) -> list[Series]:
        """Return the joined series, sorted by label set."""
        return [
            Series(lb, self.grid.copy(), self.values[lb], self.counts[lb] if lb in self.counted else None)
            for lb in sorted(self.values, key=lambda lb: tuple(lb.items()))
        ]


class Assembly:
    """Collects the chunks of a fetch set and returns each fetch's whole-range series."""

    def __init__(self, fs: FetchSet, end: datetime) -> None:
        self.fs = fs
        # A non-SQL fetch is one whole-range query: its series are kept as the source gave them.
        self._joined = [w.rule.source in SQL_SOURCES for w in fs.wanted]
        self._joiners = [Joiner(w.first, end, w.step) for w in fs.wanted]
        self._raw: list[list[Series]] = [[] for _ in fs.wanted]

    def add(self, chunk: Sequence[list[Series] | None]) -> None:
        """Add what ``FetchSet.fetch_chunk`` returned for one chunk."""
        for i, got in enumerate(chunk):
            if got is None:
                continue
            if self._joined[i]:
                self._joiners[i].add(got)
            else:
                self._raw[i] = got

    def series(self) -> list[list[Series]]:
        """Return the whole-range series of each fetch of the set, in order."""
        return [
            j.series() if joined else raw
            for j, joined, raw in zip(self._joiners, self._joined, self._raw, strict=True)
        ]


def fetch_set(source: Source, fs: FetchSet, end: datetime) -> list[list[Series]]:
    """Fetch every chunk of ``fs`` in turn; return each fetch's whole-range series."""
    got = Assembly(fs, end)
    for k in range(fs.n_chunks):
        got.add(fs.fetch_chunk(source, k))
    return got.series()
