"""Evaluation of one rule group at one instant: fetch → detect → step the state machine → persist.

This module owns the per-rule runtime state (one detector per series, the fetch cursor, the
current alerts) and the order of one evaluation. It does not own the transitions (``alerting``),
scheduling or reloading (``daemon``), nor delivery (``notify``): it returns the alerts worth
notifying and the caller submits them.

Invariants:

* ``now`` is a parameter; nothing here reads the clock except to time the evaluation itself;
* a failed fetch returns before touching alert state, so an outage never resolves an alert;
* each tick fetches only the points after the previous tick (the first fetch reaches back
  ``lookback`` to warm the detectors up), so the cost of a tick does not grow with history;
* the state of a series gone for longer than it reaches back (lookback, verdict history) is
  dropped once it has no alert, so label churn (tenants, models) does not grow memory forever.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
from prometheus_client import Histogram

from ..core import Alert, AlertState, Labels, Series, TraceRef, Verdict, from_epoch, to_epoch
from ..detectors import Detector, make_detector, series_key
from ..detectors.checkpoint import CheckpointError, get_state, set_state
from ..errors import SourceError, StoreError, WatcherError
from ..links import NO_EXEMPLARS, NOTE_KEYS, TRACE_SEARCH, no_exemplars_note, search_link
from ..notify.templates import DETAIL, FORECAST, render_annotations
from ..rules.schema import (
    AutoDetector,
    BudgetDetector,
    DriftDetector,
    EwmaDetector,
    Group,
    RateDetector,
    RollingDetector,
    Rule,
    SeasonalDetector,
    TracesSpec,
)
from ..selfmetrics import SelfMetrics
from ..sources.base import Source, want_traces
from .alerting import Observation, Timing, step
from .checkpoints import CheckpointStore, SeriesState, spec_digest
from .history import VerdictRing
from .state import AlertStore, RuleHealth
from .why import EXPLAIN_PER_TICK, MarkerFeed, Why

logger = logging.getLogger(__name__)

DEFAULT_TOP_TRACES = 5
HISTORY_MIN_POINTS = 360
"""Verdicts kept per series for charts and the status page, at least (more if the lookback is longer)."""
CHECKPOINT_ALSO = ("watcher.engine.rebaseline",)
"""Modules besides the detectors' whose classes a detector checkpoint holds (the marker wrapper)."""
HISTORY_MAX_POINTS = 2880
"""Hard cap on the verdicts kept per series, whatever the lookback."""


def rule_step(rule: Rule, group: Group) -> timedelta:
    """Return the spacing of a rule's points: ``query.step`` or the group interval."""
    if rule.query is not None and rule.query.step is not None:
        return rule.query.step
    return group.interval


def rule_lookback(rule: Rule, group: Group) -> timedelta:
    """Return how much history the first fetch of a rule reaches back for its detector."""
    if rule.lookback is not None:
        return rule.lookback
    stp = rule_step(rule, group)
    det = rule.detector
    if isinstance(det, RollingDetector):
        return det.window + 2 * stp
    if isinstance(det, SeasonalDetector | AutoDetector):
        return det.history + 2 * stp
    if isinstance(det, EwmaDetector):
        return max(det.min_points * stp, 4 * det.halflife) + 2 * stp
    if isinstance(det, RateDetector):
        return 2 * det.halflife + 2 * stp
    if isinstance(det, BudgetDetector):  # back to the period's start, whenever in the period it is
        return (timedelta(days=1) if det.period == "day" else timedelta(days=31)) + 2 * stp
    if isinstance(det, DriftDetector):
        return det.reference + det.recent + 2 * stp
    return 2 * stp


def _fresh_detector(rule: Rule, labels: Labels) -> Detector:
    """Return a new detector for one series of ``rule`` (the daemon's default factory)."""
    return make_detector(rule.detector, series_key(rule, labels))


