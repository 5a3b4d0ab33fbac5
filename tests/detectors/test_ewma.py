"""The EWMA detector: spikes, drops, level shifts (confirmed and reverted), warm-up and gaps."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from watcher.core import Verdict
from watcher.detectors import make_detector
from watcher.detectors.ewma import EwmaBaseline
from watcher.errors import DetectorError
from watcher.rules.schema import EwmaDetector

STEP = 60.0
T0 = 1.7e9


def spec(**kw: Any) -> EwmaDetector:
    """Build an EWMA spec."""
    return EwmaDetector.model_validate({"kind": "ewma", **kw})


def run(s: EwmaDetector, values: np.ndarray) -> list[Verdict]:
    """Feed ``values`` at 1-minute steps."""
    return make_detector(s).update_many(T0 + STEP * np.arange(len(values)), values)


def noisy(n: int, seed: int = 0) -> np.ndarray:
    """Return n points of 50 ± N(0, 1)."""
    return 50.0 + np.random.default_rng(seed).normal(0.0, 1.0, n)


@pytest.mark.parametrize(
    ("direction", "last", "anomalous"),
    [
        ("both", 70.0, True),
        ("up", 70.0, True),
        ("down", 70.0, False),
        ("down", 30.0, True),
        ("both", 52.0, False),
    ],
)
def test_canonical_spike_and_drop(direction: str, last: float, anomalous: bool) -> None:
    verdicts = run(spec(direction=direction), np.append(noisy(300), last))
    assert not any(v.anomalous for v in verdicts[:-1])
    assert verdicts[-1].anomalous is anomalous
    assert abs(verdicts[-1].expected - 50.0) < 1.0


@pytest.mark.parametrize("seed", range(3))
def test_noise_is_quiet_and_calibrated(seed: int) -> None:
    verdicts = run(spec(), noisy(3000, seed))
    ready = [v for v in verdicts if v.ready]
    assert sum(v.anomalous for v in ready) <= 3
    # The band is calibrated on the series' own residuals: for N(0, 1) noise the promise of
    # sensitivity 4 (p < 3.2e-5 per side) is a half-width of about 4 real standard deviations; the
    # tail extrapolation is never thinner than an exponential, so it errs wide, by at most ~40 %.
    half = np.array([v.upper - v.expected for v in ready[200:]])
    assert 3.8 < float(np.median(half)) < 5.6


def test_confirmed_level_shift_stops_alerting_and_reverts_quietly() -> None:
    values = np.concatenate([noisy(300), noisy(120, 1) + 20.0, noisy(200, 2)])
    verdicts = run(spec(shift_after="30m"), values)
    flags = [v.anomalous for v in verdicts]
    assert all(flags[300:310])
    assert not any(flags[335:420])  # the new level is confirmed after 30 minutes
    assert not any(flags[420:])  # and the old one is recognised when the incident ends


def test_without_shift_confirmation_a_shift_alerts_longer() -> None:
    values = np.concatenate([noisy(300), noisy(120, 1) + 20.0])
    flags = [v.anomalous for v in run(spec(shift_after=None), values)]
    assert sum(flags[300:]) > 40


def test_warm_up_reasons_and_robust_start() -> None:
    values = noisy(60)
    values[3] = 1e6  # an early outlier must not poison the start
    verdicts = run(spec(min_points=10), values)
    assert [v.reason for v in verdicts[:2]] == ["warming up: 0/10 points", "warming up: 1/10 points"]
    assert all(v.ready for v in verdicts[10:]) and not any(v.ready for v in verdicts[:10])
    assert not any(v.anomalous for v in verdicts)


def test_gap_does_not_let_one_point_replace_the_state() -> None:
    det = EwmaBaseline(min_points=5)
    det.update_many(T0 + STEP * np.arange(200), noisy(200))
    after = T0 + 200 * STEP + 86_400.0
    verdicts = det.update_many(after + STEP * np.arange(100), noisy(100, 3))
    assert all(v.ready for v in verdicts) and sum(v.anomalous for v in verdicts) <= 1


def test_nan_is_no_data() -> None:
    det = EwmaBaseline(min_points=3)
    det.update_many(np.array([T0, T0 + 60, T0 + 120, T0 + 180]), np.array([1.0, 2.0, 1.0, 2.0]))
    v = det.update(T0 + 240, math.nan)
    assert v is not None and (v.ready, v.reason) == (False, "no data")


@pytest.mark.parametrize(
    "kw",
    [
        {"halflife": timedelta(0)},
        {"sensitivity": -1.0},
        {"direction": "x"},
        {"min_points": 1},
        {"min_spread": -2.0},
    ],
)
def test_impossible_parameters_are_detector_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(DetectorError):
        EwmaBaseline(**kw)
