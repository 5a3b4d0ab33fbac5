"""The ``rolling`` detector kind: a robust median/MAD baseline over a trailing time window.

This module owns the incremental window (two compact float64 arrays in time order plus a sorted
float64 array of the same values) and the warm-up, band and direction rules of the kind. It does
not own the statistics (``stats``: median, MAD, floors, score) nor parsing the spec
(``rules.schema.RollingDetector``).

Behaviour, for a point at time t:

* **baseline**: the points with ``t - window < ts < t`` (the current point is excluded, so the
  verdict is causal and a spike does not dilute its own baseline). ``expected`` is their median and
  sigma = max(1.4826·MAD, ``min_spread``, 0.1 % of |median|, 1e-12); the band is
  ``expected ± sensitivity·sigma``. The relative floor keeps a perfectly flat series from firing on
  a 0.1 % wiggle while a 50 % jump still fires (see ``stats.REL_SPREAD_FLOOR``).
* **direction**: ``up`` fires only above ``upper``, ``down`` only below ``lower``, ``both`` on
  either. The side a rule does not watch is reported as NaN (no bound), as for a threshold
  detector with one bound, so "not anomalous" always means "inside the reported band".
* **score**: ``stats.tail_score`` of z = (value - expected) / sigma on the watched side(s).
* **warm-up**: not ready (reason ``"warming up: 12/30 points, 2h/1d history"``) until the window
  holds ``min_points`` points and ``min_history`` (default: the window, at most 1 day) has passed
  since the first point seen. A gap just empties the time-based window, so after a long outage the
  detector warms up again on points (history already counts).
* **anomalous points enter the window**: the median/MAD are robust to a minority of outliers, so a
  short incident barely moves the baseline, and a lasting level shift is absorbed once it fills
  about half the window instead of alerting forever. NaN points never enter (the base class answers
  them with "no data"). ``count`` is ignored: this kind is not sample-size aware.

Cost per point: an append to the time-ordered arrays, a ``bisect.insort`` and a ``del`` in the
sorted array (binary search plus a memmove of at most the window), O(1) median and O(log n) MAD
(``stats.mad_sorted``); the window is never re-sorted and nothing is rebuilt from history.

Memory: 24 bytes per point in the window (``array('d')``: timestamp, value, sorted value; no Python
object per point), plus at most the evicted prefix of the time-ordered arrays, which is dropped in
one memmove once it is larger than what is kept. A 1-day window of 1-minute points is ~35 kB.
"""

from __future__ import annotations

import bisect
import math
from array import array
from datetime import timedelta
from typing import Any

from ..core import Verdict, format_duration
from ..errors import DetectorError
from .base import Detector, register
from .calibration import ResolutionFloor, TailCalibrator
from .stats import Direction, robust_location_scale

DEFAULT_MAX_MIN_HISTORY = timedelta(days=1)


class RollingBaseline(Detector):
    """Scores each point against the median/MAD of the points in the trailing window before it."""

    kind = "rolling"

    def __init__(
        self,
        window: timedelta = timedelta(days=7),
        sensitivity: float = 4.0,
        direction: Direction = "both",
        min_history: timedelta | None = None,
        min_points: int = 30,
        min_spread: float = 0.0,
        sustained: bool = False,
    ) -> None:
        super().__init__()
        if window.total_seconds() <= 0:
            raise DetectorError("rolling `window` must be positive")
        if not sensitivity > 0 or not math.isfinite(sensitivity):
            raise DetectorError(f"rolling `sensitivity` must be a positive number, got {sensitivity!r}")
        if direction not in ("up", "down", "both"):
            raise DetectorError(f"rolling `direction` must be up, down or both, got {direction!r}")
        if min_points < 1:
            raise DetectorError(f"rolling `min_points` must be at least 1, got {min_points}")
        if not min_spread >= 0 or not math.isfinite(min_spread):
            raise DetectorError(f"rolling `min_spread` must be a non-negative number, got {min_spread!r}")
        if min_history is None:
            min_history = min(window, DEFAULT_MAX_MIN_HISTORY)
        self.window_s = window.total_seconds()
        self.sensitivity = float(sensitivity)
        self.direction: Direction = direction
        self.min_history_s = max(0.0, min_history.total_seconds())
        self.min_points = min_points
        self.min_spread = float(min_spread)
        self._ts = array("d")  # window timestamps, oldest first, from ``_head`` on
        self._vals = array("d")  # the values of the same points
        self._head = 0  # index of the oldest point still in the window
        self._sorted = array("d")  # the window's values, ascending
        self._first_ts: float | None = None
        self.floor = ResolutionFloor()
        self.cal = TailCalibrator(self.sensitivity, direction, sustained)
        self._history_label = _short(self.min_history_s)

    @property
    def size(self) -> int:
        """Return how many points the window holds now."""
        return len(self._sorted)

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        if self._first_ts is None:
            self._first_ts = ts
        self._evict(ts - self.window_s)
        verdict = self._score(ts, value)
        self.floor.update(value, verdict.anomalous)  # learnt from normal points, never from a jump
        self._ts.append(ts)
        self._vals.append(value)
        bisect.insort(self._sorted, value)
        return verdict

    def _evict(self, cutoff: float) -> None:
        """Drop the points at or before ``cutoff`` from the window."""
        times, vals, ordered = self._ts, self._vals, self._sorted
        head, end = self._head, len(times)
        while head < end and times[head] <= cutoff:
            del ordered[bisect.bisect_left(ordered, vals[head])]
            head += 1
        if head > 64 and 2 * head > end:  # drop the evicted prefix once it outweighs the window
            del times[:head]
            del vals[:head]
            head = 0
        self._head = head

    def _score(self, ts: float, value: float) -> Verdict:
        """Build the verdict for ``value`` against the current window (which excludes it)."""
        n = len(self._sorted)
        assert self._first_ts is not None
        span = ts - self._first_ts
        if n < self.min_points or span < self.min_history_s:
            reason = f"warming up: {n}/{self.min_points} points, {_short(span)}/{self._history_label} history"
            return Verdict(ts=ts, value=value, ready=False, reason=reason)
        med, sigma = robust_location_scale(self._sorted, max(self.min_spread, self.floor.value()))
        return self.cal.verdict(ts, value, med, sigma)


def _short(seconds: float) -> str:
    """Format a non-negative number of seconds as a short duration (``2h``, ``1d``, ``3h20m``)."""
    return format_duration(timedelta(seconds=int(max(0.0, seconds))))


def build_rolling(spec: Any) -> Detector:
    """Build a rolling-baseline detector from a ``RollingDetector`` spec."""
    return RollingBaseline(
        window=spec.window,
        sensitivity=spec.sensitivity,
        direction=spec.direction,
        min_history=spec.min_history,
        min_points=spec.min_points,
        min_spread=spec.min_spread,
        sustained=spec.sustained,
    )


register("rolling")(build_rolling)
