"""Contribution by dimension: which label values drove an aggregate away from its expected value.

This module owns the analysis behind an alert's ``explanation`` annotation ("refusal rate +9.1 pp:
82 % from prompt_version=v42 on model=gpt-4o"). It compares the rows behind the alert's current
window with the rows of a reference period before the episode started, decomposes the change of the
aggregate over the values of each dimension (tenant, model, feature, prompt_version, user_id,
operation), and keeps the top three. It is pure: the rows come from ``contribution_sql`` (SQL
rules) or ``contribution_prom`` (PromQL rules). It does not own when the analysis runs (``why`` runs
it only when an alert becomes pending or firing, never for every series every tick), nor the rows'
aggregation into series (``sources.sql``).

Decompositions (each sums exactly to the change of the aggregate between the two periods):

* ``sum``/``count`` (spend, tokens, calls) are additive: a segment contributes its own change, the
  reference rescaled to the current window's length;
* ``ratio``/``mean`` (refusal rate, mean score) are not: a segment's part is split into a *rate
  effect* ``w1·(r1 − r0)`` (its own rate moved) and a *mix effect* ``(w1 − w0)·(r0 − R0)`` (traffic
  moved towards a segment whose rate differs from the whole), with ``w`` the segment's share of the
  rows, ``r`` its rate and ``R0`` the reference aggregate; a segment absent from the reference
  takes ``r0 = R0`` (all its effect is rate);
* ``quantile``/``min``/``max`` (p95 TTFT) are turned into a proportion first: the share of rows
  beyond the reference aggregate (a p95 rises when more rows exceed the old p95), which is then
  decomposed as a ratio.

Which values may be named: only those whose part stands out of the noise. Each value of each
dimension is tested against "it moved like the rest" on the rows' own variance — sums: its
growth against the other values' growth (a sum's variance is the sum of its rows' squares;
Welch–Satterthwaite degrees of freedom, Student's t); rates and means: the difference in
differences of its mean against the other rows' (Welch on shrunk variances; for 0/1 rows binomial,
bounded by the exact binomial tail) and, separately, its traffic mix — two-sided, and the
family-wise error over every value of every dimension held at 5 % by weighted Holm–Bonferroni
(each dimension an equal share, so 150 user IDs do not dilute four models). When none passes,
the explanation says that no single tenant/model/… explains it.

Ranking among those: a value's share of the change beyond its even share (``share − baseline``:
its row share of the rate effect for rates and means, its share of the reference sum for sums),
so a change spread evenly over every value names none, and the narrowest segment that explains as
much wins over the broad one that merely contains it; a value needs 15 points of excess, or half
of the even share of the other values (a rollout on 90 % of the rows that carries all of the
change), and 5 % of the change, to be listed; a value whose part lies mostly (≥ 80 %) where a
higher-ranked value holds too adds nothing and is dropped, and the first is qualified with the
value of another dimension that holds ≥ 80 % of its part ("on model=gpt-4o"; the narrowest such
value; when that value is narrower than the first, holds as much on its own and passes its own
test, it leads). Rates and means need 5 rows in the window to be tested, sums of calls 5 rows in
the two periods. A dimension with a single value in both periods says nothing and is skipped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core import FloatArray

DIMENSIONS: tuple[str, ...] = ("tenant", "model", "feature", "prompt_version", "user_id", "operation")
"""The dimensions analysed, in the order ties are broken."""
TOP = 3
MIN_ROWS = 5
"""A value of a rate or mean needs this many rows in the current window to be listed."""
ALPHA = 0.05
"""The family-wise error rate over every value of every dimension (Holm–Bonferroni): on data where
no value drove the change, a value is named at most this often."""
RATE_WEIGHT = 0.8
"""The share of a value's error given to the test of its rate (the rest to its traffic mix)."""
PRIOR_ROWS = 5.0
"""Pseudo-rows at the period's variance added to each segment's own (rates and means)."""
MIN_SHARE = 0.05
"""A value explaining less than this share of the change is not listed."""
MIN_EXCESS = 0.15
"""Nor one whose share exceeds its even share (its traffic, its usual spend) by less than this …"""
MIN_RELATIVE_EXCESS = 0.5
"""… and by less than this fraction of what the other values would carry (``1 − even share``)."""
QUALIFIER_SHARE = 0.8
"""A second dimension's value qualifies the first item when it holds this much of its contribution."""
SAME_ROWS = 0.8
"""A value whose part lies this much where a higher-ranked value holds too adds nothing: not listed."""
REFERENCE_MIN = timedelta(hours=1)
REFERENCE_MAX = timedelta(days=1)
REFERENCE_WINDOWS = 6
REFERENCE_GAP = 2
"""The reference ends this many windows before the episode's start: a detector flags a change once
it fills part of a window, so the windows just before may hold its onset already."""


