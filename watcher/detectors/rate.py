"""The ``rate`` detector kind: proportions judged on successes out of trials (beta-binomial).

This module owns the decayed baseline rate, its over-dispersion and the exact critical values of
the beta-binomial test. It does not own the tail helpers (``stats``) nor the spec
(``rules.schema.RateDetector``).

A point is ``value`` = proportion (refusals / calls, thumbs-down / feedback, …) and ``count`` = its
trials. Without a count a point counts as one trial, so it can never be anomalous on its own.

* **baseline**: exponentially decayed successes K and trials N (``halflife`` of data time) give
  p0 = (K + ½) / (N + 1); the over-dispersion ρ (how much more than binomial the rate wanders
  between points: traffic mix, tenants) is a decayed method-of-moments estimate, floored at 1e-4.
* **test**: under Beta-Binomial(n, p0, ρ) the one-sided tail probability of the observed count is
  the p-value; the point is anomalous when p < Φ(−sensitivity) (sensitivity 4 → p < 3.2e-5), the
  rate moved by at least ``min_delta`` and the point has at least ``min_count`` trials. With the
  defaults 2 refusals of 4 calls against a 2 % baseline never fires (p ≈ 2e-3 and 4 < 10 trials),
  while 15 % of 2,000 calls fires (p ≈ 0). Tails are exact for n ≤ 400 trials and use the
  beta-binomial normal approximation above that (with a continuity correction).
* **band**: ``upper``/``lower`` are the exact critical proportions (``(k* ∓ ½)/n``), widened by
  ``min_delta``, so "anomalous" and "outside the band" are the same thing; NaN when no count could
  be significant.
* **score**: 1 − 2p (the two-sided normal mass of the equivalent z, as for the other kinds), 0 when
  the point has fewer than ``min_count`` trials.
* **robustness**: an anomalous point enters the baseline clipped to the band and is left out of
  the over-dispersion estimate, so an incident moves p0 only slowly, cannot widen its own band
  (its raw rate would make ρ explain it away within the hour), and a lasting change is absorbed
  over about one half-life.
* **sustained** (opt-in, ``sustained: true``): besides each point on its own, the last ``RUN``
  points are pooled (their successes and trials summed) and tested the same way, with the
  over-dispersion of ``RUN`` independent points (the normal approximation with the beta-binomial
  variance of each point, so an overdispersed rate does not add up to false evidence). The two tests
  share the false-flag budget (Bonferroni: each at half of it). A point is anomalous when it fails
  its own test or when the pooled run fails its test, moved by at least ``min_delta``, holds at
  least ``min_count`` trials and this point's successes push it to the watched side: a rise from 3 %
  to 15 % on 6 calls a minute is never significant in one minute (about one refusal) but is within
  ~15 minutes of pooled calls. The band is then where this point's proportion would change the
  verdict given the points before it, so it can lie below the baseline (a run already past its
  critical count flags the point whatever it is; it is still on the watched side of p0 to count).
* **warm-up**: not ready until the decayed baseline holds ``min_trials`` trials.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from datetime import timedelta
from typing import Any

import numpy as np

from ..core import Verdict
from ..errors import DetectorError
from .base import Detector, register
from .stats import Direction, log_normal_sf, normal_sf

EXACT_MAX_TRIALS = 400
RHO_MIN = 1e-4
RHO_MAX = 0.3
_LN2 = math.log(2.0)
RUN = 16
"""Points pooled by the ``sustained`` run test (16 one-minute points, 16 five-minute windows)."""


_TERMS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
"""Per trial count n ≤ ``EXACT_MAX_TRIALS``: j = 0..n-1, log(n-j) - log(j+1) and n-j-1 (shared by all)."""


def _terms(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the parts of the pmf's successive log-ratios that depend on ``n`` only (cached up to 400)."""
    got = _TERMS.get(n)
    if got is None:
        j = np.arange(n, dtype=np.float64)
        got = (j, np.log(n - j) - np.log(j + 1.0), n - j - 1.0)
        if n <= EXACT_MAX_TRIALS:
            _TERMS[n] = got
    return got


