"""How much history a detector needs: before its first ready verdict, and before it is fully calibrated.

This module owns the arithmetic that turns a detector spec and a rule's step into two spans: until
the kind's own warm-up ends (its verdicts are not ready and never page) and until the calibration
(``calibration.TailCalibrator``) holds enough of the series' own residuals — ``DELAY`` +
``MIN_RING`` scored points for the empirical point tail (before that the tail is a conservative
Laplace one: only extreme points page) and ``DELAY`` + ``RUN`` − 1 + ``RUN_MIN_RING`` for the run
statistic (before that a lasting small shift cannot page). A rule whose lookback is shorter than
``calibrated`` starts every series in that conservative mode after each restart; ``watcher check``
warns about it (the CLI passes ``watcher.cli.lookback_warning`` to ``rules.check``). It does not own the specs
(``rules.schema``) or the lookback default (``engine.group.rule_lookback``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .calibration import DELAY, MIN_RING, RUN, RUN_MIN_RING

TAIL_POINTS = DELAY + MIN_RING
"""Scored points before a series' own residuals replace the conservative default tail."""

RUN_POINTS = DELAY + RUN - 1 + RUN_MIN_RING
"""Scored points before the run statistic (a lasting shift of a few sigma) can flag."""


@dataclass(frozen=True)
class Warmup:
    """Spans of history a detector needs, at one point per ``step``."""

    ready: timedelta
    """Until the first ready verdict (the kind's own warm-up)."""
    tail: timedelta
    """Until the point tail is the series' own (``ready`` + ``TAIL_POINTS`` steps)."""
    calibrated: timedelta
    """Until the run statistic can flag too (``ready`` + ``RUN_POINTS`` steps): fully calibrated."""


def warmup(spec: Any, step: timedelta) -> Warmup:
    """Return the warm-up spans of a detector ``spec`` (a ``rules.schema`` model) at one point per ``step``.

    ``threshold``, ``rate`` and ``budget`` are not calibrated by residuals (a static bound; an exact
    beta-binomial tail; a sum against a budget): their ``tail`` and ``calibrated`` equal ``ready``.
    """
    kind = getattr(spec, "kind", "")
    if kind == "threshold":
        return Warmup(timedelta(0), timedelta(0), timedelta(0))
    if kind == "rate":
        return Warmup(timedelta(0), timedelta(0), timedelta(0))  # min_trials counts calls, not time
    if kind == "budget":
        return Warmup(timedelta(0), timedelta(0), timedelta(0))  # a sum from the period's start
    if kind == "ewma":
        ready = spec.min_points * step
    elif kind == "rolling":
        window_default = min(spec.window, timedelta(days=1))
        ready = max(
            spec.min_history if spec.min_history is not None else window_default, spec.min_points * step
        )
    elif kind == "seasonal":
        seasons = spec.seasons or [timedelta(days=1)]
        ready = spec.min_history if spec.min_history is not None else 2 * min(seasons)
    elif kind == "auto":
        ready = timedelta(days=2)  # the seasonal path (a daily season detected after two days)
    elif kind == "drift":
        # both windows' points and a day of history (drift.MIN_SPAN); its statistic joins its
        # own empirical tail one recent window after each verdict (``drift``)
        ready = max(spec.recent + min(spec.reference, timedelta(days=1)), 2 * spec.min_points * step)
        tail = ready + spec.recent + MIN_RING * step
        return Warmup(ready, tail, tail)
    else:
        raise ValueError(f"unknown detector kind {kind!r}")
    return Warmup(ready, ready + TAIL_POINTS * step, ready + RUN_POINTS * step)