@dataclass(frozen=True, slots=True)
class Rows:
    """The rows behind one series in two periods, column-wise.

    ``x`` is what the aggregate is computed over (the value; 1 per row for ``count``; the match
    flag for ``ratio``); ``current`` tells the current window's rows from the reference's.
    """

    x: FloatArray
    current: npt.NDArray[np.bool_]
    dims: Mapping[str, Sequence[str]]
    var: FloatArray | None = None
    """Each row's own variance when the rows are aggregates themselves (PromQL series: the spread of
    a point; of a reference mean); None for rows that are calls or scores (their square, as a
    compound Poisson sum's)."""
    var_df: float = math.inf
    """The degrees of freedom of ``var`` (the points it was estimated from, less one)."""


@dataclass(frozen=True, slots=True)
class Contribution:
    """One label value's part of the change."""

    labels: tuple[tuple[str, str], ...]
    """The value (``(("prompt_version", "v42"),)``), then its qualifier if any."""
    share: float
    """Its fraction of the change (0.82 = 82 %); may exceed 1 when other values offset it."""
    delta: float
    """Its part of the change, in the aggregate's units (rescaled to value − expected when known)."""
    rate: float | None = None
    """The rate effect part of ``delta`` (ratio metrics), else None."""
    mix: float | None = None
    """The mix effect part of ``delta`` (ratio metrics), else None."""
    weight: float = 0.0
    """Its share of the current window's rows."""

    def name(self) -> str:
        """Return ``prompt_version=v42 on model=gpt-4o``."""
        head, *rest = (f"{k}={v}" for k, v in self.labels)
        return head + "".join(f" on {q}" for q in rest)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "labels": dict(self.labels),
            "share": _round(self.share),
            "delta": _round(self.delta),
            "rate_effect": _round(self.rate),
            "mix_effect": _round(self.mix),
            "weight": _round(self.weight),
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """The top contributions to one alert's change, and what was compared."""

    metric: str
    change: float
    method: str
    """``additive``, ``mix-rate`` or ``exceedance``."""
    top: tuple[Contribution, ...] = field(default_factory=tuple)
    percent: bool = False
    """The aggregate is a proportion: the change is shown in percentage points."""
    dimensions: tuple[str, ...] = ()
    """The dimensions analysed (those with more than one value), named when no value stands out."""

    def text(self) -> str:
        """Return ``refusal rate +9.1 pp: 82 % from prompt_version=v42 on model=gpt-4o; …``."""
        head = f"{self.metric} {_signed(self.change, self.percent)}"
        if not self.top:
            return f"{head}: no single {'/'.join(self.dimensions) or 'label value'} explains it"
        parts = []
        for c in self.top:
            part = f"{_pct(c.share)} from {c.name()}"
            if c.mix is not None and c.rate is not None and abs(c.mix) > abs(c.rate):
                part += " (traffic mix)"
            parts.append(part)
        return f"{head}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the backtest's ``explanation``)."""
        return {
            "text": self.text(),
            "metric": self.metric,
            "change": _round(self.change),
            "method": self.method,
            "contributions": [c.to_dict() for c in self.top],
        }


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


