"""The calibration pieces: lazy tail refits equal full ones, one-sided tails of zero-inflated
residuals, the admission delay, and the zero-inflated log scale of ``seasonal``."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from watcher.detectors.calibration import DELAY, RING, EmpiricalTail, TailCalibrator
from watcher.detectors.ewma import EwmaBaseline
from watcher.detectors.seasonal import SeasonalBaseline
from watcher.detectors.stats import normal_sf

THR = math.log(normal_sf(4.0) / 2.0)


def _values(kind: str, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    if kind == "t":
        return rng.standard_t(2.5, n).tolist()
    if kind == "bursts":  # mostly slightly negative, rare large positive (zero-inflated residuals)
        return np.where(rng.random(n) < 0.08, rng.lognormal(2.0, 1.0, n), -rng.random(n) * 0.5).tolist()
    return np.round(rng.normal(0.0, 1.0, n) * 4.0).tolist()  # quantised: many ties


@pytest.mark.parametrize("kind", ["t", "bursts", "quantised"])
def test_lazy_refits_give_the_fits_of_a_full_refit_every_time(kind: str) -> None:
    lazy, full = EmpiricalTail(THR), EmpiricalTail(THR)
    for i, x in enumerate(_values(kind, 3 * RING, 7)):
        lazy.push(x)
        full.push(x)
        full._dirty = [True, True]  # forces the moments to be recomputed at every refit
        if i % 5 == 0:
            for side in (1, -1):
                assert lazy.log_p(2.5 * side, side) == full.log_p(2.5 * side, side)
                assert lazy.critical(side) == full.critical(side)
    assert lazy._fits == full._fits


def test_a_side_seen_in_a_few_percent_of_the_ring_gets_its_own_fitted_tail() -> None:
    """Bursts in 8 % of the residuals (fewer than twice the tail's size) are a tail, not "unseen"."""
    tail = EmpiricalTail(THR)
    for x in _values("bursts", RING, 3):
        tail.push(x)
    above = sum(1 for x in tail.sorted if x > 0)
    assert 0.05 * RING < above < 0.094 * RING
    # The Laplace default for an unseen side would put the critical value at ~7.3; the bursts
    # themselves reach far beyond it, so the fitted tail must too.
    assert tail.critical(1) > float(np.percentile(np.asarray(tail.sorted), 99))


def test_ewma_on_zeros_with_bursts_flags_at_most_a_few_per_thousand() -> None:
    """Disk-write-bytes-like: 90 % zeros, log-normal single-point bursts (was ~230 per 10,000)."""
    rng = np.random.default_rng(103)
    n = 10_080
    v = np.where(rng.random(n) < 0.1, np.round(rng.lognormal(np.log(4e6), 1.0, n)), 0.0)
    ts = 1_767_571_200.0 + 300.0 * np.arange(n)
    verdicts = EwmaBaseline().update_many(ts, v)
    ready = [x for x in verdicts if x.ready]
    assert sum(x.anomalous for x in ready) / len(ready) < 0.004


def test_a_residual_joins_the_ring_after_the_delay_and_an_incident_never_does() -> None:
    cal = TailCalibrator(4.0, "both")
    for i in range(DELAY):
        cal.verdict(float(i), 0.5, 0.0, 1.0)
    assert len(cal.point.ring) == 0  # all still waiting
    cal.verdict(float(DELAY), 0.5, 0.0, 1.0)
    assert len(cal.point.ring) == 1
    held = len(cal.point.ring)
    for i in range(6):  # a long episode far out: an incident
        cal.verdict(float(DELAY + 1 + i), 1e6, 0.0, 1.0)
    for i in range(DELAY):
        cal.verdict(float(DELAY + 10 + i), 0.5, 0.0, 1.0)
    assert max(cal.point.ring) < 100.0  # neither the incident nor its ramp joined
    assert len(cal.point.ring) == held + 3  # only the normal points the first 3 anomalous ones pushed out


def _spend(days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return 1-minute spend ($/h) of a tenant: ~25 calls/min by day, 1.5 at night (22 % zeros)."""
    rng = np.random.default_rng(seed)
    n = days * 1440
    hour = (np.arange(n) / 60.0) % 24.0
    lam = 1.5 + 23.5 * np.clip(np.sin(np.pi * (hour - 6.0) / 16.0), 0.0, None) ** 2
    calls = rng.poisson(lam)
    total = np.zeros(n)
    idx = np.repeat(np.arange(n), calls)
    np.add.at(total, idx, rng.lognormal(math.log(0.017), 0.7, len(idx)))
    return 1_767_571_200.0 + 60.0 * np.arange(n), total * 60.0


def test_seasonal_night_band_of_zero_inflated_spend_is_the_nights_own() -> None:
    """The night band of a spend series with zero minutes stays within the night's own range.

    Zeros used to land far below the log floor and blow the night's spread up: the band at 03:00
    was 0.5–10,000 $/h around an expected 0.5 $/h. On ``log(x + c)`` it is a few times the level.
    """
    ts, v = _spend(9, 5)
    det = SeasonalBaseline(seasons=[timedelta(days=1)], sensitivity=4.0, direction="up")
    verdicts = det.update_many(ts, v)
    assert det.log and det._floor > 0.1  # zero-inflated: shifted by the quiet level, not lo/100
    nights = [x for x in verdicts[-2 * 1440 :] if x.ready and 2.0 <= (x.ts % 86_400) / 3600 < 4.0]
    assert nights
    for x in nights:
        assert 0.5 < x.expected < 5.0
        assert x.upper < 100.0


def test_warmup_spans_add_the_calibration_to_each_kinds_own_warmup() -> None:
    from pydantic import TypeAdapter

    from watcher.detectors.warmup import RUN_POINTS, TAIL_POINTS, warmup
    from watcher.rules.schema import DetectorSpec

    def spec(raw: dict[str, object]) -> object:
        return TypeAdapter(DetectorSpec).validate_python(raw)

    step = timedelta(minutes=5)
    w = warmup(spec({"kind": "ewma"}), step)
    assert w.ready == 30 * step
    assert w.tail == w.ready + TAIL_POINTS * step and TAIL_POINTS == 128
    assert w.calibrated == w.ready + RUN_POINTS * step and RUN_POINTS == 327
    assert warmup(spec({"kind": "seasonal"}), step).ready == timedelta(days=2)
    assert warmup(spec({"kind": "rolling", "window": "7d"}), step).ready == timedelta(days=1)
    assert warmup(spec({"kind": "threshold", "above": 1}), step).calibrated == timedelta(0)
    # An ewma whose lookback is the engine's default (4 half-lives) scores its first hours with the
    # conservative default tail after every restart: this is what `watcher check` can warn about.
    assert w.calibrated > 4 * timedelta(hours=1) + 2 * step


def _flat_gauge_with_ticks(n: int, ticks: list[int], level: float = 4.0, step: float = 1.0) -> list[float]:
    v = [level] * n
    for i in ticks:
        v[i] = level + step
    return v


def test_a_flat_gauge_learns_its_step_from_the_return_of_its_first_tick() -> None:
    """A gauge at 4 that ticks to 5 for one point now and then: the first tick is news, the rest are
    its normal movement (the step back from the tick teaches the resolution); a jump of 6 stays news."""
    n = 3000
    ticks = list(range(200, 2800, 173))
    v = _flat_gauge_with_ticks(n, ticks)
    v[2900] = 10.0
    ts = 1_767_571_200.0 + 300.0 * np.arange(n)
    for det in (EwmaBaseline(), SeasonalBaseline(seasons=None)):
        flagged = [i for i, x in enumerate(det.update_many(ts, np.asarray(v))) if x.anomalous]
        assert flagged[-1] == 2900, (det.kind, flagged)
        assert len(flagged) <= 2, (det.kind, flagged)  # was every tick for ewma (15 flags)


def test_the_return_from_an_incident_is_not_learnt_as_the_series_step() -> None:
    """A flat gauge that sat at 10 for two hours and came back: the same incident again is news."""
    n = 1500
    v = [4.0] * n
    v[400:424] = [10.0] * 24
    v[1200:1224] = [10.0] * 24
    ts = 1_767_571_200.0 + 300.0 * np.arange(n)
    verdicts = EwmaBaseline().update_many(ts, np.asarray(v))
    assert verdicts[400].anomalous and verdicts[1200].anomalous
