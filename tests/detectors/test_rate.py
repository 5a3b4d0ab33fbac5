"""The rate detector: sample-size awareness (2 of 4 vs 15 % of 2,000), band, warm-up, causality."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.detectors import make_detector
from watcher.detectors.rate import RateBaseline, beta_binomial_pmf
from watcher.errors import DetectorError
from watcher.rules.schema import RateDetector

STEP = 300.0


def warmed(direction: str = "up", seed: int = 0, p: float = 0.02) -> RateBaseline:
    """Return a rate detector fed two days of a p refusal rate at 50-500 calls per point."""
    det = RateBaseline(direction=direction)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    for i in range(576):
        n = int(rng.integers(50, 500))
        det.update(i * STEP, rng.binomial(n, p) / n, n)
    return det


@pytest.mark.parametrize(
    ("value", "count", "anomalous"),
    [
        (0.5, 4, False),  # 2 refusals out of 4 calls at night
        (1.0, 4, False),
        (0.3, 10, False),  # p ≈ 1e-3: unusual, not a 4-sigma event
        (0.6, 10, True),
        (0.15, 2000, True),  # 15 % of 2,000 calls
        (0.025, 2000, False),
        (0.02, 100_000, False),
        (0.0, 300, False),
    ],
)
def test_sample_size_decides(value: float, count: int, anomalous: bool) -> None:
    v = warmed().update(576 * STEP, value, count)
    assert v is not None and v.ready and v.anomalous is anomalous
    assert abs(v.expected - 0.02) < 0.005


@pytest.mark.parametrize("seed", range(3))
def test_two_of_four_never_fires_whatever_the_baseline(seed: int) -> None:
    det = warmed(seed=seed, p=[0.001, 0.02, 0.1][seed])
    for i in range(100):
        v = det.update((576 + i) * STEP, 0.5, 4)
        assert v is not None and not v.anomalous


def test_down_direction_catches_a_drop_in_a_success_rate() -> None:
    v = warmed("down", p=0.9).update(576 * STEP, 0.6, 1000)
    assert v is not None and v.anomalous and v.score > 0.9999
    v2 = warmed("down", p=0.9).update(576 * STEP, 0.99, 1000)
    assert v2 is not None and not v2.anomalous


def test_a_sustained_incident_keeps_firing_instead_of_widening_its_own_band() -> None:
    det = warmed()
    rng = np.random.default_rng(5)
    rho_before = det.rho
    flags = []
    for i in range(24):  # two hours at 24 % refusals of ~66 calls per point
        n = 66
        v = det.update((576 + i) * STEP, rng.binomial(n, 0.24) / n, n)
        assert v is not None
        flags.append(v.anomalous)
    assert all(flags)
    assert det.rho == rho_before  # anomalous points stay out of the over-dispersion estimate


def test_band_is_the_exact_critical_proportion() -> None:
    det = warmed()
    v = det.update(576 * STEP, 0.02, 200)
    assert v is not None
    pmf = beta_binomial_pmf(200, det.baseline, det.rho)
    k_star = math.ceil(v.upper * 200)
    assert pmf[k_star:].sum() < det.alpha <= pmf[k_star - 1 :].sum()


def test_warm_up_counts_trials() -> None:
    det = RateBaseline(min_trials=100)
    v = det.update(0.0, 0.1, 40)
    assert v is not None and v.reason == "warming up: 0/100 baseline trials"
    v = det.update(STEP, 0.1, 40)
    assert v is not None and v.reason == "warming up: 40/100 baseline trials"


def test_without_counts_a_point_is_one_trial_and_never_pages() -> None:
    det = make_detector(RateDetector(kind="rate", min_trials=5))
    verdicts = det.update_many(STEP * np.arange(500), np.where(np.arange(500) % 50 == 0, 1.0, 0.0))
    assert not any(v.anomalous for v in verdicts)


def comparable(v: Any) -> tuple[Any, ...]:
    """Return the verdict's fields with NaN made comparable."""
    return tuple("nan" if isinstance(x, float) and math.isnan(x) else x for x in dataclasses.astuple(v))


