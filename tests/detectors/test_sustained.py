"""Opt-in sustained evidence (``sustained: true``) and the count floor of ``seasonal``'s proportions.

``sustained`` lets the calibrated mean of the last ``RUN`` clipped residuals flag on its own, so a
modest lasting shift pages although no single point is extreme, while one outlier cannot carry the
mean; without it (the default) every verdict is the one the kinds gave before the option existed.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from watcher.bench import hardened
from watcher.detectors import make_detector
from watcher.detectors.calibration import RUN, TailCalibrator
from watcher.detectors.seasonal import SeasonalBaseline, count_floor
from watcher.rules.schema import DetectorSpec

KINDS = ("rolling", "ewma", "seasonal", "auto")


def _judge_all(cal: TailCalibrator, z: list[float]) -> list[bool]:
    return [cal.judge(x, 0.0, 1.0)[3] for x in z]


def _noise(n: int, seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(0.0, 1.0, n).tolist()


def test_a_modest_lasting_shift_flags_with_sustained_and_not_without() -> None:
    z = _noise(3000, 1)
    shifted = [x + 2.0 for x in _noise(40, 2)]  # 2 sigma: hardly a point is extreme
    default, sustained = TailCalibrator(4.0, "up"), TailCalibrator(4.0, "up", sustained=True)
    assert not any(_judge_all(default, z)[-1000:])
    assert not any(_judge_all(sustained, z)[-1000:])
    flags = _judge_all(sustained, shifted)
    assert sum(flags[RUN:]) >= 0.8 * len(flags[RUN:])
    # By default the run's mean flags only with the point itself beyond its critical value too.
    assert sum(_judge_all(default, shifted)) < sum(flags) / 2


def test_one_outlier_flags_only_itself_with_sustained() -> None:
    cal = TailCalibrator(4.0, "both", sustained=True)
    _judge_all(cal, _noise(3000, 3))
    after = _judge_all(cal, [80.0, *_noise(2 * RUN, 4)])
    assert after[0]  # the point itself, by the point statistic
    assert not any(after[1:])  # clipped at 3, it cannot carry the mean of the next points


def test_the_band_holds_every_verdict_with_sustained() -> None:
    cal = TailCalibrator(4.0, "both", sustained=True)
    rng = np.random.default_rng(5)
    z = [*rng.normal(0.0, 1.0, 2000), *(rng.normal(0.0, 1.0, 60) + 2.0), *rng.normal(0.0, 1.0, 300)]
    for x in z:
        lower, upper, _, anomalous, surprise = cal.judge(float(x), 0.0, 1.0)
        assert anomalous == (x > upper or x < lower)
        assert surprise >= 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_sustained_absent_or_false_gives_the_default_verdicts(kind: str) -> None:
    s = hardened.heavy_tailed("t", 101, True)
    adapter: TypeAdapter[object] = TypeAdapter(DetectorSpec)
    plain = make_detector(adapter.validate_python({"kind": kind})).update_many(s.ts, s.values, s.counts)
    off = make_detector(adapter.validate_python({"kind": kind, "sustained": False}))
    on = make_detector(adapter.validate_python({"kind": kind, "sustained": True}))
    assert off.update_many(s.ts, s.values, s.counts) == plain
    assert on.update_many(s.ts, s.values, s.counts) != plain


def test_sustained_must_be_a_boolean() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(DetectorSpec).validate_python({"kind": "seasonal", "sustained": "sometimes"})
    with pytest.raises(ValidationError):
        TypeAdapter(DetectorSpec).validate_python({"kind": "rate", "sustained": "sometimes"})
    with pytest.raises(ValidationError):  # threshold judges each point on its own
        TypeAdapter(DetectorSpec).validate_python({"kind": "threshold", "above": 1, "sustained": True})
    # rate has its own sustained test (the last 16 points pooled)
    assert TypeAdapter(DetectorSpec).validate_python({"kind": "rate", "sustained": True}).sustained


def test_count_floor_is_half_an_event_for_rare_events_and_the_binomial_sd_for_many() -> None:
    assert count_floor(0.0, 2.0) == pytest.approx(0.25)  # 0.5 event / 2 trials
    assert count_floor(0.005, 2.0) == pytest.approx((2 * 0.005 * 0.995 + 0.25) ** 0.5 / 2)
    binomial = (10_000 * 0.3 * 0.7) ** 0.5 / 10_000
    assert count_floor(0.3, 10_000.0) == pytest.approx(binomial, rel=1e-4)


def test_seasonal_on_sparse_refusals_with_counts_stays_quiet_and_catches_the_daytime_incident() -> None:
    quiet = hardened.sparse_refusals("q", 110, False)
    det = SeasonalBaseline(direction="up")
    flagged = [v for v in det.update_many(quiet.ts, quiet.values, quiet.counts) if v.ready and v.anomalous]
    assert len(flagged) <= 3  # was 74 in 9,504 points: one refusal out of 2 night calls was z ≈ 10
    s = hardened.sparse_refusals("i", 1110, True)
    verdicts = SeasonalBaseline(direction="up").update_many(s.ts, s.values, s.counts)
    ((start, end),) = s.windows
    inside = [v for v in verdicts if v.ready and v.anomalous and start <= v.ts <= end]
    outside = [v for v in verdicts if v.ready and v.anomalous and not start <= v.ts <= end]
    assert len(inside) >= 12 and len(outside) <= 3


def test_the_count_floor_needs_counts_and_proportions() -> None:
    s = hardened.sparse_refusals("q", 110, False)
    with_counts = SeasonalBaseline(direction="up", min_history=timedelta(days=2))
    without = SeasonalBaseline(direction="up", min_history=timedelta(days=2))
    a = with_counts.update_many(s.ts, s.values, s.counts)
    b = without.update_many(s.ts, s.values, None)
    assert sum(v.anomalous for v in a) < sum(v.anomalous for v in b)
