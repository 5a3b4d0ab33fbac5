"""Charts for the status page: an alert's episode with context, and a rule's last seven days.

This module owns choosing the data behind each PNG and drawing it. An alert's chart is the
series' recent verdicts as the running evaluator kept them (``GroupEvaluator.history``: value,
band, anomalies), cropped to the alert's episode (active since … resolved at, or now) plus a
proportionate margin on each side (``episode_window``), so a one-hour incident fills the chart
instead of being a sliver at the edge of the detector's lookback; ``widen`` multiplies the margin
by four per step. A threshold rule (``kind: threshold``, or a PromQL ``expr`` ending in a
comparison with a number) draws its threshold as a line (``thresholds_of``); points where the
detector was still warming up are shaded grey and labelled "warm-up".
A rule's seven-day chart fetches the rule's series from its source once, at a coarse step, and runs
a fresh detector of the rule's configuration over it in time order — exactly what the evaluator
does with its first fetch, so the band is the one the rule would have drawn — with trace lookups
off (``rules.schema.NO_TRACES``), since a chart needs none. Results are cached for a few minutes.

It does not own drawing (``notify.charts.render_chart``) nor serving (``page``).
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from ..core import Labels, Verdict, from_epoch, to_epoch, utc
from ..detectors import make_detector, series_key
from ..engine.group import rule_lookback, rule_step
from ..errors import WatcherError
from ..notify.charts import draw_markers, flagged_runs
from ..rules.schema import NO_TRACES, Group, RollingDetector, Rule, ThresholdDetector
from ..store.markers import list_markers
from .view import DaemonView

log = logging.getLogger(__name__)

RULE_CHART_SPAN = timedelta(days=7)
RULE_CHART_POINTS = 1008
"""At most this many points per series on the seven-day chart (10-minute steps for a week)."""
MAX_WARMUP = timedelta(days=14)
"""The detector's warm-up history is capped here, so a 3-week seasonal rule stays affordable."""
MAX_SERIES = 12
CACHE_S = 300.0


def _labels_text(labels: Labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(no labels)"


# --- thresholds -------------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TRAILING_COMPARISON = re.compile(rf"(>=|<=|==|!=|>|<)\s*(?:bool\s+)?({_NUMBER})\s*$")
_LEADING_COMPARISON = re.compile(rf"^\s*({_NUMBER})\s*(>=|<=|==|!=|>|<)\s*(?:bool\s+)?")
_FLIP = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}


@dataclass(frozen=True, slots=True)
class Threshold:
    """One line a rule fires across: ``op`` is the firing side (``>`` fires above ``value``)."""

    op: str
    value: float

    def __str__(self) -> str:
        return f"threshold {self.op} {self.value:.6g}"


def _top_level(prefix: str) -> bool:
    """Tell whether the end of ``prefix`` is outside every bracket (the comparison is the outermost)."""
    depth = 0
    for ch in prefix:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def promql_threshold(expr: str) -> Threshold | None:
    """Return the threshold of a PromQL ``expr`` whose outermost operator compares with a number.

    ``sum(rate(x[5m])) > 0.5`` → ``> 0.5``; ``0.5 < sum(...)`` → ``> 0.5``; an expression
    comparing two series, or one inside ``and``/``or``/``unless``, has no single line: None.
    """
    text = " ".join(expr.split())
    while text.startswith("(") and text.endswith(")") and _top_level(text[1:-1]):
        text = text[1:-1].strip()
    if re.search(r"\b(and|or|unless)\b", text):
        return None
    m = _TRAILING_COMPARISON.search(text)
    if m is not None and _top_level(text[: m.start()]) and text[: m.start()].strip():
        return Threshold(m.group(1), float(m.group(2)))
    m = _LEADING_COMPARISON.match(text)
    if m is not None and _top_level(text[m.end() :]) and text[m.end() :].strip():
        return Threshold(_FLIP[m.group(2)], float(m.group(1)))
    return None


def thresholds_of(rule: Rule) -> list[Threshold]:
    """Return the fixed lines ``rule`` fires across (none for a detector with a learned band)."""
    det = rule.detector
    if isinstance(det, ThresholdDetector):
        found = [Threshold(">", det.above)] if det.above is not None else []
        return found + ([Threshold("<", det.below)] if det.below is not None else [])
    if det is None and rule.expr is not None:
        found_expr = promql_threshold(rule.expr)
        return [found_expr] if found_expr is not None else []
    return []


# --- drawing -----------------------------------------------------------------------------------

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 3.0, 100


