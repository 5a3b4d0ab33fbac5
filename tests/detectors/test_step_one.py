"""``Detector.step_one`` (a steady tick's one point) gives exactly what ``update_many`` gives.

Every kind, and the re-baselining wrapper the daemon puts around them, is fed the same random
series twice, point by point: once through ``update_many`` with arrays of one point (the path
every fetch took before), once through ``step_one`` with Python floats. The verdicts (bands,
scores, reasons) must be equal, NaN for NaN, and so must the detectors' checkpoints, which must
also round-trip: a detector restored from either checkpoint goes on giving the same verdicts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from watcher.core import Verdict
from watcher.detectors import make_detector
from watcher.detectors.base import Detector
from watcher.detectors.checkpoint import get_state, set_state
from watcher.engine.rebaseline import Rebaselining
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

ALSO = ("watcher.engine.rebaseline",)

SPECS: list[Any] = [
    EwmaDetector(kind="ewma", sensitivity=4, direction="up"),
    EwmaDetector(kind="ewma", halflife="10m", min_points=3, shift_after="15m"),
    EwmaDetector(kind="ewma", halflife="10m", min_points=3, direction="up", sustained=True),
    RollingDetector(kind="rolling", window="1h", min_points=3, min_history="10m"),
    RollingDetector(kind="rolling", window="2h", min_points=4, direction="down", min_spread=0.5),
    SeasonalDetector(kind="seasonal", seasons=["1h"], history="4h", refit="20m", resolution="5m"),
    RateDetector(kind="rate", min_trials=3, min_count=1, min_delta=0.0, direction="both", halflife="1h"),
    AutoDetector(kind="auto", history="2d"),
    BudgetDetector(kind="budget", period="day", amount=5.0),
    DriftDetector(kind="drift", reference="1h", recent="10m", min_points=3),
    ThresholdDetector(kind="threshold", above=3.0, below=0.0),
]
IDS = [f"{s.kind}-{i}" for i, s in enumerate(SPECS)]

SHAPES = ("noisy", "zero-inflated", "jumps")


def _series(shape: str, n: int, seed: int) -> tuple[list[float], list[float], list[float]]:
    """Return timestamps, values and counts: NaN points, a duplicate and an older timestamp included."""
    rng = np.random.default_rng(seed)
    ts = 1.8e9 + 60.0 * np.arange(n)
    ts[n // 3] = ts[n // 3 - 1]  # a duplicate timestamp: stale
    ts[n // 2] = ts[n // 2 - 5]  # an older one: stale
    if shape == "noisy":
        values = 2.0 + np.sin(np.arange(n) / 30.0) + rng.normal(0.0, 0.2, n)
    elif shape == "zero-inflated":
        values = np.where(rng.random(n) < 0.9, 0.0, rng.integers(1, 20, n).astype(float))
    else:
        values = 1.0 + rng.normal(0.0, 0.05, n)
        values[n // 4 : n // 4 + 8] *= 30.0  # an incident
        values[2 * n // 3 :] += 5.0  # a lasting shift
    values[rng.random(n) < 0.05] = math.nan
    values[7] = math.inf
    counts = rng.integers(0, 50, n).astype(float)
    return ts.tolist(), values.tolist(), counts.tolist()


def _key(v: Verdict | None) -> tuple[Any, ...] | None:
    """Return the verdict as a tuple where NaN equals NaN."""
    if v is None:
        return None
    return tuple(
        "nan" if isinstance(x, float) and math.isnan(x) else x
        for x in (getattr(v, f.name) for f in dataclasses.fields(v))
    )


def _many(det: Detector, t: float, v: float, c: float) -> Verdict | None:
    got = det.update_many(np.array([t]), np.array([v]), np.array([c]))
    assert len(got) <= 1
    return got[0] if got else None


def _spec_values(spec: Any, values: list[float]) -> list[float]:
    # ``rate`` takes proportions; the others take the values as they are
    if spec.kind == "rate":
        return [min(max(x / 20.0, 0.0), 1.0) if math.isfinite(x) else x for x in values]
    return values


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_one_equals_update_many_and_checkpoints_round_trip(spec: Any, shape: str) -> None:
    ts, values, counts = _series(shape, 900, seed=len(shape))
    values = _spec_values(spec, values)
    a, b = make_detector(spec, "acme"), make_detector(spec, "acme")
    half = 600
    for t, v, c in zip(ts[:half], values[:half], counts[:half], strict=True):
        assert _key(_many(a, t, v, c)) == _key(b.step_one(t, v, c))
    blob_a, blob_b = get_state(a), get_state(b)
    assert blob_a == blob_b
    # Restored from the checkpoint, each path goes on exactly as the live detectors do.
    ra, rb = set_state(make_detector(spec, "acme"), blob_a), set_state(make_detector(spec, "acme"), blob_b)
    for t, v, c in zip(ts[half:], values[half:], counts[half:], strict=True):
        want = _key(_many(a, t, v, c))
        assert _key(b.step_one(t, v, c)) == want
        assert _key(ra.step_one(t, v, c)) == want
        assert _key(_many(rb, t, v, c)) == want
    assert get_state(a) == get_state(b) == get_state(ra) == get_state(rb)


@pytest.mark.parametrize("spec", SPECS[:4], ids=IDS[:4])
def test_rebaselining_step_one_equals_update_many_through_a_marker(spec: Any) -> None:
    ts, values, counts = _series("noisy", 700, seed=3)
    for k in range(400, 700):
        if math.isfinite(values[k]):
            values[k] += 3.0  # the release moves the level
    a, b = Rebaselining(make_detector(spec)), Rebaselining(make_detector(spec))
    for det in (a, b):
        det.mark(ts[399] + 1.0, 1800.0, "deploy 42")
    for k, (t, v, c) in enumerate(zip(ts, values, counts, strict=True)):
        assert _key(_many(a, t, v, c)) == _key(b.step_one(t, v, c)), k
        if k == 550:
            assert get_state(a, ALSO) == get_state(b, ALSO)
    assert a.offset == b.offset != 0.0
    assert get_state(a, ALSO) == get_state(b, ALSO)
