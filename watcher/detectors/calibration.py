"""Calibrated verdicts: a spread floor from the data's own resolution, and empirical tail p-values.

This module owns the two pieces every statistical kind (``rolling``, ``ewma``, ``seasonal``) puts
between its baseline and its verdict, so that one sensitivity means the same false-flag rate on any
series, whatever its distribution:

* ``ResolutionFloor`` — a lower bound on the spread that cannot collapse. A robust spread (MAD) is
  exactly 0 on a series that is mostly one value (zeros with bursts, a flat gauge, small integer
  counts), and the z of the next burst is then 1e20. The floor is the larger of half the
  quantisation step (the smallest change the series makes: 1 for counts, 0.01 for cents) and a
  quarter of the series' typical absolute change between consecutive points (an exponentially
  weighted mean of ``|Δx|``, which is positive as soon as the series moves at all). For
  Gaussian noise the second term is 0.28 σ, below any honest spread; for zeros-with-bursts it
  is a few percent of a typical burst.
* ``EmpiricalTail`` — the recent distribution of one statistic: the last ``RING`` values (float32,
  a sorted copy beside them). Inside the bulk the tail probability is the empirical rank; beyond
  the value with ``TAIL_FRACTION`` of the ring past it, a generalised Pareto tail fitted by
  probability-weighted moments on the excesses (the ``TRIM`` largest winsorised, so a spike or two
  cannot widen the band for the next one; the shape smoothed over refits and never below 0, so a
  light tail is extrapolated as an exponential, which errs wide); beyond the critical value, an
  exponential with the fit's hazard there, so the probability keeps falling and surprise never
  saturates. Tails are refitted every ``REFRESH`` values.
* ``TailCalibrator`` — turns a standardised residual z = (value − expected) / sigma into a
  verdict. Two statistics, each with its own ``EmpiricalTail``: the point's z, and the mean of the
  last ``RUN`` residuals clipped at ±``CLIP`` (a lasting shift of two sigma stands out there while
  one spike cannot carry it; it flags only with this point beyond the same critical value, and
  only once ``RUN_MIN_RING`` run means are held). They share the budget: a point is anomalous when
  either tail probability on a watched side is below Φ(−sensitivity)/2 (sensitivity 4: 1.6e-5).
  The band reported is where that happens for this point, so "not anomalous" is still "inside the
  band". ``surprise`` = −log10 of twice the smaller probability, computed in log space; ``score`` =
  1 − 2p stays in [0, 1].

Residuals join the rings ``DELAY`` points after their verdict (causal). An anomalous episode longer
than ``BURST_POINTS`` points is an incident: it and the residuals still waiting (its ramp, which had
not crossed the band yet) never join, so an incident cannot widen its own band and resolve itself;
shorter episodes join like any other point, so a series that bursts often learns that its bursts
are normal. Until a ring holds ``MIN_RING`` values, or when a side holds too few values for its
tail's threshold u to lie on that side of 0 (a young series, a trend), that side's tail is a
conservative Laplace one with unit variance; when neither side has (a flat series), any move is
news at the floors' scale. A side seen in only a few percent of the ring is still a side: the
residuals of a mostly-zero series are slightly negative at every zero and large at every burst,
and its bursts (5–9 % of the ring) are its upper tail, fitted like any other.

Tails are refitted lazily: a side's fit depends only on the ring's values from its u outwards, so
a refit whose side saw no push or eviction at or beyond u since the last one reuses the last
moments (only the shape smoothing steps): the same fits, bit for bit, without the moments' cost.

Cost per point (measured in docs/benchmarks.md): ~10 µs of CPU and, per series, two rings of
1,024 float32 values with their sorted copies (16 kB) and the ``DELAY`` waiting residuals as one
flat array of doubles (1 kB): ~18 kB in all. ``warmup`` turns these sizes into spans of history.
"""

from __future__ import annotations

import bisect
import math
import operator
from array import array

from ..core import Verdict
from .stats import Direction, normal_sf