def beta_binomial_pmf(n: int, p: float, rho: float) -> np.ndarray:
    """Return the Beta-Binomial(n, mean p, intra-class correlation rho) probabilities of 0..n."""
    conc = 1.0 / rho - 1.0
    a, b = max(p * conc, 1e-9), max((1.0 - p) * conc, 1e-9)
    lp0 = math.lgamma(n + b) + math.lgamma(a + b) - math.lgamma(n + a + b) - math.lgamma(b)
    j, binom, rest = _terms(n)
    ratios = binom + np.log(j + a) - np.log(rest + b)
    logpmf = np.empty(n + 1)
    logpmf[0] = lp0
    np.cumsum(ratios, out=logpmf[1:])
    logpmf[1:] += lp0
    return np.exp(logpmf)


def critical_counts(
    n: int, p: float, rho: float, alpha: float
) -> tuple[float, float, tuple[np.ndarray, np.ndarray] | None]:
    """Return (k_low, k_high, tails): the counts beyond which a tail has probability < ``alpha``.

    ``k_high`` is the smallest count with P(K ≥ k) < alpha (inf if none), ``k_low`` the largest with
    P(K ≤ k) < alpha (-inf if none). ``tails`` = (P(K ≤ k), P(K ≥ k)) for k = 0..n when the tails
    are exact (n ≤ ``EXACT_MAX_TRIALS``), None when approximated.
    """
    if n <= EXACT_MAX_TRIALS:
        pmf = beta_binomial_pmf(n, p, rho)
        lower = np.cumsum(pmf)
        from_top = np.cumsum(pmf[::-1])  # P(K ≥ n - i) at i
        # Both are running sums of non-negative terms, so non-decreasing: binary searches find the
        # edges (the same ones a scan would).
        lo = int(np.searchsorted(lower, alpha, side="left")) - 1
        hi = n + 1 - int(np.searchsorted(from_top, alpha, side="left"))
        return (
            float(lo) if lo >= 0 else -math.inf,
            float(hi) if hi <= n else math.inf,
            (lower, from_top[::-1]),
        )
    sd = math.sqrt(n * p * (1.0 - p) * (1.0 + (n - 1) * rho))
    z = _z_of(alpha)
    return n * p - z * sd - 0.5, n * p + z * sd + 0.5, None


def _z_of(alpha: float) -> float:
    """Return z with normal_sf(z) = alpha, by bisection (no scipy import)."""
    lo, hi = 0.0, 40.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if normal_sf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


