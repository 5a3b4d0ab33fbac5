"""Small numeric helpers shared by the detectors: robust location/scale and calibrated scores.

This module owns the statistics that make detectors comparable: the median/MAD estimate of a
series' level and spread (with floors so a flat series is not brittle), the normal tail
functions, and the two score functions that map a deviation to [0, 1]. It does not own any
detector state or any windowing; callers pass the values they have.

Import cost matters (the daemon builds thousands of detectors, ``watcher score`` is a CLI), so
this module uses ``math`` only: the normal CDF is written with ``math.erf`` rather than scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from ..core import Verdict

Direction = Literal["up", "down", "both"]

MAD_TO_SIGMA = 1.4826
"""Scale factor that makes the MAD a consistent estimate of a normal standard deviation."""

REL_SPREAD_FLOOR = 1e-3
"""Smallest robust sigma as a fraction of ``|median|``.

With the default sensitivity 4 the band of a perfectly flat series is ``median ± 0.4 %``: a 0.1 %
wiggle scores z = 1 (normal) while a 50 % jump scores z = 500 (anomalous); even at the largest
allowed sensitivity (100) the band is ± 10 %, so a 50 % jump still fires.
"""

ABS_SPREAD_FLOOR = 1e-12
"""Smallest robust sigma in the series' own unit, so a series stuck at exactly 0 has a finite z."""

_SQRT2 = math.sqrt(2.0)


def normal_cdf(x: float) -> float:
    """Return the standard normal cumulative distribution function at ``x``."""
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def normal_sf(x: float) -> float:
    """Return the standard normal survival function ``1 - Φ(x)`` at ``x``, accurate in the far tail."""
    return 0.5 * math.erfc(x / _SQRT2)


def log_normal_sf(x: float) -> float:
    """Return ``log(1 - Φ(x))``, finite far beyond where ``normal_sf`` underflows (asymptotic for x > 30)."""
    if x < 30.0:
        return math.log(max(normal_sf(x), 1e-320))
    return -0.5 * x * x - math.log(x * math.sqrt(2.0 * math.pi)) + math.log1p(-1.0 / (x * x))


def tail_score(z: float, direction: Direction = "both") -> float:
    """Map a deviation ``z`` (in robust sigmas) to a score in [0, 1] that counts only the watched side.

    The score is the two-sided normal tail mass inside ``|z|``: ``1 - 2·sf(|z|) = erf(|z|/√2)``, so
    z = 1 → 0.68, 2 → 0.95, 3 → 0.997, 4 → 0.99994. It is exactly 0 at z = 0, increases with the
    deviation, and is 0 for deviations on the side the rule does not watch (``up`` ignores z < 0,
    ``down`` ignores z > 0). NaN gives 0 and ±inf gives 1 on the watched side.
    """
    if direction == "up":
        d = z
    elif direction == "down":
        d = -z
    else:
        d = abs(z)
    if not d > 0.0:  # also catches NaN
        return 0.0
    return min(1.0, math.erf(d / _SQRT2))


def excess_score(excess: float, scale: float) -> float:
    """Map a non-negative excess over a bound to a score in [0, 1): ``1 - exp(-excess / scale)``.

    Zero (or less, or NaN) scores 0; any positive excess scores > 0 (``expm1`` keeps tiny excesses
    from rounding to 0); an excess of one ``scale`` scores 0.63, three scales 0.95.
    """
    if not excess > 0.0:
        return 0.0
    ratio = excess / scale if scale > 0.0 else math.inf
    return min(1.0, -math.expm1(-ratio))


def median_sorted(values: Sequence[float]) -> float:
    """Return the median of already sorted ``values`` (NaN when empty) in O(1)."""
    n = len(values)
    if n == 0:
        return math.nan
    m = n // 2
    if n % 2:
        return float(values[m])
    return (values[m - 1] + values[m]) / 2.0


def mad_sorted(values: Sequence[float], median: float) -> float:
    """Return the median absolute deviation of already sorted ``values`` around ``median``.

    The deviations of ``values[:m]`` read backwards and of ``values[m:]`` read forwards (m = n // 2)
    are two ascending runs, so the MAD is an order statistic of two sorted sequences: found by a
    binary search over how many of the k smallest come from the lower run, in O(log n), without
    building or sorting the deviations.
    """
    n = len(values)
    if n == 0:
        return math.nan
    m = n // 2
    k = (n - 1) // 2  # 0-based rank of the (lower) middle deviation
    # Lower run: a(i) = median - values[m - 1 - i], i < m.  Upper run: b(j) = values[m + j] - median.
    lo, hi = max(0, k + 1 - (n - m)), min(k + 1, m)
    while lo < hi:  # smallest i with a(i) >= b(k - i): the k+1 smallest are a(<i) and b(<k+1-i)
        i = (lo + hi) // 2
        if median - values[m - 1 - i] < values[m + k - i] - median:
            lo = i + 1
        else:
            hi = i
    j = k + 1 - lo
    kth = -math.inf
    if lo > 0:
        kth = median - values[m - lo]
    if j > 0:
        kth = max(kth, values[m + j - 1] - median)
    if n % 2:
        return kth
    # Even n: the next order statistic is the smaller of the next element of either run.
    nxt = math.inf
    if lo < m:
        nxt = median - values[m - 1 - lo]
    if j < n - m:
        nxt = min(nxt, values[m + j] - median)
    return (kth + nxt) / 2.0


def spread_floor(median: float, min_spread: float = 0.0) -> float:
    """Return the smallest robust sigma allowed around ``median``: the larger of the three floors."""
    return max(min_spread, REL_SPREAD_FLOOR * abs(median), ABS_SPREAD_FLOOR)


def robust_location_scale(values: Sequence[float], min_spread: float = 0.0) -> tuple[float, float]:
    """Return ``(median, sigma)`` of sorted ``values``, sigma = max(1.4826·MAD, floors).

    ``values`` must be sorted ascending and finite. Empty input gives ``(nan, nan)``.
    """
    if not values:
        return math.nan, math.nan
    med = median_sorted(values)
    sigma = MAD_TO_SIGMA * mad_sorted(values, med)
    return med, max(sigma, spread_floor(med, min_spread))


def band_verdict(
    ts: float, value: float, expected: float, sigma: float, sensitivity: float, direction: Direction
) -> Verdict:
    """Build the verdict of ``value`` against ``expected ± sensitivity·sigma`` on the watched side(s).

    The unwatched side's bound is NaN (no bound); the score is ``tail_score`` of the z-score, forced
    to 1 in the (rounding-only) case of a flagged point whose score underflowed to 0.
    """
    half = sensitivity * sigma
    upper = expected + half if direction != "down" else math.nan
    lower = expected - half if direction != "up" else math.nan
    anomalous = value > upper or value < lower  # comparisons with NaN are False
    score = tail_score((value - expected) / sigma, direction)
    if anomalous and score <= 0.0:
        score = 1.0
    return Verdict(
        ts=ts, value=value, expected=expected, lower=lower, upper=upper, score=score, anomalous=anomalous
    )
