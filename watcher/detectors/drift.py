"""The ``drift`` detector kind: a shift of a series' distribution, by a two-sample test over windows.

This module owns comparing, at each point t, the distribution of the points of the recent window
``(t - recent, t]`` with that of the reference window just before it
``(t - recent - reference, t - recent]`` (a two-sample Kolmogorov–Smirnov test, ``scipy``), the
calibration of its p-value, and the words that explain a shift. It does not own parsing the spec
(``rules.schema.DriftDetector``) nor the other statistics (``stats``, ``calibration``).

Made for judge scores: with a rule whose points are the mean score of each step (``agg: mean``,
``window`` equal to the step), a judge or a model whose scores slide from 0.9 to 0.7, or whose
low tail fattens while the mean barely moves, shows as a shift of the distribution of the points.

Behaviour, for a point at time t:

* **test**: KS on the two windows' points (asymptotic p-values, ``ks_pvalue``),
  one-sided on the watched side (``down``: the recent values are smaller, ``up``: larger) or
  two-sided (``both``). Ties (quantised judge scores) only make the test conservative.
* **calibrated threshold**: the nominal p-value must be below Φ(−sensitivity) (one-sided;
  ×2 for ``both``; sensitivity 4: 3.2e-5), *and* the statistic must be as extreme against the
  detector's own history of it: the test's z (Φ⁻¹ of 1 − p) joins an ``EmpiricalTail`` one
  ``recent`` window after its verdict (never while flagged, so an incident cannot calibrate
  itself away). KS assumes independent points; seasonal or autocorrelated series make nominal
  p-values far too small, and the empirical tail is what keeps them from paging (measured in
  docs/detectors.md).
* **size**: not ready until each window holds ``min_points`` points and the series spans the
  recent window plus a day (or the whole reference, if shorter): comparing two afternoon hours
  with the morning is a comparison of times of day, not a drift.
* **shift**: a flag also needs the median to have moved by at least ``min_shift`` on the watched
  side (with ``both``, either side).
* **verdict**: ``value`` is the recent window's median, ``expected`` the reference's; there is no
  band (NaN), as for a one-sided threshold. ``detail`` says it in words, with the share of points
  below ``below`` before and after when set. ``surprise`` = −log10 of the larger of the nominal and
  the empirical tail probabilities; ``score`` = 1 − that probability.

Cost per point: one KS test over both windows (sorting ~2,000 points and scipy's p-value: about
0.2 ms for a 7-day reference at 5-minute steps); memory: 16 bytes per point of the two windows.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from datetime import timedelta
from typing import Any

import numpy as np

from ..core import Verdict, format_duration
from ..errors import DetectorError
from .base import Detector, register
from .calibration import EmpiricalTail
from .stats import Direction, normal_sf

MIN_SPAN = timedelta(days=1)
"""History (besides the recent window) needed before the first verdict, or the reference if shorter."""


def ks_pvalue(cur: Any, ref: Any, direction: Direction) -> float:
    """Return the two-sample KS p-value that ``cur`` is shifted on ``direction``'s side of ``ref``.

    Both arrays sorted. ``down``: the recent CDF above the reference's (smaller values); ``up``:
    below; ``both``: twice the smaller one-sided p. Smirnov's asymptotic one-sided distribution
    with Hodges' correction, what ``scipy.stats.ks_2samp(method="asymp")`` computes one-sided, at
    a fraction of its per-call cost (no scipy call per point).
    """
    m, n = len(cur), len(ref)
    at_or_below = np.searchsorted(cur, cur, side="right") / m
    below = np.searchsorted(cur, cur, side="left") / m
    ref_at_or_below = np.searchsorted(ref, cur, side="right") / n
    ref_below = np.searchsorted(ref, cur, side="left") / n
    d_down = max(0.0, float(np.max(at_or_below - ref_at_or_below)))  # sup (F_cur - F_ref)
    d_up = max(0.0, float(np.max(ref_below - below)))  # sup (F_ref - F_cur)
    big, small = float(max(m, n)), float(min(m, n))
    en = big * small / (big + small)
    corr = (big + 2.0 * small) / math.sqrt(big * small * (big + small)) / 3.0

    def one_sided(d: float) -> float:
        z = math.sqrt(en) * d
        return min(1.0, math.exp(-2.0 * z * z - 2.0 * z * corr))

    if direction == "both":  # the smaller one-sided p, Bonferroni-doubled
        return min(1.0, 2.0 * one_sided(max(d_down, d_up)))
    return one_sided(d_down if direction == "down" else d_up)


def _z_of_p(p: float) -> float:
    """Return z with Φ(−z) = p (the deviation a one-sided tail probability corresponds to)."""
    from scipy.special import ndtri

    return float(-ndtri(min(max(p, 1e-300), 1.0)))


class DriftDetector(Detector):
    """Flags a distribution shift between a recent window and the reference window before it."""

    kind = "drift"

    def __init__(
        self,
        reference: timedelta = timedelta(days=7),
        recent: timedelta = timedelta(hours=2),
        sensitivity: float = 4.0,
        direction: Direction = "down",
        min_points: int = 12,
        min_shift: float = 0.0,
        below: float | None = None,
    ) -> None:
        super().__init__()
        if reference.total_seconds() <= 0 or recent.total_seconds() <= 0:
            raise DetectorError("drift `reference` and `recent` must be positive")
        if not sensitivity > 0 or not math.isfinite(sensitivity):
            raise DetectorError(f"drift `sensitivity` must be a positive number, got {sensitivity!r}")
        if direction not in ("up", "down", "both"):
            raise DetectorError(f"drift `direction` must be up, down or both, got {direction!r}")
        if min_points < 3:
            raise DetectorError(f"drift `min_points` must be at least 3, got {min_points}")
        if not min_shift >= 0 or not math.isfinite(min_shift):
            raise DetectorError(f"drift `min_shift` must be a non-negative number, got {min_shift!r}")
        self.reference_s = reference.total_seconds()
        self.recent_s = recent.total_seconds()
        self.min_span_s = min(self.reference_s, MIN_SPAN.total_seconds())
        self.sensitivity = float(sensitivity)
        self.direction: Direction = direction
        self.alpha = normal_sf(self.sensitivity) * (2.0 if direction == "both" else 1.0)
        self.min_points = int(min_points)
        self.min_shift = float(min_shift)
        self.below = below
        self.first_ts = math.nan
        self.ts = array("d")  # points of both windows, in time order (a prefix may be evicted)
        self.vs = array("d")
        self.head = 0
        self.tail = EmpiricalTail(math.log(self.alpha))
        self.waiting: deque[tuple[float, float]] = deque()  # (ts, z) not yet in the tail

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        if math.isnan(self.first_ts):
            self.first_ts = ts
        self.ts.append(ts)
        self.vs.append(value)
        self._evict(ts - self.recent_s - self.reference_s)
        self._admit(ts)
        times = np.frombuffer(self.ts, dtype=np.float64)[self.head :]
        values = np.frombuffer(self.vs, dtype=np.float64)[self.head :]
        cut = int(np.searchsorted(times, ts - self.recent_s, side="right"))
        ref, cur = values[:cut], values[cut:]
        span = ts - self.first_ts
        if len(ref) < self.min_points or len(cur) < self.min_points or span < self.recent_s + self.min_span_s:
            reason = (
                f"warming up: {len(ref)}+{len(cur)}/{self.min_points}+{self.min_points} points, "
                f"{format_duration(timedelta(seconds=span))}/"
                f"{format_duration(timedelta(seconds=self.recent_s + self.min_span_s))} history"
            )
            return Verdict(ts=ts, value=value, ready=False, reason=reason)
        return self._judge(ts, ref, cur)

    def _judge(self, ts: float, ref: Any, cur: Any) -> Verdict:
        ref, cur = np.sort(ref), np.sort(cur)
        p = ks_pvalue(cur, ref, self.direction)
        # the z of a one-sided probability; a two-sided p counts as twice a one-sided one
        z = _z_of_p(p / 2.0 if self.direction == "both" else p)
        log_emp = self.tail.log_p(z, 1)
        p_emp = math.exp(log_emp) * (2.0 if self.direction == "both" else 1.0)
        p_all = min(1.0, max(p, p_emp))
        med_ref, med_cur = float(np.median(ref)), float(np.median(cur))
        delta = med_cur - med_ref
        moved = {"down": -delta, "up": delta, "both": abs(delta)}[self.direction]
        anomalous = p_all < self.alpha and moved >= self.min_shift
        if anomalous:
            self.waiting.clear()  # the incident's statistics never join the calibration
        else:
            self.waiting.append((ts, z))
        score = min(1.0, max(0.0, 1.0 - p_all))
        if anomalous and score <= 0.0:
            score = 1e-12
        return Verdict(
            ts=ts,
            value=med_cur,
            expected=med_ref,
            score=score,
            anomalous=anomalous,
            surprise=-math.log10(max(p_all, 1e-300)),
            detail=self._detail(ref, cur, med_ref, med_cur, p),
        )

    def _detail(self, ref: Any, cur: Any, med_ref: float, med_cur: float, p: float) -> str:
        recent = format_duration(timedelta(seconds=self.recent_s))
        text = (
            f"median {med_ref:.3g} → {med_cur:.3g} (last {recent}, "
            f"{len(cur)} points, against {len(ref)} before; KS p={p:.2g})"
        )
        if self.below is not None:
            before = float(np.mean(ref < self.below))
            after = float(np.mean(cur < self.below))
            text += f"; below {self.below:g}: {before:.0%} → {after:.0%}"
        return text

    def _evict(self, oldest: float) -> None:
        """Drop the points at or before ``oldest``; compact once the dead prefix is the larger part."""
        ts = self.ts
        n = len(ts)
        head = self.head
        while head < n and ts[head] <= oldest:
            head += 1
        if head > n // 2 and head > 64:
            del self.ts[:head]
            del self.vs[:head]
            head = 0
        self.head = head

    def _admit(self, ts: float) -> None:
        """Move the statistics older than one recent window into the empirical tail."""
        while self.waiting and self.waiting[0][0] <= ts - self.recent_s:
            self.tail.push(self.waiting.popleft()[1])


def build_drift(spec: Any) -> DriftDetector:
    """Build a drift detector from a ``DriftDetector`` spec."""
    return DriftDetector(
        reference=spec.reference,
        recent=spec.recent,
        sensitivity=spec.sensitivity,
        direction=spec.direction,
        min_points=spec.min_points,
        min_shift=spec.min_shift,
        below=spec.below,
    )


register("drift")(build_drift)