class RateBaseline(Detector):
    """Scores proportions with trial counts against a decayed beta-binomial baseline."""

    kind = "rate"

    def __init__(
        self,
        halflife: timedelta = timedelta(days=1),
        sensitivity: float = 4.0,
        direction: Direction = "up",
        min_count: float = 10.0,
        min_delta: float = 0.01,
        min_trials: float = 200.0,
        sustained: bool = False,
    ) -> None:
        super().__init__()
        if not sensitivity > 0 or not math.isfinite(sensitivity):
            raise DetectorError(f"rate `sensitivity` must be a positive number, got {sensitivity!r}")
        if direction not in ("up", "down", "both"):
            raise DetectorError(f"rate `direction` must be up, down or both, got {direction!r}")
        if halflife.total_seconds() <= 0 or not min_count >= 1 or not min_trials >= 1:
            raise DetectorError("rate needs a positive `halflife` and `min_count`, `min_trials` ≥ 1")
        if not 0 <= min_delta <= 1:
            raise DetectorError(f"rate `min_delta` must be within [0, 1], got {min_delta!r}")
        self.halflife_s = halflife.total_seconds()
        self.sensitivity = float(sensitivity)
        self.alpha = normal_sf(self.sensitivity)
        self.direction: Direction = direction
        self.min_count = float(min_count)
        self.min_delta = float(min_delta)
        self.min_trials = float(min_trials)
        self.sustained = bool(sustained)
        if self.sustained:
            self.alpha /= 2.0  # the point test and the run test share the budget
        self._run: deque[tuple[float, float]] = deque(maxlen=RUN - 1)
        """(successes, trials) of the points before this one, for the ``sustained`` run test."""
        self.k = 0.0
        self.n = 0.0
        self.rho = 1e-3
        self._rho_w = 0.0
        self._last = math.nan

    @property
    def baseline(self) -> float:
        """Return the current baseline proportion p0."""
        return (self.k + 0.5) / (self.n + 1.0)

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        trials = 1.0 if count is None or not math.isfinite(count) or count < 1 else float(count)
        decay = 1.0 if math.isnan(self._last) else math.exp(-(ts - self._last) * _LN2 / self.halflife_s)
        self._last = ts
        self.k *= decay
        self.n *= decay
        self._rho_w *= decay
        p_hat = min(max(value, 0.0), 1.0)
        if self.n < self.min_trials:
            reason = f"warming up: {self.n:.0f}/{self.min_trials:.0f} baseline trials"
            self._learn(p_hat, trials, p_hat)
            return Verdict(ts=ts, value=value, ready=False, reason=reason)
        verdict = self._score(ts, value, p_hat, round(trials))
        if self.sustained:
            verdict = self._score_run(verdict, p_hat, round(trials))
            self._run.append((math.floor(p_hat * round(trials) + 0.5), float(round(trials))))
        if verdict.anomalous:
            # clipped to the band, never past the baseline (a run-flagged band can lie beyond p0)
            p0 = self.baseline
            kept = min(max(p_hat, min(_nan_or(verdict.lower, 0.0), p0)), max(_nan_or(verdict.upper, 1.0), p0))
            self._learn(kept, trials, None)
        else:
            self._learn(p_hat, trials, p_hat)
        return verdict

    def _score(self, ts: float, value: float, p_hat: float, n: int) -> Verdict:
        """Build the verdict of one proportion of ``n`` trials against the baseline."""
        p0 = self.baseline
        if n < self.min_count:
            return Verdict(ts=ts, value=value, expected=p0)
        k_low, k_high, tails = critical_counts(n, p0, self.rho, self.alpha)
        upper = lower = math.nan
        if self.direction != "down" and math.isfinite(k_high):
            upper = max((k_high - 0.5) / n, p0 + self.min_delta)
        if self.direction != "up" and math.isfinite(k_low):
            lower = min((k_low + 0.5) / n, p0 - self.min_delta)
        k_obs = math.floor(p_hat * n + 0.5)
        p_up = p_down = 0.5
        sd = math.sqrt(n * p0 * (1.0 - p0) * (1.0 + (n - 1) * self.rho))
        z_up, z_down = (k_obs - 0.5 - n * p0) / sd, (n * p0 - k_obs - 0.5) / sd
        if tails is not None:
            p_up, p_down = float(tails[1][k_obs]), float(tails[0][k_obs])
        else:
            p_up, p_down = normal_sf(z_up), normal_sf(z_down)
        watch_up = self.direction == "up" or (self.direction == "both" and p_up <= p_down)
        tail, z = (p_up, z_up) if watch_up else (p_down, z_down)
        score = min(1.0, max(0.0, 1.0 - 2.0 * tail))
        surprise = _surprise(tail, z)
        anomalous = value > upper or value < lower
        if anomalous and score <= 0.0:
            score = 1.0
        return Verdict(
            ts=ts,
            value=value,
            expected=p0,
            lower=lower,
            upper=upper,
            score=score,
            anomalous=anomalous,
            surprise=max(0.0, surprise),
        )

    def _score_run(self, point: Verdict, p_hat: float, n: int) -> Verdict:
        """Return ``point``, or its run verdict when the pooled run of the last ``RUN`` points flags.

        Under the baseline each point is an independent Beta-Binomial(n_i, p0, rho): the run's
        successes K (this point's included) have mean N·p0 and variance Σ v_i, v_i = n_i·p0·(1−p0)·
        (1 + (n_i − 1)·rho). Each point's successes enter clipped to n_i·p0 ± 3·√v_i, so one extreme
        point cannot carry the run (it is judged by the point test, and a one-minute spike is not
        a sustained one). The band is this point's proportion at which the run's z would cross the
        critical value, when that is nearer than the point test's own edge.
        """
        if not self._run or n < 1:
            return point
        p0 = self.baseline
        n_all = float(n) + sum(t for _, t in self._run)
        if n_all < self.min_count:
            return point
        up = self.direction == "up" or (
            self.direction == "both" and p_hat * n + sum(k for k, _ in self._run) >= n_all * p0
        )
        sign = 1.0 if up else -1.0
        var = 0.0
        excess = 0.0  # Σ of the clipped (k_i − n_i·p0) on the watched side, this point excluded
        for k_i, t_i in self._run:
            v = t_i * p0 * (1.0 - p0) * (1.0 + (t_i - 1.0) * self.rho)
            var += v
            excess += min(sign * (k_i - t_i * p0), 3.0 * math.sqrt(v))
        v_pt = n * p0 * (1.0 - p0) * (1.0 + (n - 1.0) * self.rho)
        var += v_pt
        sd = math.sqrt(max(var, 1e-12))
        k_obs = math.floor(p_hat * n + 0.5)
        mine = min(sign * (k_obs - n * p0), 3.0 * math.sqrt(v_pt))
        z = (excess + mine - 0.5) / sd
        z_crit = _z_of(self.alpha)
        # this point's proportion at which the run reaches z_crit, never inside the baseline (a point
        # on the near side of p0 is never flagged by the run: that is how a flag ends with the
        # incident); NaN when this point cannot bring the run there (past its clip)
        need = z_crit * sd + 0.5 - excess
        reach = need <= 3.0 * math.sqrt(v_pt)
        run_edge = (max if up else min)(p0 + sign * need / n, p0) if reach else math.nan
        moved = (excess + mine) / n_all >= self.min_delta
        upper, lower = point.upper, point.lower
        flagged = z > z_crit and moved and sign * (p_hat - p0) > 0
        if up and math.isfinite(run_edge):
            upper = min(_nan_or(upper, math.inf), run_edge)
        elif not up and math.isfinite(run_edge):
            lower = max(_nan_or(lower, -math.inf), run_edge)
        if not flagged:
            # the narrower edge is the band only where it still holds this point
            value = point.value
            inside = (not up and value >= lower) or (up and value <= upper)
            return replace(point, upper=upper, lower=lower) if inside else point
        if up and upper >= point.value:
            upper = math.nextafter(point.value, -math.inf)
        elif not up and lower <= point.value:
            lower = math.nextafter(point.value, math.inf)
        tail = normal_sf(z)
        surprise = _surprise(tail, z)
        return replace(
            point,
            upper=upper,
            lower=lower,
            score=max(point.score, min(1.0, max(0.0, 1.0 - 2.0 * tail))),
            anomalous=True,
            surprise=max(point.surprise, surprise, 0.0),
        )

    def _learn(self, p: float, trials: float, p_hat: float | None) -> None:
        """Fold a point into the decayed counts and, unless ``p_hat`` is None, the over-dispersion."""
        if p_hat is not None and self.n >= 1.0 and trials > 1.0:
            p0 = min(max(self.baseline, 1e-6), 1.0 - 1e-6)
            e = (p_hat - p0) ** 2 * trials / (p0 * (1.0 - p0))
            obs = min(max((e - 1.0) / (trials - 1.0), -0.05), 0.2)
            self._rho_w += 1.0
            self.rho += (obs - self.rho) / max(self._rho_w, 1.0)
            self.rho = min(max(self.rho, RHO_MIN), RHO_MAX)
        self.k += p * trials
        self.n += trials


def _surprise(tail: float, z: float) -> float:
    """Return -log10 of ``tail``; past float range the normal tail of ``z`` carries on (never saturates)."""
    return -math.log10(tail) if tail > 1e-300 else -log_normal_sf(z) / math.log(10.0)


def _nan_or(x: float, default: float) -> float:
    """Return ``x`` unless it is NaN, else ``default``."""
    return default if math.isnan(x) else x


def build_rate(spec: Any) -> Detector:
    """Build a rate detector from a ``RateDetector`` spec."""
    return RateBaseline(
        halflife=spec.halflife,
        sensitivity=spec.sensitivity,
        direction=spec.direction,
        min_count=spec.min_count,
        min_delta=spec.min_delta,
        min_trials=spec.min_trials,
        sustained=spec.sustained,
    )


register("rate")(build_rate)
