"""The auto detector: the selection rule, and that the chosen kind does the scoring."""

from __future__ import annotations

import numpy as np

from watcher.detectors import make_detector
from watcher.detectors.auto import AutoSelect
from watcher.rules.schema import AutoDetector

STEP = 300.0
DAY = 86_400.0
T0 = 1_700_006_400.0


def test_proportion_with_counts_gets_rate() -> None:
    det = make_detector(AutoDetector(kind="auto"))
    assert isinstance(det, AutoSelect) and det.chosen == ""
    det.update(T0, 0.02, 300.0)
    assert det.chosen == "rate"


def test_values_outside_unit_interval_or_without_counts_get_seasonal() -> None:
    for value, count in [(0.02, None), (3.5, 300.0), (0.5, 0.0)]:
        det = AutoSelect()
        det.update(T0, value, count)
        assert det.chosen == "seasonal"


def test_seasonal_path_detects_the_daily_cycle_and_catches_a_night_spike() -> None:
    n = 4 * 288
    ts = T0 + STEP * np.arange(n)
    hour = (ts % DAY) / 3600.0
    values = (20.0 + 80.0 * np.exp(-(((hour - 14.0) / 4.0) ** 2))) * (
        1.0 + np.random.default_rng(0).normal(0.0, 0.05, n)
    )
    values[3 * 288 + 36 : 3 * 288 + 48] *= 4.0
    det = AutoSelect()
    verdicts = det.update_many(ts, values)
    inner = det.inner
    assert inner is not None and inner.kind == "seasonal"
    assert [s.total_seconds() for s in inner.seasons] == [DAY]  # type: ignore[attr-defined]
    pages, run = [], 0
    for i, v in enumerate(verdicts):
        run = run + 1 if v.anomalous else 0
        if run == 3:
            pages.append(i)
    assert pages == [3 * 288 + 38]


def test_rate_path_ignores_small_samples() -> None:
    det = AutoSelect()
    rng = np.random.default_rng(1)
    for i in range(300):
        n = int(rng.integers(100, 400))
        det.update(T0 + i * STEP, rng.binomial(n, 0.02) / n, n)
    quiet = det.update(T0 + 300 * STEP, 0.5, 4)
    loud = det.update(T0 + 301 * STEP, 0.15, 2000)
    assert quiet is not None and not quiet.anomalous
    assert loud is not None and loud.anomalous
