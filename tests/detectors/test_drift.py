"""The ``drift`` detector: its KS p-value, what it flags and explains, and what it leaves alone."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp

from watcher.bench import corpus
from watcher.core import AlertState, to_epoch
from watcher.detectors import make_detector
from watcher.detectors.drift import DriftDetector as Drift
from watcher.detectors.drift import ks_pvalue
from watcher.engine.group import GroupEvaluator
from watcher.notify.templates import DETAIL
from watcher.rules.schema import DriftDetector, Group
from watcher.sources.memory import MemorySource

STEP = 300.0
WEEK = int(7 * 86_400 / STEP)


def _spec(**kw: Any) -> DriftDetector:
    return DriftDetector.model_validate({"kind": "drift", **kw})


def _series(n: int, seed: int = 1, level: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 1.7e9 + STEP * np.arange(n), np.clip(rng.normal(level, 0.05, n), 0.0, 1.0)


@pytest.mark.parametrize("seed", range(20))
def test_one_sided_p_value_is_scipys_asymptotic_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cur = np.sort(np.round(rng.normal(size=int(rng.integers(5, 60))), 1))  # ties, as judge scores have
    ref = np.sort(np.round(rng.normal(size=int(rng.integers(20, 3000))) + rng.normal() * 0.5, 1))
    for direction, alternative in (("down", "greater"), ("up", "less")):
        want = ks_2samp(cur, ref, alternative=alternative, method="asymp").pvalue
        assert ks_pvalue(cur, ref, direction) == pytest.approx(want, rel=1e-9, abs=1e-300)
    assert ks_pvalue(cur, ref, "both") == min(
        1.0, 2 * min(ks_pvalue(cur, ref, "down"), ks_pvalue(cur, ref, "up"))
    )


def test_a_shift_down_is_flagged_and_explained() -> None:
    ts, v = _series(WEEK + 300)
    v[-100:] -= 0.1  # the last 100 points (8h20m) move down by two sigma
    verdicts = make_detector(_spec(below=0.75)).update_many(ts, v)
    flagged = [i for i, x in enumerate(verdicts) if x.anomalous]
    assert flagged and all(i >= len(v) - 100 for i in flagged)
    assert flagged[0] - (len(v) - 100) <= 24  # within the 2h recent window
    first = verdicts[flagged[0]]
    assert first.value < first.expected and math.isnan(first.lower) and math.isnan(first.upper)
    assert first.surprise >= 4.5 and 0 < first.score <= 1
    assert first.detail.startswith(f"median {first.expected:.3g} → {first.value:.3g} (last 2h, ")
    assert "; below 0.75: 2% → " in first.detail


def test_direction_up_and_min_shift_ignore_that_shift() -> None:
    ts, v = _series(WEEK + 300)
    v[-100:] -= 0.1
    for spec in (_spec(direction="up"), _spec(min_shift=0.2)):
        assert not any(x.anomalous for x in make_detector(spec).update_many(ts, v))


def test_warms_up_on_points_and_a_day_of_history() -> None:
    ts, v = _series(400)
    verdicts = make_detector(_spec()).update_many(ts, v)
    first_ready = next(i for i, x in enumerate(verdicts) if x.ready)
    assert first_ready == int((26 * 3600) / STEP)  # recent 2h + 1 day, at 5-minute points
    assert verdicts[0].reason == "warming up: 0+1/12+12 points, 0s/1d2h history"


def test_stationary_series_are_not_flagged() -> None:
    flags = ready = 0
    for seed in range(3):
        ts, v = _series(2 * WEEK, seed=seed)
        verdicts = [x for x in make_detector(_spec(direction="both")).update_many(ts, v) if x.ready]
        flags += sum(x.anomalous for x in verdicts)
        ready += len(verdicts)
    # the nominal tail of sensitivity 4 on both sides is 0.6 per 10,000 independent tests
    assert ready > 10_000 and flags <= 2


class _Nominal:
    """An empirical tail that never objects: the nominal KS p-value alone decides."""

    def log_p(self, x: float, side: int) -> float:
        return -math.inf

    def push(self, x: float) -> None:
        pass


@pytest.mark.parametrize("name", ["weekends", "normal"])
def test_seasonal_quality_series_flag_only_without_the_calibration(name: str) -> None:
    # The corpus' groundedness: 5 to 65 judged calls per 5 minutes (a daily cycle of spread) and a
    # weekend level. KS assumes independent points; the daily cycle breaks that.
    s = corpus.groundedness(name, 55 if name == "weekends" else 56)
    spec = _spec(direction="both")
    calibrated = make_detector(spec).update_many(s.ts, s.values)
    nominal = make_detector(spec)
    assert isinstance(nominal, Drift)
    nominal.tail = _Nominal()  # type: ignore[assignment]
    assert not any(x.anomalous for x in calibrated)
    assert sum(x.anomalous for x in nominal.update_many(s.ts, s.values)) > 100


def test_engine_adds_the_detail_to_the_alert() -> None:
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    src = MemorySource()
    series = src.series("Drift", {"feature": "rag"})
    ts, v = _series(WEEK + 100)
    v[-60:] -= 0.15
    for t, x in zip(ts - ts[0] + to_epoch(t0), v, strict=True):
        series.add(float(t), float(x))
    rule = {"alert": "Drift", "expr": "x", "detector": {"kind": "drift", "reference": "7d", "below": 0.7}}
    ev = GroupEvaluator(
        Group.model_validate({"name": "g", "interval": "5m", "rules": [rule]}), {"prometheus": src}
    )
    ev.evaluate(t0 + timedelta(seconds=float(ts[-1] - ts[0])))
    (alert,) = ev.alerts()
    assert alert.state is AlertState.FIRING
    assert (
        alert.annotations[DETAIL].startswith("median 0.848 → 0.707 (last 2h, 24 points")
        and "below 0.7: " in alert.annotations[DETAIL]
    )
