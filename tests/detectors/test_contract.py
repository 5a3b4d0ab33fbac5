"""The detector contract, checked for every registered kind with property-based inputs.

Every kind must be causal, never raise on NaN/inf/gaps/duplicate or older timestamps, ignore stale
points, stay not-ready and quiet while warming up, keep its score in [0, 1], score > 0 whenever it
flags a point, and keep a non-flagged ready point inside the band it reports.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core import Verdict
from watcher.detectors import known_kinds, make_detector
from watcher.errors import DetectorError
from watcher.rules.schema import (
    AutoDetector,
    BudgetDetector,
    DriftDetector,
    EwmaDetector,
    RateDetector,
    RollingDetector,
    SeasonalDetector,
    ThresholdDetector,
)

SPECS: list[Any] = [
    ThresholdDetector(kind="threshold", above=10.0),
    ThresholdDetector(kind="threshold", below=-5.0),
    ThresholdDetector(kind="threshold", above=3.0, below=0.0),
    ThresholdDetector(kind="threshold", above=0.0),
    RollingDetector(kind="rolling", window="1h", min_points=3, min_history="10m"),
    RollingDetector(kind="rolling", window="30m", min_points=5, direction="up", sensitivity=2),
    RollingDetector(
        kind="rolling", window="2h", min_points=4, min_history="15m", direction="down", min_spread=0.5
    ),
    RollingDetector(kind="rolling", window="1h", min_points=3, min_history="0s", sensitivity=0.5),
    EwmaDetector(kind="ewma", halflife="10m", min_points=3, shift_after="15m"),
    EwmaDetector(
        kind="ewma", min_points=5, direction="up", sensitivity=0.5, min_spread=1.0, shift_after=None
    ),
    SeasonalDetector(kind="seasonal", seasons=["1h"], history="4h", refit="20m", resolution="5m"),
    SeasonalDetector(
        kind="seasonal", seasons=["30m", "2h"], history="6h", refit="1h", direction="down", min_history="1h"
    ),
    RateDetector(kind="rate", min_trials=3, min_count=1, min_delta=0.0, direction="both", halflife="1h"),
    RateDetector(kind="rate", min_trials=5, min_count=1, sensitivity=0.5),
    AutoDetector(kind="auto", history="2d"),
    # Opt-in sustained evidence: the run's mean flags on its own (the band may lie below the
    # expectation, or be infinite); the contract holds all the same.
    RollingDetector(kind="rolling", window="1h", min_points=3, min_history="10m", sustained=True),
    EwmaDetector(kind="ewma", halflife="10m", min_points=3, direction="up", sustained=True),
    SeasonalDetector(
        kind="seasonal", seasons=["1h"], history="4h", refit="20m", resolution="5m", sustained=True
    ),
    RateDetector(kind="rate", min_trials=3, min_count=1, direction="both", halflife="1h", sustained=True),
    RateDetector(kind="rate", min_trials=5, min_count=3, min_delta=0.0, sensitivity=0.5, sustained=True),
    BudgetDetector(kind="budget", amount=100.0),
    BudgetDetector(kind="budget", period="day", amount=5.0, require="all"),
    DriftDetector(kind="drift", reference="1h", recent="10m", min_points=3),
    DriftDetector(
        kind="drift", reference="2h", recent="15m", min_points=4, direction="both", sensitivity=0.5
    ),
    DriftDetector(
        kind="drift", reference="30m", recent="5m", min_points=3, direction="up", min_shift=1.0, below=0.0
    ),
]
IDS = [f"{s.kind}-{i}" for i, s in enumerate(SPECS)]

# Steps in seconds: mostly regular, with duplicates (0), going back in time and long gaps.
steps = st.one_of(st.just(60), st.just(60), st.just(300), st.sampled_from([0, -60, 1, 4 * 3600]))
values = st.one_of(
    st.integers(0, 10).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e3, -1e3]),
)
points = st.lists(st.tuples(steps, values), max_size=150)
RUN = settings(max_examples=150, deadline=None)


def arrays(pts: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Turn (step, value) pairs into timestamp and value arrays starting at t = 1e9."""
    ts = 1e9 + np.cumsum([s for s, _ in pts], dtype=np.float64)
    return ts, np.array([v for _, v in pts], dtype=np.float64)


