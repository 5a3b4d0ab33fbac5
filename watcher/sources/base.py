"""The Source seam: where a rule's series come from.

This module owns the protocol every source follows and the point-grid convention. It does not own
any backend (``prometheus``, ``sql``, ``memory``).

Convention: ``fetch(rule, start, end, step)`` returns one ``Series`` per label set with a point at
every multiple of ``step`` (counted from the Unix epoch) in the half-open range ``(start, end]``;
a step without data is NaN (or absent, for backends that cannot say). Failures raise
``SourceUnavailableError`` (transient) or ``QueryError`` (the rule is wrong), never anything else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..core import FloatArray, Series, to_epoch
from ..rules.schema import Rule


@runtime_checkable
class Source(Protocol):
    """A backend that turns a rule into labelled series."""

    name: str

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """Return the rule's series with points on the step grid in ``(start, end]``."""
        ...


def step_grid(start: datetime, end: datetime, step: timedelta) -> FloatArray:
    """Return the epoch-aligned multiples of ``step`` in ``(start, end]`` as Unix seconds."""
    s = step.total_seconds()
    first = math.floor(to_epoch(start) / s) * s + s
    last = math.floor(to_epoch(end) / s) * s
    if last < first:
        return np.empty(0, dtype=np.float64)
    n = round((last - first) / s) + 1
    return first + s * np.arange(n, dtype=np.float64)


def want_traces(traces: Sequence[Any]) -> None:
    """Tell a series' lazy trace references that some will be asked for.

    A source whose references are read on demand (``sql``) then reads those of every announced
    series in one query at the first question, instead of one query per series.
    """
    want = getattr(traces, "want", None)
    if callable(want):
        want()
