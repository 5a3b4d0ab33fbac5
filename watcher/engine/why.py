"""Why an alert fired: its explanation by dimension and the release marker it follows.

This module owns what the evaluator adds to an alert when an episode starts (pending) and when it
fires: the ``explanation`` annotation (``engine.contribution``, SQL rules) and the ``release``
annotation ("started 4 min after deploy api-v2.3") from the release markers, and it hands new
markers to the series' ``Rebaselining`` detectors. Both annotations are computed only for alerts
that just became pending or firing, then carried along the episode (never for every series every
tick). A failure here is logged and counted as nothing: it never fails an evaluation.

It does not own the analysis (``contribution``), the markers' storage (``store.markers``) nor the
state machine (``alerting``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from ..core import Alert, AlertState, Labels, to_epoch
from ..detectors import Detector
from ..errors import WatcherError
from ..notify.templates import EXPLANATION, RELEASE, format_elapsed
from ..rules.schema import Rule
from ..sources.prometheus import PrometheusSource
from ..sources.sql import SqlSource
from ..store.db import Store
from ..store.markers import Marker, preceding
from .contribution import Explanation
from .contribution_prom import explain_prom
from .contribution_sql import explain_sql
from .rebaseline import Rebaselining

logger = logging.getLogger(__name__)

RELEASE_WINDOW = timedelta(hours=1)
"""A marker at most this long before an episode's start is named in the alert."""
KEEP = (EXPLANATION, RELEASE)
EXPLAIN_PER_TICK = 20
"""Analyses per evaluation of a group at most: a storm of new alerts gets its explanations over the
next ticks instead of stalling this one (each is one query over two periods)."""
DONE_MAX = 100_000


class MarkerFeed(Protocol):
    """Where release markers come from (the store, a backtest's list)."""

    def between(self, start: datetime, end: datetime) -> list[Marker]:
        """Return the markers with ``start < ts <= end``."""
        ...


def prometheus_source(source: object) -> PrometheusSource | None:
    """Return the Prometheus source behind a source (through caches that wrap one as ``inner``)."""
    for _ in range(4):
        if isinstance(source, PrometheusSource):
            return source
        source = getattr(source, "inner", None)
        if source is None:
            return None
    return None


def sql_store(source: object) -> Store | None:
    """Return the store behind a source (through caches that wrap one as ``inner``), if it is SQL."""
    for _ in range(4):
        if isinstance(source, SqlSource):
            return source.store
        source = getattr(source, "inner", None)
        if source is None:
            return None
    return None


def release_note(marker: Marker, start: datetime) -> str:
    """Return ``started 4 min after deploy api-v2.3 (2026-12-07 14:01 UTC)``."""
    ago = format_elapsed(start - marker.ts)
    return f"started {ago} after {marker.title()} ({marker.ts:%Y-%m-%d %H:%M} UTC)"


