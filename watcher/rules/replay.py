"""Replaying rule groups over history: a whole-range cache in front of a source, and episode tracking.

This module owns the mechanics of a backtest: ``CachedSource`` fetches each rule's series once
for the whole range (without trace references, which are the expensive part of a fetch) and then
serves the evaluator's per-tick fetches as slices; the trace references of a point are fetched
lazily, a block at a time, only when the evaluator asks for them (only anomalous points of active
alerts), so they are exactly what the live source would have returned. ``replay`` steps the real
``GroupEvaluator`` tick by tick and turns its alerts into episodes. It does not own reporting
(``backtest``), plots (``plot``) nor comparison (``compare``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np

from ..core import Alert, AlertState, Labels, Series, TraceRef, from_epoch, to_epoch
from ..engine.group import GroupEvaluator, rule_lookback, rule_step
from ..rules.schema import Group, Rule, TracesSpec
from ..sources.base import Source

TRACE_BLOCK = timedelta(hours=6)
NO_TRACES = TracesSpec.model_validate({"from": "none"})


def _no_render(*_: Any, **__: Any) -> dict[str, str]:
    return {}


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


class CachedSource:
    """Serves slices of series fetched once per rule for the whole replay range."""

    name = "cache"

    def __init__(self, inner: Source, start: datetime, end: datetime) -> None:
        self.inner = inner
        self.start = start
        self.end = end
        self._cache: dict[int, _Entry] = {}
        self._blocks: dict[tuple[int, int], dict[Labels, dict[float, tuple[TraceRef, ...]]]] = {}
        self.fetches = 0

    def prefetch(self, rule: Rule, group: Group) -> _Entry:
        """Fetch (once) the rule's series from its first lookback to the end of the range."""
        entry = self._cache.get(id(rule))
        if entry is None:
            step = rule_step(rule, group)
            lean = rule.model_copy(update={"traces": NO_TRACES})
            first = self.start - rule_lookback(rule, group) - step
            self.fetches += 1
            entry = _Entry(rule, step, self.inner.fetch(lean, first, self.end, step))
            self._cache[id(rule)] = entry
        return entry

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """Return the cached series of ``rule`` restricted to ``(start, end]``, as the source would."""
        entry = self._cache.get(id(rule))
        if entry is None:
            raise KeyError(f"rule {rule.alert} was not prefetched")
        lo_t, hi_t = to_epoch(start), to_epoch(end)
        out = []
        wants = rule.traces is None or rule.traces.from_ != "none"
        for s in entry.series:
            lo = int(np.searchsorted(s.timestamps, lo_t, side="right"))
            hi = int(np.searchsorted(s.timestamps, hi_t, side="right"))
            if hi <= lo:
                continue
            counts = None if s.counts is None else s.counts[lo:hi]
            values = s.values[lo:hi]
            # The live sources return no series for a range without rows (SQL) or samples (PromQL).
            if (counts is not None and not counts.any()) or (
                counts is None and not np.isfinite(values).any()
            ):
                continue
            ts = s.timestamps[lo:hi]
            traces = (
                cast(tuple[tuple[TraceRef, ...], ...], _LazyTraces(self, rule, s.labels, ts)) if wants else ()
            )
            out.append(Series(s.labels, ts, values, counts, traces))
        return out

    def traces_at(self, rule: Rule, labels: Labels, ts: float) -> tuple[TraceRef, ...]:
        """Return the trace references behind one point, fetching its block with traces if needed."""
        entry = self._cache[id(rule)]
        block_s = TRACE_BLOCK.total_seconds()
        block = math.floor(ts / block_s)
        key = (id(rule), block)
        got = self._blocks.get(key)
        if got is None:
            self.fetches += 1
            lo = from_epoch(block * block_s)
            fetched = self.inner.fetch(rule, lo, from_epoch((block + 1) * block_s), entry.step)
            got = {s.labels: {float(t): s.traces_at(i) for i, t in enumerate(s.timestamps)} for s in fetched}
            self._blocks[key] = got
        return got.get(labels, {}).get(ts, ())


@dataclass
class Episode:
    """One would-have-fired alert: from firing to resolution (``end`` None: still firing)."""

    alert: str
    group: str
    labels: Labels
    start: datetime
    end: datetime | None
    peak_value: float
    trace_ids: list[str] = field(default_factory=list)


@dataclass
class SeriesTrace:
    """The verdicts of one rule and label set over the replay, for plots."""

    ts: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)


