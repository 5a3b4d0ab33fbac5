"""A whole-range cache in front of a source, for replays: each rule's series fetched once.

This module owns ``CachedSource``: it fetches each rule's series once for the whole range (without
trace references, which are the expensive part of a fetch; planned by ``prefetch``, where SQL rules
that read the same rows share one query) and then serves the evaluator's per-tick fetches as
slices; the trace references of a point are fetched lazily, a block at a time (for SQL rules, of
the one series asked about), only when the evaluator asks for them, so they are exactly what the
live source would have returned. It also owns a group's tick grid over a range (``group_ticks``).
It does not own stepping the evaluator nor episodes (``replay``), nor worker processes
(``parallel``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np

from ..core import Labels, Series, TraceRef, from_epoch, to_epoch
from ..engine.group import rule_lookback, rule_step
from ..rules.schema import NO_TRACES, Group, Rule
from ..sources.base import Source
from .batch import SQL_SOURCES, point_has_data
from .prefetch import FetchSet, Wanted, chunks_of, fetch_set, plan_sets

TRACE_BLOCK = timedelta(hours=6)


SERIES_TRACE_BLOCK = timedelta(hours=1)


class _LazyTraces(Sequence[tuple[TraceRef, ...]]):
    """The trace references of a slice of a cached series, fetched only when one is read."""

    def __init__(
        self, cache: CachedSource, rule: Rule, labels: Labels, timestamps: np.ndarray[Any, Any]
    ) -> None:
        self._cache, self._rule, self._labels, self._ts = cache, rule, labels, timestamps

    def __len__(self) -> int:
        return len(self._ts)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return _LazyTraces(self._cache, self._rule, self._labels, self._ts[i])
        return self._cache.traces_at(self._rule, self._labels, float(self._ts[i]))


@dataclass
class _Entry:
    rule: Rule
    step: timedelta
    series: list[Series]
    has_data: list[np.ndarray[Any, Any]] = field(default_factory=list)
    ticks: np.ndarray[Any, Any] | None = None
    """The group's evaluation instants (Unix seconds), once the replay has scheduled them."""
    starts: np.ndarray[Any, Any] | None = None
    """Where the daemon's fetch at each of ``ticks`` starts (its cursor: the previous grid point)."""