def _signed(x: float, percent: bool) -> str:
    if percent:
        return f"{x * 100:+.1f} pp"
    if x != 0 and abs(x) < 0.01:
        return f"{x:+.3g}"
    return f"{x:+,.2f}" if abs(x) < 1e5 else f"{x:+,.0f}"


# --- the decompositions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Segments:
    """Per-segment parts of the change for one keying of the rows."""

    keys: list[tuple[str, ...]]
    delta: FloatArray
    rate: FloatArray | None
    mix: FloatArray | None
    weight: FloatArray
    """The segment's share of the current window's rows."""
    baseline: FloatArray
    """The share of the change the segment would carry if the change were spread evenly: its share of
    the reference sum (additive), its row share of the rate effect (rates and means)."""
    p: FloatArray
    """The p-value of "the segment moved like the rest" (two-sided; 1 against the change's direction;
    NaN when not tested: too few rows)."""


def _p(effect: FloatArray, var: FloatArray, sign: float, df: FloatArray) -> FloatArray:
    """Return the two-sided p-value of Student's t ``effect / √var`` on ``df`` degrees of freedom.

    Student's t, not the normal: a small segment's variance is itself estimated from its few rows
    (Welch–Satterthwaite ``df``), and the normal tail would name five-row noise. Two-sided: the
    direction is the change's, which the rows themselves chose (on noise the value that moved most
    also set the aggregate's sign), so a one-sided test would err twice as often. 1 against the
    change's direction ``sign``; 0 for an effect without variance.
    """
    from scipy.special import stdtr  # lazily: ``watcher --help`` does not pay for scipy

    with np.errstate(invalid="ignore", divide="ignore"):
        t = sign * effect / np.sqrt(var)
    t[effect == 0] = 0.0
    p = np.ones_like(t)
    ok = np.isfinite(t) & (t > 0)
    p[ok] = np.minimum(2.0 * stdtr(np.maximum(df[ok], 1.0), -t[ok]), 1.0)
    p[np.isposinf(t)] = 0.0
    return p


def _sums(codes: npt.NDArray[np.int64], weights: FloatArray, k: int) -> FloatArray:
    return np.asarray(np.bincount(codes, weights=weights, minlength=k), dtype=np.float64)


def _total(parts: Sequence[tuple[FloatArray, FloatArray]]) -> FloatArray:
    return np.asarray(np.sum([v for v, _ in parts], axis=0), dtype=np.float64)


