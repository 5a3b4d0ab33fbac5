"""The ``ewma`` detector kind and the robust adaptive level it shares with ``seasonal``.

This module owns ``AdaptiveLevel`` (a Huber-clipped exponentially weighted mean and mean absolute
deviation, with confirmed level shifts) and the ``ewma`` kind built on it. It does not own the
score formula or floors (``stats``) nor the spec (``rules.schema.EwmaDetector``).

Behaviour, for a point y at time t:

* **baseline**: level m and spread s (EW mean absolute deviation; sigma = 1.2533·s, the normal
  consistency factor) from the points before t, both with time-based half-lives so irregular
  sampling and gaps decay the state by elapsed time, not by point count. sigma is floored like
  ``rolling`` (``min_spread``, 0.1 % of |m|, 1e-12); the band is ``m ± sensitivity·sigma``.
* **robust updates**: the residual folded into m and s is clipped at ±3 sigma (Huber), so a spike
  moves the baseline by at most a few percent of a sigma and cannot inflate the spread.
* **level shifts**: when every point for ``shift_after`` lies outside the band on the same side,
  the change is confirmed and the level jumps to the median of those points: a permanent change
  stops alerting. The old level is remembered, and a point that fits the old level again while it
  would be outside the new one reverts to it (a temporary incident ending) without alerting.
* **warm-up**: not ready until ``min_points`` points were seen; the level and spread then start
  from the median/MAD of those points (so an early outlier cannot poison the start).
* **score**: ``stats.tail_score`` of z = (y - m) / sigma: the normal tail mass inside |z|.

Cost per point: a handful of float operations; the state is a few floats.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from ..core import Verdict
from ..errors import DetectorError
from .base import Detector, register
from .calibration import ResolutionFloor, TailCalibrator
from .stats import MAD_TO_SIGMA, Direction, median_sorted, spread_floor

MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2.0)
"""Factor turning a normal mean absolute deviation into a standard deviation (1.2533)."""

HUBER_CLIP = 3.0
"""Residuals are clipped at this many sigmas before they update the level and the spread."""

MAX_LEVEL_WEIGHT = 0.5
MAX_SPREAD_WEIGHT = 0.2
"""Largest weight one point gets in the level / spread, however long the gap before it."""

START_WEIGHT = 5
"""A started spread counts as this many points, so each group's first own points correct it fast."""

_LN2 = math.log(2.0)


def check_common(kind: str, sensitivity: float, direction: str, min_spread: float) -> None:
    """Raise ``DetectorError`` for a sensitivity, direction or spread floor no detector accepts."""
    if not sensitivity > 0 or not math.isfinite(sensitivity):
        raise DetectorError(f"{kind} `sensitivity` must be a positive number, got {sensitivity!r}")
    if direction not in ("up", "down", "both"):
        raise DetectorError(f"{kind} `direction` must be up, down or both, got {direction!r}")
    if not min_spread >= 0 or not math.isfinite(min_spread):
        raise DetectorError(f"{kind} `min_spread` must be a non-negative number, got {min_spread!r}")


