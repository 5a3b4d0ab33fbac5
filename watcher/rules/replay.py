"""Replaying rule groups over history: a whole-range cache in front of a source, and episode tracking.

This module owns the mechanics of a backtest: ``CachedSource`` fetches each rule's series once
for the whole range (without trace references, which are the expensive part of a fetch; planned
by ``prefetch``, where SQL rules that read the same rows share one query) and then serves the
evaluator's per-tick fetches as slices; the trace references of a point are fetched
lazily, a block at a time (for SQL rules, of the one series asked about), only when the evaluator
asks for them (only anomalous points of active alerts), so they are exactly what the live source
would have returned. ``replay`` steps the real ``GroupEvaluator`` over the ticks and turns its
alerts into episodes: by default with every series scored once over the whole range and the
evaluator run only at the ticks where something can change (``batch``); ``batch=False`` runs it
at every tick with live detectors, as the daemon does. With ``jobs``, worker processes fetch and
score (``parallel``) while the evaluation stays here. It does not own reporting (``backtest``),
plots (``plot``) nor comparison (``compare``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np

from ..core import Alert, AlertState, Labels, Series, TraceRef, Verdict, from_epoch, to_epoch
from ..detectors import Detector, make_detector
from ..engine.group import GroupEvaluator, rule_lookback, rule_step
from ..errors import WatcherError
from ..notify.templates import EXPLANATION, RELEASE
from ..rules.schema import Group, Rule
from ..sources.base import Source
from ..store.markers import Marker, StaticMarkers
from .batch import SQL_SOURCES, RulePlan, fallback_plan, plan_rule, point_has_data, slice_starts
from .parallel import Workers, start_workers
from .prefetch import NO_TRACES as NO_TRACES  # where the status page's charts import it from
from .prefetch import FetchSet, Wanted, chunks_of, fetch_set, plan_sets

TRACE_BLOCK = timedelta(hours=6)
SERIES_TRACE_BLOCK = timedelta(hours=1)


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
        first = self.start - rule_lookback(rule, group) - step
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
    its points and trace references are the same as in the fetch of every series.
    """
    q = rule.query
    if rule.source not in SQL_SOURCES or q is None or not q.by or set(labels) != set(q.by):
        return rule
    where = {**q.where, **{k: labels[k] for k in q.by}}
    return rule.model_copy(update={"query": q.model_copy(update={"where": where})})


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
    explanation: str | None = None
    """Which label values drove it (``engine.contribution``), as the alert said when it fired."""
    release: str | None = None
    """The release marker it followed ("started 4 min after deploy X"), if any."""


@dataclass
class SeriesTrace:
    """The verdicts of one rule and label set over the replay, for plots."""

    ts: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)


@dataclass
class ReplayResult:
    """What a replay produced: episodes per rule, optionally every verdict, and health problems."""

    rules: list[tuple[str, Rule]]
    episodes: list[Episode]
    verdicts: dict[tuple[str, Labels], SeriesTrace]
    errors: list[str]
    ticks: int
    evaluations: int = 0
    """Ticks at which the evaluator actually ran (the others provably changed nothing)."""
    cpu: dict[str, float] = field(default_factory=lambda: {"fetch": 0.0, "score": 0.0, "evaluate": 0.0})
    """CPU seconds per phase: whole-range fetches, batch scoring, evaluation (with trace fetches)."""


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
    batch: bool = True,
    caches: dict[str, CachedSource] | None = None,
    jobs: int | None = 1,
    markers: Sequence[Marker] = (),
) -> ReplayResult:
    """Step every group's real evaluator over ``[start, end]``; return the would-have-fired episodes.

    With ``batch`` (the default) each series is scored once over the whole range and the evaluator
    runs only at the ticks where something can change (``rules.batch``); without it, the evaluator
    runs at every tick with live detectors, exactly as the daemon does. Both give the same result.
    ``caches`` (from ``shared_caches``) lets two replays of one range fetch each series once.
    ``jobs`` fetches and scores the rules of a batch replay in that many worker processes (None:
    one per CPU, see ``parallel``); the evaluation stays here, so the result is the same.
    ``markers`` (release markers) are named in the alerts and re-baseline the series they apply
    to, as in the daemon; with a marker that re-baselines inside the range the replay runs live
    detectors (a batch-scored series cannot take one).
    """
    if any(m.grace.total_seconds() > 0 and start - m.grace <= m.ts <= end for m in markers):
        batch = False
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if caches is None or any(c.start != start or c.end != end for c in caches.values()):
        caches = shared_caches(sources, start, end)
    result = ReplayResult([(g.name, r) for g in groups for r in g.rules], [], {}, [], 0)
    workers = start_workers(caches, groups, start, end, jobs) if batch and jobs != 1 else None
    try:
        t0 = time.process_time()
        for name, cache in caches.items():
            if workers is None or not any(job.cache is cache for job in workers.jobs):
                cache.prefetch_shared([(r, g) for g in groups for r in g.rules if r.source == name])
        result.cpu["fetch"] += time.process_time() - t0
        _replay_groups(
            groups, caches, start, end, result, workers, record_verdicts, progress, retention, batch, markers
        )
    finally:
        if workers is not None:
            workers.close()
            result.cpu["fetch"] += workers.cpu["fetch"]
            result.cpu["score"] += workers.cpu["score"]
    result.episodes.sort(key=lambda e: (e.alert, e.start, repr(e.labels)))
    return result


