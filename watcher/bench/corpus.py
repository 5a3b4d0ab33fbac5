"""A deterministic, generated corpus of labelled LLM-telemetry series for ``watcher bench detection``.

This module owns the generator (seeded numpy, no data files in the repository) and writing the
corpus in the common public layout: ``data/<family>/<name>.csv`` with ``timestamp,value`` (plus a
``count`` column for proportions), ``labels.json`` mapping each file to its anomaly windows
``[[start, end], …]`` (ISO-8601 UTC; ``[]`` for non-incidents) and ``meta.json`` with the side a
rule for that metric would watch (``up`` for spend, refusals, latency; ``down`` for quality). It
does not own scoring (``detection``).

Every series is 5 weeks at 5-minute resolution starting on a Monday 00:00 UTC, so weekly patterns
are seen at least twice before most incidents. Families: spend ($/h, daily + weekly seasonality,
multiplicative noise), refusal rate (proportion with call counts, low-traffic nights), TTFT p95
(load-dependent), groundedness (mean judge score), and generic shapes (sensor-like, traffic-like,
flat with jumps). Non-incidents (no labels): plain weeks, a Monday-morning ramp, weekends, a holiday
dip in spend, a single 2-minute blip, low-traffic nights and a 6-hour data gap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from ..core import FloatArray

START = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday
STEP = 300.0
DAYS = 35
N = DAYS * 288
HOUR = 3600.0
DAY = 86_400.0


@dataclass
class Series:
    """One generated series with its anomaly windows (epoch seconds) and watched direction."""

    family: str
    name: str
    ts: FloatArray
    values: FloatArray
    windows: list[tuple[float, float]] = field(default_factory=list)
    direction: str = "both"
    counts: FloatArray | None = None

    @property
    def path(self) -> str:
        """Return the file's path inside the corpus (``data/<family>/<name>.csv``)."""
        return f"data/{self.family}/{self.name}.csv"


def _grid() -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return timestamps, hour of day and day index (0 = Monday) of the 5-week grid."""
    ts: FloatArray = START + STEP * np.arange(N, dtype=np.float64)
    return ts, (ts % DAY) / HOUR, (ts - START) // DAY


def _at(day: float, hour: float) -> int:
    """Return the index of ``hour`` o'clock on day ``day`` (0 = the first Monday)."""
    return int((day * DAY + hour * HOUR) / STEP)


def _diurnal(hour: FloatArray, peak: float = 14.0, width: float = 4.5) -> FloatArray:
    """Return a 0..1 daytime bump centred on ``peak``."""
    return np.exp(-((((hour - peak + 12.0) % 24.0 - 12.0) / width) ** 2))


def _weekend(day: FloatArray) -> FloatArray:
    """Return 1.0 on Saturdays and Sundays, else 0.0."""
    return ((day % 7) >= 5).astype(np.float64)


def _window(i: int, duration_points: int, extra: float = HOUR) -> tuple[float, float]:
    """Return the window of an anomaly starting at index ``i``, lasting ``duration_points``, plus slack."""
    start = START + STEP * i
    return start, start + STEP * duration_points + extra


def spend(name: str, seed: int, kind: str = "normal", day: float = 23, hour: float = 3.0) -> Series:
    """Return a spend series ($/h), optionally with one incident of ``kind``."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    base = (2.0 + 10.0 * _diurnal(h)) * (1.0 - 0.45 * _weekend(d)) * (1.0 + 0.002 * d)
    if kind == "monday_ramp":  # Monday mornings ramp earlier and higher, every week
        base *= 1.0 + 0.5 * ((d % 7) == 0) * np.exp(-(((h - 9.0) / 2.0) ** 2))
    if kind == "holiday_dip":  # one Wednesday at weekend level
        base[(d == 16)] *= 0.55
    v = base * np.exp(rng.normal(0.0, 0.06, N))
    s = Series("spend", name, ts, v, direction="up")
    i = _at(day, hour)
    if kind == "night_runaway":
        dur = 24 + seed % 3 * 12
        v[i : i + dur] *= 4.0
        s.windows.append(_window(i, dur))
    elif kind == "day_spike":
        v[i : i + 12] *= 2.5
        s.windows.append(_window(i, 12))
    elif kind == "level_shift":
        v[i:] *= 1.8
        s.windows.append(_window(i, 24, 4 * HOUR))
    elif kind == "drift":
        ramp = np.clip((np.arange(N) - i) / (36 * 12), 0.0, None)
        v *= 1.0 + np.minimum(ramp, 1.0) * 1.5 * (np.arange(N) < i + 48 * 12)
        s.windows.append(_window(i, 36 * 12, 12 * HOUR))
    elif kind == "seasonal_break":  # the night stays busy: a batch job with the wrong key
        night = (np.arange(N) >= i) & (np.arange(N) < i + 3 * 288) & ((h < 6) | (h > 22))
        v[night] += 6.0
        s.windows.append(_window(i, 6 * 12))
    return s


def refusal(name: str, seed: int, kind: str = "normal", day: float = 24, hour: float = 15.0) -> Series:
    """Return a refusal-rate series: proportion of calls refused, with the call count per point."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    calls = np.maximum(1, rng.poisson((4.0 + 400.0 * _diurnal(h, 15.0)) * (1.0 - 0.5 * _weekend(d))))
    p = np.clip(rng.beta(40.0, 1960.0, N), 0.0, 1.0)  # ≈ 2 % with mild over-dispersion
    i = _at(day, hour)
    windows: list[tuple[float, float]] = []
    if kind == "spike":
        p[i : i + 24] = 0.15
        windows.append(_window(i, 24))
    elif kind == "night_spike":
        p[i : i + 36] = 0.4
        windows.append(_window(i, 36))
    elif kind == "gradual":
        p[i : i + 288] += np.linspace(0.0, 0.08, 288)
        p[i + 288 :] += 0.08
        windows.append(_window(i, 288, 0.0))
    refused = rng.binomial(calls, np.clip(p, 0.0, 1.0))
    if kind == "blip":
        refused[i] = calls[i]  # one 5-minute point, every call refused: a client retry storm
    return Series("refusal", name, ts, refused / calls, windows, "up", calls.astype(np.float64))


