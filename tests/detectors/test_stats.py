"""Numeric helpers: median/MAD on sorted values, floors, and the calibrated scores."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.detectors.stats import (
    excess_score,
    mad_sorted,
    median_sorted,
    normal_cdf,
    normal_sf,
    robust_location_scale,
    tail_score,
)

finite = st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False)
samples = st.lists(st.one_of(finite, st.integers(-3, 3).map(float)), min_size=1, max_size=60)


@given(values=samples)
@settings(max_examples=300, deadline=None)
def test_median_and_mad_match_numpy(values: list[float]) -> None:
    ordered = sorted(values)
    med = median_sorted(ordered)
    assert med == pytest.approx(float(np.median(ordered)), rel=1e-12, abs=1e-12)
    want = float(np.median(np.abs(np.asarray(ordered) - med)))
    assert mad_sorted(ordered, med) == pytest.approx(want, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("values", "median", "sigma"),
    [
        ([], math.nan, math.nan),
        ([5.0], 5.0, 5e-3),  # relative floor: 0.1 % of |median|
        ([0.0, 0.0, 0.0], 0.0, 1e-12),  # absolute floor
        ([1.0, 2.0, 3.0, 4.0, 100.0], 3.0, 1.4826),
    ],
)
def test_robust_location_scale(values: list[float], median: float, sigma: float) -> None:
    got_median, got_sigma = robust_location_scale(values)
    for got, want in ((got_median, median), (got_sigma, sigma)):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12)


def test_min_spread_raises_the_floor() -> None:
    assert robust_location_scale([5.0, 5.0, 5.0], min_spread=2.0) == (5.0, 2.0)


@pytest.mark.parametrize(
    ("z", "direction", "score"),
    [
        (0.0, "both", 0.0),
        (1.0, "both", 0.6826894921370859),
        (-2.0, "both", 0.9544997361036416),
        (3.0, "up", 0.9973002039367398),
        (-3.0, "up", 0.0),
        (-3.0, "down", 0.9973002039367398),
        (3.0, "down", 0.0),
        (math.inf, "up", 1.0),
        (math.nan, "both", 0.0),
        (40.0, "both", 1.0),
    ],
)
def test_tail_score(z: float, direction: str, score: float) -> None:
    assert tail_score(z, direction) == pytest.approx(score, rel=1e-12, abs=0.0)  # type: ignore[arg-type]


@given(a=st.floats(0, 50), b=st.floats(0, 50))
def test_tail_score_is_monotone_and_matches_the_normal_tail(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert 0.0 <= tail_score(lo) <= tail_score(hi) <= 1.0
    assert tail_score(a) == pytest.approx(1 - 2 * normal_sf(a), abs=1e-15)
    assert normal_cdf(a) == pytest.approx(1 - normal_sf(a), abs=1e-15)


@pytest.mark.parametrize(
    ("excess", "scale", "score"),
    [
        (0.0, 1.0, 0.0),
        (-1.0, 1.0, 0.0),
        (math.nan, 1.0, 0.0),
        (1.0, 1.0, 1 - math.exp(-1)),
        (math.inf, 1.0, 1.0),
    ],
)
def test_excess_score(excess: float, scale: float, score: float) -> None:
    assert excess_score(excess, scale) == pytest.approx(score, rel=1e-12, abs=0.0)


def test_importing_the_detectors_does_not_import_scipy() -> None:
    code = "import sys, watcher.detectors; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
