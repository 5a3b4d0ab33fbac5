"""An in-memory source: series held in a dict, served on the step grid.

This module owns the fake that rule unit tests, backtests of prepared data and the engine's own
tests use instead of a backend. It does not own any aggregation: it serves the values it is given,
as a Prometheus range query would (the value at or before each grid point, within a staleness
window), and can be told to fail like a real backend does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from ..core import ExemplarLookup, Labels, Series, TraceRef
from ..errors import SourceError
from ..rules.schema import Rule
from .base import step_grid

STALENESS = timedelta(minutes=5)


@dataclass
class MemorySeries:
    """Raw samples of one series: Unix-second timestamps, values and optional traces per sample."""

    labels: Labels
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    traces: list[tuple[TraceRef, ...]] = field(default_factory=list)
    counts: dict[float, float] = field(default_factory=dict)
    """Optional observations behind a sample (its trials, for the ``rate`` detector), by timestamp."""

    def add(self, ts: float, value: float, traces: Sequence[TraceRef] = ()) -> None:
        """Append one sample (timestamps must increase)."""
        self.timestamps.append(ts)
        self.values.append(value)
        self.traces.append(tuple(traces))


class MemorySource:
    """Serves series registered per rule name (``alert``); optionally fails on demand."""

    name = "memory"

    def __init__(self, data: Mapping[str, Sequence[MemorySeries]] | None = None) -> None:
        self.data: dict[str, list[MemorySeries]] = {k: list(v) for k, v in (data or {}).items()}
        self.fail_with: SourceError | None = None
        self.fetches = 0
        self.exemplars: ExemplarLookup | None = None
        """Set to make every series say its traces were looked for in exemplars, like Prometheus's."""

    def series(self, rule: str, labels: Mapping[str, str] | Labels) -> MemorySeries:
        """Return (creating if needed) the raw series of ``rule`` with ``labels``."""
        lab = labels if isinstance(labels, Labels) else Labels(labels)
        for s in self.data.setdefault(rule, []):
            if s.labels == lab:
                return s
        s = MemorySeries(lab)
        self.data[rule].append(s)
        return s

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """Return the registered series of ``rule`` sampled on the step grid in ``(start, end]``."""
        self.fetches += 1
        if self.fail_with is not None:
            raise self.fail_with
        grid = step_grid(start, end, step)
        out = []
        stale = STALENESS.total_seconds()
        for raw in self.data.get(rule.alert, []):
            if not raw.timestamps:
                continue
            ts = np.asarray(raw.timestamps, dtype=np.float64)
            idx = np.searchsorted(ts, grid, side="right") - 1
            values = np.full(len(grid), math.nan)
            counts = np.full(len(grid), math.nan) if raw.counts else None
            traces: list[tuple[TraceRef, ...]] = []
            for k, i in enumerate(idx):
                if i >= 0 and grid[k] - ts[i] <= stale:
                    values[k] = raw.values[i]
                    traces.append(raw.traces[i])
                    if counts is not None:
                        counts[k] = raw.counts.get(raw.timestamps[i], math.nan)
                else:
                    traces.append(())
            if np.all(np.isnan(values)):
                continue
            out.append(Series(raw.labels, grid, values, counts, tuple(traces), exemplars=self.exemplars))
        return out