class AdaptiveLevel:
    """A robust EW level and spread of one signal, with confirmed level shifts."""

    __slots__ = (
        "groups",
        "halflife",
        "jumps",
        "k",
        "known",
        "last_ts",
        "level",
        "min_spread",
        "prev_level",
        "run",
        "run_side",
        "run_start",
        "scale_halflife",
        "seen",
        "shift_after",
        "spread",
    )

    def __init__(
        self,
        halflife_s: float,
        scale_halflife_s: float,
        sensitivity: float,
        min_spread: float = 0.0,
        shift_after_s: float | None = 3600.0,
        groups: int = 1,
    ) -> None:
        self.groups = groups
        self.halflife = halflife_s
        self.scale_halflife = scale_halflife_s
        self.k = sensitivity
        self.min_spread = min_spread
        self.shift_after = shift_after_s
        self.level = math.nan
        self.spread = [math.nan] * groups  # EW mean absolute deviation per group (hour of day)
        self.seen = [0] * groups
        self.last_ts = math.nan
        self.prev_level = math.nan
        self.known: list[float] = []  # levels the series held for a whole cycle lately (seasonal)
        self.run_side = 0
        self.run_start = 0.0
        self.run: list[float] = []
        self.jumps = 0  # level shifts confirmed and levels returned to, so far

    @property
    def ready(self) -> bool:
        """Return whether the level has been started."""
        return not math.isnan(self.level)

    def start(self, ts: float, values: list[float], spreads: list[float] | None = None) -> None:
        """Start from the median/MAD of ``values`` (or the given per-group mean absolute ``spreads``)."""
        ordered = sorted(values)
        med = median_sorted(ordered)
        if spreads is None:
            mad = median_sorted(sorted(abs(v - med) for v in ordered))
            spreads = [MAD_TO_SIGMA * mad / MEAN_ABS_TO_SIGMA] * self.groups
        self.level, self.spread, self.last_ts = med, list(spreads), ts
        self.seen = [START_WEIGHT] * self.groups

    def sigma(self, expected: float, group: int = 0) -> float:
        """Return the current sigma of ``group`` around ``expected``, floored."""
        return max(MEAN_ABS_TO_SIGMA * self.spread[group], spread_floor(expected, self.min_spread))

    def step(
        self, ts: float, y: float, offset: float = 0.0, group: int = 0, pooled: bool = False
    ) -> tuple[float, float]:
        """Return ``(expected, sigma)`` for ``y`` (before it), then fold ``y`` into the state.

        ``offset`` is added to the level to form the expectation (the seasonal profile at ``ts``);
        ``group`` picks the spread (the hour of the day for ``seasonal``, so busy afternoons and quiet
        nights each get their own noise level). A group's spread decays by calendar time: each
        group's half-life is ``scale_halflife`` even though it sees only 1/groups of the points.
        """
        expected = self.level + offset
        sigma = self.sigma(expected, group)
        resid = y - expected
        if abs(resid) > self.k * sigma:
            back = self._known_level(y, offset, group)
            if not math.isnan(back):  # back to a level held before: an incident ended, a weekday began
                # Reverting to the pre-shift level forgets it; jumping to a known level remembers the
                # one left, so a blip that happened to fit a known level returns at once.
                self.prev_level = math.nan if back == self.prev_level else self.level
                self.level, self.run_side = back, 0
                self.jumps += 1
                self.run.clear()
                expected = back + offset
                sigma = self.sigma(expected, group)
                resid = y - expected
        self._track_shift(ts, y - offset, resid, sigma)
        dt = ts - self.last_ts
        # After a gap the state has decayed, but one point must never replace it outright.
        a = min(-math.expm1(-dt * _LN2 / self.halflife), MAX_LEVEL_WEIGHT) if dt > 0 else 0.0
        share = 1 if pooled else self.groups
        b = min(-math.expm1(-dt * share * _LN2 / self.scale_halflife), MAX_SPREAD_WEIGHT) if dt > 0 else 0.0
        clip = HUBER_CLIP * sigma
        r = min(max(resid, -clip), clip)
        self.level += a * r
        if abs(resid) <= self.k * sigma:  # only in-band points speed up a young spread estimate
            self.seen[group] += 1
            b = max(b, 1.0 / self.seen[group])
        if abs(resid) <= clip:  # the spread is the core's; the tail beyond is the calibrator's
            self.spread[group] += b * (abs(r) - self.spread[group])
        self.last_ts = ts
        return expected, sigma

    def _known_level(self, y: float, offset: float, group: int) -> float:
        """Return the remembered level whose band holds ``y`` (the nearest one), or NaN if none does.

        Remembered levels are the level before the last confirmed shift and ``known`` (the levels
        of the last few whole cycles, kept by ``seasonal``). A series that drifted down through a
        weekend it had no weekly profile for yet, or through a holiday, goes back to its weekday
        level on Monday; that level is in ``known``, so the return is not an incident.
        """
        best, best_d = math.nan, math.inf
        for cand in (self.prev_level, *self.known):
            if math.isnan(cand):
                continue
            back = cand + offset
            d = abs(y - back)
            if d <= self.k * self.sigma(back, group) and d < best_d:
                best, best_d = cand, d
        return best

    def _track_shift(self, ts: float, deseasonalised: float, resid: float, sigma: float) -> None:
        """Confirm a level shift after ``shift_after`` of points outside the band on one side."""
        if self.shift_after is None:
            return
        side = (resid > self.k * sigma) - (resid < -self.k * sigma)
        if side == 0:
            self.run_side = 0
            self.run.clear()
            return
        if side != self.run_side:
            self.run_side, self.run_start = side, ts
            self.run.clear()
        self.run.append(deseasonalised)
        if ts - self.run_start >= self.shift_after and len(self.run) >= 3:
            self.prev_level = self.level
            self.level = median_sorted(sorted(self.run))
            self.jumps += 1
            self.run_side = 0
            self.run.clear()