RING = 1024
"""Residuals kept per series (about 17 h of 1-minute points, 3.5 days of 5-minute points)."""

MIN_RING = 64
"""Residuals needed before the empirical tail replaces the conservative default one."""

TAIL_FRACTION = 0.047
"""k / n of the Pickands tail estimate: with 1,024 residuals, the 25th, 50th and 100th most extreme."""

SHAPE_SMOOTHING = 1 / 32
"""Weight of each new shape estimate in the kept one (an estimate from a thousand residuals is noisy;
the shape of a series' noise changes slowly): a time constant of ~500 residuals."""

MIN_TAIL = 12

TRIM = 3
"""Most extreme residuals on each side left out of the tail's shape and scale."""

MAX_SHAPE = 0.75
"""Largest generalised-Pareto shape of a tail (0.75: a Student t with 1.3 degrees of freedom)."""

MIN_SHAPE = 0.0
"""Smallest shape used: a light tail (a Gaussian's fits about -0.1) is extrapolated as an
exponential, never thinner: an underestimated tail is what makes a detector cry wolf, and a
negative shape estimated from a thousand points is mostly noise."""

SUSTAINED_MIN_SHAPE = -0.1
"""Smallest shape of the run's tail with ``sustained`` (a normal's tail fits about -0.1 to -0.15)."""

MIN_EXCESS = 0.35
"""Smallest mean excess of the tail, in z units (a Gaussian's is 0.42 at its 98th percentile)."""

BURST_POINTS = 3
"""Anomalous episodes of at most this many points are admitted to the ring; longer ones never."""

DELAY = 64
"""Points a residual waits before it joins the ring; it is dropped if an incident starts meanwhile."""

REFRESH = 16
"""Residuals between two recomputations of the tails (the tails move slowly; this keeps a point cheap)."""

FLOOR_HALFLIFE = 500
"""Points over which the typical absolute change of ``ResolutionFloor`` is averaged."""

CHANGE_FRACTION = 0.25
"""Share of the typical absolute change between points that the spread never goes below."""

RUN = 8
"""Points in the short run whose mean residual is calibrated beside each point: a lasting shift of
two sigma moves the mean of eight points as far as a five-sigma spike moves one point."""

RUN_MIN_RING = 256
"""Run means needed before the run statistic can flag: a lasting small deviation in a young series is
far more often the model still learning (a daily cycle half seen) than an incident."""

CLIP = 3.0
"""Residuals are clipped at ±CLIP before they enter the run's mean, so one spike cannot carry it."""

_LN10 = math.log(10.0)
_LN2 = math.log(2.0)
_DEFAULT_RATE = math.sqrt(2.0)
"""Decay rate of the default (Laplace) tail: unit variance, heavier than any Gaussian."""

_DEFAULT_FIT = (0.0, math.log(0.5), 1.0 / _DEFAULT_RATE, 0.0)
"""The conservative default tail ``(u, log_pu, beta, xi)``: a Laplace one with unit variance."""

Fit = tuple[float, float, float, float, float, float, float]
"""A fitted tail: u, log P(X > u), GPD scale and shape, x_c, log P(X > x_c), scale beyond x_c."""


