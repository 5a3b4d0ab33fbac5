"""The ``auto`` detector kind: the default a user gets without tuning.

This module owns the selection rule only; the scoring is done by the chosen kind. It does not own
any statistics or the spec (``rules.schema.AutoDetector``).

Selection rule, decided on the first point with a value (so it is causal) and kept for the life of
the series' detector:

1. **proportion with counts → ``rate``**: the point carries a trial count (``Series.counts``:
   calls, scores) and its value is within [0, 1]. Proportions are judged on successes out of
   trials (beta-binomial), which is what keeps a 2-of-4 refusal rate at 3 a.m. quiet.
2. **anything else → ``seasonal`` with ``seasons: null``**: the seasonal kind detects a daily season
   after two days and a weekly one after two weeks, and re-checks at every refit (6 h). With no
   season detected its profile is zero and it is exactly the robust EWMA of the ``ewma`` kind
   (level half-life 2 h, spread half-life 1 d, confirmed level shifts after 1 h), so a
   non-seasonal series gets the adaptive baseline and a seasonal one gets the profile.

``sensitivity``, ``direction`` and ``min_spread`` are passed through; ``history`` is the seasonal
history. Warm-up is the chosen kind's (two days for the seasonal path, 200 trials for the rate).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from ..core import Verdict
from .base import Detector, register
from .ewma import check_common
from .rate import RateBaseline
from .seasonal import SeasonalBaseline
from .stats import Direction


class AutoSelect(Detector):
    """Delegates to ``rate`` or ``seasonal`` (seasons detected) chosen on the first point."""

    kind = "auto"

    def __init__(
        self,
        sensitivity: float = 4.0,
        direction: Direction = "both",
        min_spread: float = 0.0,
        history: timedelta = timedelta(days=21),
        sustained: bool = False,
    ) -> None:
        super().__init__()
        check_common("auto", sensitivity, direction, min_spread)
        self.sensitivity = float(sensitivity)
        self.direction: Direction = direction
        self.min_spread = float(min_spread)
        self.history = history
        self.sustained = sustained  # both paths': seasonal's run mean, rate's pooled run
        self.inner: Detector | None = None

    @property
    def chosen(self) -> str:
        """Return the kind the detector delegates to ("" before the first point)."""
        return "" if self.inner is None else self.inner.kind

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        if self.inner is None:
            self.inner = self._choose(value, count)
        verdict = self.inner.update(ts, value, count)
        assert verdict is not None  # our own stale check ran first with the same timestamps
        return verdict

    def _choose(self, value: float, count: float | None) -> Detector:
        """Return the detector for this series, from its first point with a value."""
        if count is not None and math.isfinite(count) and count > 0 and 0.0 <= value <= 1.0:
            return RateBaseline(
                sensitivity=self.sensitivity, direction=self.direction, sustained=self.sustained
            )
        return SeasonalBaseline(
            seasons=None,
            history=self.history,
            sensitivity=self.sensitivity,
            direction=self.direction,
            min_spread=self.min_spread,
            sustained=self.sustained,
        )


def build_auto(spec: Any) -> Detector:
    """Build an auto-selecting detector from an ``AutoDetector`` spec."""
    return AutoSelect(
        sensitivity=spec.sensitivity,
        direction=spec.direction,
        min_spread=spec.min_spread,
        history=spec.history,
        sustained=spec.sustained,
    )


register("auto")(build_auto)
