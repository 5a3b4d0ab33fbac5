"""The hardened section of the generated corpus: the shapes real exports have and ``corpus`` lacks.

This module owns generators of series with heavy tails (Student-t, Pareto), zero inflation (mostly
zeros with bursts, like disk write bytes), quantisation (integer counts, values rounded to a step),
benign bursts, flat stretches, irregular sampling and messy timestamps (duplicates, a DST-style
repeated hour). Each shape comes as an anomaly-free file (no labels: any page is false, and its
flag rate is the calibration check) and, where the shape allows one, a file with labelled
anomalies. The standard section (``corpus.build``) is unchanged, so its numbers stay comparable.
It does not own scoring (``detection``) or writing (``sections.write``).

Same grid as ``corpus`` (5 weeks at 5 minutes from a Monday, incidents after day 21 so the first
15 % probation and the warm-ups are behind them), seeded, nothing committed. Files live under
``data/hardened/``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .corpus import DAY, HOUR, START, STEP, Series, _at, _diurnal, _grid, _weekend, _window

FAMILY = "hardened"


def heavy_tailed(name: str, seed: int, incident: bool) -> Series:
    """Return a diurnal metric with Student-t (3 d.o.f.) noise; optionally a 2-hour level shift up."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    v = 50.0 + 20.0 * _diurnal(h) * (1.0 - 0.3 * _weekend(d)) + 2.0 * rng.standard_t(3.0, len(ts))
    s = Series(FAMILY, name, ts, v, direction="up")
    if incident:
        i = _at(23, 10.0)
        v[i : i + 24] += 25.0
        s.windows.append(_window(i, 24))
    return s


def pareto_latency(name: str, seed: int, incident: bool) -> Series:
    """Return a latency (s) with a Pareto tail (α = 2.5); optionally an hour at 3× the typical level."""
    rng = np.random.default_rng(seed)
    ts, h, _ = _grid()
    base = 0.2 + 0.1 * _diurnal(h, 15.0)
    v = base * (1.0 + 0.3 * rng.pareto(2.5, len(ts)))
    s = Series(FAMILY, name, ts, v, direction="up")
    if incident:
        i = _at(25, 14.0)
        v[i : i + 12] = 3.0 * base[i : i + 12] * (1.0 + 0.1 * rng.random(12))
        s.windows.append(_window(i, 12))
    return s


def zero_inflated(name: str, seed: int, incident: bool) -> Series:
    """Return disk write bytes per point: 0 for ~90 % of points, lognormal bursts otherwise.

    The incident is a runaway writer: two hours of non-zero writes at every point, each burst 5× the
    typical size — the kind of change a collapsed robust spread (MAD = 0) mis-scores.
    """
    rng = np.random.default_rng(seed)
    ts, _, _ = _grid()
    n = len(ts)
    busy = rng.random(n) < 0.1
    v = np.where(busy, np.round(rng.lognormal(np.log(4e6), 1.0, n)), 0.0)
    s = Series(FAMILY, name, ts, v, direction="up")
    if incident:
        i = _at(24, 4.0)
        v[i : i + 24] = np.round(rng.lognormal(np.log(2e7), 0.3, 24))
        s.windows.append(_window(i, 24))
    return s


def integer_counts(name: str, seed: int, incident: bool) -> Series:
    """Return low integer counts (Poisson, 0.3–3 per point by time of day); optionally a ×8 surge."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    lam = (0.3 + 2.7 * _diurnal(h, 13.0)) * (1.0 - 0.4 * _weekend(d))
    i = _at(26, 11.0)
    if incident:
        lam[i : i + 12] *= 8.0
    v = rng.poisson(lam).astype(np.float64)
    s = Series(FAMILY, name, ts, v, direction="up")
    if incident:
        s.windows.append(_window(i, 12))
    return s


def rounded(name: str, seed: int, incident: bool) -> Series:
    """Return a slow sensor reading rounded to a 0.5 step (many exact repeats); optionally a +3 step."""
    rng = np.random.default_rng(seed)
    ts, _, _ = _grid()
    ar = np.cumsum(rng.normal(0.0, 0.02, len(ts)))
    ar -= np.convolve(ar, np.ones(288) / 288, mode="same")  # keep it stationary over days
    raw = 21.0 + np.sin(2 * np.pi * (ts - START) / DAY) * 0.8 + ar + rng.normal(0.0, 0.15, len(ts))
    i = _at(27, 9.0)
    if incident:
        raw[i : i + 36] += 3.0
    s = Series(FAMILY, name, ts, np.round(raw * 2.0) / 2.0)
    if incident:
        s.windows.append(_window(i, 36))
    return s


def bursty(name: str, seed: int, incident: bool) -> Series:
    """Return request traffic with benign one-to-three-point bursts (×2–4, ~6 a day); optionally a
    sustained 2-hour ×3 surge (the bursts alone are normal behaviour and never labelled)."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    n = len(ts)
    lam = (100.0 + 400.0 * _diurnal(h, 13.0)) * (1.0 - 0.4 * _weekend(d))
    mult = np.ones(n)
    for start in np.flatnonzero(rng.random(n) < 6.0 / 288.0):
        mult[start : start + int(rng.integers(1, 4))] *= rng.uniform(2.0, 4.0)
    i = _at(22, 15.0)
    if incident:
        mult[i : i + 24] = 3.0
    s = Series(FAMILY, name, ts, rng.poisson(lam * mult).astype(np.float64), direction="up")
    if incident:
        s.windows.append(_window(i, 24))
    return s