class ResolutionFloor:
    """The smallest spread a series' own resolution and movement allow (see the module docstring)."""

    __slots__ = ("change", "flagged", "n", "prev", "step")

    def __init__(self) -> None:
        self.prev = math.nan
        self.change = 0.0  # EW mean of |Δx|
        self.step = math.inf  # smallest meaningful positive |Δx| seen
        self.n = 0
        self.flagged = 0  # flagged points in a row just before this one

    def update(self, x: float, flagged: bool = False) -> None:
        """Fold a new finite value in (after it was scored, with its verdict).

        A flagged point teaches nothing (a change after a flat stretch stays news), but it is
        remembered: the step back from a short flagged burst (at most ``BURST_POINTS``, as the
        calibrator admits) to a normal point is the series' own movement, so a gauge that ticks
        4 → 5 → 4 learns its step of 1 from the return and its next tick is judged against that
        step instead of flagged again and again. The return from a longer episode (an incident)
        is never learnt: the next incident of the same size stays news.
        """
        prev = self.prev
        self.prev = x
        if flagged:
            self.flagged += 1
            return
        burst, self.flagged = self.flagged, 0
        if prev != prev or burst > BURST_POINTS:  # NaN: the first value
            return
        d = x - prev if x > prev else prev - x
        n = self.n = self.n + 1
        self.change += (d - self.change) / (n if n < FLOOR_HALFLIFE else FLOOR_HALFLIFE)
        # A difference below 1e-9 of the values is float noise, not the series' resolution.
        if d < self.step and d > 1e-9 * (abs(x) + abs(prev)):
            self.step = d

    def value(self) -> float:
        """Return the floor on sigma (0 until the series has moved)."""
        step = 0.5 * self.step if self.step < math.inf else 0.0
        return max(step, CHANGE_FRACTION * self.change)


_WEIGHTS: dict[int, list[float]] = {}


def _pwm_weights(k: int) -> list[float]:
    """Return the plotting-position weights ``k - i - 0.65`` of the first probability-weighted moment."""
    w = _WEIGHTS.get(k)
    if w is None:
        w = _WEIGHTS[k] = [k - i - 0.65 for i in range(k)]
    return w


