"""The rolling median/MAD detector: canonical incidents, seasonality, warm-up, gaps and floors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from watcher.core import Verdict
from watcher.detectors import make_detector
from watcher.detectors.rolling import RollingBaseline
from watcher.errors import DetectorError
from watcher.rules.schema import RollingDetector

STEP = 300.0  # 5 minutes
DAY = 86_400.0
T0 = 1.7e9


def spec(**kw: Any) -> RollingDetector:
    """Build a rolling spec with a 1-day window unless told otherwise."""
    return RollingDetector.model_validate({"kind": "rolling", "window": "1d", **kw})


def noisy_flat(n: int, seed: int = 0) -> np.ndarray:
    """Return n points of 100 ± N(0, 2)."""
    return 100.0 + np.random.default_rng(seed).normal(0.0, 2.0, n)


def run(detector_spec: RollingDetector, values: np.ndarray) -> list[Verdict]:
    """Feed ``values`` at 5-minute steps from T0 and return every verdict."""
    ts = T0 + STEP * np.arange(len(values), dtype=np.float64)
    return make_detector(detector_spec).update_many(ts, values)


@dataclass(frozen=True)
class Incident:
    name: str
    spec: RollingDetector
    history: np.ndarray
    last: float
    anomalous: bool


FLAT = np.full(2 * 288, 100.0)
NOISY = noisy_flat(2 * 288)
INCIDENTS = [
    Incident("x8 spike, both", spec(), NOISY, 800.0, True),
    Incident("x8 spike, up", spec(direction="up"), NOISY, 800.0, True),
    Incident("x8 spike ignored, down", spec(direction="down"), NOISY, 800.0, False),
    Incident("drop to 20%, down", spec(direction="down"), NOISY, 20.0, True),
    Incident("drop to 20%, both", spec(), NOISY, 20.0, True),
    Incident("drop ignored, up", spec(direction="up"), NOISY, 20.0, False),
    Incident("typical point", spec(), NOISY, 103.0, False),
    Incident("flat: 0.1% wiggle", spec(), FLAT, 100.1, False),
    Incident("flat: -0.1% wiggle", spec(), FLAT, 99.9, False),
    Incident("flat: 50% jump", spec(), FLAT, 150.0, True),
    Incident("flat: 50% jump, max sensitivity", spec(sensitivity=100), FLAT, 150.0, True),
    Incident("flat: 50% jump within min_spread", spec(min_spread=20.0), FLAT, 150.0, False),
    Incident("flat: doubling beyond min_spread", spec(min_spread=20.0), FLAT, 200.0, True),
    Incident("all zeros, then 1", spec(), np.zeros(2 * 288), 1.0, True),
]


@pytest.mark.parametrize("case", INCIDENTS, ids=[c.name for c in INCIDENTS])
def test_incident(case: Incident) -> None:
    verdicts = run(case.spec, np.append(case.history, case.last))
    *before, last = verdicts
    assert not any(v.anomalous for v in before)
    assert last.ready
    assert last.anomalous is case.anomalous
    if case.anomalous:
        assert last.score > 0.99
    elif case.spec.direction != "both" and abs(case.last - 100.0) > 50:
        assert last.score == 0.0  # a deviation on the unwatched side does not score at all


@pytest.mark.parametrize(
    ("direction", "lower_set", "upper_set"),
    [("both", True, True), ("up", False, True), ("down", True, False)],
)
def test_unwatched_side_has_no_bound(direction: str, lower_set: bool, upper_set: bool) -> None:
    last = run(spec(direction=direction), NOISY)[-1]
    assert last.ready and abs(last.expected - 100.0) < 1.0
    assert math.isfinite(last.lower) is lower_set
    assert math.isfinite(last.upper) is upper_set


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("min_history", [None, "2h"])
def test_daily_seasonality_does_not_fire(seed: int, min_history: str | None) -> None:
    n = 3 * 288
    phase = 2 * np.pi * STEP * np.arange(n) / DAY
    values = 100.0 + 30.0 * np.sin(phase) + np.random.default_rng(seed).normal(0.0, 3.0, n)
    verdicts = run(spec(sensitivity=4, min_history=min_history, min_points=24), values)
    assert not any(v.anomalous for v in verdicts)
    assert all(v.ready for v in verdicts[288:])


@dataclass(frozen=True)
class WarmUp:
    name: str
    spec: RollingDetector
    first_ready: int | None
    reasons: dict[int, str]


WARM_UPS = [
    WarmUp(
        "default min_history is the window (1d)",
        spec(),
        288,
        {
            0: "warming up: 0/30 points, 0s/1d history",
            12: "warming up: 12/30 points, 1h/1d history",
            287: "warming up: 287/30 points, 23h55m/1d history",
        },
    ),
    WarmUp(
        "default min_history is at most 1d",
        spec(window="7d"),
        288,
        {40: "warming up: 40/30 points, 3h20m/1d history"},
    ),
    WarmUp(
        "explicit min_history",
        spec(min_history="2h", min_points=10),
        24,
        {23: "warming up: 23/10 points, 1h55m/2h history"},
    ),
    WarmUp(
        "min_points dominates",
        spec(min_history="10m", min_points=30),
        30,
        {29: "warming up: 29/30 points, 2h25m/10m history"},
    ),
    WarmUp(
        "min_points larger than the window can hold",
        spec(window="2h", min_points=30),
        None,
        {100: "warming up: 23/30 points, 8h20m/2h history"},
    ),
]


@pytest.mark.parametrize("case", WARM_UPS, ids=[c.name for c in WARM_UPS])
def test_warm_up(case: WarmUp) -> None:
    values = NOISY.copy()
    values[:300] = 1e6  # a huge value during warm-up must not be flagged
    verdicts = run(case.spec, values)
    ready = [i for i, v in enumerate(verdicts) if v.ready]
    assert (ready[0] if ready else None) == case.first_ready
    if case.first_ready is not None:
        assert ready == list(range(case.first_ready, len(verdicts)))
    for i, reason in case.reasons.items():
        assert verdicts[i].reason == reason
    for v in verdicts[: case.first_ready]:
        assert not v.anomalous and v.score == 0.0 and math.isnan(v.expected)


def test_gap_longer_than_the_window_warms_up_again_on_points() -> None:
    det = RollingBaseline(window=timedelta(hours=1), min_points=6, min_history=timedelta(minutes=30))
    ts = [T0 + STEP * i for i in range(20)]
    assert det.update_many(np.array(ts), noisy_flat(20))[-1].ready
    after_gap = ts[-1] + 3 * 3600
    v = det.update(after_gap, 100.0)
    assert v is not None and v.reason == "warming up: 0/6 points, 4h35m/30m history"
    later = [det.update(after_gap + STEP * i, 100.0 + i % 2) for i in range(1, 8)]
    assert [bool(v and v.ready) for v in later] == [False] * 5 + [True] * 2


def test_window_is_time_based_and_excludes_the_current_point() -> None:
    det = RollingBaseline(window=timedelta(minutes=30), min_points=3, min_history=timedelta(0))
    det.update_many(np.array([T0, T0 + 600, T0 + 1200]), np.array([1.0, 2.0, 3.0]))
    assert det.size == 3
    v = det.update(T0 + 1800, 2.0)  # T0 falls out: ts must be > t - window
    assert v is not None and v.reason == "warming up: 2/3 points, 30m/0s history"
    assert det.size == 3


def test_nan_points_do_not_enter_the_window() -> None:
    det = RollingBaseline(window=timedelta(days=1), min_points=3)
    det.update_many(np.array([T0, T0 + STEP]), np.array([1.0, 2.0]))
    v = det.update(T0 + 2 * STEP, math.nan)
    assert v is not None and v.reason == "no data" and not v.ready
    assert det.size == 2


def test_a_lasting_level_shift_is_absorbed_once_it_fills_half_the_window() -> None:
    values = np.append(noisy_flat(288), noisy_flat(24, seed=1) + 100.0)  # 2 hours at twice the level
    verdicts = run(spec(window="2h", min_points=12), values)
    flags = [v.anomalous for v in verdicts[288:]]
    assert all(flags[:12])  # the first half-window of the shift pages
    assert not any(flags[14:])  # then the new level is the baseline


def test_matches_a_brute_force_median_mad_band() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(0.0, 1.0, 400)
    ts = T0 + STEP * np.arange(400) + rng.uniform(0, 200, 400)  # irregular spacing
    window = 4 * 3600.0
    verdicts = make_detector(spec(window="4h", min_points=5, min_history="0s")).update_many(ts, values)
    for i in range(5, 400, 37):
        past = values[(ts > ts[i] - window) & (ts < ts[i])]
        med = float(np.median(past))
        sigma = max(1.4826 * float(np.median(np.abs(past - med))), 1e-3 * abs(med), 1e-12)
        assert verdicts[i].expected == pytest.approx(med, rel=1e-12)
        # The band is sigma times the critical values calibrated on the residuals: wider above
        # than below for a lognormal, never narrower than a Gaussian's 4 sigma above.
        up, down = (verdicts[i].upper - med) / sigma, (med - verdicts[i].lower) / sigma
        assert 4.0 <= up <= 60.0 and 1.0 <= down <= 60.0


@pytest.mark.parametrize(
    "kw",
    [
        {"window": timedelta(0)},
        {"sensitivity": 0.0},
        {"sensitivity": math.inf},
        {"direction": "sideways"},
        {"min_points": 0},
        {"min_spread": -1.0},
        {"min_spread": math.nan},
    ],
)
def test_impossible_parameters_are_detector_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(DetectorError):
        RollingBaseline(**kw)