def _welch_df(parts: Sequence[tuple[FloatArray, FloatArray]]) -> FloatArray:
    """Return the Welch–Satterthwaite degrees of freedom of a sum of variances ``(variance, df)``."""
    total = _total(parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = sum(np.where(v > 0, v * v / np.maximum(d, 1.0), 0.0) for v, d in parts)
        df = np.where(denom > 0, total * total / denom, 1.0)
    return np.asarray(df, dtype=np.float64)


def _segments(
    rows: Rows,
    codes: npt.NDArray[np.int64],
    keys: list[tuple[str, ...]],
    kind: str,
    scale: float,
    *,
    binary: bool = False,
    test: bool = True,
) -> tuple[_Segments, float]:
    """Return the per-segment parts of the change, their tests and the total change for one keying.

    ``kind`` is ``additive`` or ``mix-rate``; ``scale`` rescales the reference to the current
    window's length (additive only); ``binary``: the rows are 0/1 (rates: binomial tests);
    ``test``: compute the p-values (NaN otherwise).
    """
    k = len(keys)
    cur = rows.current
    c1, c0 = codes[cur], codes[~cur]
    x1, x0 = rows.x[cur], rows.x[~cur]
    n1 = np.bincount(c1, minlength=k).astype(np.float64)
    n0 = np.bincount(c0, minlength=k).astype(np.float64)
    s1, s0 = _sums(c1, x1, k), _sums(c0, x0, k)
    if rows.var is None:
        q1, q0 = _sums(c1, x1 * x1, k), _sums(c0, x0 * x0, k)
    else:  # rows that are aggregates themselves (PromQL series) carry their own variance
        q1, q0 = _sums(c1, rows.var[cur], k), _sums(c0, rows.var[~cur], k)
    weight = n1 / n1.sum() if n1.sum() > 0 else np.zeros(k)
    if kind == "additive":
        delta = s1 - scale * s0
        total = float(delta.sum())
        baseline = s0 / s0.sum() if s0.sum() > 0 else weight
        sign = 1.0 if total >= 0 else -1.0
        # "it grew like the rest": its excess over the reference scaled by the others' growth; the
        # variance of a sum of rows is the sum of their squares (compound Poisson), rows that are
        # aggregates bring their own; delta method over the four sums
        if not test:
            return _Segments(keys, delta, None, None, weight, baseline, np.full(k, np.nan)), total
        r1, r0, rq1, rq0 = s1.sum() - s1, s0.sum() - s0, q1.sum() - q1, q0.sum() - q0
        with np.errstate(invalid="ignore", divide="ignore"):
            # the others' window sum over their reference sum (rescaling included); none: unchanged
            g = np.where(r0 > 0, r1 / np.where(r0 > 0, r0, 1.0), scale)
            excess = s1 - g * s0
            share0 = np.where(r0 > 0, s0 / np.where(r0 > 0, r0, 1.0), 0.0)
            parts = [
                (q1, n1 - 1),
                (g**2 * q0, n0 - 1),
                (share0**2 * rq1, n1.sum() - n1 - 1),
                (share0**2 * g**2 * rq0, n0.sum() - n0 - 1),
            ]
        if rows.var is None:
            df = _welch_df(parts)
            p = _p(excess, _total(parts), sign, df)
            p[n1 + n0 < MIN_ROWS] = np.nan  # not tested: a handful of calls
        else:  # rows that are series: each is many points, its variance on var_df freedoms
            p = _p(excess, _total(parts), sign, np.full(k, rows.var_df))
        return _Segments(keys, delta, None, None, weight, baseline, p), total
    big_n1, big_n0 = n1.sum(), n0.sum()
    if big_n1 == 0 or big_n0 == 0:
        return _Segments(keys, np.zeros(k), None, None, weight, weight, np.full(k, np.nan)), 0.0
    r_ref = s0.sum() / big_n0
    w1, w0 = n1 / big_n1, n0 / big_n0
    with np.errstate(invalid="ignore", divide="ignore"):
        r1 = np.where(n1 > 0, s1 / np.maximum(n1, 1), 0.0)
        r0 = np.where(n0 > 0, s0 / np.maximum(n0, 1), r_ref)
    rate = w1 * (r1 - r0)
    mix = (w1 - w0) * (r0 - r_ref)
    total = s1.sum() / big_n1 - r_ref
    sign = 1.0 if total >= 0 else -1.0
    p = _rate_test(n1, n0, s1, s0, q1, q0, mix, sign, binary) if test else np.full(k, np.nan)
    p[n1 < MIN_ROWS] = np.nan  # not tested: a handful of rows says nothing about a rate
    # spread evenly, every segment's rate moves alike: each carries its row share of the rate effect
    baseline = weight * (float(rate.sum()) / total) if total != 0 else weight
    return _Segments(keys, rate + mix, rate, mix, weight, baseline, p), float(total)


def _rate_test(
    n1: FloatArray,
    n0: FloatArray,
    s1: FloatArray,
    s0: FloatArray,
    q1: FloatArray,
    q0: FloatArray,
    mix: FloatArray,
    sign: float,
    binary: bool,
) -> FloatArray:
    """Return the p-values of "the segment's rate moved like the rest's, and its traffic share held".

    Two tests, Bonferroni-combined with weights (``RATE_WEIGHT`` of the error to the rate part: a
    value is a driver when its rate moved, more rarely when traffic moved to it alone): the *rate
    part* tests the difference in differences (the segment's change of mean against the other
    rows' change); the *mix part* ``(w1 − w0)·(r0 − R0)`` by the delta method
    with a binomial traffic share. Each group's mean before is shrunk towards the whole's by
    ``PRIOR_ROWS`` pseudo-rows (a value with one row in the reference, or none, is compared with
    the whole). Means: Welch, on each group's own variance shrunk the same way, Student's t on the
    Welch–Satterthwaite degrees of freedom. 0/1 rows (``binary``: a refusal rate, the exceedance of
    a p95): binomial, each group's variance ``p(1 − p)`` at its rate under the null — as before,
    and now moved as the others did — not its own ``p̂(1 − p̂)``, which would make 103 refusals out
    of 103 rows certain; and never below the exact binomial tail of the window's count at that
    rate (a few expected refusals).
    """
    big_n1, big_n0 = float(n1.sum()), float(n0.sum())
    big_s1, big_s0, big_q1, big_q0 = float(s1.sum()), float(s0.sum()), float(q1.sum()), float(q0.sum())
    on1, on0, os1, os0 = big_n1 - n1, big_n0 - n0, big_s1 - s1, big_s0 - s0
    k = PRIOR_ROWS
    if binary:  # the whole's rates, Jeffreys: no refusal in the reference is not a rate of 0
        big_m1, big_m0 = (big_s1 + 0.5) / (big_n1 + 1), (big_s0 + 0.5) / (big_n0 + 1)
    else:
        big_m1, big_m0 = big_s1 / big_n1, big_s0 / big_n0
    pool1 = max(big_q1 / big_n1 - (big_s1 / big_n1) ** 2, 0.0)
    pool0 = max(big_q0 / big_n0 - (big_s0 / big_n0) ** 2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # each group's mean shrunk towards its period's by PRIOR_ROWS pseudo-rows (a segment new in
        # the window has the whole's reference as its own, as its rate effect does)
        m1 = s1 / np.maximum(n1, 1)
        m0 = (s0 + k * big_m0) / (n0 + k)
        o1 = (os1 + k * big_m1) / (on1 + k)
        o0 = (os0 + k * big_m0) / (on0 + k)
        both = (on1 > 0) & (on0 > 0)
        others = np.where(both, o1 - o0, 0.0)
        if binary:
            # binomial, at the rates under the null: each group as it was before, and now moved as
            # the others did (the segment) or as the whole did (the others) — not their own rates
            # now: 0 refusals in the other 68 rows by chance would make their rate certain, and
            # everything else a driver
            floor = 0.5 / (big_n1 + 1)
            other_now = np.clip(o0 + (big_m1 - big_m0), floor, 1 - floor)
            # the others' change as far as it stands out of its own noise (shrunk towards 0: a
            # chance dip of the others must not make the segment's count look extreme)
            noise = other_now * (1 - other_now) / (on1 + k) + o0 * (1 - o0) / (on0 + k)
            moved = np.where(both, others**3 / (others**2 + noise), 0.0)
            now = np.clip(m0 + moved, floor, 1 - floor)
            v1, v0, ov1, ov0 = now * (1 - now), m0 * (1 - m0), other_now * (1 - other_now), o0 * (1 - o0)
        else:

            def shrunk(n: FloatArray, s: FloatArray, q: FloatArray, pool: float) -> FloatArray:
                ss = np.maximum(q - np.where(n > 0, s * s / np.maximum(n, 1), 0.0), 0.0)
                return np.asarray((ss + k * pool) / (np.maximum(n - 1, 0) + k), dtype=np.float64)

            v1, v0 = shrunk(n1, s1, q1, pool1), shrunk(n0, s0, q0, pool0)
            ov1, ov0 = shrunk(on1, os1, big_q1 - q1, pool1), shrunk(on0, os0, big_q0 - q0, pool0)
        big_v0 = big_m0 * (1 - big_m0) if binary else pool0
        e1 = v1 / np.maximum(n1, 1)
        # new in the window: its "before" is the whole's reference by definition, known that well
        e0 = np.where(n0 > 0, v0 / (n0 + k), big_v0 / big_n0)
        others_e = np.where(both, ov1 / (on1 + k) + ov0 / (on0 + k), 0.0)
    w1 = n1 / big_n1
    effect = np.where(n1 > 0, w1 * ((m1 - m0) - others), 0.0)
    d0 = n0 - 1 + k
    rate_parts = [(w1**2 * e1, n1 - 1 + k), (w1**2 * e0, d0), (w1**2 * others_e, on1 + on0)]
    w = (n1 + n0) / (big_n1 + big_n0)
    var_a = w * (1 - w) * (1 / big_n1 + 1 / big_n0)
    a, b = n1 / big_n1 - n0 / big_n0, m0 - big_m0
    mix_parts = [(a * a * e0 + var_a * e0, d0), (b * b * var_a, np.full(len(n1), big_n1 + big_n0))]
    inf = np.full(len(n1), np.inf)
    p_rate = _p(effect, _total(rate_parts), sign, inf if binary else _welch_df(rate_parts))
    p_mix = _p(mix, _total(mix_parts), sign, inf if binary else _welch_df(mix_parts))
    if binary:
        # few expected refusals: the normal tail is far too thin (1 refusal in 5 rows at 3 % is
        # z = 2.6, p = 0.005; the binomial says 0.14), so the exact tail bounds it from below
        from scipy.special import bdtr, bdtrc

        with np.errstate(invalid="ignore", divide="ignore"):
            hits, rows = np.round(s1).astype(np.int64), np.round(n1).astype(np.int64)
            if sign > 0:
                tail = np.where(hits > 0, bdtrc(np.maximum(hits - 1, 0), rows, now), 1.0)
            else:
                tail = bdtr(hits, rows, now)
        exact = np.where(n1 > 0, np.minimum(2.0 * np.nan_to_num(tail, nan=1.0), 1.0), 1.0)
        p_rate = np.maximum(p_rate, exact)
    return np.minimum(np.minimum(p_rate / RATE_WEIGHT, p_mix / (1.0 - RATE_WEIGHT)), 1.0)


def _factorize(
    columns: Sequence[Sequence[str]], n: int
) -> tuple[npt.NDArray[np.int64], list[tuple[str, ...]]]:
    index: dict[tuple[str, ...], int] = {}
    codes = np.empty(n, dtype=np.int64)
    for i, key in enumerate(zip(*columns, strict=True)):
        codes[i] = index.setdefault(key, len(index))
    return codes, list(index)


def _as_proportion(rows: Rows, agg: str, quantile: float | None) -> tuple[Rows, float] | None:
    """Return the rows of a quantile/min/max as the flags "beyond the reference aggregate", and it."""
    ref = rows.x[~rows.current]
    cur = rows.x[rows.current]
    if not len(ref) or not len(cur):
        return None
    if agg == "min":
        threshold, now = float(ref.min()), float(cur.min())
    elif agg == "max":
        threshold, now = float(ref.max()), float(cur.max())
    else:
        q = 0.5 if quantile is None else quantile
        threshold, now = float(np.quantile(ref, q)), float(np.quantile(cur, q))
    flags = rows.x < threshold if now < threshold else rows.x > threshold
    return Rows(flags.astype(np.float64), rows.current, rows.dims), threshold


def explain_rows(
    rows: Rows,
    *,
    agg: str,
    metric: str,
    quantile: float | None = None,
    scale: float = 1.0,
    change: float | None = None,
    percent: bool = False,
    top: int = TOP,
) -> Explanation | None:
    """Return the top contributions to the change of ``agg`` between the two periods of ``rows``.

    ``change`` is the change to explain (the alert's value − expected); without it, the change
    between the periods. Returns None when there is nothing to compare (a period without rows), or
    when the periods moved the other way than ``change`` (the reference does not show the anomaly).
    """
    if not rows.current.any() or rows.current.all():
        return None
    method = "additive" if agg in ("sum", "count") else "mix-rate"
    if agg in ("quantile", "min", "max"):
        got = _as_proportion(rows, agg, quantile)
        if got is None:
            return None
        rows, method = got[0], "exceedance"
    kind = "additive" if method == "additive" else "mix-rate"
    binary = kind == "mix-rate" and bool(np.all((rows.x == 0) | (rows.x == 1)))
    n = len(rows.x)
    dims = [d for d in rows.dims if len(set(rows.dims[d])) > 1]
    per_dim: dict[str, tuple[npt.NDArray[np.int64], _Segments]] = {}
    total = math.nan
    for d in dims:
        codes, keys = _factorize([rows.dims[d]], n)
        segs, total = _segments(rows, codes, keys, kind, scale, binary=binary)
        per_dim[d] = (codes, segs)
    if not per_dim:
        single, _ = _factorize([[""] * n], n)
        total = _segments(rows, single, [("",)], kind, scale, test=False)[1]
    wanted = total if change is None or not math.isfinite(change) else change
    if (
        not math.isfinite(total)
        or total == 0
        or (wanted != 0 and math.copysign(1, wanted) != math.copysign(1, total))
    ):
        return None
    if method == "exceedance":
        # the proportion's change stands for the aggregate's: shares carry over, units do not
        wanted = change if change is not None and math.isfinite(change) else math.nan
    factor = wanted / total if math.isfinite(wanted) else math.nan
    distinct = _holm(per_dim)
    candidates: list[tuple[float, str, int]] = []
    for d in dims:
        _, segs = per_dim[d]
        for i in range(len(segs.keys)):
            share = float(segs.delta[i] / total)
            if share >= MIN_SHARE and (d, i) in distinct:
                even = float(segs.baseline[i])
                score = share - even
                # it moved with everything else (its size, not a cause) unless it stands out by
                # 15 points, or by half of what the other values would carry (a value of 90 % of
                # the rows that carries all of the change)
                if score < MIN_EXCESS and (even >= 1 or score / (1 - even) < MIN_RELATIVE_EXCESS):
                    continue
                candidates.append((score, d, i))
    candidates.sort(key=lambda c: (-c[0], DIMENSIONS.index(c[1]) if c[1] in DIMENSIONS else 99))
    chosen: list[Contribution] = []
    taken: list[tuple[str, str, float]] = []
    for _, d, i in candidates:
        if len(chosen) >= top:
            break
        _, segs = per_dim[d]
        value, delta = segs.keys[i][0], float(segs.delta[i])
        if any(
            _within(rows, (a_dim, a_val, a_delta), (d, value, delta), kind, scale)
            for a_dim, a_val, a_delta in taken
        ):
            continue
        labels: tuple[tuple[str, str], ...] = ((d, value),)
        if not chosen:
            qual = _qualifier(rows, dims, d, value, delta, kind, scale)
            if qual:
                (e, b), e_segs = qual[0], per_dim[qual[0][0]][1]
                j = e_segs.keys.index((b,))
                if (
                    e_segs.weight[j] < segs.weight[i]
                    and float(e_segs.delta[j]) >= QUALIFIER_SHARE * delta
                    and (e, j) in distinct  # leads only if it stands out of the noise on its own
                ):
                    # the qualifier is the narrower value and holds the part too: it leads
                    d, value, segs, i, delta = e, b, e_segs, j, float(e_segs.delta[j])
                    qual = ((labels[0]),)
            labels = ((d, value), *qual)
        chosen.append(
            Contribution(
                labels=labels,
                share=delta / total,
                delta=delta * factor,
                rate=None if segs.rate is None else float(segs.rate[i]) * factor,
                mix=None if segs.mix is None else float(segs.mix[i]) * factor,
                weight=float(segs.weight[i]),
            )
        )
        taken.append((d, value, delta))
    shown = wanted if math.isfinite(wanted) else total
    return Explanation(
        metric, shown, method, tuple(chosen), percent and method != "exceedance", dimensions=tuple(dims)
    )


def _holm(per_dim: Mapping[str, tuple[npt.NDArray[np.int64], _Segments]]) -> set[tuple[str, int]]:
    """Return the ``(dimension, segment)`` pairs whose test passes weighted Holm–Bonferroni at ``ALPHA``.

    The family is every value of every dimension tested (a value with too few rows is not tested),
    so the family-wise error over all of them stays under ``ALPHA``: 150 user IDs do not hand noise
    150 chances to be named. Each dimension carries an equal share of the error, split evenly over
    its values (Holm's weighted procedure), so the many user IDs do not dilute the test of the four
    models: a value is rejected, in the order of ``p / weight``, while ``p ≤ ALPHA · weight / (the
    weights not yet rejected)``.
    """
    tested: list[tuple[float, float, str, int]] = []
    for d, (_, segs) in per_dim.items():
        ok = np.flatnonzero(np.isfinite(segs.p))
        for i in ok.tolist():
            tested.append((float(segs.p[i]), 1.0 / len(ok), d, i))
    tested.sort(key=lambda t: t[0] / t[1])
    left = sum(w for _, w, _, _ in tested)
    passed: set[tuple[str, int]] = set()
    for p, w, d, i in tested:
        if p > ALPHA * w / left:
            break
        passed.add((d, i))
        left -= w
    return passed


def _pair(
    rows: Rows, d: str, e: str, kind: str, scale: float
) -> tuple[_Segments, dict[tuple[str, ...], int]]:
    codes, keys = _factorize([rows.dims[d], rows.dims[e]], len(rows.x))
    segs, _ = _segments(rows, codes, keys, kind, scale, test=False)
    return segs, {k: i for i, k in enumerate(keys)}


def _within(
    rows: Rows, a: tuple[str, str, float], b: tuple[str, str, float], kind: str, scale: float
) -> bool:
    """Tell whether most of ``b``'s part lies where ``a`` holds too (``b`` adds nothing beyond ``a``)."""
    (d, va, _), (e, vb, delta_b) = a, b
    if d == e or delta_b == 0:
        return False
    segs, index = _pair(rows, d, e, kind, scale)
    i = index.get((va, vb))
    return i is not None and float(segs.delta[i]) / delta_b >= SAME_ROWS


def _qualifier(
    rows: Rows, dims: Sequence[str], d: str, value: str, delta: float, kind: str, scale: float
) -> tuple[tuple[str, str], ...]:
    """Return ``((dim, value),)`` of the other dimension's value holding most of ``d=value``'s part."""
    if delta == 0:
        return ()
    best: tuple[float, float, str, str] | None = None
    for e in dims:
        if e == d:
            continue
        segs, index = _pair(rows, d, e, kind, scale)
        sizes = Counter(x for x, cur in zip(rows.dims[e], rows.current.tolist(), strict=True) if cur)
        for (a, b), i in index.items():
            if a != value:
                continue
            part = float(segs.delta[i]) / delta
            weight = sizes[b]
            # the largest part; among equal parts the narrowest value (gpt-4o rather than all of chat)
            key = (round(part, 9), -weight)
            if part >= QUALIFIER_SHARE and (best is None or key > best[:2]):
                best = (key[0], key[1], e, b)
    return () if best is None else ((best[2], best[3]),)


def reference_span(window: timedelta, lookback: timedelta) -> timedelta:
    """Return how far before the episode the reference period reaches: 6 windows, 1 h – 1 d."""
    span = max(REFERENCE_WINDOWS * window, REFERENCE_MIN)
    return max(min(span, REFERENCE_MAX, max(lookback, window)), window)


__all__ = [
    "DIMENSIONS",
    "Contribution",
    "Explanation",
    "Rows",
    "explain_rows",
    "reference_span",
]
