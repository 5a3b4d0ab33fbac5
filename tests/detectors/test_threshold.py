"""The static threshold detector: bounds, band, score and the absence of warm-up."""

from __future__ import annotations

import math

import pytest

from watcher.detectors import make_detector
from watcher.detectors.threshold import StaticThreshold
from watcher.errors import DetectorError
from watcher.rules.schema import ThresholdDetector

NAN = math.nan

# above, below, value, anomalous, expected score (None: just > 0), expected, lower, upper
CASES = [
    (10.0, None, 5.0, False, 0.0, NAN, NAN, 10.0),
    (10.0, None, 10.0, False, 0.0, NAN, NAN, 10.0),  # the bound itself is normal, as with PromQL `>`
    (10.0, None, 20.0, True, 1 - math.exp(-1), NAN, NAN, 10.0),
    (10.0, None, 1e9, True, 1.0, NAN, NAN, 10.0),
    (10.0, None, -1e9, False, 0.0, NAN, NAN, 10.0),
    (None, 0.5, 0.25, True, 1 - math.exp(-0.5), NAN, 0.5, NAN),
    (None, 0.5, 0.5, False, 0.0, NAN, 0.5, NAN),
    (None, 0.5, 1e9, False, 0.0, NAN, 0.5, NAN),
    (3.0, 1.0, 2.0, False, 0.0, 2.0, 1.0, 3.0),
    (3.0, 1.0, 4.5, True, 1 - math.exp(-0.5), 2.0, 1.0, 3.0),
    (3.0, 1.0, 0.0, True, 1 - math.exp(-1), 2.0, 1.0, 3.0),
    (0.0, None, 2.0, True, 1 - math.exp(-2), NAN, NAN, 0.0),  # a zero bound scales by 1
    (0.0, None, 5e-324, True, None, NAN, NAN, 0.0),  # the tiniest excess still scores > 0
    (-2.0, None, -1.0, True, 1 - math.exp(-0.5), NAN, NAN, -2.0),
]


@pytest.mark.parametrize(
    ("above", "below", "value", "anomalous", "score", "expected", "lower", "upper"), CASES
)
def test_threshold(
    above: float | None,
    below: float | None,
    value: float,
    anomalous: bool,
    score: float | None,
    expected: float,
    lower: float,
    upper: float,
) -> None:
    det = make_detector(ThresholdDetector(kind="threshold", above=above, below=below))
    v = det.update(1e9, value)
    assert v is not None and v.ready and v.reason == ""
    assert v.anomalous is anomalous
    if score is None:
        assert v.score > 0.0
    else:
        assert v.score == pytest.approx(score, rel=1e-12, abs=0.0)
    for got, want in ((v.expected, expected), (v.lower, lower), (v.upper, upper)):
        assert (math.isnan(got) and math.isnan(want)) or got == want


def test_no_warm_up_and_stale_points_are_ignored() -> None:
    det = StaticThreshold(above=1.0)
    first = det.update(100.0, 5.0)
    assert first is not None and first.ready and first.anomalous
    assert det.update(100.0, 0.0) is None
    assert det.update(50.0, 0.0) is None


@pytest.mark.parametrize(("above", "below"), [(None, None), (1.0, 2.0), (math.inf, None), (None, math.nan)])
def test_impossible_bounds_are_detector_errors(above: float | None, below: float | None) -> None:
    with pytest.raises(DetectorError):
        StaticThreshold(above=above, below=below)