class Why:
    """Adds explanations and release notes to one group's alerts; feeds markers to detectors."""

    def __init__(
        self,
        markers: MarkerFeed | None,
        *,
        explain: bool = True,
        horizon: timedelta = RELEASE_WINDOW,
        budget: int = EXPLAIN_PER_TICK,
    ) -> None:
        """``horizon``: how long markers are kept (the longest lookback: a new detector replays that far)."""
        self.feed = markers
        self.explain = explain
        self.horizon = max(horizon, RELEASE_WINDOW)
        self.recent: list[Marker] = []
        self.checked: datetime | None = None
        self.budget = budget
        self.spent = 0
        """Analyses made since the last ``refresh`` (one per evaluation of the group)."""
        self.done: set[tuple[str, datetime | None, AlertState]] = set()

    def wrap(self, det: Detector, labels: Labels) -> Detector:
        """Return ``det`` wrapped for re-baselining when markers are fed, told the markers kept so far.

        ``labels`` are the alert's (the series' with the rule's laid over). A new detector replays
        its series' history, so a marker inside it re-baselines it as it would have live.
        """
        if self.feed is None:
            return det
        wrapped = Rebaselining(det)
        self.deliver(self.recent, {labels: wrapped}, {})
        return wrapped

    def refresh(self, now: datetime) -> list[Marker]:
        """Start an evaluation: read the markers since the last call; return the new ones.

        None on a failed read. The budget of analyses starts over.
        """
        self.spent = 0
        if self.feed is None:
            return []
        since = self.checked if self.checked is not None else now - self.horizon
        try:
            new = [m for m in self.feed.between(since, now)]
        except WatcherError as exc:
            logger.warning("release markers unavailable: %s", exc)
            return []
        self.checked = now
        horizon = now - self.horizon
        self.recent = [m for m in [*self.recent, *new] if m.ts >= horizon]
        return new

    def deliver(
        self, markers: Iterable[Marker], detectors: Mapping[Labels, Detector], rule_labels: Mapping[str, str]
    ) -> None:
        """Schedule each marker on the detectors of the series it applies to."""
        for m in markers:
            for labels, det in detectors.items():
                if isinstance(det, Rebaselining) and m.applies_to(labels.merge(rule_labels)):
                    det.mark(to_epoch(m.ts), m.grace.total_seconds(), m.title())

    def annotate(
        self,
        rule: Rule,
        source: object,
        prev: Alert | None,
        new: Alert,
        series: Labels | None,
        now: datetime,
        lookback: timedelta,
        step: timedelta = timedelta(minutes=1),
    ) -> Alert:
        """Return ``new`` with its episode's explanation and release note (made as it starts or fires)."""
        if new.state is AlertState.INACTIVE and not new.resolved:
            return new
        same_episode = prev is not None and prev.active_at == new.active_at
        notes = {
            k: prev.annotations[k]
            for k in KEEP
            if same_episode and prev is not None and k in prev.annotations
        }
        # once per state of an episode (pending, firing); deferred to a later tick past the budget
        key = (new.fingerprint, new.active_at, new.state)
        moved = not same_episode or prev is None or prev.state is not new.state
        fresh = (
            new.state is not AlertState.INACTIVE
            and key not in self.done
            and (moved or EXPLANATION not in notes)
        )
        if fresh and new.active_at is not None and not new.annotations.get("no_data"):
            if self.spent >= self.budget:
                return replace(new, annotations={**new.annotations, **notes}) if notes else new
            self.spent += 1
            if len(self.done) >= DONE_MAX:
                self.done.clear()  # forgetting only means analysing an alert's current state again
            self.done.add(key)
            found = self._explanation(rule, source, new, series, now, lookback, step)
            scope = dict(new.labels)
            if found is not None:
                notes[EXPLANATION] = found.text()
                if found.top:  # a marker may name the value that drove the change (prompt_version=v42)
                    scope = {**dict(found.top[0].labels), **scope}
            marker = preceding(self.recent, scope, new.active_at, RELEASE_WINDOW)
            if marker is not None:
                notes[RELEASE] = release_note(marker, new.active_at)
        missing = {k: v for k, v in notes.items() if new.annotations.get(k) != v and k not in new.annotations}
        if not missing:
            return new
        return replace(new, annotations={**new.annotations, **missing})

    def _explanation(
        self,
        rule: Rule,
        source: object,
        alert: Alert,
        series: Labels | None,
        now: datetime,
        lookback: timedelta,
        step: timedelta,
    ) -> Explanation | None:
        if not self.explain or series is None or alert.active_at is None:
            return None
        change = alert.value - alert.expected
        store, prom = sql_store(source), prometheus_source(source)
        try:
            if store is not None and rule.query is not None:
                found = explain_sql(
                    store, rule, series, now=now, since=alert.active_at, lookback=lookback, change=change
                )
            elif prom is not None and rule.expr is not None:
                found = explain_prom(
                    prom,
                    rule,
                    series,
                    now=now,
                    since=alert.active_at,
                    step=step,
                    lookback=lookback,
                    change=change,
                )
            else:
                return None
        except WatcherError as exc:
            logger.warning("rule %s: no explanation: %s", rule.alert, exc)
            return None
        return found


__all__ = ["RELEASE", "RELEASE_WINDOW", "MarkerFeed", "Why", "release_note", "sql_store"]
