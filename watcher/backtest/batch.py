"""The batch side of a replay: every verdict of a series computed at once, and which ticks matter.

This module owns turning a rule's whole-range series into (1) one detector run per series over
exactly the points the daemon's detector would have been fed, served back to the real evaluator
tick by tick through ``PrecomputedDetector``, and (2) the mask of group ticks at which an
evaluation can change anything. It does not own the cache (``replay.CachedSource``), the stepping
of the evaluator (``replay.replay``) nor any detector kind (``detectors``).

Why this is faithful (the tests compare it with the tick-by-tick path):

* Detectors are causal and incremental (``detectors.base``): the verdicts of one ``update_many``
  over the concatenated points equal those of many calls over consecutive slices. The points fed
  are the daemon's: the union of the per-tick fetch slices ``(previous grid point, now]`` (the
  first reaching back the rule's lookback) in which the series was returned at all.
* ``PrecomputedDetector`` applies the base class's stale-timestamp rule, so the evaluator gets back
  exactly the verdicts a live detector would have returned for each fetch.
* A tick is skipped only when evaluating it provably changes nothing: the group holds no alert
  (not even a resolved one still kept) and no series' newest point is active (anomalous beyond the
  rule's floors, or without data under ``no_data: alert``), nor is the rule's data absent under
  ``no_data: alert``. Then every series steps from "no alert" to "no alert" and the evaluator
  would only have advanced its cursor, which the cache replays from the tick schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..core import FloatArray, Labels, Series, Verdict
from ..detectors import Detector, make_detector, series_key
from ..errors import DetectorError
from ..rules.schema import Rule

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
SQL_SOURCES = ("calls", "scores")


def point_has_data(rule: Rule, series: Series) -> BoolArray:
    """Return, per point, whether a live fetch covering only that point would return the series.

    SQL sources return a label set when rows fall in a point's window (a positive count, whatever
    ``min_count`` did to the value); PromQL-like sources when a sample exists (a finite value, or
    finite trials for a ratio whose value is undefined).
    """
    if series.counts is not None and rule.source in SQL_SOURCES:
        return np.asarray(series.counts != 0)
    ok = np.isfinite(series.values)
    if series.counts is not None:
        ok |= np.isfinite(series.counts)
    return ok


def data_ticks(rule: Rule, ticks: FloatArray) -> FloatArray:
    """Return the instants whose data the evaluator judges at ``ticks``: each tick minus the rule's
    ``evaluation_delay`` (a new array per rule, so no rule's delay reaches another's ticks)."""
    return np.asarray(ticks, dtype=np.float64) - rule.evaluation_delay.total_seconds()


def slice_starts(ticks: FloatArray, step_s: float, lookback_s: float) -> FloatArray:
    """Return where each tick's fetch starts: the lookback for the first, the previous grid point after."""
    starts = np.empty(len(ticks))
    if len(ticks):
        starts[0] = ticks[0] - lookback_s
        starts[1:] = np.floor(ticks[:-1] / step_s) * step_s
    return starts


class PrecomputedDetector(Detector):
    """Serves verdicts computed beforehand, with a live detector's stale-timestamp rule."""

    kind = "precomputed"

    def __init__(self, timestamps: FloatArray, verdicts: Sequence[Verdict]) -> None:
        super().__init__()
        if len(timestamps) != len(verdicts):
            raise ValueError("one verdict per timestamp is needed")
        self._ts = timestamps
        self._verdicts = verdicts

    def update_many(
        self, timestamps: FloatArray, values: FloatArray, counts: FloatArray | None = None
    ) -> list[Verdict]:
        """Return the verdicts of the points newer than every point seen so far, in order."""
        ts = np.asarray(timestamps, dtype=np.float64)
        if len(ts) == 0:
            return []
        last = -math.inf if self.last_ts is None else self.last_ts
        before = np.maximum.accumulate(np.concatenate(([last], ts)))
        fresh = ts[ts > before[:-1]]
        if len(fresh) == 0:
            return []
        self.last_ts = float(fresh[-1])
        return [self._verdicts[i] for i in self._find(fresh).tolist()]

    def update(self, ts: float, value: float, count: float | None = None) -> Verdict | None:
        """Return the verdict of one point, or None for a stale timestamp."""
        got = self.update_many(np.array([ts]), np.array([value]))
        return got[0] if got else None

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        return self._verdicts[int(self._find(np.array([ts]))[0])]

    def _find(self, ts: FloatArray) -> IntArray:
        idx = np.searchsorted(self._ts, ts)
        ok = idx < len(self._ts)
        if not ok.all() or not np.array_equal(self._ts[idx], ts):
            raise DetectorError("replay: a point was fetched that was not scored beforehand (a replay bug)")
        return idx.astype(np.int64)


@dataclass
class SeriesPlan:
    """One series of a rule over the replay: its detector's verdicts and its newest point per tick."""

    labels: Labels
    timestamps: FloatArray
    """The points the detector was fed (those of the ticks at which the series was returned)."""
    verdicts: Sequence[Verdict]
    latest: Sequence[Verdict | None]
    """Per group tick, the verdict of the point at the tick's grid point when that fetch scored it."""


