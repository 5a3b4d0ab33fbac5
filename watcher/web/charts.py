"""Charts for the status page: an alert's recent series, and a rule's last seven days.

This module owns choosing the data behind each PNG. An alert's chart is the series' recent
verdicts as the running evaluator kept them (``GroupEvaluator.history``: value, band, anomalies).
A rule's seven-day chart fetches the rule's series from its source once, at a coarse step, and runs
a fresh detector of the rule's configuration over it in time order — exactly what the evaluator
does with its first fetch, so the band is the one the rule would have drawn — with trace lookups
off (``rules.schema.NO_TRACES``), since a chart needs none. Results are cached for a few minutes.

It does not own drawing (``notify.charts.render_chart``) nor serving (``page``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..core import Labels, Verdict, from_epoch, to_epoch
from ..detectors import make_detector
from ..engine.group import rule_lookback, rule_step
from ..errors import WatcherError
from ..notify.charts import render_chart
from ..rules.schema import NO_TRACES, Group, RollingDetector, Rule
from ..store.markers import list_markers
from .view import DaemonView

RULE_CHART_SPAN = timedelta(days=7)
RULE_CHART_POINTS = 1008
"""At most this many points per series on the seven-day chart (10-minute steps for a week)."""
MAX_WARMUP = timedelta(days=14)
"""The detector's warm-up history is capped here, so a 3-week seasonal rule stays affordable."""
MAX_SERIES = 12
CACHE_S = 300.0


