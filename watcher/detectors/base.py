"""The Detector seam: a causal, stateful scorer of one series, and the registry of kinds.

This module owns the contract every detector kind follows and the factory that builds one from
its rule spec. It does not own any statistics (``stats``) or any particular kind.

Contract, for every kind:

* **causal**: the verdict for a point uses only that point and earlier ones, so appending future
  points never changes an earlier verdict;
* **incremental**: the detector keeps its own state and ``update`` costs the same whatever the
  history length; rebuilding from history is just ``update_many`` over it;
* **safe**: NaN values, gaps, duplicate or out-of-order timestamps never raise; a point at or
  before the last one seen is ignored, a NaN point gets a not-ready verdict and leaves the state
  untouched; while warming up the verdict is not ready and never anomalous.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core import FloatArray, Verdict
from ..errors import DetectorError


class Detector(abc.ABC):
    """Scores the points of one series, oldest first, keeping whatever state it needs."""

    kind: str = ""

    def __init__(self) -> None:
        self.last_ts: float | None = None

    def update(self, ts: float, value: float, count: float | None = None) -> Verdict | None:
        """Score one new point and fold it into the state; return None for a stale timestamp."""
        ts = float(ts)  # a numpy scalar would turn every derived quantity into one
        if self.last_ts is not None and ts <= self.last_ts:
            return None
        self.last_ts = ts
        if value is None or not math.isfinite(value):
            return Verdict(ts=ts, value=math.nan, ready=False, reason="no data")
        return self._update(ts, float(value), count)

    def update_many(
        self, timestamps: FloatArray, values: FloatArray, counts: FloatArray | None = None
    ) -> list[Verdict]:
        """Score a run of points in order; stale timestamps are skipped.

        The same as calling ``update`` point by point (the arrays are turned into Python floats once,
        not element by element): kinds override it only with something that gives equal verdicts.
        """
        ts_list: list[float] = np.asarray(timestamps, dtype=np.float64).tolist()
        vs_list: list[float] = np.asarray(values, dtype=np.float64).tolist()
        cs_list: list[float | None] = (
            [None] * len(vs_list) if counts is None else np.asarray(counts, dtype=np.float64).tolist()
        )
        update = self.update
        out: list[Verdict] = []
        for t, v, c in zip(ts_list, vs_list, cs_list, strict=True):
            verdict = update(t, v, c)
            if verdict is not None:
                out.append(verdict)
        return out

    def step_one(self, ts: float, value: float, count: float | None = None) -> Verdict | None:
        """Score the one new point of a tick: what ``update_many`` returns for one point, unwrapped.

        ``ts``, ``value`` and ``count`` are Python floats (as ``update_many`` makes them); None for a
        stale timestamp. The daemon calls this when a fetch brings a series one point (every steady
        tick), skipping the arrays' conversions; a kind or wrapper whose ``update_many`` is more
        than ``update`` point by point overrides it with the same one-point behaviour.
        """
        return self.update(ts, value, count)

    @abc.abstractmethod
    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        """Score one finite point that is newer than every point seen so far."""


DetectorFactory = Callable[[Any], Detector]
_REGISTRY: dict[str, DetectorFactory] = {}


def register(kind: str) -> Callable[[DetectorFactory], DetectorFactory]:
    """Register a factory that builds a detector of ``kind`` from its spec model."""

    def deco(factory: DetectorFactory) -> DetectorFactory:
        _REGISTRY[kind] = factory
        return factory

    return deco


def make_detector(spec: Any, key: str | None = None) -> Detector:
    """Build a fresh detector for one series from a rule's ``detector`` spec.

    ``key`` is the value of the series' first ``by`` label; only kinds with per-series settings
    (``budget``: its ``amounts``) read it.
    """
    kind = getattr(spec, "kind", None)
    try:
        factory = _REGISTRY[str(kind)]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise DetectorError(f"unknown detector kind {kind!r}; known: {known}") from None
    if key is not None and kind in _KEYED:
        return _KEYED[str(kind)](spec, key)
    return factory(spec)


def register_keyed(kind: str, factory: Callable[[Any, str | None], Detector]) -> None:
    """Register the factory of a kind that builds each series' detector from its key too."""
    _KEYED[kind] = factory


_KEYED: dict[str, Callable[[Any, str | None], Detector]] = {}


def known_kinds() -> list[str]:
    """Return the registered detector kinds, sorted."""
    return sorted(_REGISTRY)


def as_array(values: Any) -> FloatArray:
    """Return ``values`` as a float64 numpy array."""
    return np.asarray(values, dtype=np.float64)
