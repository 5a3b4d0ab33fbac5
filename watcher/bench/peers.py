"""Peers for ``watcher bench detection``: anomaly detectors from other libraries a user would pick instead.

This module owns one adapter per peer: it runs the library on one series in a causal mode (online,
or refitted on the past only) and returns, per point, a flag at the peer's documented or usual
default threshold and a continuous anomaly score to rank by. It does not own scoring
(``detection``, ``ranking``) nor any watcher detector. Each peer is optional (the ``bench``
extra): a missing library makes ``available()`` return the reason, and the bench skips that peer.

Modes (the verdict for a point uses only that point and earlier ones, unless the mode says so):

* ``river-gauss`` — ``river.anomaly.GaussianScorer`` (online; a Gaussian over a trailing window of
  288 points, grace period 30): ``score_one`` then ``learn_one`` per point, flag when the score
  (2·|CDF − 0.5|) exceeds 0.99994 — the same 4-sigma two-sided mass as watcher's default — on the
  watched side of the window's mean.
* ``river-hst`` — ``MinMaxScaler | HalfSpaceTrees(seed=42)`` (online, river's canonical anomaly
  model) on the value alone, flagged by ``QuantileFilter(q=0.999)`` (the online 99.9 % quantile of
  its own scores); unsigned, so it watches both sides.
* ``adtk-persist`` / ``adtk-levelshift`` — ``adtk``'s ``PersistAD(window=12, c=3, side)`` and
  ``LevelShiftAD(window=12, c=6, side)`` (their default multipliers). adtk has no streaming mode:
  its IQR thresholds are fitted on a whole series, and ``LevelShiftAD``'s transform compares the
  12 points before a point with the 12 from it on. Here both are **refitted every day on everything
  before that day** and detect that day only (like a nightly batch job), and a level shift is
  reported when its 12th point arrives, not at its first; no verdict for the first 2 days.
* ``prophet`` — ``prophet.Prophet`` bands (``interval_width=0.99``, daily + weekly seasonality on),
  **refitted every day on the trailing 14 days of hourly means**, predicting that day's points;
  flag outside the band on the watched side (causal); no verdict for the first 2 days.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import FloatArray

DAY = 86_400.0
PEER_NAMES = ("river-gauss", "river-hst", "adtk-persist", "adtk-levelshift", "prophet")


@dataclass
class PeerOutput:
    """A peer's per-point output on one series, aligned with the points it was given."""

    flags: np.ndarray[Any, np.dtype[np.bool_]]
    ready: np.ndarray[Any, np.dtype[np.bool_]]
    """Points the peer gave a verdict for (past its warm-up, the value finite)."""
    rank: FloatArray | None
    """Continuous anomaly score on the watched side (higher = more anomalous), NaN before warm-up;
    None when the peer only flags (nothing to rank by)."""


@dataclass(frozen=True)
class Peer:
    """One peer: its name, the package it needs, its mode in words and the function that runs it."""

    name: str
    package: str
    mode: str
    run: Callable[[FloatArray, FloatArray, str], PeerOutput]

    def available(self) -> str | None:
        """Return None when the peer's package imports, else why the peer is skipped."""
        module = self.package.replace("-", "_")
        if importlib.util.find_spec(module) is None:
            return f"{self.package} is not installed (pip install -e '.[bench]')"
        return None


Runner = Callable[[FloatArray, FloatArray, str], PeerOutput]


def _quiet(run: Runner) -> Runner:
    """Return ``run`` with the peer library's deprecation and runtime warnings silenced."""

    def quiet(ts: FloatArray, values: FloatArray, direction: str) -> PeerOutput:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run(ts, values, direction)

    quiet.__doc__ = run.__doc__
    return quiet


def _on_side(dev: float, direction: str) -> bool:
    """Return whether a signed deviation lies on the watched side."""
    return (direction != "down" and dev > 0) or (direction != "up" and dev < 0)


