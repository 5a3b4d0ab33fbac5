"""Threshold-free scoring for ``watcher bench detection``: rank every point, find the best single cut.

This module owns turning per-point flags into pages with numpy (``pages_at``) and the search for
the one threshold on a continuous score (watcher's ``surprise``, a baseline's or a peer's own
anomaly score) that maximises the corpus score — one threshold for every series of the corpus, as
public benchmarks score a detector's ranking. It does not own the NAB-style score itself
(``detection``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import FloatArray


def pages_at(ts: FloatArray, flags: np.ndarray[Any, np.dtype[np.bool_]], for_s: float) -> list[float]:
    """Return page times: runs of consecutive flagged points held for ``for_s``, one page per run.

    The same rule as ``detection.pages_from`` on verdicts (Prometheus ``for:``): a run starts at its
    first flagged point and pages at its first point at least ``for_s`` later.
    """
    f = np.asarray(flags, dtype=bool)
    if not f.any():
        return []
    starts = f & ~np.concatenate(([False], f[:-1]))
    run_id = np.cumsum(starts) - 1
    run_start_ts = ts[starts]
    idx = np.flatnonzero(f)
    held = ts[idx] - run_start_ts[run_id[idx]] >= for_s
    cand = idx[held]
    if not len(cand):
        return []
    first = np.concatenate(([True], run_id[cand][1:] != run_id[cand][:-1]))
    return [float(t) for t in ts[cand[first]]]


@dataclass
class Ranked:
    """One file's points as scored by one detector: times, rank values (NaN = not ready) and labels."""

    path: str
    ts: FloatArray
    rank: FloatArray
    windows: list[tuple[float, float]]
    start: float
    end: float


@dataclass
class BestCut:
    """The best single threshold on the rank over a corpus and what it scores."""

    threshold: float
    score: float
    windows_detected: int
    windows: int
    false_pages: int
    flagged_fraction: float


def candidates(files: Sequence[Ranked], n: int = 120) -> list[float]:
    """Return candidate thresholds: pooled quantiles from the 90th percentile up to the top values."""
    pooled = np.concatenate([r.rank[np.isfinite(r.rank)] for r in files] or [np.zeros(0)])
    if not len(pooled):
        return []
    levels = 1.0 - np.logspace(-1.0, math.log10(max(1.0 / len(pooled), 1e-7)), n)
    cuts = np.unique(np.quantile(pooled, np.clip(levels, 0.0, 1.0)))
    return [float(c) for c in cuts]