def comparable(v: Verdict) -> tuple[Any, ...]:
    """Return the verdict's fields with NaN made comparable (NaN != NaN otherwise)."""
    return tuple("nan" if isinstance(x, float) and math.isnan(x) else x for x in dataclasses.astuple(v))


def check_verdict(v: Verdict) -> None:
    """Assert the per-verdict part of the contract."""
    assert 0.0 <= v.score <= 1.0, v
    if not v.ready:
        assert not v.anomalous and v.score == 0.0 and v.reason, v
        return
    if v.anomalous:
        assert v.score > 0.0, v
    else:
        assert math.isnan(v.lower) or v.value >= v.lower, v
        assert math.isnan(v.upper) or v.value <= v.upper, v


def test_every_registered_kind_is_covered() -> None:
    assert {s.kind for s in SPECS} == set(known_kinds())


def test_unknown_kind_is_a_detector_error() -> None:
    with pytest.raises(DetectorError, match="unknown detector kind"):
        make_detector(type("Spec", (), {"kind": "nope"})())


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@given(pts=points, cut=st.integers(0, 150))
@RUN
def test_causal_prefix_verdicts_do_not_change(spec: Any, pts: list[tuple[int, float]], cut: int) -> None:
    ts, vs = arrays(pts)
    full = make_detector(spec).update_many(ts, vs)
    prefix = make_detector(spec).update_many(ts[:cut], vs[:cut])
    assert [comparable(v) for v in prefix] == [comparable(v) for v in full[: len(prefix)]]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@given(pts=points, cuts=st.lists(st.integers(0, 150), max_size=4), counts=st.booleans())
@RUN
def test_one_batch_equals_point_by_point_and_any_split(
    spec: Any, pts: list[tuple[int, float]], cuts: list[int], counts: bool
) -> None:
    ts, vs = arrays(pts)
    cs = np.arange(len(vs), dtype=np.float64) % 7 * 50.0 if counts else None
    batch = make_detector(spec).update_many(ts, vs, cs)
    det = make_detector(spec)
    cl = [None] * len(vs) if cs is None else cs.tolist()
    one = [det.update(t, v, c) for t, v, c in zip(ts, vs, cl, strict=True)]  # numpy scalars, as given
    assert [comparable(v) for v in batch] == [comparable(v) for v in one if v is not None]
    det = make_detector(spec)
    pieces: list[Verdict] = []
    edges = [0, *sorted(min(c, len(vs)) for c in cuts), len(vs)]
    for a, b in itertools.pairwise(edges):
        pieces += det.update_many(ts[a:b], vs[a:b], None if cs is None else cs[a:b])
    assert [comparable(v) for v in pieces] == [comparable(v) for v in batch]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@given(pts=points)
@RUN
def test_safe_and_within_contract(spec: Any, pts: list[tuple[int, float]]) -> None:
    det = make_detector(spec)
    ts, vs = arrays(pts)
    newest = -math.inf
    for t, x in zip(ts.tolist(), vs.tolist(), strict=True):
        v = det.update(t, x)
        if t <= newest:
            assert v is None
            continue
        newest = t
        assert v is not None and v.ts == t
        if not math.isfinite(x):
            assert (v.ready, v.anomalous, v.reason) == (False, False, "no data")
        check_verdict(v)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_first_point_is_quiet_unless_the_kind_has_no_warm_up(spec: Any) -> None:
    v = make_detector(spec).update(1e9, 1e6)
    assert v is not None
    if spec.kind in ("threshold", "budget"):  # budget: a sum from the period's start
        assert v.ready
    else:
        assert not v.ready and not v.anomalous and v.reason.startswith("warming up")