@dataclass
class ReplayResult:
    """What a replay produced: episodes per rule, optionally every verdict, and health problems."""

    rules: list[tuple[str, Rule]]
    episodes: list[Episode]
    verdicts: dict[tuple[str, Labels], SeriesTrace]
    errors: list[str]
    ticks: int


def group_ticks(group: Group, start: datetime, end: datetime) -> list[datetime]:
    """Return the evaluation instants of ``group`` in ``[start, end]``: multiples of its interval."""
    s = group.interval.total_seconds()
    first = math.ceil(to_epoch(start) / s)
    last = math.floor(to_epoch(end) / s)
    return [from_epoch(k * s) for k in range(first, last + 1)]


def _down(rule: Rule) -> bool:
    return getattr(rule.detector, "direction", "up") == "down"


def replay(
    groups: Sequence[Group],
    sources: dict[str, Source],
    start: datetime,
    end: datetime,
    *,
    record_verdicts: bool = False,
    progress: Callable[[int], None] | None = None,
    retention: timedelta = timedelta(minutes=15),
) -> ReplayResult:
    """Step every group's real evaluator over ``[start, end]``; return the would-have-fired episodes."""
    caches = {name: CachedSource(src, start, end) for name, src in sources.items()}
    result = ReplayResult([(g.name, r) for g in groups for r in g.rules], [], {}, [], 0)
    for group in groups:
        ev = GroupEvaluator(group, dict(caches), resolved_retention=retention, render=_no_render)
        failed_prefetch = set()
        for rule in group.rules:
            cache = caches.get(rule.source)
            if cache is None:
                result.errors.append(
                    f"{group.name}/{rule.alert}: no source configured for source: {rule.source}"
                )
                continue
            try:
                cache.prefetch(rule, group)
            except Exception as exc:  # a failed fetch is reported per rule, as the daemon would
                failed_prefetch.add(rule.alert)
                result.errors.append(f"{group.name}/{rule.alert}: {exc}")
        if failed_prefetch or any(r.source not in caches for r in group.rules):
            group = group.model_copy(
                update={
                    "rules": [r for r in group.rules if r.alert not in failed_prefetch and r.source in caches]
                }
            )
            if not group.rules:
                continue
            ev = GroupEvaluator(group, dict(caches), resolved_retention=retention, render=_no_render)
        down = {r.alert: _down(r) for r in group.rules}
        open_: dict[tuple[str, str], Episode] = {}
        for now in group_ticks(group, start, end):
            res = ev.evaluate(now)
            result.ticks += 1
            for alert in res.alerts:
                _track(alert, open_, result.episodes, down[alert.rule])
            for h in res.health:
                if not h.ok and h.error:
                    result.errors.append(f"{group.name}/{h.rule} at {now:%Y-%m-%d %H:%M}Z: {h.error}")
            if record_verdicts:
                for rule_name, per in ev.verdicts().items():
                    for labels, v in per.items():
                        st = result.verdicts.setdefault((rule_name, labels), SeriesTrace())
                        if st.ts and st.ts[-1] == v.ts:
                            continue
                        st.ts.append(v.ts)
                        st.value.append(v.value)
                        st.lower.append(v.lower)
                        st.upper.append(v.upper)
            if progress is not None:
                progress(1)
        result.episodes.extend(open_.values())
    result.episodes.sort(key=lambda e: (e.alert, e.start, repr(e.labels)))
    return result


def _track(alert: Alert, open_: dict[tuple[str, str], Episode], done: list[Episode], down: bool) -> None:
    """Fold one evaluated alert into the open episodes; move resolved ones to ``done``."""
    if alert.fired_at is None:
        return
    key = (alert.fingerprint, alert.fired_at.isoformat())
    ep = open_.get(key)
    if ep is None:
        if alert.state is not AlertState.FIRING:
            return
        ep = open_[key] = Episode(alert.rule, alert.group, alert.labels, alert.fired_at, None, alert.value)
    v = alert.value
    beyond = v < ep.peak_value if down else v > ep.peak_value
    if alert.state is AlertState.FIRING and not math.isnan(v) and (math.isnan(ep.peak_value) or beyond):
        ep.peak_value = v
    ep.trace_ids = [t.trace_id for t in alert.traces]
    if alert.resolved:
        ep.end = alert.resolved_at
        done.append(replace(ep))
        del open_[key]


def iter_episodes(result: ReplayResult, alert: str) -> Iterator[Episode]:
    """Yield the episodes of one rule, in start order."""
    return (e for e in result.episodes if e.alert == alert)