class CachedSource:
    """Serves slices of series fetched once per rule for the whole replay range."""

    name = "cache"

    def __init__(self, inner: Source, start: datetime, end: datetime) -> None:
        self.inner = inner
        self.start = start
        self.end = end
        self._cache: dict[int, _Entry] = {}
        self._fetched: dict[tuple[Any, ...], tuple[list[Series], list[np.ndarray[Any, Any]]]] = {}
        """Whole-range series by what the fetch depends on: rule versions that differ only in
        detector settings, floors or timing (a ``--compare``) share one fetch."""
        self._blocks: dict[tuple[Any, ...], dict[Labels, dict[float, tuple[TraceRef, ...]]]] = {}
        self.fetches = 0

    def prefetch(self, rule: Rule, group: Group) -> _Entry:
        """Fetch (once) the rule's series from its first lookback to the end of the range."""
        entry = self._cache.get(id(rule))
        if entry is None:
            w = self._wanted(rule, group)
            got = self._fetched.get(w.key)
            if got is None:
                fs = FetchSet([w], [chunks_of(w.rule, w.first, self.end)], shared=False)
                got = self.keep(fs, fetch_set(self.inner, fs, self.end))[0]
            entry = _Entry(rule, w.step, *got)
            self._cache[id(rule)] = entry
        return entry

    def prefetch_shared(self, rules: Sequence[tuple[Rule, Group]]) -> None:
        """Fetch ahead, one query per chunk, the rules of ``rules`` that read the same rows.

        A set whose fetch fails is left to ``prefetch``, which then reports the failure per rule.
        """
        for fs in self.fetch_sets(rules):
            if fs.shared:
                try:
                    series = fetch_set(self.inner, fs, self.end)
                except Exception:  # each rule's own fetch then reports it
                    continue
                self.keep(fs, series)

    def fetch_sets(self, rules: Sequence[tuple[Rule, Group]]) -> list[FetchSet]:
        """Return the whole-range fetches ``rules`` still need, grouped into fetch sets."""
        wanted: dict[tuple[Any, ...], Wanted] = {}
        for rule, group in rules:
            w = self._wanted(rule, group)
            if id(rule) not in self._cache and w.key not in self._fetched:
                wanted.setdefault(w.key, w)
        return plan_sets(self.inner, list(wanted.values()), self.end)

    def keep(
        self, fs: FetchSet, series: Sequence[list[Series]]
    ) -> list[tuple[list[Series], list[np.ndarray[Any, Any]]]]:
        """Keep the whole-range series of each fetch of ``fs`` (fetched here or by a worker)."""
        self.fetches += fs.n_chunks
        out = []
        for w, got in zip(fs.wanted, series, strict=True):
            out.append(self._fetched.setdefault(w.key, (got, [point_has_data(w.rule, x) for x in got])))
        return out

    def fetch_key(self, rule: Rule, group: Group) -> tuple[Any, ...]:
        """Return what the whole-range fetch of ``rule`` depends on (rules with one key share it)."""
        return self._wanted(rule, group).key

    def _wanted(self, rule: Rule, group: Group) -> Wanted:
        step = rule_step(rule, group)
        first = self.start - rule.evaluation_delay - rule_lookback(rule, group) - step
        lean = rule.model_copy(update={"traces": NO_TRACES})
        return Wanted(_fetch_key(rule, step, first), lean, first, step)

    def schedule(self, rule: Rule, ticks: np.ndarray[Any, Any], starts: np.ndarray[Any, Any]) -> None:
        """Tell the cache when ``rule`` is evaluated, so a fetch after skipped ticks starts where the
        daemon's would have (at the previous tick's grid point), not at the evaluator's cursor."""
        entry = self._cache[id(rule)]
        entry.ticks, entry.starts = ticks, starts

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """Return the cached series of ``rule`` restricted to ``(start, end]``, as the source would."""
        entry = self._cache.get(id(rule))
        if entry is None:
            raise KeyError(f"rule {rule.alert} was not prefetched")
        lo_t, hi_t = to_epoch(start), to_epoch(end)
        if entry.ticks is not None and entry.starts is not None:
            k = int(np.searchsorted(entry.ticks, hi_t))
            if k < len(entry.ticks) and entry.ticks[k] == hi_t:
                lo_t = max(lo_t, float(entry.starts[k]))
        out = []
        wants = rule.traces is None or rule.traces.from_ != "none"
        for s, data in zip(entry.series, entry.has_data, strict=True):
            lo = int(np.searchsorted(s.timestamps, lo_t, side="right"))
            hi = int(np.searchsorted(s.timestamps, hi_t, side="right"))
            # The live sources return no series for a range without rows (SQL) or samples (PromQL).
            if hi <= lo or not data[lo:hi].any():
                continue
            counts = None if s.counts is None else s.counts[lo:hi]
            values = s.values[lo:hi]
            ts = s.timestamps[lo:hi]
            traces = (
                cast(tuple[tuple[TraceRef, ...], ...], _LazyTraces(self, rule, s.labels, ts)) if wants else ()
            )
            out.append(Series(s.labels, ts, values, counts, traces))
        return out

    def traces_at(self, rule: Rule, labels: Labels, ts: float) -> tuple[TraceRef, ...]:
        """Return the trace references behind one point, fetching its block with traces if needed.

        A block of an SQL rule is fetched for the one series asked about (short blocks: only
        active points ask); other sources fetch every series of a longer block at once.
        """
        entry = self._cache[id(rule)]
        narrow = _narrowed(rule, labels)
        block_s = (TRACE_BLOCK if narrow is rule else SERIES_TRACE_BLOCK).total_seconds()
        block = math.ceil(ts / block_s) - 1  # the block (block·s, (block+1)·s] holding ts
        key: tuple[Any, ...] = (id(rule), block) if narrow is rule else (id(rule), block, labels)
        got = self._blocks.get(key)
        if got is None:
            self.fetches += 1
            lo = from_epoch(block * block_s)
            fetched = self.inner.fetch(narrow, lo, from_epoch((block + 1) * block_s), entry.step)
            got = {s.labels: {float(t): s.traces_at(i) for i, t in enumerate(s.timestamps)} for s in fetched}
            self._blocks[key] = got
        return got.get(labels, {}).get(ts, ())


def _fetch_key(rule: Rule, step: timedelta, first: datetime) -> tuple[Any, ...]:
    """Return what a rule's whole-range fetch depends on (the detector only through its kind: a
    PromQL ``rate`` rule is fetched as successes and trials)."""
    query = None if rule.query is None else rule.query.model_dump_json()
    kind = None if rule.detector is None else rule.detector.kind
    return (rule.source, rule.alert, rule.endpoint, rule.expr, query, kind, step, first)


def shared_caches(sources: dict[str, Source], start: datetime, end: datetime) -> dict[str, CachedSource]:
    """Return caches over ``sources`` that several replays of the same range can share."""
    return {name: CachedSource(src, start, end) for name, src in sources.items()}


def _narrowed(rule: Rule, labels: Labels) -> Rule:
    """Return ``rule`` restricted to one series when the source can filter by its labels (SQL).

    The ``by`` columns become ``where`` conditions, so a trace fetch reads that series' rows only;
    its points and trace references are the same as in the fetch of every series. A rule with a
    top-N guard is not narrowed (its ``(other)`` series is no column value).
    """
    q = rule.query
    if rule.source not in SQL_SOURCES or q is None or not q.by or set(labels) != set(q.by):
        return rule
    if q.top is not None:  # a folded label is no column value: the (other) series is many users
        return rule
    where = {**q.where, **{k: labels[k] for k in q.by}}
    return rule.model_copy(update={"query": q.model_copy(update={"where": where})})


def group_ticks(group: Group, start: datetime, end: datetime) -> list[datetime]:
    """Return the evaluation instants of ``group`` in ``[start, end]``: multiples of its interval."""
    s = group.interval.total_seconds()
    first = math.ceil(to_epoch(start) / s)
    last = math.floor(to_epoch(end) / s)
    return [from_epoch(k * s) for k in range(first, last + 1)]