@given(
    pts=st.lists(
        st.tuples(st.sampled_from([60, 300, 0, 7200]), st.floats(0, 1), st.integers(0, 3000)), max_size=80
    ),
    cut=st.integers(0, 80),
)
@settings(max_examples=60, deadline=None)
def test_causal_with_counts(pts: list[tuple[int, float, int]], cut: int) -> None:
    s = RateDetector(kind="rate", min_trials=20, direction="both")
    ts = np.cumsum([p[0] for p in pts], dtype=np.float64)
    vs = np.array([p[1] for p in pts])
    cs = np.array([p[2] for p in pts], dtype=np.float64)
    full = make_detector(s).update_many(ts, vs, cs)
    prefix = make_detector(s).update_many(ts[:cut], vs[:cut], cs[:cut])
    assert [comparable(v) for v in prefix] == [comparable(v) for v in full[: len(prefix)]]
    for v in full:
        assert 0.0 <= v.score <= 1.0
        if v.anomalous:
            assert v.score > 0
        elif v.ready:
            assert math.isnan(v.upper) or v.value <= v.upper
            assert math.isnan(v.lower) or v.value >= v.lower


@pytest.mark.parametrize(
    "kw", [{"min_count": 0.0}, {"min_delta": 2.0}, {"direction": "x"}, {"sensitivity": 0.0}]
)
def test_impossible_parameters_are_detector_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(DetectorError):
        RateBaseline(**kw)


def _night(det: RateBaseline, p: float, start: int, minutes: int, seed: int, calls: int = 6) -> list[Any]:
    """Feed one-minute points of ``calls`` calls at refusal rate ``p``; return the verdicts."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + minutes):
        out.append(det.update(60.0 * i, rng.binomial(calls, p) / calls, calls))
    return out


def test_sustained_pools_a_rise_that_no_single_point_can_show() -> None:
    # 3 % -> 15 % on 6 calls a minute: below min_count, so one point is never judged; pooled, the
    # last 16 minutes page within 20 minutes of the start, and the default never does
    for sustained in (False, True):
        det = RateBaseline(sustained=sustained)
        _night(det, 0.03, 0, 3000, seed=1)
        spike = _night(det, 0.15, 3000, 60, seed=2)
        flagged = [i for i, v in enumerate(spike) if v.anomalous]
        if sustained:
            assert flagged and flagged[0] <= 20, flagged
            assert len(flagged) >= 30  # most of the hour, not a blip
        else:
            assert flagged == []


def test_a_run_flag_ends_with_the_incident_and_one_extreme_point_cannot_carry_a_run() -> None:
    det = RateBaseline(sustained=True)
    _night(det, 0.03, 0, 3000, seed=1)
    spike = _night(det, 0.15, 3000, 60, seed=2)
    after = _night(det, 0.03, 3060, 60, seed=3)
    assert any(v.anomalous for v in spike)
    # a point at or below the baseline is never flagged by the run; the run decays within 16 points
    assert not any(v.anomalous for v in after if v.value <= v.expected)
    assert not any(v.anomalous for v in after[16:])
    # one minute with 10 of 12 calls refused is flagged by the point test; the clip at 3 sd keeps
    # it from carrying the next minutes
    v = det.update(60.0 * 3120, 10 / 12, 12)
    assert v is not None and v.anomalous
    quiet = _night(det, 0.03, 3121, 30, seed=4)
    assert not any(q.anomalous for q in quiet)


@pytest.mark.parametrize("seed", range(3))
def test_sustained_keeps_its_false_flag_budget_on_overdispersed_rates(seed: int) -> None:
    # a rate that wanders (beta, concentration 200) at few calls per point: the pooled test uses
    # the over-dispersion, so it does not add up noise into evidence
    rng = np.random.default_rng(seed)
    det = RateBaseline(sustained=True, direction="both")
    n = rng.poisson(4.0, 20_000)
    p = rng.beta(0.05 * 200, 0.95 * 200, 20_000)
    flags = ready = 0
    for i in range(20_000):
        if n[i] == 0:
            continue
        v = det.update(60.0 * i, rng.binomial(n[i], p[i]) / n[i], float(n[i]))
        if v is not None and v.ready:
            ready += 1
            flags += v.anomalous
    assert ready > 15_000 and flags / ready < 5e-4  # sensitivity 4: a few per 10,000 at most


def test_the_run_band_holds_every_point_it_does_not_flag() -> None:
    det = RateBaseline(sustained=True)
    verdicts = _night(det, 0.03, 0, 3000, seed=5) + _night(det, 0.2, 3000, 40, seed=6)
    for v in verdicts:
        if not v.ready:
            continue
        if v.anomalous:
            assert not (v.value <= v.upper), v  # NaN upper never holds it either
        elif not math.isnan(v.upper):
            assert v.value <= v.upper, v