def run_river_gauss(ts: FloatArray, values: FloatArray, direction: str) -> PeerOutput:
    """Run ``river.anomaly.GaussianScorer`` online: score each point, then learn it."""
    from river import anomaly

    det: Any = anomaly.GaussianScorer(window_size=288, grace_period=30)  # type: ignore[no-untyped-call]
    n = len(values)
    flags = np.zeros(n, dtype=bool)
    rank = np.full(n, math.nan)
    for i, y in enumerate(values.tolist()):
        if math.isfinite(y):
            try:
                score = float(det.score_one(None, y))
            except (ZeroDivisionError, TypeError):
                # A constant window: sigma is 0, or its rolling variance rounds below 0 and river's
                # sqrt turns complex. Any other value is then infinitely far from the mean.
                score = 0.0 if abs(y - float(det.gaussian.mu)) < 1e-12 else 1.0
            if det.gaussian.n_samples >= 30:
                side = _on_side(y - float(det.gaussian.mu), direction)
                rank[i] = -math.log10(max(1.0 - score, 1e-300)) if side else 0.0
                flags[i] = side and score > 0.99994
            det.learn_one(None, y)
    return PeerOutput(flags, np.isfinite(rank), rank)


def run_river_hst(ts: FloatArray, values: FloatArray, direction: str) -> PeerOutput:
    """Run ``MinMaxScaler | HalfSpaceTrees`` online, flagged by its online 99.9 % score quantile."""
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
    filt: Any = anomaly.QuantileFilter(model, q=0.999)
    n = len(values)
    flags = np.zeros(n, dtype=bool)
    rank = np.full(n, math.nan)
    for i, y in enumerate(values.tolist()):
        if math.isfinite(y):
            x = {"value": y}
            score = float(filt.score_one(x))
            if i >= 250:  # one HalfSpaceTrees window: before it the trees hold no mass
                rank[i] = score
                flags[i] = bool(filt.classify(score))
            filt.learn_one(x)
    return PeerOutput(flags, np.isfinite(rank), rank)


_ADTK_PATCHED = False


def _patch_adtk_for_pandas3() -> None:
    """Make adtk 0.6.2's threshold detectors work on pandas ≥ 3 (same result, float dtype).

    adtk (last released 2020) writes NaN into a boolean Series (``predicted[s.isna()] = np.nan``),
    which pandas 3 refuses; so do its And/Or aggregators. The replacements compute the same
    comparisons as floats (1.0/0.0, NaN where adtk puts NaN), which adtk's callers accept.
    """
    global _ADTK_PATCHED
    if _ADTK_PATCHED:
        return
    import pandas as pd
    from adtk.aggregator import _aggregator as agg
    from adtk.detector import _detector_1d as d1

    def threshold_core(self: Any, s: pd.Series) -> pd.Series:
        hi = self.high if self.high is not None else math.inf
        lo = self.low if self.low is not None else -math.inf
        return ((s > hi) | (s < lo)).astype(float).where(s.notna())

    def fitted_core(self: Any, s: pd.Series) -> pd.Series:
        return ((s > self.abs_high_) | (s < self.abs_low_)).astype(float).where(s.notna())

    def and_core(self: Any, lists: Any, _orig: Any = agg.AndAggregator._predict_core) -> Any:
        if not isinstance(lists, pd.DataFrame):
            return _orig(self, lists)
        predicted = lists.all(axis=1).astype(float)
        return predicted.mask((predicted > 0) & lists.isna().any(axis=1))

    def or_core(self: Any, lists: Any, _orig: Any = agg.OrAggregator._predict_core) -> Any:
        if not isinstance(lists, pd.DataFrame):
            return _orig(self, lists)
        predicted = lists.any(axis=1).astype(float)
        return predicted.mask((predicted == 0) & lists.isna().any(axis=1))

    agg.AndAggregator._predict_core = and_core
    agg.OrAggregator._predict_core = or_core
    d1.ThresholdAD._predict_core = threshold_core
    d1.InterQuartileRangeAD._predict_core = fitted_core
    d1.QuantileAD._predict_core = fitted_core
    _ADTK_PATCHED = True


def _daily_cuts(ts: FloatArray, warmup_days: int = 2) -> list[tuple[int, int]]:
    """Return ``[start, end)`` index ranges of each day after ``warmup_days`` (days from the first point)."""
    day = np.floor((ts - ts[0]) / DAY).astype(np.int64)
    cuts = []
    for d in range(warmup_days, int(day[-1]) + 1):
        idx = np.flatnonzero(day == d)
        if len(idx):
            cuts.append((int(idx[0]), int(idx[-1]) + 1))
    return cuts