class EmpiricalTail:
    """The recent distribution of one statistic: a ring of values and both of its fitted tails."""

    __slots__ = (
        "_crit",
        "_dirty",
        "_excess",
        "_fits",
        "_shape",
        "_stale",
        "_thr",
        "head",
        "log_p_thr",
        "min_excess",
        "min_shape",
        "ring",
        "sorted",
    )

    def __init__(
        self, log_p_thr: float, min_excess: float = MIN_EXCESS, min_shape: float = MIN_SHAPE
    ) -> None:
        self.log_p_thr = log_p_thr
        self.min_excess = min_excess
        self.min_shape = min_shape
        self.ring = array("f")  # values in arrival order (a circular buffer once full)
        self.head = 0
        self.sorted = array("f")  # the same values, ascending
        self._stale = REFRESH  # pushes since the tails were last fitted
        self._fits: dict[int, Fit] = {}
        self._crit: dict[int, float] = {}
        self._shape = {1: math.nan, -1: math.nan}
        # Lazy refits: a side's fit depends only on the values from its u outwards. ``_thr`` is that
        # side's u as a signed value (±inf: refit always); a push or eviction at or beyond it marks
        # the side dirty, and a clean side reuses its last moments (only the shape smoothing steps).
        self._thr = [math.inf, -math.inf]  # [upper side's u, lower side's -u]
        self._dirty = [True, True]
        self._excess: dict[int, tuple[float, float, float]] = {}  # side: (u, a0, raw shape)

    def push(self, x: float) -> None:
        """Add a value, evicting the oldest once the ring is full."""
        ring, s = self.ring, self.sorted
        x = max(-3e38, min(3e38, x))  # float32 range
        self._stale += 1
        up, down = self._thr
        if len(ring) < RING:
            ring.append(x)
            x = ring[-1]  # as stored (float32)
            self._dirty[0] = self._dirty[1] = True  # n changed: every order statistic moved
        else:
            head = self.head
            old = ring[head]
            del s[bisect.bisect_left(s, old)]
            ring[head] = x
            x = ring[head]
            self.head = (head + 1) % RING
            if old >= up:
                self._dirty[0] = True
            if old <= down:
                self._dirty[1] = True
        if x >= up:
            self._dirty[0] = True
        if x <= down:
            self._dirty[1] = True
        # Rounding to float32 is monotonic, so the position found for x keeps ``s`` sorted.
        bisect.insort(s, x)

    def critical(self, side: int) -> float:
        """Return the value (signed) beyond which the ``side`` tail probability is below the threshold."""
        if self._stale >= REFRESH:
            self._refresh()
        return self._crit[side]

    def log_p(self, x: float, side: int) -> float:
        """Return the natural log of P(X·side ≥ x·side) under this distribution (≤ 0)."""
        if self._stale >= REFRESH:
            self._refresh()
        y = x * side
        u, log_pu, beta, xi, xc, log_pc, scale_c = self._fits[side]
        if y > xc:
            return log_pc - (y - xc) / scale_c
        if y > u:
            if xi == 0.0:
                return log_pu - (y - u) / beta
            return log_pu - math.log1p(xi * (y - u) / beta) / xi
        s = self.sorted
        n = len(s)
        if n < MIN_RING:
            return 0.0 if y <= 0.0 else math.log(0.5)
        at_least = n - bisect.bisect_left(s, x) if side > 0 else bisect.bisect_right(s, x)
        return min(0.0, math.log((at_least + 1.0) / (n + 1.0)))

    def _refresh(self) -> None:
        """Refit both tails and their critical values (every ``REFRESH`` pushes).

        A tail is the generalised Pareto fit from u to the critical value x_c and, beyond x_c, an
        exponential with the fit's hazard at x_c: the band is the fit's, and p keeps falling however
        large the deviation, so surprise never saturates.
        """
        self._stale = 0
        for side in (1, -1):
            u, log_pu, beta, xi = self._fit(side)
            room = max(0.0, log_pu - self.log_p_thr)  # log of how much rarer than u the threshold is
            if xi == 0.0:
                over, scale_c = beta * room, beta
            else:
                over, scale_c = beta / xi * math.expm1(xi * room), beta * math.exp(xi * room)
            self._fits[side] = (u, log_pu, beta, xi, u + over, log_pu - room, scale_c)
            self._crit[side] = side * (u + over)

    def _fit(self, side: int) -> tuple[float, float, float, float]:
        """Return ``(u, log_pu, beta, xi)`` of the ``side`` (+1 upper, -1 lower) tail, in x·side units.

        u is the value with ``TAIL_FRACTION`` of the ring beyond it; the excesses over u are a
        generalised Pareto distribution fitted by probability-weighted moments (Hosking & Wallis)
        on the excesses with the ``TRIM`` largest winsorised, so a spike or two of the last day do
        not widen the band for the next one (bursts frequent enough to be more than ``TRIM`` of the
        ring do). The shape is smoothed over refits (``SHAPE_SMOOTHING``) and clamped to
        [0, ``MAX_SHAPE``]: a light tail is extrapolated as an exponential, never thinner, because
        an underestimated tail is what makes a detector cry wolf.
        """
        s = self.sorted
        n = len(s)
        i = 0 if side > 0 else 1
        if n < MIN_RING:
            return _DEFAULT_FIT
        k = max(MIN_TAIL, int(TAIL_FRACTION * n))
        above, below = n - bisect.bisect_right(s, 0.0), bisect.bisect_left(s, 0.0)
        on_side, other = (above, below) if side > 0 else (below, above)
        if on_side <= k:  # u would not lie on this side of 0
            self._thr[i] = -side * math.inf  # always refit
            self._excess.pop(side, None)
            if other >= 2 * k:  # only the other side was seen (a young ring, a trend): stay cautious
                return _DEFAULT_FIT
            # A flat series (residuals all but 0): any move is news, at the floors' scale.
            return 0.0, math.log(k / (n + 1.0)), self.min_excess, 0.0
        cached = self._excess.get(side)
        if cached is not None and not self._dirty[i]:
            # Nothing at or beyond u was added or evicted and n is the same: the same moments.
            u, a0, xi = cached
        else:
            self._dirty[i] = False
            if side > 0:
                u = float(s[n - k - 1])
                tail = [x - u for x in s[n - k : n - TRIM]]
            else:
                u = -float(s[k])
                tail = [-x - u for x in reversed(s[TRIM:k])]
            self._thr[i] = side * u
            tail += [tail[-1]] * TRIM
            a0 = sum(tail) / k
            a1 = sum(map(operator.mul, tail, _pwm_weights(k))) / (k * k)
            d = a0 - 2.0 * a1
            # d <= 0: no spread among the excesses (quantised, or all equal): no evidence of a heavy tail.
            xi = 2.0 - a0 / d if d > 1e-12 and a0 > 1e-12 else 0.0
            xi = min(MAX_SHAPE, max(-0.5, xi))
            self._excess[side] = (u, a0, xi)
        kept = self._shape[side]
        kept = self._shape[side] = xi if kept != kept else kept + SHAPE_SMOOTHING * (xi - kept)
        xi = max(self.min_shape, kept)
        fit = u, math.log(k / (n + 1.0)), max(a0, self.min_excess) * (1.0 - xi), xi
        if on_side < 2 * k and self._over(fit) < self._over(_DEFAULT_FIT):
            # A side seen in under twice the tail's share of the ring is fitted (the bursts of a
            # mostly-zero series are such a side) but never claimed narrower than the default tail.
            return _DEFAULT_FIT
        return fit

    def _over(self, fit: tuple[float, float, float, float]) -> float:
        """Return the critical value of a fitted tail ``(u, log_pu, beta, xi)`` (in x·side units)."""
        u, log_pu, beta, xi = fit
        room = max(0.0, log_pu - self.log_p_thr)
        return u + (beta * room if xi == 0.0 else beta / xi * math.expm1(xi * room))


