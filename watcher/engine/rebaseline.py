"""Re-baselining on a release marker: a planned change moves a series' level without paging or a cold start.

This module owns the one hook the engine puts around any detector: ``Rebaselining`` forwards every
point to the detector it wraps, and when a marker that applies to the series arrives it opens a
grace period (the marker's ``grace``). During the grace the wrapped detector sees nothing and the
verdicts are not ready (``re-baselining after deploy X``: no new alert, whatever state there is is
kept). At the end of the grace the new level is the median of the grace's values, and from then on
the wrapped detector is fed ``value − offset``, where ``offset`` is that level minus the level the
detector expected just before the marker; its verdicts are shifted back by ``offset``. The detector
keeps its history, spreads, seasonal profile and calibration (no cold start), and the planned step
is not an anomaly. It does not own any statistics (``detectors``) nor where markers come from
(``store.markers``).

A marker before the detector has a level (still warming up) only opens the grace. The offset is
additive, which suits levels (spend, latency, scores); a proportion shifted below 0 or above 1 is
clipped for the ``rate`` kind.
"""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import median

from ..core import FloatArray, Verdict
from ..detectors import Detector


class Rebaselining(Detector):
    """Wraps a detector so that release markers shift its level instead of paging (see the module)."""

    def __init__(self, inner: Detector) -> None:
        super().__init__()
        self.inner = inner
        self.kind = inner.kind
        self.offset = 0.0
        self._expected = math.nan
        """The wrapped detector's latest finite expectation, in its own (shifted) coordinates."""
        self._scheduled: list[tuple[float, float, str]] = []
        self._grace_until = -math.inf
        self._grace_values: list[float] = []
        self._base = math.nan
        self._title = ""

    def mark(self, ts: float, grace_s: float, title: str) -> None:
        """Schedule a marker at ``ts`` (Unix seconds); one at or before the last point seen is ignored."""
        if grace_s <= 0 or (self.last_ts is not None and ts < self.last_ts):
            return
        self._scheduled.append((ts, grace_s, title))
        self._scheduled.sort()

    @property
    def in_grace(self) -> bool:
        """Tell whether the latest point fell in a grace period."""
        return self.last_ts is not None and self.last_ts <= self._grace_until

    def update_many(
        self, timestamps: FloatArray, values: FloatArray, counts: FloatArray | None = None
    ) -> list[Verdict]:
        """Score a run of points; with no marker pending nor applied, exactly the wrapped detector's run."""
        grace_open = self.last_ts is None or self.last_ts <= self._grace_until
        if (
            self._scheduled
            or self._grace_values
            or self.offset != 0.0
            or (grace_open and self._grace_until > -math.inf)
        ):
            return super().update_many(timestamps, values, counts)
        out = self.inner.update_many(timestamps, values, counts)
        self.last_ts = self.inner.last_ts
        for v in reversed(out):
            if math.isfinite(v.expected):
                self._expected = v.expected
                break
        return out

    def step_one(self, ts: float, value: float, count: float | None = None) -> Verdict | None:
        """Score one point as ``update_many`` does for a run of one (its fast branch included)."""
        if (
            self._scheduled
            or self._grace_values
            or self.offset != 0.0
            or ((self.last_ts is None or self.last_ts <= self._grace_until) and self._grace_until > -math.inf)
        ):
            return self.update(ts, value, count)
        inner = self.inner
        v = inner.step_one(ts, value, count)
        self.last_ts = inner.last_ts
        if v is not None and math.isfinite(v.expected):
            self._expected = v.expected
        return v

    def update(self, ts: float, value: float, count: float | None = None) -> Verdict | None:
        """Score one point (see the module docstring); None for a stale timestamp."""
        ts = float(ts)
        if self.last_ts is not None and ts <= self.last_ts:
            return None
        if self._grace_values and ts > self._grace_until:
            if math.isfinite(self._base):
                self.offset = median(self._grace_values) - self._base
            self._grace_values = []
        while self._scheduled and self._scheduled[0][0] < ts:
            m_ts, grace_s, title = self._scheduled.pop(0)
            if ts > self._grace_until:  # a new grace: remember the level expected before the change
                self._base = self._expected
                self._grace_values = []
            self._grace_until = max(self._grace_until, m_ts + grace_s)
            self._title = title
        if ts <= self._grace_until:
            self.last_ts = ts
            if value is not None and math.isfinite(value):
                self._grace_values.append(float(value))
            return Verdict(
                ts=ts, value=float(value), ready=False, reason=f"re-baselining after {self._title}"
            )
        self.last_ts = ts
        shifted = value - self.offset if value is not None and math.isfinite(value) else value
        if self.kind == "rate" and shifted is not None and math.isfinite(shifted):
            shifted = min(max(shifted, 0.0), 1.0)
        v = self.inner.update(ts, shifted, count)
        if v is None:
            return None
        if math.isfinite(v.expected):
            self._expected = v.expected
        if self.offset == 0.0:
            return v
        off = self.offset
        return replace(
            v, value=float(value), expected=v.expected + off, lower=v.lower + off, upper=v.upper + off
        )

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:  # pragma: no cover
        raise AssertionError("Rebaselining overrides update()")


__all__ = ["Rebaselining"]