def ttft(name: str, seed: int, kind: str = "normal", day: float = 22, hour: float = 11.0) -> Series:
    """Return a TTFT p95 series (seconds): load-dependent with occasional provider trouble."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    base = 0.8 + 0.4 * _diurnal(h, 15.0) * (1.0 - 0.5 * _weekend(d))
    v = base * np.exp(rng.normal(0.0, 0.08, N))
    s = Series("ttft", name, ts, v, direction="up")
    i = _at(day, hour)
    if kind == "degradation":
        v[i : i + 18] *= 2.5
        s.windows.append(_window(i, 18))
    elif kind == "slow_degradation":
        v[i : i + 96] *= np.linspace(1.0, 2.2, 96)
        s.windows.append(_window(i, 96, 2 * HOUR))
    elif kind == "level_shift":
        v[i:] *= 1.5
        s.windows.append(_window(i, 12, 4 * HOUR))
    elif kind == "blip":  # a 2-minute stall inside one 5-minute point
        v[i] *= 3.0
    return s


def groundedness(name: str, seed: int, kind: str = "normal", day: float = 25, hour: float = 10.0) -> Series:
    """Return a mean groundedness score (0..1) per 5 minutes; drops are the incidents."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    n = 5.0 + 60.0 * _diurnal(h, 14.0)
    base = 0.86 + 0.03 * _weekend(d)
    v = np.clip(base + rng.normal(0.0, 0.12, N) / np.sqrt(n), 0.0, 1.0)
    s = Series("groundedness", name, ts, v, direction="down")
    i = _at(day, hour)
    if kind == "drop":
        v[i : i + 36] -= 0.2
        s.windows.append(_window(i, 36))
    elif kind == "gradual_drop":
        v[i : i + 144] -= np.linspace(0.0, 0.15, 144)
        v[i + 144 :] -= 0.15
        s.windows.append(_window(i, 144, 0.0))
    elif kind == "level_shift":
        v[i:] -= 0.1
        s.windows.append(_window(i, 12, 4 * HOUR))
    return s


def generic(name: str, seed: int, kind: str) -> Series:
    """Return a generic shape: sensor-like, traffic-like, flat with jumps, or a gap."""
    rng = np.random.default_rng(seed)
    ts, h, d = _grid()
    i = _at(24, 9.5)
    if kind.startswith("sensor"):
        ar = np.zeros(N)
        e = rng.normal(0.0, 0.3, N)
        for k in range(1, N):
            ar[k] = 0.9 * ar[k - 1] + e[k]
        v = 20.0 + 3.0 * np.sin(2 * np.pi * (ts - START) / DAY) + ar
        s = Series("generic", name, ts, v)
        if kind == "sensor_fault":
            v[i : i + 6] += 12.0
            s.windows.append(_window(i, 6))
        elif kind == "sensor_stuck":
            v[i : i + 72] = v[i] + 6.0
            s.windows.append(_window(i, 72, 0.0))
        return s
    if kind.startswith("traffic"):
        lam = (50.0 + 500.0 * _diurnal(h, 13.0)) * (1.0 - 0.4 * _weekend(d))
        if kind == "traffic_outage":
            lam[i : i + 12] *= 0.05
        v = rng.poisson(lam).astype(np.float64)
        s = Series("generic", name, ts, v)
        if kind == "traffic_outage":
            s.windows.append(_window(i, 12))
        elif kind == "traffic_surge":
            v[i : i + 24] *= 3.0
            s.windows.append(_window(i, 24))
        return s
    v = 10.0 + rng.normal(0.0, 0.2, N)
    s = Series("generic", name, ts, v)
    if kind == "flat_jumps":
        for day, dur in ((19, 6), (27, 12)):
            j = _at(day, 13.0)
            v[j : j + dur] += 3.0
            s.windows.append(_window(j, dur))
    elif kind == "gap":
        keep = np.ones(N, dtype=bool)
        keep[_at(20, 2.0) : _at(20, 8.0)] = False
        s.ts, s.values = ts[keep], v[keep]
    return s