class TailCalibrator:
    """Maps residuals to calibrated tail probabilities, bands and verdicts (see the module docstring)."""

    __slots__ = (
        "direction",
        "log_p_thr",
        "pend_head",
        "pend_n",
        "pending",
        "point",
        "recent",
        "run",
        "streak",
        "sustained",
    )

    def __init__(self, sensitivity: float, direction: Direction, sustained: bool = False) -> None:
        self.direction: Direction = direction
        # Opt-in: the run's mean alone is evidence (a modest lasting shift pages although no single
        # point is beyond the run's critical value); by default the point must be beyond it too.
        self.sustained = sustained
        # Two statistics share the promised false-flag rate (Bonferroni).
        self.log_p_thr = math.log(max(normal_sf(sensitivity), 1e-300) / 2.0)
        self.point = EmpiricalTail(self.log_p_thr)
        # A mean of RUN: its scale is smaller. With ``sustained`` the run alone pages, and its tail
        # may be lighter than an exponential (a mean of 8 clipped residuals is close to normal).
        self.run = EmpiricalTail(
            self.log_p_thr, MIN_EXCESS / 2.0, SUSTAINED_MIN_SHAPE if sustained else MIN_SHAPE
        )
        self.recent: list[float] = []  # the last RUN - 1 clipped residuals (admitted or not)
        # Residuals waiting to be admitted: a circular buffer of (z, run mean) pairs, flat, so a
        # series holds 1 kB here instead of 64 tuples of boxed floats (~7 kB).
        self.pending = array("d", bytes(16 * DELAY))
        self.pend_head = 0  # index of the oldest pair
        self.pend_n = 0
        self.streak = 0  # anomalous points in a row

    def verdict(self, ts: float, value: float, expected: float, sigma: float) -> Verdict:
        """Return the calibrated verdict of ``value`` against ``expected`` with spread ``sigma``.

        The point is anomalous when its residual z is in a tail of the recent residuals with a
        probability below the threshold, or when the mean of the last ``RUN`` clipped residuals
        is, and this point lies beyond that same critical value too. The band is where that
        happens for this point given the previous residuals; NaN on an unwatched side.
        """
        lower, upper, score, anomalous, surprise = self.judge(value, expected, sigma)
        return Verdict(ts, value, expected, lower, upper, score, anomalous, True, "", surprise)

    def judge(self, value: float, expected: float, sigma: float) -> tuple[float, float, float, bool, float]:
        """Return ``verdict``'s ``(lower, upper, score, anomalous, surprise)`` without building it.

        For a kind that reports in another unit than it judges in (``seasonal`` on a log scale):
        it builds its one verdict from these, instead of a second one from the first.
        """
        z = (value - expected) / sigma
        recent = self.recent
        have_run = len(recent) == RUN - 1
        full = have_run and len(self.run.ring) >= RUN_MIN_RING
        direction = self.direction
        point, run = self.point, self.run
        if point._stale >= REFRESH:
            point._refresh()
        up, down = point._crit[1], point._crit[-1]
        prev = sum(recent)
        if full:  # the run's mean beyond its critical value, and this point beyond it too
            if run._stale >= REFRESH:
                run._refresh()
            c = run._crit[1]
            need = RUN * c - prev
            if self.sustained:  # the mean alone decides; a point clipped at -CLIP still moves it
                if need < CLIP:
                    up = min(up, need if need > -CLIP else -math.inf)
                c = run._crit[-1]
                need = RUN * c - prev
                if need > -CLIP:
                    down = max(down, need if need < CLIP else math.inf)
            else:
                if need < CLIP:
                    up = min(up, max(c, need))
                c = run._crit[-1]
                need = RUN * c - prev
                if need > -CLIP:
                    down = max(down, min(c, need))
        upper = expected + up * sigma if direction != "down" else math.nan
        lower = expected + down * sigma if direction != "up" else math.nan
        anomalous = value > upper or value < lower  # comparisons with NaN are False
        clipped = CLIP if z > CLIP else (-CLIP if z < -CLIP else z)
        mean = (prev + clipped) / RUN if have_run else math.nan
        lp = 0.0
        if self.sustained:  # each statistic on its own side: a run may page through a point below 0
            if direction != "down":
                lp = point.log_p(z, 1) if z > 0.0 else 0.0
                if full and mean > 0.0:
                    lp = min(lp, run.log_p(mean, 1))
            if direction != "up":
                if z < 0.0:
                    lp = min(lp, point.log_p(z, -1))
                if full and mean < 0.0:
                    lp = min(lp, run.log_p(mean, -1))
        elif z > 0.0 and direction != "down":
            lp = point.log_p(z, 1)
            if full and mean > 0.0:
                lp = min(lp, run.log_p(min(mean, z), 1))
        elif z < 0.0 and direction != "up":
            lp = point.log_p(z, -1)
            if full and mean < 0.0:
                lp = min(lp, run.log_p(max(mean, z), -1))
        lp = min(0.0, lp + _LN2)  # two statistics: Bonferroni
        surprise = -lp / _LN10
        score = max(0.0, 1.0 - 2.0 * math.exp(lp))
        if math.isfinite(z):
            self._admit(z, mean, anomalous)
            recent.append(clipped)
            if len(recent) >= RUN:
                del recent[0]
        return lower, upper, score, anomalous, surprise

    def _admit(self, z: float, median: float, anomalous: bool) -> None:
        """Queue a scored residual; admit the one that has waited ``DELAY`` points.

        An anomalous episode longer than ``BURST_POINTS`` is an incident: it and the ``DELAY``
        points before it (its ramp, which did not cross the band yet) never enter, so an incident
        cannot widen its own band; a short burst and its neighbours enter once they have waited.
        """
        self.streak = self.streak + 1 if anomalous else 0
        if self.streak > BURST_POINTS:
            self.pend_n = 0
            return
        pend, head = self.pending, self.pend_head
        if self.pend_n == DELAY:  # the oldest has waited long enough: admit it, put the new one there
            self._push(pend[2 * head], pend[2 * head + 1])
            pend[2 * head], pend[2 * head + 1] = z, median
            self.pend_head = head + 1 if head + 1 < DELAY else 0
        else:
            tail = (head + self.pend_n) % DELAY
            pend[2 * tail], pend[2 * tail + 1] = z, median
            self.pend_n += 1

    def _push(self, z: float, mean: float) -> None:
        self.point.push(z)
        if mean == mean:
            self.run.push(mean)