def _labels_text(labels: Labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(no labels)"


def chart_of(
    verdicts: Sequence[Verdict], title: str, markers: Sequence[tuple[float, str]] = ()
) -> bytes | None:
    """Return the PNG of ``verdicts`` (value, band, anomalous span, release markers), or None when empty."""
    if not verdicts:
        return None
    # A one-sided detector (direction up or down) has no finite lower (upper) bound: shade the
    # normal side from the expected value to the bound it has, so the band is still drawn.
    lower = [v.lower if math.isfinite(v.lower) else v.expected for v in verdicts]
    upper = [v.upper if math.isfinite(v.upper) else v.expected for v in verdicts]
    return render_chart(
        [v.ts for v in verdicts],
        [v.value for v in verdicts],
        lower=lower,
        upper=upper,
        expected=[v.expected for v in verdicts],
        anomalous=[v.anomalous for v in verdicts],
        title=title,
        markers=markers,
    )


def alert_history(daemon: DaemonView, fingerprint: str) -> tuple[Any, list[Verdict]] | None:
    """Return the alert with ``fingerprint`` and its series' recent verdicts, or None if unknown."""
    for ev in list((getattr(daemon, "evaluators", {}) or {}).values()):
        for alert in ev.alerts():
            if alert.fingerprint == fingerprint:
                return alert, ev.history(alert.rule, alert.labels)
    return None


def release_marks(daemon: DaemonView, labels: Labels, start: float, end: float) -> list[tuple[float, str]]:
    """Return the release markers in ``[start, end]`` that apply to ``labels`` (none if the store fails)."""
    try:
        found = list_markers(daemon.store, from_epoch(start), from_epoch(end))
    except WatcherError:
        return []
    return [(to_epoch(m.ts), m.title()) for m in found if m.applies_to(labels)]


class AlertChartCache:
    """The last PNG of each alert, redrawn only when its series has a new verdict (drawing takes ~0.1 s)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[int, float, int], bytes]] = {}

    def get(self, daemon: DaemonView, fingerprint: str) -> bytes | None:
        """Return the PNG of one alert's series, or None when the alert or its history is unknown."""
        found = alert_history(daemon, fingerprint)
        if found is None or not found[1]:
            return None
        alert, verdicts = found
        marks = release_marks(daemon, alert.labels, verdicts[0].ts, verdicts[-1].ts)
        key = (len(verdicts), verdicts[-1].ts, len(marks))
        with self._lock:
            hit = self._entries.get(fingerprint)
        if hit is not None and hit[0] == key:
            return hit[1]
        png = chart_of(verdicts, f"{alert.rule} {{{_labels_text(alert.labels)}}}", marks)
        if png is not None:
            with self._lock:
                self._entries.pop(fingerprint, None)
                while len(self._entries) >= self._size:
                    del self._entries[next(iter(self._entries))]
                self._entries[fingerprint] = (key, png)
        return png


def find_rule(daemon: DaemonView, group: str, rule: str) -> tuple[Group, Rule] | None:
    """Return the loaded group and rule with these names, or None."""
    rules = getattr(daemon, "rules", None)
    for lg in rules.groups if rules is not None else ():
        if lg.group.name != group:
            continue
        for r in lg.group.rules:
            if r.alert == rule:
                return lg.group, r
    return None


def coarse_step(rule: Rule, group: Group, span: timedelta = RULE_CHART_SPAN) -> timedelta:
    """Return a multiple of the rule's step that puts at most ``RULE_CHART_POINTS`` points in ``span``.

    A rolling detector counts points in its window (``min_points``): the step is kept fine enough
    that the window holds twice that many, or the coarse series would never leave its warm-up.
    """
    base = rule_step(rule, group).total_seconds()
    k = max(1, math.ceil(span.total_seconds() / RULE_CHART_POINTS / base))
    det = rule.detector
    if isinstance(det, RollingDetector):
        k = max(1, min(k, math.floor(det.window.total_seconds() / (2 * det.min_points) / base)))
    return timedelta(seconds=k * base)


@dataclass(frozen=True, slots=True)
class RuleSeries:
    """One series of a rule over the chart span, with the band its detector drew."""

    labels: Labels
    verdicts: list[Verdict]

    @property
    def points(self) -> int:
        """Return how many points of the span have a value."""
        return sum(1 for v in self.verdicts if math.isfinite(v.value))

    @property
    def anomalous_points(self) -> int:
        """Return how many points of the span were outside the band."""
        return sum(1 for v in self.verdicts if v.anomalous)


def rule_series(daemon: DaemonView, group: Group, rule: Rule, now: datetime) -> list[RuleSeries]:
    """Fetch the rule's series over the last seven days at a coarse step and run its detector.

    Raises what the source raises (``SourceError``); the caller shows it.
    """
    source = daemon.sources.get(rule.source)
    if source is None:
        return []
    step = coarse_step(rule, group)
    warmup = min(rule_lookback(rule, group), MAX_WARMUP)
    start = now - RULE_CHART_SPAN
    fetched = source.fetch(rule.model_copy(update={"traces": NO_TRACES}), start - warmup, now, step)
    first = to_epoch(start)
    out = []
    for s in fetched:
        if rule.detector is None:
            verdicts = [
                Verdict(ts=float(t), value=float(v), anomalous=math.isfinite(v), ready=math.isfinite(v))
                for t, v in zip(s.timestamps, s.values, strict=True)
            ]
        else:
            verdicts = make_detector(rule.detector).update_many(s.timestamps, s.values, s.counts)
        shown = [v for v in verdicts if v.ts >= first]
        if shown:
            out.append(RuleSeries(s.labels, shown))
    out.sort(key=lambda r: (-r.anomalous_points, repr(r.labels)))
    return out[:MAX_SERIES]


class RuleChartCache:
    """Seven-day series (and their PNGs) per rule, recomputed at most every ``CACHE_S`` seconds.

    A reload changes the rules' hash, which is part of the key, so an edited rule is redrawn at once.
    """

    def __init__(self, ttl_s: float = CACHE_S) -> None:
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], tuple[float, list[RuleSeries], dict[int, bytes]]] = {}

    def _entry(
        self, daemon: DaemonView, group: Group, rule: Rule, now: datetime
    ) -> tuple[float, list[RuleSeries], dict[int, bytes]]:
        key = (group.name, rule.alert, str(getattr(daemon.rules, "hash", "")))
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit
        pngs: dict[int, bytes] = {}
        entry = (time.monotonic(), rule_series(daemon, group, rule, now), pngs)
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if time.monotonic() - v[0] < self._ttl}
            self._entries[key] = entry
        return entry

    def get(self, daemon: DaemonView, group: Group, rule: Rule, now: datetime) -> list[RuleSeries]:
        """Return the rule's seven-day series, from the cache when fresh."""
        return self._entry(daemon, group, rule, now)[1]

    def chart(self, daemon: DaemonView, group: Group, rule: Rule, index: int, now: datetime) -> bytes | None:
        """Return the PNG of the ``index``-th series of the rule's seven-day chart, or None."""
        _, series, pngs = self._entry(daemon, group, rule, now)
        if not 0 <= index < len(series):
            return None
        with self._lock:
            png = pngs.get(index)
        if png is None:
            s = series[index]
            png = chart_of(s.verdicts, f"{rule.alert} {{{_labels_text(s.labels)}}} — last 7 days")
            if png is not None:
                with self._lock:
                    pngs[index] = png
        return png