def rank_traces(refs: Iterable[TraceRef], spec: TracesSpec | None, top: int) -> tuple[TraceRef, ...]:
    """Return the ``top`` distinct trace references in the order the rule asks for."""
    order = spec.order if spec is not None else "value_desc"
    best: dict[str, TraceRef] = {}
    for ref in refs:
        old = best.get(ref.trace_id)
        if old is None or _better(ref, old, order):
            best[ref.trace_id] = ref
    if order == "recent":
        ranked = sorted(best.values(), key=lambda r: r.ts.timestamp() if r.ts else -math.inf, reverse=True)
    else:
        sign = -1.0 if order == "value_desc" else 1.0
        ranked = sorted(best.values(), key=lambda r: sign * r.value if r.value is not None else math.inf)
    return tuple(ranked[:top])


def _better(a: TraceRef, b: TraceRef, order: str) -> bool:
    if a.value is None or b.value is None:
        return b.value is None and a.value is not None
    return a.value > b.value if order == "value_desc" else a.value < b.value


@dataclass
class _RuleRunner:
    """Runtime state of one rule: detectors per series, the fetch cursor and current alerts."""

    rule: Rule
    group: Group
    detectors: dict[Labels, Detector] = field(default_factory=dict)
    cursor: float | None = None
    alerts: dict[str, Alert] = field(default_factory=dict)
    last_verdicts: dict[Labels, Verdict] = field(default_factory=dict)
    history: dict[Labels, VerdictRing] = field(default_factory=dict)
    """Recent verdicts per series (keyed by the source's labels), oldest first, bounded."""
    by_alert_labels: dict[Labels, Labels] = field(default_factory=dict)
    """Alert labels (series labels with the rule's labels laid over) → the series' own labels."""
    episode_start: dict[str, float] = field(default_factory=dict)
    """Fingerprint → the first anomalous point of the alert's current episode (its trace window)."""
    last_seen: dict[Labels, float] = field(default_factory=dict)
    """Series labels → the time of the series' newest point seen."""
    pruned_at: float = -math.inf
    checkpointed_at: float = -math.inf
    """Grid time of the rule's last detector checkpoint (or of the one it resumed from)."""
    interned: dict[Labels, Labels] = field(default_factory=dict)
    """Series labels → the first equal label set seen, whose merges and fingerprint are cached."""
    alert_ids: dict[Labels, tuple[Labels, str]] = field(default_factory=dict)
    """Interned series labels → the alert's labels (the rule's laid over) and its fingerprint."""

    def intern(self, labels: Labels) -> Labels:
        """Return the label set kept for ``labels`` (a source builds new ones at every fetch)."""
        kept = self.interned.get(labels)
        if kept is None:
            kept = self.interned[labels] = labels
        return kept

    def alert_id(self, key: Labels) -> tuple[Labels, str]:
        """Return the alert labels and fingerprint of the series ``key`` (interned labels), cached."""
        got = self.alert_ids.get(key)
        if got is None:
            labels = key.merge(self.rule.labels)
            got = self.alert_ids[key] = (labels, labels.merge({"alertname": self.rule.alert}).fingerprint)
        return got

    @property
    def history_points(self) -> int:
        stp = rule_step(self.rule, self.group).total_seconds()
        n = math.ceil(rule_lookback(self.rule, self.group).total_seconds() / stp) if stp > 0 else 0
        return min(max(n, HISTORY_MIN_POINTS), HISTORY_MAX_POINTS)

    def record(self, labels: Labels, verdicts: Sequence[Verdict]) -> None:
        """Append the verdicts newer than the last kept one to the series' bounded history."""
        hist = self.history.get(labels)
        if hist is None:
            hist = self.history[labels] = VerdictRing(self.history_points)
            self.by_alert_labels[labels.merge(self.rule.labels)] = labels
        if len(verdicts) == 1:
            hist.append(verdicts[0])
        else:
            hist.extend(verdicts)

    @property
    def top(self) -> int:
        if self.rule.traces is not None and self.rule.traces.from_ == "none":
            return 0
        return self.rule.traces.top if self.rule.traces is not None else DEFAULT_TOP_TRACES

    def see(self, key: Labels, series: Series) -> None:
        """Note the time of the series' newest point with a value (a live series: its last point)."""
        values = series.values
        if len(values) and math.isfinite(values[-1]):
            newest = float(series.timestamps[-1])
        else:
            seen = np.flatnonzero(np.isfinite(values))
            if not len(seen):
                return
            newest = float(series.timestamps[seen[-1]])
        if newest > self.last_seen.get(key, -math.inf):
            self.last_seen[key] = newest

    def prune(self, grid_last: float) -> int:
        """Forget the series gone for longer than their state reaches back; return how many.

        That is the rule's lookback (a daemon started now would not see them either) or the span
        of the verdict history, whichever is longer: everything their detector, verdicts and
        history hold is out of its window. A series with an alert in any state is kept until the
        alert is gone. Runs at most once per tenth of that span (backtests tick often).
        """
        step_s = rule_step(self.rule, self.group).total_seconds()
        lookback = max(rule_lookback(self.rule, self.group).total_seconds(), self.history_points * step_s)
        if grid_last - self.pruned_at < lookback / 10:
            return 0
        self.pruned_at = grid_last
        horizon = grid_last - lookback
        gone = [labels for labels, seen in self.last_seen.items() if seen < horizon]
        dropped = 0
        for labels in gone:
            alert_labels = labels.merge(self.rule.labels)
            if alert_labels.merge({"alertname": self.rule.alert}).fingerprint in self.alerts:
                continue
            for state in (
                self.detectors,
                self.last_verdicts,
                self.history,
                self.last_seen,
                self.interned,
                self.alert_ids,
            ):
                state.pop(labels, None)
            self.by_alert_labels.pop(alert_labels, None)
            dropped += 1
        return dropped

    def passes_floor(self, value: float) -> bool:
        r = self.rule
        if r.min_value is not None and not value >= r.min_value:
            return False
        return not (r.max_value is not None and not value <= r.max_value)


