"""``watcher bench throughput``: start-up and steady-state tick cost of each detector kind.

This module owns generating synthetic history (a daily cycle with noise, one level per series),
timing the start-up (building a detector's state from ``--history`` at ``--step``), the
steady-state tick (one new point for each of ``--series`` series) and the seasonal refits, and
reporting points/s, CPU time and peak RSS. It does not own any detector.

Method: each kind runs in a fresh process (so peak RSS is that kind's alone). Start-up is timed
on ``--startup-sample`` series and extrapolated linearly to ``--series`` (the cost is the same for
every series; building 10,000 × 7 days × 1-minute states point by point takes minutes per kind);
those warmed states are then copied (pickle round trip) to ``--series`` detectors, which is the
memory a daemon holds; each copy gets the refit phase of a distinct series (spread over the
refit period, as ``seasonal`` does for real series). Ticks are timed after that, one new point
per series per tick. Refits (``seasonal``/``auto``) happen when a series' refit time passes; the
refit cost per series is timed separately and reported both as "all series refit in one tick" and
amortised over the refit period.
"""

from __future__ import annotations

import pickle
import resource
import time
from typing import Any

import numpy as np

DEFAULT_KINDS = ("rolling", "ewma", "seasonal", "auto")


def _history(n_points: int, step: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return one series' timestamps and values: a daily cycle, its own level, 5 % noise."""
    rng = np.random.default_rng(seed)
    ts = 1_767_571_200.0 + step * np.arange(n_points)
    level = 10.0 ** rng.uniform(0, 3)
    hour = (ts % 86_400.0) / 3600.0
    shape = 0.3 + np.exp(-(((hour - 14.0) / 4.0) ** 2))
    return ts, level * shape * np.exp(rng.normal(0.0, 0.05, n_points))


def _spec(kind: str) -> Any:
    """Return the spec benchmarked for ``kind`` (rolling over 1 day; the others at their defaults)."""
    from ..evals.scoring import build_spec

    return build_spec(kind, None, ["window=1d"] if kind == "rolling" else [])


def measure(kind: str, series: int, history_s: float, step: float, ticks: int, sample: int) -> dict[str, Any]:
    """Return the timings and peak RSS of one detector kind (run this in a fresh process)."""
    from ..detectors import make_detector
    from ..detectors.seasonal import SeasonalBaseline, fit_profile

    n_points = int(history_s / step)
    spec = _spec(kind)
    sample = max(1, min(sample, series))
    built = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(sample):
        ts, vs = _history(n_points + ticks, step, i)
        det = make_detector(spec)
        det.update_many(ts[:n_points], vs[:n_points])
        built.append((det, ts[n_points:], vs[n_points:]))
    startup_wall = time.perf_counter() - wall0
    startup_cpu = time.process_time() - cpu0
    blobs = [pickle.dumps(d) for d, _, _ in built]
    dets = [pickle.loads(blobs[i % sample]) for i in range(series)]
    for i, det in enumerate(dets):  # a copy refits when the distinct series it stands for would
        inner = getattr(det, "inner", det)
        if isinstance(inner, SeasonalBaseline) and inner.profile is not None:
            inner._next_fit = float(built[i % sample][1][0]) + inner.refit_s * ((i * 0.618034) % 1.0)
    tails = [(built[i % sample][1], built[i % sample][2]) for i in range(series)]
    tick_walls, tick_cpus = [], []
    for k in range(ticks):
        w, c = time.perf_counter(), time.process_time()
        for det, (ts, vs) in zip(dets, tails, strict=True):
            det.update(float(ts[k]), float(vs[k]))
        tick_walls.append(time.perf_counter() - w)
        tick_cpus.append(time.process_time() - c)
    out: dict[str, Any] = {
        "kind": kind,
        "series": series,
        "points_per_series": n_points,
        "startup_sample": sample,
        "startup_s_per_series": startup_wall / sample,
        "startup_s_extrapolated": startup_wall / sample * series,
        "startup_points_per_s": sample * n_points / startup_wall,
        "startup_cpu_s_per_series": startup_cpu / sample,
        "startup_cpu_s_extrapolated": startup_cpu / sample * series,
        "tick_s_median": float(np.median(tick_walls)),
        "tick_s_max": float(np.max(tick_walls)),
        "tick_cpu_s_median": float(np.median(tick_cpus)),
        "tick_points_per_s": series / float(np.median(tick_walls)),
    }
    inner = [getattr(d, "inner", d) for d, _, _ in built]
    seasonal = [d for d in inner if isinstance(d, SeasonalBaseline)]
    if seasonal:
        det = seasonal[0]
        y, start = det.history()
        w = time.perf_counter()
        for _ in range(20):
            fit_profile(y, start, det.periods, det.detect, det.per_hour)
        fit_s = (time.perf_counter() - w) / 20
        out["refit_s_per_series"] = fit_s
        out["refit_all_series_one_tick_s"] = fit_s * series
        out["refit_amortised_s_per_tick"] = fit_s * series * step / det.refit_s
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def _child(args: tuple[str, int, float, float, int, int]) -> dict[str, Any]:
    return measure(*args)
