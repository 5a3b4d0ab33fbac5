"""Replaying rule groups over history: stepping the real evaluator, and episode tracking.

This module owns the mechanics of a backtest over a whole-range cache (``cache.CachedSource``:
each rule's series fetched once, traces fetched lazily only for anomalous points of active
alerts). ``replay`` steps the real ``GroupEvaluator`` over the ticks and turns its
alerts into episodes: by default with every series scored once over the whole range and the
evaluator run only at the ticks where something can change (``batch``); ``batch=False`` runs it
at every tick with live detectors, as the daemon does. With ``jobs``, worker processes fetch and
score (``parallel``) while the evaluation stays here. It does not own reporting (``report``),
plots (``plot``) nor comparison (``compare``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ..core import Alert, AlertState, Labels, Verdict, to_epoch
from ..detectors import Detector, make_detector, series_key
from ..engine.group import GroupEvaluator, rule_lookback
from ..errors import WatcherError
from ..notify.templates import EXPLANATION, RELEASE
from ..rules.schema import Group, Rule
from ..sources.base import Source
from ..store.markers import Marker, StaticMarkers
from .batch import RulePlan, data_ticks, fallback_plan, plan_rule, slice_starts
from .cache import CachedSource, group_ticks, shared_caches
from .parallel import Workers, start_workers


def _no_render(*_: Any, **__: Any) -> dict[str, str]:
    return {}


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


def _down(rule: Rule) -> bool:
    return getattr(rule.detector, "direction", "up") == "down"


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How one replay runs: the options every level of it (all groups, one group) shares."""

    record_verdicts: bool = False
    """Keep every verdict per series (for ``--plot``)."""
    progress: Callable[[int], None] | None = None
    """Called with 1 after each evaluated tick (a progress bar)."""
    retention: timedelta = timedelta(minutes=15)
    """How long a resolved alert is kept (``notify.resolved_retention``)."""
    batch: bool = True
    """Score each series once over the range and run the evaluator only where something can change."""
    jobs: int | None = 1
    """Worker processes that fetch and score a batch replay (None: one per CPU)."""
    markers: Sequence[Marker] = ()
    """Release markers: cited by the alerts they precede, re-baselining the series they name."""


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
    runs only at the ticks where something can change (``batch``); without it, the evaluator
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
    opts = ReplayOptions(record_verdicts, progress, retention, batch, jobs, markers)
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
        _replay_groups(groups, caches, start, end, result, workers, opts)
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
    opts: ReplayOptions,
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
        _replay_group(group, caches, start, end, result, opts, ready)


def _replay_group(
    group: Group,
    caches: dict[str, CachedSource],
    start: datetime,
    end: datetime,
    result: ReplayResult,
    opts: ReplayOptions,
    ready: dict[int, RulePlan],
) -> None:
    """Replay one group whose rules are all prefetched; add its episodes and errors to ``result``.

    ``ready`` holds the plans of the rules already scored (by id), by worker processes.
    """
    instants = group_ticks(group, start, end)
    ticks = np.array([to_epoch(t) for t in instants], dtype=np.float64)
    plans: dict[int, RulePlan] = {}
    interesting = np.ones(len(ticks), dtype=bool)
    t0 = time.process_time()
    if opts.batch:
        interesting[:] = False
        for rule in group.rules:
            entry = caches[rule.source].prefetch(rule, group)
            step_s = entry.step.total_seconds()
            # per rule: the instants its data ends at (``evaluation_delay``), never a group-wide switch
            rule_ticks = data_ticks(rule, ticks)
            starts = slice_starts(rule_ticks, step_s, rule_lookback(rule, group).total_seconds())
            caches[rule.source].schedule(rule, rule_ticks, starts)
            plan = ready.get(id(rule))
            if plan is None:
                try:
                    plan = plan_rule(rule, entry.series, rule_ticks, starts, step_s)
                except WatcherError:  # the evaluator reports it at every tick, as the daemon would
                    plan = fallback_plan(rule, len(ticks))
            plans[id(rule)] = plan
            interesting |= plan.interesting

    result.cpu["score"] += time.process_time() - t0
    t0 = time.process_time()

    def detector(rule: Rule, labels: Labels) -> Detector:
        plan = plans.get(id(rule))
        det = plan.detector(labels) if plan is not None and plan.precomputed else None
        return det if det is not None else make_detector(rule.detector, series_key(rule, labels))

    ev = GroupEvaluator(
        group,
        dict(caches),
        resolved_retention=opts.retention,
        render=_no_render,
        detector_factory=detector,
        markers=StaticMarkers(opts.markers) if opts.markers else None,
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
            if opts.record_verdicts and live:
                _record(result, ev.verdicts(), live)
        if opts.progress is not None:
            opts.progress(1)
    if opts.record_verdicts and opts.batch:
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