def flat_then_change(name: str, seed: int, incident: bool) -> Series:
    """Return a gauge stuck at one exact value for days (a queue length of 0, a config value) with
    rare one-point wiggles; the incident is a sustained move off the flat value."""
    rng = np.random.default_rng(seed)
    ts, _, _ = _grid()
    n = len(ts)
    v = np.full(n, 4.0)
    v[rng.random(n) < 0.002] = 5.0  # an occasional single tick up, back at once
    s = Series(FAMILY, name, ts, v, direction="up")
    if incident:
        i = _at(24, 16.0)
        v[i : i + 36] = 9.0 + rng.integers(0, 3, 36)
        s.windows.append(_window(i, 36))
    return s


def irregular(name: str, seed: int, incident: bool) -> Series:
    """Return a diurnal metric sampled at random times (exponential gaps, mean 5 minutes, some
    gaps of an hour); optionally a 1-hour ×2.5 spike."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(STEP, int(36 * DAY / STEP))
    gaps[rng.random(len(gaps)) < 0.002] += HOUR
    ts = START + np.cumsum(gaps)
    ts = np.round(ts[ts < START + 35 * DAY])
    ts = np.unique(ts)
    h = (ts % DAY) / HOUR
    v = (5.0 + 10.0 * _diurnal(h)) * np.exp(rng.normal(0.0, 0.08, len(ts)))
    s = Series(FAMILY, name, ts, v, direction="up")
    if incident:
        a = START + 23 * DAY + 14 * HOUR
        hit = (ts >= a) & (ts < a + HOUR)
        v[hit] *= 2.5
        s.windows.append((a, a + 2 * HOUR))
    return s


def messy_timestamps(name: str, seed: int, incident: bool) -> Series:
    """Return a spend-like series exported with messy timestamps: ~1 % of rows repeat the previous
    timestamp (a second sample for the same scrape) and, on day 20 at 02:00, one hour is exported
    twice (a DST fall-back: the rows go back an hour and repeat). Optionally a 2-hour ×3 runaway."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    v = (2.0 + 10.0 * _diurnal(h)) * (1.0 - 0.45 * _weekend(d)) * np.exp(rng.normal(0.0, 0.06, len(ts)))
    i = _at(25, 9.0)
    if incident:
        v[i : i + 24] *= 3.0
    order = list(range(len(ts)))
    dst = _at(20, 3.0)
    order = order[:dst] + list(range(dst - 12, dst)) + order[dst:]  # 02:00–03:00 again after 03:00
    out_ts, out_v = [], []
    for pos, k in enumerate(order):
        replayed = dst <= pos < dst + 12  # the repeated hour: its own values, close to the first
        out_ts.append(ts[k])
        out_v.append(v[k] * np.exp(rng.normal(0.0, 0.03)) if replayed else v[k])
        if rng.random() < 0.01:  # a duplicate row: same timestamp, a slightly different value
            out_ts.append(ts[k])
            out_v.append(v[k] * np.exp(rng.normal(0.0, 0.03)))
    s = Series(FAMILY, name, np.array(out_ts), np.array(out_v), direction="up")
    if incident:
        s.windows.append(_window(i, 24))
    return s


def sparse_refusals(name: str, seed: int, incident: bool) -> Series:
    """Return a refusal rate with call counts where refusals are rare (0.5 %): almost every point is
    exactly 0 (zero-inflated proportions); optionally three hours at 8 % refusals in the daytime."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    calls = np.maximum(1, rng.poisson((2.0 + 150.0 * _diurnal(h, 15.0)) * (1.0 - 0.5 * _weekend(d))))
    p = np.full(len(ts), 0.005)
    i = _at(23, 12.0)
    if incident:
        p[i : i + 36] = 0.08
    refused = rng.binomial(calls, p)
    s = Series(FAMILY, name, ts, refused / calls, [], "up", calls.astype(np.float64))
    if incident:
        s.windows.append(_window(i, 36))
    return s


MAKERS: list[tuple[Callable[[str, int, bool], Series], str, int]] = [
    (heavy_tailed, "student_t", 101),
    (pareto_latency, "pareto_latency", 102),
    (zero_inflated, "disk_write_bytes", 103),
    (integer_counts, "integer_counts", 104),
    (rounded, "rounded_sensor", 105),
    (bursty, "bursty_traffic", 106),
    (flat_then_change, "flat_gauge", 107),
    (irregular, "irregular_sampling", 108),
    (messy_timestamps, "messy_timestamps", 109),
    (sparse_refusals, "sparse_refusals", 110),
]


def build() -> list[Series]:
    """Return the hardened section: per shape an anomaly-free file (``_normal``) and one with an
    incident (``_incident``), in a fixed order (deterministic: every generator is seeded)."""
    out = []
    for make, name, seed in MAKERS:
        out.append(make(f"{name}_normal", seed, False))
        out.append(make(f"{name}_incident", seed + 1000, True))
    return out