class EwmaBaseline(Detector):
    """Scores each point against a robust exponentially weighted level and spread."""

    kind = "ewma"

    def __init__(
        self,
        halflife: timedelta = timedelta(hours=1),
        scale_halflife: timedelta = timedelta(days=1),
        sensitivity: float = 4.0,
        direction: Direction = "both",
        min_points: int = 30,
        min_spread: float = 0.0,
        shift_after: timedelta | None = timedelta(hours=1),
        sustained: bool = False,
    ) -> None:
        super().__init__()
        check_common("ewma", sensitivity, direction, min_spread)
        if halflife.total_seconds() <= 0 or scale_halflife.total_seconds() <= 0:
            raise DetectorError("ewma `halflife` and `scale_halflife` must be positive")
        if min_points < 3:
            raise DetectorError(f"ewma `min_points` must be at least 3, got {min_points}")
        self.sensitivity = float(sensitivity)
        self.direction: Direction = direction
        self.min_points = min_points
        self.core = AdaptiveLevel(
            halflife.total_seconds(),
            scale_halflife.total_seconds(),
            self.sensitivity,
            float(min_spread),
            None if shift_after is None else shift_after.total_seconds(),
        )
        self._min_spread = float(min_spread)
        self.floor = ResolutionFloor()
        self.cal = TailCalibrator(self.sensitivity, direction, sustained)
        self._warm: list[float] = []
        self._warm_ts = math.nan

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        if not self.core.ready:
            n = len(self._warm)
            if n < self.min_points:
                self._warm.append(value)
                self._warm_ts = ts
                self.floor.update(value)
                return Verdict(
                    ts=ts, value=value, ready=False, reason=f"warming up: {n}/{self.min_points} points"
                )
            self.core.start(self._warm_ts, self._warm)
            self._warm = []
        core = self.core
        core.min_spread = max(self._min_spread, self.floor.value())
        jumps = core.jumps
        expected, sigma = core.step(ts, value)
        verdict = self.cal.verdict(ts, value, expected, sigma)
        # The resolution is learnt from normal points, never from a jump of the level.
        self.floor.update(value, verdict.anomalous or core.jumps != jumps)
        return verdict


def build_ewma(spec: Any) -> Detector:
    """Build an EWMA detector from an ``EwmaDetector`` spec."""
    return EwmaBaseline(
        halflife=spec.halflife,
        scale_halflife=spec.scale_halflife,
        sensitivity=spec.sensitivity,
        direction=spec.direction,
        min_points=spec.min_points,
        min_spread=spec.min_spread,
        shift_after=spec.shift_after,
        sustained=spec.sustained,
    )


register("ewma")(build_ewma)
