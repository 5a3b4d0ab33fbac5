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

Ranking: a value's share of the change beyond its even share (``share − baseline``: its row share
of the rate effect for rates and means, its share of the reference sum for sums), so a change spread evenly
over every value names none ("no single value stands out"), and the narrowest segment that
explains as much wins over the broad one that merely contains it; a value needs 15 points of
excess, or half of the even share of the other values (a rollout on 90 % of the rows that carries
all of the change), to be listed; a value whose part lies mostly (≥ 80 %) where a higher-ranked value
holds too adds nothing and is dropped, and the first is qualified with the value of another
dimension that holds ≥ 80 % of its part ("on model=gpt-4o"; the narrowest such value; when that
value is narrower than the first and holds as much on its own, it leads). A value must stand two
standard errors beyond chance (rates and means: at least 5 rows). A dimension with a single value
in both periods says nothing and is skipped.
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
NOISE_Z = 2.0
"""A value is listed only when its part is this many standard errors beyond chance."""
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

    def text(self) -> str:
        """Return ``refusal rate +9.1 pp: 82 % from prompt_version=v42 on model=gpt-4o; …``."""
        head = f"{self.metric} {_signed(self.change, self.percent)}"
        if not self.top:
            return f"{head}: spread over every value, no single one stands out"
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
    noise: FloatArray
    """The standard error of each ``delta`` if nothing but chance moved the segment."""


def _segments(
    rows: Rows, codes: npt.NDArray[np.int64], keys: list[tuple[str, ...]], kind: str, scale: float
) -> tuple[_Segments, float]:
    """Return the per-segment parts of the change and the total change for one keying.

    ``kind`` is ``additive`` or ``mix-rate``; ``scale`` rescales the reference to the current
    window's length (additive only).
    """
    k = len(keys)
    cur = rows.current
    n1 = np.bincount(codes[cur], minlength=k).astype(np.float64)
    n0 = np.bincount(codes[~cur], minlength=k).astype(np.float64)
    s1 = np.bincount(codes[cur], weights=rows.x[cur], minlength=k)
    s0 = np.bincount(codes[~cur], weights=rows.x[~cur], minlength=k)
    weight = n1 / n1.sum() if n1.sum() > 0 else np.zeros(k)
    if kind == "additive":
        delta = s1 - scale * s0
        # under "the segment spends as before": compound Poisson at the reference's intensity (a
        # sum's variance is the sum of the squares), plus the error of that reference itself
        q0 = np.bincount(codes[~cur], weights=rows.x[~cur] ** 2, minlength=k)
        noise = np.sqrt(scale * q0 + scale**2 * q0)
        baseline = s0 / s0.sum() if s0.sum() > 0 else weight
        return _Segments(keys, delta, None, None, weight, baseline, noise), float(delta.sum())
    big_n1, big_n0 = n1.sum(), n0.sum()
    if big_n1 == 0 or big_n0 == 0:
        return _Segments(keys, np.zeros(k), None, None, weight, weight, np.full(k, np.inf)), 0.0
    r_ref = s0.sum() / big_n0
    w1, w0 = n1 / big_n1, n0 / big_n0
    with np.errstate(invalid="ignore", divide="ignore"):
        r1 = np.where(n1 > 0, s1 / np.maximum(n1, 1), 0.0)
        r0 = np.where(n0 > 0, s0 / np.maximum(n0, 1), r_ref)
    rate = w1 * (r1 - r0)
    mix = (w1 - w0) * (r0 - r_ref)
    total = s1.sum() / big_n1 - r_ref
    # under "nothing but chance moved the segment": its rate effect is w1 times a difference of two
    # means of rows with the pooled variance; its mix effect a difference of two shares of rows
    var = float(np.var(rows.x))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_noise = w1 * np.sqrt(var / np.maximum(n1, 1) + np.where(n0 > 0, var / np.maximum(n0, 1), 0.0))
        w = (n1 + n0) / (big_n1 + big_n0)
        share_noise = np.sqrt(w * (1 - w) * (1 / big_n1 + 1 / big_n0))
        mix_noise = share_noise * (np.abs(r0 - r_ref) + np.sqrt(var / np.maximum(n0, 1)))
    noise = np.sqrt(rate_noise**2 + mix_noise**2)
    noise[n1 < MIN_ROWS] = np.inf  # a handful of rows says nothing about a rate
    # spread evenly, every segment's rate moves alike: each carries its row share of the rate effect
    baseline = weight * (float(rate.sum()) / total) if total != 0 else weight
    return _Segments(keys, rate + mix, rate, mix, weight, baseline, noise), float(total)


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
    n = len(rows.x)
    dims = [d for d in rows.dims if len(set(rows.dims[d])) > 1]
    per_dim: dict[str, tuple[npt.NDArray[np.int64], _Segments]] = {}
    total = math.nan
    for d in dims:
        codes, keys = _factorize([rows.dims[d]], n)
        segs, total = _segments(rows, codes, keys, kind, scale)
        per_dim[d] = (codes, segs)
    if not per_dim:
        single, _ = _factorize([[""] * n], n)
        total = _segments(rows, single, [("",)], kind, scale)[1]
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
    candidates: list[tuple[float, str, int]] = []
    for d in dims:
        _, segs = per_dim[d]
        for i in range(len(segs.keys)):
            share = float(segs.delta[i] / total)
            if share >= MIN_SHARE and abs(float(segs.delta[i])) >= NOISE_Z * float(segs.noise[i]):
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
                if e_segs.weight[j] < segs.weight[i] and float(e_segs.delta[j]) >= QUALIFIER_SHARE * delta:
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
    return Explanation(metric, shown, method, tuple(chosen), percent and method != "exceedance")


def _pair(
    rows: Rows, d: str, e: str, kind: str, scale: float
) -> tuple[_Segments, dict[tuple[str, ...], int]]:
    codes, keys = _factorize([rows.dims[d], rows.dims[e]], len(rows.x))
    segs, _ = _segments(rows, codes, keys, kind, scale)
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