def _adtk_runner(kind: str) -> Runner:
    """Return a runner of adtk's ``PersistAD`` or ``LevelShiftAD`` refitted daily on the past.

    ``LevelShiftAD`` compares the ``window`` points before a point with the ``window`` points from
    it on, so adtk marks the first point of a new level, which is known only ``window - 1`` points
    later; the runner reports each flag at the point where it became known (causal).
    """

    def run(ts: FloatArray, values: FloatArray, direction: str) -> PeerOutput:
        import pandas as pd
        from adtk import detector

        _patch_adtk_for_pandas3()
        side = {"up": "positive", "down": "negative"}.get(direction, "both")
        window = 12
        lag = window - 1 if kind == "levelshift" else 0
        s = pd.Series(values, index=pd.to_datetime(ts, unit="s"))
        flags = np.zeros(len(values), dtype=bool)
        ready = np.zeros(len(values), dtype=bool)
        for a, b in _daily_cuts(ts):
            if kind == "persist":
                det = detector.PersistAD(window=window, c=3.0, side=side)
            else:
                det = detector.LevelShiftAD(window=window, c=6.0, side=side)
            lo = max(0, a - 3 * window)
            try:
                det.fit(s.iloc[:a])
                out = np.asarray(det.detect(s.iloc[lo:b]), dtype=float)
            except (ValueError, RuntimeError):
                continue  # too little finite history before this day
            known = out[a - lag - lo : b - lag - lo]  # adtk's verdicts for points a-lag … b-lag-1
            flags[a:b] = known > 0.5
            ready[a:b] = np.isfinite(known)
        return PeerOutput(flags, ready, None)

    return _quiet(run)


def run_prophet(ts: FloatArray, values: FloatArray, direction: str) -> PeerOutput:
    """Run Prophet bands refitted daily on the trailing 14 days of hourly means (causal)."""
    import pandas as pd

    logging.getLogger("prophet.plot").disabled = True  # "Importing plotly failed" (plots unused)
    from prophet import Prophet

    logging.getLogger("cmdstanpy").disabled = True  # it logs every fit at INFO with its own handler
    n = len(values)
    flags = np.zeros(n, dtype=bool)
    rank = np.full(n, math.nan)
    s = pd.Series(values, index=pd.to_datetime(ts, unit="s"))
    for a, b in _daily_cuts(ts):
        past = s.iloc[:a]
        past = past[past.index >= past.index[-1] - pd.Timedelta(days=14)].dropna()
        hourly = past.resample("1h").mean().dropna()
        if len(hourly) < 24:
            continue
        model = Prophet(
            interval_width=0.99,
            uncertainty_samples=300,
            daily_seasonality=True,
            weekly_seasonality=True,
            yearly_seasonality=False,
        )
        model.fit(pd.DataFrame({"ds": hourly.index, "y": hourly.to_numpy()}))
        # The band is drawn from a fixed 5-minute grid over the day (and interpolated at the points),
        # so it depends on the past only, not on how many of the day's points exist yet; Prophet
        # samples it from the global RNG, seeded here so a run repeats.
        day0 = ts[0] + DAY * math.floor((ts[a] - ts[0]) / DAY)
        grid = day0 + 300.0 * np.arange(289)
        np.random.seed(a)
        fc = model.predict(pd.DataFrame({"ds": pd.to_datetime(grid, unit="s")}))
        at = ts[a:b]
        mid = np.interp(at, grid, fc["yhat"].to_numpy())
        lo = np.interp(at, grid, fc["yhat_lower"].to_numpy())
        hi = np.interp(at, grid, fc["yhat_upper"].to_numpy())
        y = values[a:b]
        half = np.maximum(np.where(y >= mid, hi - mid, mid - lo), 1e-12)
        dev = (y - mid) / half  # band units: ±1 at the band's edges
        watched = np.where(direction == "up", dev, np.where(direction == "down", -dev, np.abs(dev)))
        rank[a:b] = np.where(np.isfinite(y), np.maximum(watched, 0.0), np.nan)
        flags[a:b] = np.isfinite(y) & (watched > 1.0)
    return PeerOutput(flags, np.isfinite(rank), rank)


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("river-gauss", "river", "online (trailing 288 points)", _quiet(run_river_gauss)),
        Peer("river-hst", "river", "online", _quiet(run_river_hst)),
        Peer("adtk-persist", "adtk", "causal: daily refit on the past", _adtk_runner("persist")),
        Peer("adtk-levelshift", "adtk", "causal: daily refit on the past", _adtk_runner("levelshift")),
        Peer("prophet", "prophet", "causal: daily refit, trailing 14 d", _quiet(run_prophet)),
    )
}
