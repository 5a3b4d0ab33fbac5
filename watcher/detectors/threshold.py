"""The ``threshold`` detector kind: static bounds, the Prometheus-style comparison.

This module owns scoring a value against fixed ``above``/``below`` bounds. It does not own
parsing or validating the bounds (``rules.schema.ThresholdDetector``) nor the score formula
(``stats.excess_score``).

Behaviour: anomalous when ``value > above`` or ``value < below`` (the bound itself is normal, as
in PromQL's ``>``). ``upper`` is ``above`` and ``lower`` is ``below``, NaN for a bound that is not
set (no bound on that side); ``expected`` is the midpoint when both are set, else NaN. The score is
0 inside the bounds and ``1 - exp(-excess / scale)`` outside, with ``scale = |bound|`` (1 when the
bound is 0), so it is > 0 exactly when the point is anomalous and a value twice the bound scores
0.63. There is no warm-up: the first point gets a ready verdict.
"""

from __future__ import annotations

import math
from typing import Any

from ..core import Verdict
from ..errors import DetectorError
from .base import Detector, register
from .stats import excess_score


class StaticThreshold(Detector):
    """Flags values outside fixed bounds; keeps no state beyond the last timestamp."""

    kind = "threshold"

    def __init__(self, above: float | None = None, below: float | None = None) -> None:
        super().__init__()
        if above is None and below is None:
            raise DetectorError("a threshold detector needs `above`, `below` or both")
        for name, bound in (("above", above), ("below", below)):
            if bound is not None and not math.isfinite(bound):
                raise DetectorError(f"threshold `{name}` must be a finite number, got {bound!r}")
        if above is not None and below is not None and below > above:
            raise DetectorError("threshold `below` is greater than `above`: no value could ever be normal")
        self.above = above
        self.below = below
        self._expected = (above + below) / 2.0 if above is not None and below is not None else math.nan
        self._upper = math.nan if above is None else float(above)
        self._lower = math.nan if below is None else float(below)

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        score = ratio = 0.0
        if self.above is not None and value > self.above:
            ratio = (value - self.above) / (abs(self.above) or 1.0)
            score = excess_score(value - self.above, abs(self.above) or 1.0)
        elif self.below is not None and value < self.below:
            ratio = (self.below - value) / (abs(self.below) or 1.0)
            score = excess_score(self.below - value, abs(self.below) or 1.0)
        anomalous = (self.above is not None and value > self.above) or (
            self.below is not None and value < self.below
        )
        return Verdict(
            ts=ts,
            value=value,
            expected=self._expected,
            lower=self._lower,
            upper=self._upper,
            score=score,
            anomalous=anomalous,
            surprise=ratio / math.log(10.0),  # -log10(1 - score): the excess in bound units, unbounded
        )


def build_threshold(spec: Any) -> Detector:
    """Build a threshold detector from a ``ThresholdDetector`` spec."""
    return StaticThreshold(above=spec.above, below=spec.below)


register("threshold")(build_threshold)