def _quiet(runner: _RuleRunner, latest: Verdict | None) -> bool:
    """Tell whether a series without an alert stays without one after this verdict.

    A ready verdict that is not active, or a not-ready one that is not "no data" (warming up,
    re-baselining: no verdict, state kept), steps no alert into existence; "no data" and no
    verdict at all go through the rule's ``no_data`` policy.
    """
    if latest is None:
        return False
    if latest.ready:
        return not (latest.anomalous and runner.passes_floor(latest.value))
    return latest.reason != "no data"


def _stored_differs(new: Alert, prev: Alert) -> bool:
    """Tell whether ``new`` must be written: anything but the time of the evaluation changed."""
    return new != prev and replace(new, last_eval=prev.last_eval) != prev


@dataclass(frozen=True, slots=True)
class EvalResult:
    """What one group evaluation produced."""

    group: str
    at: datetime
    notify: list[tuple[Alert, Sequence[str]]]
    health: list[RuleHealth]
    alerts: list[Alert]
    changed: list[Alert] = field(default_factory=list)
    """Alerts whose state is not yet in the store (this evaluation's changes, and any left unsaved)."""
    deleted: list[str] = field(default_factory=list)
    """Fingerprints to delete from the store."""


class GroupEvaluator:
    """Evaluates the rules of one group; keeps their state between evaluations."""

    def __init__(
        self,
        group: Group,
        sources: Mapping[str, Source],
        *,
        alert_store: AlertStore | None = None,
        resolved_retention: timedelta = timedelta(minutes=15),
        metrics: SelfMetrics | None = None,
        render: Callable[..., dict[str, str]] = render_annotations,
        detector_factory: Callable[[Rule, Labels], Detector] | None = None,
        keep_history: bool = True,
        trace_search_url: str | None = None,
        trace_search_labels: Mapping[str, str] | None = None,
        checkpoints: CheckpointStore | None = None,
        checkpoint_every: timedelta | None = None,
        markers: MarkerFeed | None = None,
        explain: bool = True,
        explain_budget: int = EXPLAIN_PER_TICK,
        shard: Callable[[Labels], bool] | None = None,
        checkpoint_key: str | None = None,
    ) -> None:
        """``keep_history=False`` skips the per-series verdict history (``history``), e.g. in backtests.

        ``trace_search_url`` (the setting) links an alert left without exemplar trace IDs to its
        time window in the trace UI. With ``checkpoints``, a rule's first evaluation resumes its
        detectors from their last checkpoint (fetching only what came after it) and their state is
        checkpointed every ``checkpoint_every`` of data time (at the first evaluation, then on).
        ``markers`` (release markers) are named in the alerts they precede and re-baseline the
        series they apply to; ``explain`` adds the contribution by dimension of SQL and PromQL
        ``sum by`` rules' alerts (``why``; at most ``explain_budget`` analyses per evaluation, the
        rest on the next ones). ``shard`` (a cluster shard of the group, ``cluster.assign``) keeps
        only the series whose alert labels it accepts, and the rule-wide no-data alert only if it
        accepts the rule's own labels; its checkpoints are kept under ``checkpoint_key``.
        """
        self._shard = shard
        self._checkpoint_key = checkpoint_key or group.name
        horizon = max((rule_lookback(r, group) for r in group.rules), default=timedelta(0))
        self._why = Why(markers, explain=explain, horizon=horizon, budget=explain_budget)
        self._checkpoints = checkpoints
        self._checkpoint_every = checkpoint_every
        self.group = group
        self._trace_search_url = trace_search_url
        self._trace_search_labels = dict(trace_search_labels or {})
        self._keep_history = keep_history
        self._sources = sources
        # A backtest passes detectors whose verdicts were computed over the whole range at once.
        self._make_detector = detector_factory or _fresh_detector
        self._alert_store = alert_store
        self._retention = resolved_retention
        self._metrics = metrics
        self._fit_children: dict[str, Histogram] = {}
        self._render = render
        self._runners = [_RuleRunner(rule=r, group=group) for r in group.rules]
        self._unsaved: dict[str, Alert | None] = {}
        """Changes not yet committed (fingerprint → alert, None: delete): retried until saved."""

    @property
    def name(self) -> str:
        """Return the group's name."""
        return self.group.name

    def restore(self, alerts: Iterable[Alert]) -> list[str]:
        """Adopt persisted alerts of this group; return fingerprints that belong to no rule any more."""
        by_rule = {r.rule.alert: r for r in self._runners}
        orphans = []
        for alert in alerts:
            runner = by_rule.get(alert.rule)
            if runner is None:
                orphans.append(alert.fingerprint)
            else:
                runner.alerts[alert.fingerprint] = alert
        return orphans

    def alerts(self) -> list[Alert]:
        """Return every alert this group currently holds."""
        return [a for r in self._runners for a in r.alerts.values()]

    def verdicts(self) -> dict[str, dict[Labels, Verdict]]:
        """Return the latest verdict per rule and series, for the status page and charts."""
        return {r.rule.alert: dict(r.last_verdicts) for r in self._runners}

    def history(self, rule: str, labels: Labels) -> list[Verdict]:
        """Return the recent verdicts of one series of ``rule``, oldest first (empty if unknown).

        ``labels`` may be the series' own labels (the keys of :meth:`verdicts`) or an alert's labels
        (with the rule's labels laid over, ``alertname`` optional).
        """
        for runner in self._runners:
            if runner.rule.alert != rule:
                continue
            hist = runner.history.get(labels)
            if hist is None:
                index = runner.by_alert_labels
                key = index.get(labels) or index.get(labels.without("alertname"))
                hist = runner.history.get(key) if key is not None else None
            return hist.verdicts() if hist is not None else []
        return []

    def evaluate(self, now: datetime, *, persist: bool = True) -> EvalResult:
        """Evaluate every rule at ``now``; persist the changes; return what to notify.

        With ``persist=False`` nothing is written: the caller writes ``changed``/``deleted`` in
        its own transaction (the daemon's, together with the notifications) and then calls
        :meth:`saved`. Changes whose commit failed are carried into the next result.
        """
        healths: list[RuleHealth] = []
        changed: list[Alert] = []
        deleted: list[str] = []
        started = time.perf_counter()
        new_markers = self._why.refresh(now)
        for runner in self._runners:
            if new_markers:
                self._why.deliver(new_markers, runner.detectors, runner.rule.labels)
            t0 = time.perf_counter()
            try:
                n_series, ch, de = self._evaluate_rule(runner, now)
            except WatcherError as exc:
                reason = type(exc).__name__
                logger.warning(
                    "rule evaluation failed: %s",
                    exc,
                    extra={"group": self.name, "rule": runner.rule.alert, "reason": reason},
                )
                if self._metrics:
                    self._metrics.rule_failures.labels(self.name, runner.rule.alert, reason).inc()
                healths.append(
                    RuleHealth(self.name, runner.rule.alert, False, now, time.perf_counter() - t0, str(exc))
                )
                continue
            changed.extend(ch)
            deleted.extend(de)
            healths.append(
                RuleHealth(self.name, runner.rule.alert, True, now, time.perf_counter() - t0, None, n_series)
            )
            if self._metrics:
                self._metrics.rule_evaluations.labels(self.name, runner.rule.alert).inc()
        for alert in changed:
            self._unsaved[alert.fingerprint] = alert
        for fp in deleted:
            self._unsaved[fp] = None
        to_save = [a for a in self._unsaved.values() if a is not None]
        to_delete = [fp for fp, a in self._unsaved.items() if a is None]
        if persist and self._alert_store is not None:
            self._alert_store.save(to_save, to_delete)
            self._forget_saved(to_save, to_delete)
            self._alert_store.record_health(healths)
        if self._metrics:
            self._metrics.group_duration.labels(self.name).observe(time.perf_counter() - started)
            for runner in self._runners:
                for st in AlertState:
                    n = sum(1 for a in runner.alerts.values() if a.state is st)
                    self._metrics.alerts.labels(self.name, runner.rule.alert, str(st)).set(n)
        notify: list[tuple[Alert, Sequence[str]]] = []
        for runner in self._runners:
            for alert in runner.alerts.values():
                if alert.state is AlertState.FIRING or alert.resolved:
                    notify.append((alert, runner.rule.receivers))
        return EvalResult(self.name, now, notify, healths, self.alerts(), to_save, to_delete)

    def saved(self, result: EvalResult) -> None:
        """Note that ``result``'s changes were committed (they are not carried into the next one)."""
        self._forget_saved(result.changed, result.deleted)

    def _forget_saved(self, changed: Sequence[Alert], deleted: Sequence[str]) -> None:
        for alert in changed:
            if self._unsaved.get(alert.fingerprint) is alert:
                del self._unsaved[alert.fingerprint]
        for fp in deleted:
            if fp in self._unsaved and self._unsaved[fp] is None:
                del self._unsaved[fp]

    # --- one rule ----------------------------------------------------------------------------

    def _evaluate_rule(self, runner: _RuleRunner, now: datetime) -> tuple[int, list[Alert], list[str]]:
        rule = runner.rule
        source = self._sources.get(rule.source)
        if source is None:
            raise SourceError(f"no source configured for source: {rule.source}", source=rule.source)
        stp = rule_step(rule, self.group)
        step_s = stp.total_seconds()
        # The data instant: with `evaluation_delay` the rule judges the window ending that long
        # ago (late scores are in it); the alert state machine keeps the real clock.
        at = now - rule.evaluation_delay
        grid_last = math.floor(to_epoch(at) / step_s) * step_s
        if runner.cursor is None and self._checkpoints is not None and rule.detector is not None:
            self._resume(runner, at)
        start = (
            from_epoch(runner.cursor) if runner.cursor is not None else at - rule_lookback(rule, self.group)
        )
        # a SourceError leaves all state untouched
        fetched = self._fetch(source, rule, start, at, stp)
        series_list = fetched
        owns_rule_wide = True
        if self._shard is not None:
            owns = self._shard
            series_list = [s for s in fetched if owns(s.labels.merge(rule.labels))]
            owns_rule_wide = owns(Labels(rule.labels))
        runner.cursor = max(grid_last, runner.cursor or -math.inf)

        observations: dict[str, tuple[Labels, Observation | None]] = {}
        own_labels: dict[str, Labels] = {}
        # Every series' verdict first; then the trace references of the alerting ones, which a
        # source may read in one query when it is told which series will ask (``want``).
        seen = []
        intern, detect, alert_id, alerts = runner.intern, self._detect, runner.alert_id, runner.alerts
        for series in series_list:
            # the interned labels key every per-series dict, so their lookups hit by identity
            key = intern(series.labels)
            latest, hot = detect(runner, series, key, grid_last)
            if hot:
                want_traces(series.traces)
            labels, fp = alert_id(key)
            # A series without an alert that stays without one (a ready inactive verdict, or none
            # yet while warming up) would step to no alert: it is left out of the steps entirely.
            if fp in alerts or not _quiet(runner, latest):
                seen.append((series, key, labels, fp, latest, hot))
        for series, key, labels, fp, latest, hot in seen:
            own_labels[fp] = key
            observations[fp] = (
                labels,
                self._observe(runner, series, labels, latest, hot, grid_last, fp, at),
            )
        absent_fp = Labels(rule.labels).merge({"alertname": rule.alert}).fingerprint
        for fp, alert in runner.alerts.items():
            if fp not in observations:
                if fetched and fp == absent_fp and alert.annotations.get("no_data"):
                    # Series are back: the rule-wide no-data alert resolves.
                    observations[fp] = (alert.labels, Observation(active=False))
                else:
                    observations[fp] = (alert.labels, self._missing(runner, alert))
        if not fetched and not runner.alerts and rule.no_data == "alert" and owns_rule_wide:
            # Nothing at all came back: one alert with the rule's own labels, like absent().
            labels = Labels(rule.labels)
            fp = labels.merge({"alertname": rule.alert}).fingerprint
            observations[fp] = (labels, self._no_data(runner, None))

        changed: list[Alert] = []
        deleted: list[str] = []
        timing = Timing(rule.for_, rule.keep_firing_for, self._retention)
        for fp, (labels, obs) in observations.items():
            prev = runner.alerts.get(fp)
            new = step(prev, obs, now, timing, rule=rule.alert, group=self.name, labels=labels)
            if new is None:
                if prev is not None:
                    del runner.alerts[fp]
                    deleted.append(fp)
                continue
            new = self._why.annotate(
                rule, source, prev, new, own_labels.get(fp), at, rule_lookback(rule, self.group), stp
            )
            if prev is None or _stored_differs(new, prev):
                changed.append(new)
            runner.alerts[fp] = new
        for fp in [f for f in runner.episode_start if f not in runner.alerts or runner.alerts[f].resolved]:
            del runner.episode_start[fp]
        runner.prune(grid_last)
        self._checkpoint(runner, grid_last)
        return len(series_list), changed, deleted

    # --- checkpoints ---------------------------------------------------------------------------

    def _resume(self, runner: _RuleRunner, now: datetime) -> None:
        """Adopt the rule's checkpointed detectors when they are recent enough to continue from.

        The cursor moves to the checkpoint's, so the first fetch brings exactly what a daemon that
        had kept running would have fetched since. A checkpoint older than the lookback, of another
        spec or detector code, or unreadable, is ignored: the state is rebuilt from history.
        """
        assert self._checkpoints is not None
        rule = runner.rule
        step_s = rule_step(rule, self.group).total_seconds()
        try:
            got = self._checkpoints.load(self._checkpoint_key, rule.alert, spec_digest(rule, step_s))
        except StoreError as exc:
            logger.warning("detector checkpoint not read: %s", exc, extra={"group": self.name})
            return
        if (
            got is None
            or got.cursor > to_epoch(now)
            or got.cursor < to_epoch(now - rule_lookback(rule, self.group))
        ):
            return
        bad = 0
        for item in got.series:
            try:
                det = set_state(self._make_detector(rule, item.labels), item.state, CHECKPOINT_ALSO)
            except CheckpointError:
                bad += 1
                continue
            runner.detectors[item.labels] = det
            runner.last_seen[item.labels] = item.last_seen
        if bad and not runner.detectors:
            return
        runner.cursor = runner.checkpointed_at = got.cursor
        logger.info(
            "resumed %d series from a detector checkpoint (%d unreadable)",
            len(runner.detectors),
            bad,
            extra={"group": self.name, "rule": rule.alert},
        )

    def _checkpoint(self, runner: _RuleRunner, grid_last: float) -> None:
        """Write the rule's detector state when ``checkpoint_every`` has passed since the last one."""
        if self._checkpoints is None or self._checkpoint_every is None or runner.rule.detector is None:
            return
        if grid_last - runner.checkpointed_at < self._checkpoint_every.total_seconds():
            return
        states = []
        for labels, det in runner.detectors.items():
            try:
                blob = get_state(det, CHECKPOINT_ALSO)
            except CheckpointError:
                continue  # this series is rebuilt from history after a restart
            states.append(SeriesState(labels, runner.last_seen.get(labels, grid_last), blob))
        step_s = rule_step(runner.rule, self.group).total_seconds()
        try:
            self._checkpoints.save(
                self._checkpoint_key, runner.rule.alert, spec_digest(runner.rule, step_s), grid_last, states
            )
        except StoreError as exc:
            logger.warning("detector checkpoint not written: %s", exc, extra={"group": self.name})
            return
        runner.checkpointed_at = grid_last

    def _fetch(
        self, source: Source, rule: Rule, start: datetime, end: datetime, stp: timedelta
    ) -> list[Series]:
        """Run the source query, timing it and counting its failures (by exception type) per source."""
        t0 = time.perf_counter()
        try:
            return source.fetch(rule, start, end, stp)
        except Exception as exc:
            if self._metrics:
                self._metrics.source_query_errors.labels(rule.source, type(exc).__name__).inc()
            raise
        finally:
            if self._metrics:
                self._metrics.source_query_duration.labels(rule.source).observe(time.perf_counter() - t0)

    def _detect(
        self, runner: _RuleRunner, series: Series, key: Labels, grid_last: float
    ) -> tuple[Verdict | None, list[float] | None]:
        """Run the series' detector; return the verdict at ``grid_last`` and, when it is active
        and the rule wants trace references, the times of the episode's points behind them.

        ``key`` is the series' interned labels. A series of one point (a steady tick) is stepped
        with ``Detector.step_one``: the same verdict as ``update_many``, without its arrays.
        """
        rule = runner.rule
        if rule.detector is None:
            verdicts = [
                Verdict(ts=float(t), value=float(v), anomalous=math.isfinite(v), ready=math.isfinite(v))
                for t, v in zip(series.timestamps, series.values, strict=True)
            ]
            runner.see(key, series)
        else:
            det = runner.detectors.get(key)
            if det is None:
                made = self._make_detector(rule, key)
                det = self._why.wrap(made, key.merge(rule.labels))
                runner.detectors[key] = det
            t0 = time.perf_counter()
            single = len(series.values) == 1
            if single:
                t, v = float(series.timestamps[0]), float(series.values[0])
                counts = series.counts
                one = det.step_one(t, v, None if counts is None else float(counts[0]))
                verdicts = [one] if one is not None else []
            else:
                verdicts = det.update_many(series.timestamps, series.values, series.counts)
            if self._metrics:
                kind = rule.detector.kind
                fit = self._fit_children.get(kind)
                if fit is None:  # ``labels()`` per series was a tenth of a steady tick's own work
                    fit = self._fit_children[kind] = self._metrics.detector_fit_duration.labels(kind)
                fit.observe(time.perf_counter() - t0)
            if not single:
                runner.see(key, series)
            elif math.isfinite(v) and t > runner.last_seen.get(key, -math.inf):
                runner.last_seen[key] = t  # ``see`` of a one-point series, without numpy
        if self._keep_history:
            runner.record(key, verdicts)
        if len(verdicts) == 1:
            latest = verdicts[0] if verdicts[0].ts == grid_last else None
        else:
            latest = next((v for v in reversed(verdicts) if v.ts == grid_last), None)
        if latest is not None:
            runner.last_verdicts[key] = latest
        if latest is None or not latest.ready or not runner.top:
            return latest, None
        if not (latest.anomalous and runner.passes_floor(latest.value)):
            return latest, None
        step_s = rule_step(rule, self.group).total_seconds()
        since = grid_last - max(rule.for_.total_seconds(), step_s)
        hot = [v.ts for v in verdicts if v.anomalous and v.ts >= since and runner.passes_floor(v.value)]
        return latest, hot

    def _observe(
        self,
        runner: _RuleRunner,
        series: Series,
        labels: Labels,
        latest: Verdict | None,
        hot: list[float] | None,
        grid_last: float,
        fp: str,
        now: datetime,
    ) -> Observation | None:
        rule = runner.rule
        if latest is None or (not latest.ready and latest.reason == "no data"):
            prev = runner.alerts.get(fp)
            return self._no_data(runner, prev)
        if not latest.ready:
            return None  # warming up: no verdict, keep whatever state there is
        active = latest.anomalous and runner.passes_floor(latest.value)
        prev = runner.alerts.get(fp)
        ongoing = prev is not None and prev.state is not AlertState.INACTIVE
        traces: tuple[TraceRef, ...] = ()
        notes: dict[str, str] = {}
        if active and runner.top:
            assert hot is not None
            step_s = rule_step(rule, self.group).total_seconds()
            index = {float(t): i for i, t in enumerate(series.timestamps)}
            fresh = [ref for ts in hot for ref in series.traces_at(index[ts])]
            kept = prev.traces if prev is not None and ongoing else ()
            traces = rank_traces([*kept, *fresh], rule.traces, runner.top)
            first = min(hot, default=grid_last)
            if prev is not None and prev.active_at is not None and ongoing:
                # after a restart the episode's first point is unknown: the step it became active in
                first = min(first, runner.episode_start.get(fp, to_epoch(prev.active_at) // step_s * step_s))
            runner.episode_start[fp] = first
            if not traces and series.exemplars is not None:
                notes = self._no_exemplars(series, first - step_s, to_epoch(now))
        elif not active and prev is not None and ongoing:
            # a resolving alert keeps its traces (alerting), and so what it said about having none
            notes = {k: prev.annotations[k] for k in NOTE_KEYS if k in prev.annotations}
        # The annotations of a series without an alert, and staying without one, are never read.
        render = active or ongoing
        # ``labels``: the series' with the rule's laid over, from the interned set (its merge cached)
        return self._obs(rule, labels, latest, active, traces, notes, render=render)

    def _no_exemplars(self, series: Series, start: float, end: float) -> dict[str, str]:
        """Return the notes of an alert without exemplar traces: whence none came, and a search link."""
        assert series.exemplars is not None
        lookup = series.exemplars
        notes = {NO_EXEMPLARS: no_exemplars_note(lookup.endpoint, start, end, lookup.error)}
        if self._trace_search_url:
            notes[TRACE_SEARCH] = search_link(
                self._trace_search_url, start, end, series.labels, self._trace_search_labels
            )
        return notes

    def _obs(
        self,
        rule: Rule,
        labels: Labels,
        v: Verdict,
        active: bool,
        traces: tuple[TraceRef, ...],
        notes: Mapping[str, str] | None = None,
        *,
        render: bool = True,
    ) -> Observation:
        annotations = (
            self._render(
                rule.annotations,
                labels=labels,
                value=v.value,
                expected=v.expected,
                lower=v.lower,
                upper=v.upper,
                score=v.score,
                **({"note": v.note} if v.note else {}),
            )
            if rule.annotations and render
            else {}
        )
        if v.note and render:
            notes = {**(notes or {}), FORECAST: v.note}
        if v.detail and render:
            notes = {DETAIL: v.detail, **(notes or {})}
        if notes:
            annotations = {**notes, **annotations}  # the rule's own annotation of the same name wins
        return Observation(
            active=active,
            value=v.value,
            expected=v.expected,
            lower=v.lower,
            upper=v.upper,
            score=v.score,
            annotations=annotations,
            traces=traces,
            surprise=v.surprise,
        )

    def _missing(self, runner: _RuleRunner, alert: Alert) -> Observation | None:
        if runner.rule.detector is None and runner.rule.source == "prometheus":
            return Observation(active=False)  # Prometheus semantics: the expr no longer matches
        return self._no_data(runner, alert)

    def _no_data(self, runner: _RuleRunner, prev: Alert | None) -> Observation | None:
        policy = runner.rule.no_data
        if policy == "ok":
            return Observation(active=False)
        if policy == "alert":
            notes = {"no_data": "no data for this series"}
            if prev is not None:
                notes = {**prev.annotations, **notes}
            return Observation(active=True, annotations=notes)
        return None