def build() -> list[Series]:
    """Return the whole corpus, in a fixed order (deterministic: every generator is seeded)."""
    makers: list[tuple[Callable[..., Series], str, int, dict[str, object]]] = [
        (spend, "night_runaway_a", 11, {"kind": "night_runaway", "day": 22, "hour": 2.5}),
        (spend, "night_runaway_b", 12, {"kind": "night_runaway", "day": 25, "hour": 3.0}),
        (spend, "night_runaway_weekend", 13, {"kind": "night_runaway", "day": 26, "hour": 1.0}),
        (spend, "day_spike", 14, {"kind": "day_spike", "day": 23, "hour": 13.0}),
        (spend, "level_shift", 15, {"kind": "level_shift", "day": 24, "hour": 10.0}),
        (spend, "drift", 16, {"kind": "drift", "day": 22, "hour": 0.0}),
        (spend, "seasonal_break", 17, {"kind": "seasonal_break", "day": 23, "hour": 22.0}),
        (spend, "normal_a", 18, {}),
        (spend, "normal_b", 19, {}),
        (spend, "monday_ramp", 20, {"kind": "monday_ramp"}),
        (spend, "holiday_dip", 21, {"kind": "holiday_dip"}),
        (refusal, "spike_a", 31, {"kind": "spike", "day": 22, "hour": 14.0}),
        (refusal, "spike_b", 32, {"kind": "spike", "day": 29, "hour": 10.0}),
        (refusal, "night_spike", 33, {"kind": "night_spike", "day": 23, "hour": 1.0}),
        (refusal, "gradual", 34, {"kind": "gradual", "day": 24, "hour": 6.0}),
        (refusal, "low_traffic_nights_a", 35, {}),
        (refusal, "low_traffic_nights_b", 36, {}),
        (refusal, "blip", 37, {"kind": "blip", "day": 22, "hour": 12.0}),
        (ttft, "degradation_a", 41, {"kind": "degradation", "day": 22, "hour": 11.0}),
        (ttft, "degradation_night", 42, {"kind": "degradation", "day": 26, "hour": 2.0}),
        (ttft, "slow_degradation", 43, {"kind": "slow_degradation", "day": 24, "hour": 8.0}),
        (ttft, "level_shift", 44, {"kind": "level_shift", "day": 23, "hour": 16.0}),
        (ttft, "normal", 45, {}),
        (ttft, "blip", 46, {"kind": "blip", "day": 25, "hour": 14.0}),
        (groundedness, "drop_a", 51, {"kind": "drop", "day": 22, "hour": 10.0}),
        (groundedness, "drop_b", 52, {"kind": "drop", "day": 28, "hour": 15.0}),
        (groundedness, "gradual_drop", 53, {"kind": "gradual_drop", "day": 24, "hour": 9.0}),
        (groundedness, "level_shift", 54, {"kind": "level_shift", "day": 23, "hour": 12.0}),
        (groundedness, "weekends", 55, {}),
        (groundedness, "normal", 56, {}),
        (generic, "sensor_fault", 61, {"kind": "sensor_fault"}),
        (generic, "sensor_stuck", 62, {"kind": "sensor_stuck"}),
        (generic, "sensor_normal", 63, {"kind": "sensor"}),
        (generic, "traffic_outage", 64, {"kind": "traffic_outage"}),
        (generic, "traffic_surge", 65, {"kind": "traffic_surge"}),
        (generic, "traffic_normal", 66, {"kind": "traffic"}),
        (generic, "flat_jumps", 67, {"kind": "flat_jumps"}),
        (generic, "flat_normal", 68, {"kind": "flat"}),
        (generic, "data_gap", 69, {"kind": "gap"}),
        (spend, "normal_c", 70, {}),
        (ttft, "degradation_b", 47, {"kind": "degradation", "day": 30, "hour": 19.0}),
    ]
    return [make(name, seed, **kw) for make, name, seed, kw in makers]