@dataclass
class RulePlan:
    """What the batch pass learnt about one rule: per-series verdicts and the ticks that matter."""

    rule: Rule
    interesting: BoolArray
    series: list[SeriesPlan] = field(default_factory=list)
    precomputed: bool = True
    """False when the batch pass failed: the evaluator then runs real detectors at every tick."""
    _by_labels: dict[Labels, SeriesPlan] = field(default_factory=dict, repr=False)

    def detector(self, labels: Labels) -> Detector | None:
        """Return a fresh detector serving the precomputed verdicts of ``labels``, if any."""
        if len(self._by_labels) != len(self.series):
            self._by_labels = {sp.labels: sp for sp in self.series}
        sp = self._by_labels.get(labels)
        return None if sp is None else PrecomputedDetector(sp.timestamps, sp.verdicts)


def _passes_floor(rule: Rule, value: float) -> bool:
    # The same test as the evaluator's (engine.group): NaN never passes a floor.
    if rule.min_value is not None and not value >= rule.min_value:
        return False
    return not (rule.max_value is not None and not value <= rule.max_value)


def _active(rule: Rule, v: Verdict | None) -> bool:
    """Tell whether the evaluator would turn this newest verdict into an active observation."""
    if v is None or (not v.ready and v.reason == "no data"):
        return rule.no_data == "alert"
    if not v.ready:
        return False
    return v.anomalous and _passes_floor(rule, v.value)


def _raw_verdicts(ts: FloatArray, values: FloatArray) -> list[Verdict]:
    """Return the evaluator's verdicts for a rule without a detector: every finite value is active."""
    return [
        Verdict(ts=float(t), value=float(v), anomalous=math.isfinite(v), ready=math.isfinite(v))
        for t, v in zip(ts.tolist(), values.tolist(), strict=True)
    ]


def plan_series(
    rule: Rule, series: Series, ticks: FloatArray, starts: FloatArray, step_s: float
) -> tuple[SeriesPlan, BoolArray, BoolArray]:
    """Score one series over the whole replay; return its plan, presence per tick and activity per tick."""
    ts = series.timestamps
    if len(ts) == 0:
        nothing = np.zeros(len(ticks), dtype=bool)
        return SeriesPlan(series.labels, ts, [], [None] * len(ticks)), nothing, nothing
    lo = np.searchsorted(ts, starts, side="right")
    hi = np.searchsorted(ts, ticks, side="right")
    data = np.concatenate(([0], np.cumsum(point_has_data(rule, series))))
    present = (hi > lo) & (data[hi] - data[lo] > 0)
    # Points fed to the daemon's detector: the union of the slices in which the series came back.
    edges = np.zeros(len(ts) + 1, dtype=np.int64)
    np.add.at(edges, lo[present], 1)
    np.add.at(edges, hi[present], -1)
    fed = np.cumsum(edges[:-1]) > 0
    fed_ts = ts[fed]
    if rule.detector is None:
        verdicts = _raw_verdicts(fed_ts, series.values[fed])
    else:
        counts = None if series.counts is None else series.counts[fed]
        verdicts = make_detector(rule.detector, series_key(rule, series.labels)).update_many(
            fed_ts, series.values[fed], counts
        )
        if len(verdicts) != len(fed_ts):
            raise DetectorError(f"detector {rule.detector.kind} skipped points of strictly increasing input")
    # The newest point of a tick is scored by that tick's fetch when it lies in the slice and is
    # newer than everything an earlier fetch returned (otherwise the detector drops it as stale).
    grid = np.floor(ticks / step_s) * step_s
    at = np.searchsorted(ts, grid, side="left")
    safe = np.minimum(at, len(ts) - 1)
    last_of_slice = np.where(present, ts[np.maximum(hi - 1, 0)], -math.inf)
    seen = np.concatenate(([-math.inf], np.maximum.accumulate(last_of_slice)[:-1]))
    scored = present & (at >= lo) & (at < hi) & (ts[safe] == grid) & (grid > seen)
    rank = np.cumsum(fed) - 1
    latest: list[Verdict | None] = [None] * len(ticks)
    active = np.zeros(len(ticks), dtype=bool)
    for k in np.flatnonzero(present).tolist():
        v = verdicts[int(rank[safe[k]])] if scored[k] else None
        latest[k] = v
        active[k] = _active(rule, v)
    return SeriesPlan(series.labels, fed_ts, verdicts, latest), present, active


def plan_rule(
    rule: Rule, series: Sequence[Series], ticks: FloatArray, starts: FloatArray, step_s: float
) -> RulePlan:
    """Score every series of ``rule`` once; return the plan with the ticks at which it can change state."""
    plan = RulePlan(rule, np.zeros(len(ticks), dtype=bool))
    any_present = np.zeros(len(ticks), dtype=bool)
    for s in series:
        sp, present, active = plan_series(rule, s, ticks, starts, step_s)
        plan.series.append(sp)
        plan.interesting |= active
        any_present |= present
    if rule.no_data == "alert":
        plan.interesting |= ~any_present  # the rule-wide "no data at all" alert
    return plan


def fallback_plan(rule: Rule, n_ticks: int) -> RulePlan:
    """Return the plan of a rule the batch pass could not score: real detectors, every tick."""
    return RulePlan(rule, np.ones(n_ticks, dtype=bool), precomputed=False)