def _replay_groups(
    groups: Sequence[Group],
    caches: dict[str, CachedSource],
    start: datetime,
    end: datetime,
    result: ReplayResult,
    workers: Workers | None,
    record_verdicts: bool,
    progress: Callable[[int], None] | None,
    retention: timedelta,
    batch: bool,
    markers: Sequence[Marker] = (),
) -> None:
    """Fetch (or collect from the workers) and replay each group in turn."""
    for group in groups:
        failed_prefetch = set()
        ready: dict[int, RulePlan] = {}
        for rule in group.rules:
            cache = caches.get(rule.source)
            if cache is None:
                result.errors.append(
                    f"{group.name}/{rule.alert}: no source configured for source: {rule.source}"
                )
                continue
            if workers is not None and workers.has(rule):
                plan = workers.plan(rule, len(group_ticks(group, start, end)))
                # Without a plan the rule is fetched (a failed fetch is reported) and scored here.
                if plan is not None:
                    cache.prefetch(rule, group)  # served from what the workers fetched
                    ready[id(rule)] = plan
                    continue
            try:
                t0 = time.process_time()
                cache.prefetch(rule, group)
                result.cpu["fetch"] += time.process_time() - t0
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
        _replay_group(
            group, caches, start, end, result, record_verdicts, progress, retention, batch, ready, markers
        )


def _replay_group(
    group: Group,
    caches: dict[str, CachedSource],
    start: datetime,
    end: datetime,
    result: ReplayResult,
    record_verdicts: bool,
    progress: Callable[[int], None] | None,
    retention: timedelta,
    batch: bool,
    ready: dict[int, RulePlan],
    markers: Sequence[Marker] = (),
) -> None:
    """Replay one group whose rules are all prefetched; add its episodes and errors to ``result``.

    ``ready`` holds the plans of the rules already scored (by id), by worker processes.
    """
    instants = group_ticks(group, start, end)
    ticks = np.array([to_epoch(t) for t in instants], dtype=np.float64)
    plans: dict[int, RulePlan] = {}
    interesting = np.ones(len(ticks), dtype=bool)
    t0 = time.process_time()
    if batch:
        interesting[:] = False
        for rule in group.rules:
            entry = caches[rule.source].prefetch(rule, group)
            step_s = entry.step.total_seconds()
            starts = slice_starts(ticks, step_s, rule_lookback(rule, group).total_seconds())
            caches[rule.source].schedule(rule, ticks, starts)
            plan = ready.get(id(rule))
            if plan is None:
                try:
                    plan = plan_rule(rule, entry.series, ticks, starts, step_s)
                except WatcherError:  # the evaluator reports it at every tick, as the daemon would
                    plan = fallback_plan(rule, len(ticks))
            plans[id(rule)] = plan
            interesting |= plan.interesting

    result.cpu["score"] += time.process_time() - t0
    t0 = time.process_time()

    def detector(rule: Rule, labels: Labels) -> Detector:
        plan = plans.get(id(rule))
        det = plan.detector(labels) if plan is not None and plan.precomputed else None
        return det if det is not None else make_detector(rule.detector)

    ev = GroupEvaluator(
        group,
        dict(caches),
        resolved_retention=retention,
        render=_no_render,
        detector_factory=detector,
        markers=StaticMarkers(markers) if markers else None,
    )
    # Rules scored by live detectors (every rule without ``batch``) record verdicts as they come.
    live = {r.alert for r in group.rules if id(r) not in plans or not plans[id(r)].precomputed}
    down = {r.alert: _down(r) for r in group.rules}
    open_: dict[tuple[str, str], Episode] = {}
    holding = False  # whether the group holds any alert (then every tick counts)
    for k, now in enumerate(instants):
        result.ticks += 1
        if holding or interesting[k]:
            result.evaluations += 1
            res = ev.evaluate(now)
            holding = bool(res.alerts)
            for alert in res.alerts:
                _track(alert, open_, result.episodes, down[alert.rule])
            for h in res.health:
                if not h.ok and h.error:
                    result.errors.append(f"{group.name}/{h.rule} at {now:%Y-%m-%d %H:%M}Z: {h.error}")
            if record_verdicts and live:
                _record(result, ev.verdicts(), live)
        if progress is not None:
            progress(1)
    if record_verdicts and batch:
        for rule in group.rules:
            plan = plans[id(rule)]
            if rule.alert in live:
                continue
            for sp in plan.series:
                st = SeriesTrace()
                for v in sp.latest:
                    if v is not None:
                        st.ts.append(v.ts)
                        st.value.append(v.value)
                        st.lower.append(v.lower)
                        st.upper.append(v.upper)
                        st.expected.append(v.expected)
                if st.ts:
                    result.verdicts[(rule.alert, sp.labels)] = st
    result.episodes.extend(open_.values())
    result.cpu["evaluate"] += time.process_time() - t0


def _record(result: ReplayResult, verdicts: dict[str, dict[Labels, Verdict]], rules: set[str]) -> None:
    """Append the evaluator's newest verdict per series of ``rules`` to the plots' traces, once per point."""
    for rule_name, per in verdicts.items():
        if rule_name not in rules:
            continue
        for labels, v in per.items():
            st = result.verdicts.setdefault((rule_name, labels), SeriesTrace())
            if st.ts and st.ts[-1] == v.ts:
                continue
            st.ts.append(v.ts)
            st.value.append(v.value)
            st.lower.append(v.lower)
            st.upper.append(v.upper)
            st.expected.append(v.expected)


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
    ep.explanation = ep.explanation or alert.annotations.get(EXPLANATION)
    ep.release = ep.release or alert.annotations.get(RELEASE)
    if alert.resolved:
        ep.end = alert.resolved_at
        done.append(replace(ep))
        del open_[key]


def iter_episodes(result: ReplayResult, alert: str) -> Iterator[Episode]:
    """Yield the episodes of one rule, in start order."""
    return (e for e in result.episodes if e.alert == alert)
