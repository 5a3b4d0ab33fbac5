"""The batch replay (scores each series once, evaluates only where something can change) equals
the tick-by-tick replay (live detectors, every tick, as the daemon): episodes, traces, verdicts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from watcher.backtest.batch import PrecomputedDetector, plan_series, slice_starts
from watcher.backtest.replay import ReplayResult, replay
from watcher.core import Labels, TraceRef, Verdict, to_epoch
from watcher.rules.schema import Group, Rule
from watcher.sources.memory import MemorySource

T0 = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 2
MINUTES = DAYS * 1440

DETECTORS: dict[str, dict[str, Any]] = {
    "threshold": {"kind": "threshold", "above": 12},
    "rolling": {"kind": "rolling", "window": "3h", "min_points": 20, "min_history": "1h", "direction": "up"},
    "ewma": {"kind": "ewma", "halflife": "30m", "min_points": 20, "direction": "up"},
    "seasonal": {"kind": "seasonal", "seasons": ["2h"], "history": "8h", "refit": "1h", "direction": "up"},
    "rate": {"kind": "rate", "halflife": "6h", "min_trials": 100, "min_count": 10},
    "auto": {"kind": "auto", "history": "2d", "direction": "up"},
}


def _groups(kind: str) -> list[Group]:
    fast = {
        "name": "fast",
        "interval": "1m",
        "rules": [
            {
                "alert": "Thr",
                "expr": "thr",
                "detector": {"kind": "threshold", "above": 10},
                "for": "3m",
                "keep_firing_for": "2m",
                "labels": {"severity": "page"},
                "traces": {"from": "exemplars", "top": 2},
            },
            {
                "alert": "Det",
                "expr": "det",
                "detector": DETECTORS[kind],
                "for": "2m",
                "no_data": "alert",
                "min_value": 0.05 if kind == "rate" else 1.0,
                "traces": {"from": "exemplars", "top": 3, "order": "recent"},
            },
            {"alert": "Raw", "expr": "raw > 0", "no_data": "ok", "keep_firing_for": "1m"},
        ],
    }
    slow = {
        "name": "slow",
        "interval": "5m",
        "rules": [
            {
                "alert": "Win",
                "source": "calls",
                "query": {"agg": "mean", "field": "ttft_s", "window": "5m", "step": "1m", "by": ["model"]},
                "detector": {"kind": "threshold", "above": 3},
                "for": "5m",
                "keep_firing_for": "5m",
                "no_data": "alert",
                "traces": {"from": "rows", "top": 3, "order": "value_desc"},
            },
        ],
    }
    absent = {
        "name": "absent",
        "interval": "5m",
        "rules": [
            {
                "alert": "Gone",
                "expr": "sometimes_absent",
                "detector": {"kind": "threshold", "above": 100},
                "no_data": "alert",
            }
        ],
    }
    return [Group.model_validate(g) for g in (fast, slow, absent)]


def _scenario(kind: str) -> MemorySource:
    """Return two days of 1-minute samples: spikes short and long, gaps, a vanishing series."""
    rng = np.random.default_rng(7)
    src = MemorySource()
    minute = np.arange(MINUTES)

    def add(rule: str, labels: dict[str, str], values: np.ndarray, counts: np.ndarray | None = None) -> None:
        s = src.series(rule, labels)
        for m in minute.tolist():
            v = float(values[m])
            if math.isnan(v):
                continue
            ts = to_epoch(T0) + 60.0 * m
            s.add(ts, v, (TraceRef(f"{rule}-{labels}-{m}", value=v),))
            if counts is not None:
                s.counts[ts] = float(counts[m])

    for i, tenant in enumerate(["acme", "beta", "gamma"]):
        v = 5 + rng.normal(0, 1, MINUTES)
        start = 300 + 400 * i
        v[start : start + 2] = 15  # too short for `for: 3m`
        v[start + 60 : start + 70] = 14  # fires after 3m
        v[start + 72 : start + 73] = 16  # back within keep_firing_for: the same episode
        v[start + 200 : start + 215] = 13
        if tenant == "gamma":
            v[start + 205 : start + 260] = math.nan  # vanishes mid-episode (no_data: keep_state)
        add("Thr", {"tenant": tenant}, v)

    for i, tenant in enumerate(["acme", "beta"]):
        counts = rng.integers(40, 60, MINUTES).astype(float)
        if kind == "rate":
            v = rng.binomial(counts.astype(int), 0.02) / counts
            v[900 + 300 * i : 960 + 300 * i] = 0.3
        else:
            v = 5 + 2 * np.sin(2 * np.pi * minute / 120) + rng.normal(0, 0.3, MINUTES)
            v[900 + 300 * i : 960 + 300 * i] += 10
            v[2000:2030] += 8 * (i + 1)
        v[1500 + 50 * i : 1530 + 50 * i] = math.nan  # a gap longer than the staleness: no_data alert
        add("Det", {"tenant": tenant}, v, counts)

    raw = np.full(MINUTES, math.nan)
    raw[100:103] = 1.0
    raw[700:760:7] = 2.0  # sporadic samples, present within the 5m staleness
    add("Raw", {"job": "x"}, raw)
    gone = np.ones(MINUTES)
    gone[600:700] = math.nan  # the rule's data is absent for 100 minutes: one absent()-like alert
    add("Gone", {"job": "y"}, gone)

    for model in ["m1", "m2"]:
        v = 1 + rng.gamma(2, 0.2, MINUTES)
        v[1000:1012] = 6  # spikes inside 5-point slices
        v[1203] = 9
        if model == "m2":
            v[1500:1530] = math.nan  # while m1 is quiet: only the no-data rule wakes the group
        add("Win", {"model": model}, v)
    return src


def _key(result: ReplayResult) -> list[tuple[Any, ...]]:
    return [(e.alert, dict(e.labels), e.start, e.end, e.peak_value, e.trace_ids) for e in result.episodes]


def _verdicts(result: ReplayResult) -> dict[tuple[str, Labels], list[tuple[float, ...]]]:
    return {
        k: [
            tuple(np.nan_to_num(point, nan=-1e300))
            for point in zip(st.ts, st.value, st.lower, st.upper, st.expected, strict=True)
        ]
        for k, st in result.verdicts.items()
    }


@pytest.mark.parametrize("kind", sorted(DETECTORS))
def test_batch_replay_equals_tick_by_tick(kind: str) -> None:
    src = _scenario(kind)
    sources = {"prometheus": src, "calls": src}
    start, end = T0 + timedelta(hours=3), T0 + timedelta(days=DAYS)
    live = replay(_groups(kind), sources, start, end, record_verdicts=True, batch=False)
    batch = replay(_groups(kind), sources, start, end, record_verdicts=True, batch=True)

    assert not live.errors and not batch.errors
    assert _key(batch) == _key(live)
    assert _verdicts(batch) == _verdicts(live)
    assert batch.ticks == live.ticks == live.evaluations
    assert batch.evaluations < live.ticks / 2, "quiet ticks are skipped"

    alerts = {e.alert for e in live.episodes}
    assert {"Thr", "Raw", "Win", "Gone"} <= alerts and (kind == "auto" or "Det" in alerts)
    thr = [e for e in live.episodes if e.alert == "Thr"]
    # 3 tenants × 2 episodes: the 2-minute blips never fire, the dip inside keep_firing_for does
    # not split an episode, and gamma's vanished series keeps its alert firing (keep_state).
    assert len(thr) == 6 and all(len(e.trace_ids) == 2 for e in thr)
    # m2 stops reporting at minute 1500: its newest point has no data, and no_data: alert fires.
    gap = T0 + timedelta(minutes=1500)
    win = [e for e in live.episodes if e.alert == "Win"]
    assert any(e.labels["model"] == "m2" and gap <= e.start <= gap + timedelta(minutes=15) for e in win)
    assert any(len(e.trace_ids) == 3 for e in win)
    # The rule-wide "no data at all" alert (rule labels only) once the data vanished.
    assert any(e.alert == "Gone" and dict(e.labels) == {} for e in live.episodes)


def test_fetch_after_skipped_ticks_starts_at_the_previous_tick() -> None:
    # The first fetch reaches back the lookback; every later one starts at the previous grid point.
    ticks = np.array([600.0, 660.0, 720.0])
    assert slice_starts(ticks, 60.0, 300.0).tolist() == [300.0, 600.0, 660.0]
    # A 5m group over 1m points: each tick's slice holds the five points since the previous tick.
    assert slice_starts(np.array([600.0, 900.0]), 60.0, 120.0).tolist() == [480.0, 600.0]


def test_precomputed_detector_drops_stale_points_like_a_live_one() -> None:
    ts = np.array([60.0, 120.0, 180.0])
    verdicts = [Verdict(ts=t, value=float(i)) for i, t in enumerate(ts.tolist())]
    det = PrecomputedDetector(ts, verdicts)
    assert [v.ts for v in det.update_many(ts[:2], ts[:2])] == [60.0, 120.0]
    assert [v.ts for v in det.update_many(ts[1:], ts[1:])] == [180.0]  # 120 was seen: stale
    assert det.update(120.0, 1.0) is None


def test_series_absent_from_a_slice_is_not_fed() -> None:
    # Points of a tick whose fetch returned nothing never reach the daemon's detector.
    rule = Rule.model_validate({"alert": "X", "expr": "x", "detector": {"kind": "threshold", "above": 1}})
    from watcher.core import Series

    ts = np.arange(1, 7) * 60.0
    values = np.array([0.0, 2.0, math.nan, math.nan, 3.0, 0.5])
    ticks = ts.copy()
    starts = slice_starts(ticks, 60.0, 60.0)
    plan, present, active = plan_series(rule, Series(Labels(), ts, values), ticks, starts, 60.0)
    assert present.tolist() == [True, True, False, False, True, True]
    assert plan.timestamps.tolist() == [60.0, 120.0, 300.0, 360.0]
    assert active.tolist() == [False, True, False, False, True, False]


def _delayed(groups: list[Group], alert: str, delay: str) -> list[Group]:
    """Return ``groups`` with rule ``alert`` given an ``evaluation_delay``, validated like a rule file."""
    out = []
    for g in groups:
        raw = g.model_dump(by_alias=True, exclude_unset=True)
        for r in raw["rules"]:
            if r["alert"] == alert:
                r["evaluation_delay"] = delay
        out.append(Group.model_validate(raw))
    return out


@pytest.mark.parametrize("jobs", [1, 2])
def test_evaluation_delay_shifts_its_rule_and_no_other(jobs: int) -> None:
    # The `slow` group's rule judges the data of 10 minutes ago, batch or live, with worker
    # processes or not; the groups before and after it (and their episodes) are untouched.
    src = _scenario("threshold")
    sources = {"prometheus": src, "calls": src}
    start, end = T0 + timedelta(hours=3), T0 + timedelta(days=DAYS)
    plain = replay(_groups("threshold"), sources, start, end, batch=True)
    groups = _delayed(_groups("threshold"), "Win", "10m")
    groups = [groups[1], groups[0], groups[2]]  # the delayed group first: nothing may leak forward
    live = replay(groups, sources, start, end, record_verdicts=True, batch=False)
    batch = replay(groups, sources, start, end, record_verdicts=True, batch=True, jobs=jobs)

    assert not live.errors and not batch.errors
    assert _key(batch) == _key(live)
    assert _verdicts(batch) == _verdicts(live)
    others = [k for k in _key(plain) if k[0] != "Win"]
    assert [k for k in _key(batch) if k[0] != "Win"] == others
    shifted = [
        (a, labels, s + timedelta(minutes=10), e and e + timedelta(minutes=10), peak, ids)
        for a, labels, s, e, peak, ids in _key(plain)
        if a == "Win"
    ]
    assert shifted and [k for k in _key(batch) if k[0] == "Win"] == shifted