def _with_gaps(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Return ``verdicts`` with an empty point in each gap longer than 1.5 steps.

    A PromQL comparison has no points while it is false and the evaluator keeps only points it
    saw: without the break, two episodes would be drawn as one line and one anomalous span.
    """
    if len(verdicts) < 3:
        return list(verdicts)
    diffs = sorted(b.ts - a.ts for a, b in pairwise(verdicts))
    step = diffs[len(diffs) // 2]
    if step <= 0:
        return list(verdicts)
    out = [verdicts[0]]
    for v in verdicts[1:]:
        if v.ts - out[-1].ts > 1.5 * step:
            out.append(Verdict(ts=out[-1].ts + step, value=math.nan, ready=False))
        out.append(v)
    return out


def chart_of(
    verdicts: Sequence[Verdict],
    title: str,
    *,
    thresholds: Sequence[Threshold] = (),
    episode: tuple[float, float | None] | None = None,
    span: tuple[float, float] | None = None,
    markers: Sequence[tuple[float, str]] = (),
) -> bytes | None:
    """Return the PNG of ``verdicts``, or None when there are none (or drawing fails; never raises).

    Drawn: the value; the detector's band and expected value where it had one (a one-sided
    detector's band is shaded from the expected value to the bound it has); each threshold as a
    red dashed line; anomalous runs in red; warm-up runs (points with a value but no verdict yet)
    in grey; the alert's episode (start, end or None while it lasts) as a thin orange bar on top.
    ``span`` (Unix seconds) fixes the time axis: a PromQL comparison has no points where it is
    false, and the chart still shows the context around the episode. ``markers`` are release
    markers ``(Unix seconds, title)``, drawn as dashed vertical lines.
    """
    if not verdicts:
        return None
    try:
        return _draw(verdicts, title, thresholds, episode, span, markers)
    except Exception as exc:  # a chart is decoration: the page renders without it
        log.warning("status page chart failed: %s: %s", type(exc).__name__, exc)
        return None


def _draw(
    verdicts: Sequence[Verdict],
    title: str,
    thresholds: Sequence[Threshold],
    episode: tuple[float, float | None] | None,
    span: tuple[float, float] | None,
    markers: Sequence[tuple[float, str]] = (),
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    def num(t: float) -> float:
        return float(date2num(from_epoch(t)))  # type: ignore[no-untyped-call]

    verdicts = _with_gaps(verdicts)
    ts = [v.ts for v in verdicts]
    when = [num(t) for t in ts]
    pad = (ts[1] - ts[0]) / 2 if len(ts) > 1 else 30.0
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    banded = [v.ready and (math.isfinite(v.lower) or math.isfinite(v.upper)) for v in verdicts]
    if any(banded) and not thresholds:
        lo = [
            (v.lower if math.isfinite(v.lower) else v.expected) if ok else math.nan
            for v, ok in zip(verdicts, banded, strict=True)
        ]
        hi = [
            (v.upper if math.isfinite(v.upper) else v.expected) if ok else math.nan
            for v, ok in zip(verdicts, banded, strict=True)
        ]
        ax.fill_between(when, lo, hi, color="tab:blue", alpha=0.15, linewidth=0, label="expected band")
        expected = [v.expected if v.ready else math.nan for v in verdicts]
        if any(math.isfinite(x) for x in expected):
            ax.plot(when, expected, color="tab:blue", linewidth=1, linestyle="--", label="expected")
    for th in thresholds:
        ax.axhline(th.value, color="tab:red", linewidth=1.2, linestyle="--", label=str(th))
    ax.plot(when, [v.value for v in verdicts], color="black", linewidth=1.4, label="value")
    for i, (a, b) in enumerate(flagged_runs(ts, [v.anomalous for v in verdicts])):
        ax.axvspan(
            num(a - pad), num(b + pad), color="tab:red", alpha=0.2, label="anomalous" if i == 0 else None
        )
    warm = [not v.ready and math.isfinite(v.value) for v in verdicts]
    for i, (a, b) in enumerate(flagged_runs(ts, warm)):
        ax.axvspan(num(a - pad), num(b + pad), color="0.5", alpha=0.2, label="warm-up" if i == 0 else None)
    first, last = span if span is not None else (ts[0] - pad, ts[-1] + pad)
    if episode is not None:
        start, end = episode
        ax.axvspan(
            num(max(start, first)),
            num(min(end if end is not None else last, last)),
            ymin=0.97,
            ymax=1.0,
            color="tab:orange",
            label="this episode",
        )
    draw_markers(ax, [(num(at), text) for at, text in markers if first <= at <= last])
    ax.set_xlim(num(first), num(last))
    ax.margins(y=0.15)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --- an alert's chart --------------------------------------------------------------------------


def release_marks(daemon: DaemonView, labels: Labels, start: float, end: float) -> list[tuple[float, str]]:
    """Return the release markers in ``[start, end]`` that apply to ``labels`` (none if the store fails)."""
    try:
        found = list_markers(daemon.store, from_epoch(start), from_epoch(end))
    except WatcherError:
        return []
    return [(to_epoch(m.ts), m.title()) for m in found if m.applies_to(labels)]


MAX_WIDEN = 4
"""``widen`` steps: the margin grows four-fold per step (4**4 = 256 times the episode)."""


def episode_window(
    start: datetime | None, end: datetime | None, now: datetime, step: timedelta, widen: int = 0
) -> tuple[datetime, datetime]:
    """Return the span to chart for an episode from ``start`` to ``end`` (None: still active at ``now``).

    The margin on each side is the episode's length, at least ten steps and 30 minutes, times
    ``4 ** widen``; the span never reaches past ``now``. Without a ``start`` the span is the
    margin before ``now``.
    """
    now = utc(now)
    last = min(utc(end), now) if end is not None else now
    first = min(utc(start), last) if start is not None else last
    length = last - first
    margin = max(length, 10 * step, timedelta(minutes=30)) * 4 ** max(0, min(widen, MAX_WIDEN))
    return first - margin, min(last + margin, now)


def alert_history(daemon: DaemonView, fingerprint: str) -> tuple[Any, list[Verdict], Any] | None:
    """Return the alert with ``fingerprint``, its series' recent verdicts and its evaluator, or None."""
    for ev in list((getattr(daemon, "evaluators", {}) or {}).values()):
        for alert in ev.alerts():
            if alert.fingerprint == fingerprint:
                return alert, ev.history(alert.rule, alert.labels), ev
    return None


def _rule_of(evaluator: Any, name: str) -> tuple[Group, Rule] | None:
    group = getattr(evaluator, "group", None)
    if not isinstance(group, Group):
        return None
    for r in group.rules:
        if r.alert == name:
            return group, r
    return None


@dataclass(frozen=True, slots=True)
class EpisodeView:
    """What an alert's chart shows: the verdicts in the window, the window, thresholds and episode."""

    alert: Any
    verdicts: list[Verdict]
    """the series' verdicts inside ``start``–``end`` (oldest first)"""
    history: int
    """how many verdicts the evaluator keeps for the series (the chart shows a part of them)"""
    start: datetime
    end: datetime
    thresholds: list[Threshold]
    episode: tuple[float, float | None] | None


def episode_view(daemon: DaemonView, fingerprint: str, widen: int = 0) -> EpisodeView | None:
    """Return what the chart of one alert shows (``widen`` steps wider), or None when unknown."""
    found = alert_history(daemon, fingerprint)
    if found is None or not found[1]:
        return None
    alert, verdicts, ev = found
    now = daemon.clock()
    if alert.last_eval is not None and utc(alert.last_eval) > utc(now):
        now = alert.last_eval  # a run_once ahead of the clock: its verdicts are still shown
    grp_rule = _rule_of(ev, alert.rule)
    step = rule_step(grp_rule[1], grp_rule[0]) if grp_rule is not None else timedelta(minutes=1)
    start = alert.active_at or alert.fired_at
    first, last = episode_window(start, alert.resolved_at, now, step, widen)
    lo, hi = to_epoch(first), to_epoch(last)
    shown = [v for v in verdicts if lo <= v.ts <= hi] or verdicts[-2:]
    episode = (
        (to_epoch(start), to_epoch(alert.resolved_at) if alert.resolved_at is not None else None)
        if start is not None
        else None
    )
    return EpisodeView(
        alert,
        shown,
        len(verdicts),
        first,
        last,
        thresholds_of(grp_rule[1]) if grp_rule is not None else [],
        episode,
    )


class AlertChartCache:
    """The last PNGs of each alert, redrawn only when its series has a new verdict (drawing takes ~0.1 s)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[tuple[int, float, float, float, int], bytes]] = {}

    def get(self, daemon: DaemonView, fingerprint: str, widen: int = 0) -> bytes | None:
        """Return the PNG of one alert's episode (``widen`` steps wider), or None when unknown."""
        view = episode_view(daemon, fingerprint, widen)
        if view is None:
            return None
        marks = release_marks(daemon, view.alert.labels, to_epoch(view.start), to_epoch(view.end))
        key = (view.history, view.verdicts[-1].ts, to_epoch(view.start), to_epoch(view.end), len(marks))
        cache_key = (fingerprint, widen)
        with self._lock:
            hit = self._entries.get(cache_key)
        if hit is not None and hit[0] == key:
            return hit[1]
        png = chart_of(
            view.verdicts,
            f"{view.alert.rule} {{{_labels_text(view.alert.labels)}}}",
            thresholds=view.thresholds,
            episode=view.episode,
            span=(to_epoch(view.start), to_epoch(view.end)),
            markers=marks,
        )
        if png is not None:
            with self._lock:
                self._entries.pop(cache_key, None)
                while len(self._entries) >= self._size:
                    del self._entries[next(iter(self._entries))]
                self._entries[cache_key] = (key, png)
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
            verdicts = make_detector(rule.detector, series_key(rule, s.labels)).update_many(
                s.timestamps, s.values, s.counts
            )
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
            # a series younger than the span starts where its data does, not as a sliver at the edge
            first = next((i for i, v in enumerate(s.verdicts) if math.isfinite(v.value)), 0)
            when = (
                "last 7 days" if first == 0 else f"since {from_epoch(s.verdicts[first].ts):%Y-%m-%d %H:%M}Z"
            )
            png = chart_of(
                s.verdicts[max(0, first - 1) :],
                f"{rule.alert} {{{_labels_text(s.labels)}}} — {when}",
                thresholds=thresholds_of(rule),
            )
            if png is not None:
                with self._lock:
                    pngs[index] = png
        return png
