"""What the evaluator adds to an alert: the explanation by dimension, the release marker, re-baselining."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.engine.test_contribution import refusal_incident
from watcher.core import AlertState, Labels, to_epoch
from watcher.detectors import make_detector
from watcher.engine.group import GroupEvaluator
from watcher.engine.rebaseline import Rebaselining
from watcher.engine.state import AlertStore
from watcher.notify.templates import EXPLANATION, RELEASE
from watcher.rules.schema import Group, RollingDetector
from watcher.sources.memory import MemorySource
from watcher.sources.sql import SqlSource
from watcher.store.db import Store, open_store
from watcher.store.markers import Marker, StaticMarkers, StoreMarkers, add_marker

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)

REFUSALS = Group.model_validate(
    {
        "name": "quality",
        "interval": "1m",
        "rules": [
            {
                "alert": "RefusalRateHigh",
                "source": "calls",
                "query": {
                    "agg": "ratio",
                    "match": {"outcome": "refused"},
                    "window": "15m",
                    "by": ["feature"],
                },
                "detector": {"kind": "threshold", "above": 0.06},
                "for": "3m",
                "annotations": {"summary": "refusals at {{ value }}"},
            }
        ],
    }
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    yield s
    s.close()


def _count_contribution_queries(store: Store) -> list[str]:
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "ORDER BY calls.ts DESC" in statement:
            seen.append(statement)

    return seen


def test_an_alert_says_which_values_drove_it_computed_only_when_it_starts_and_fires(store: Store) -> None:
    # 24 calls a minute: at 6 the alert fires 3 minutes in on 3 refusals of 10 v42 calls of a
    # feature, which do not stand out of the noise of every value of four dimensions (the
    # explanation then says that no single value explains it)
    refusal_incident(store, onset=T0, end=T0 + 40 * M, per_minute=24)
    queries = _count_contribution_queries(store)
    add_marker(
        store,
        Marker(T0 - 4 * M, "prompt_version", "v42 of the chat prompt", {"prompt_version": "v42"}),
        now=T0,
    )
    ev = GroupEvaluator(
        REFUSALS, {"calls": SqlSource(store)}, alert_store=AlertStore(store), markers=StoreMarkers(store)
    )
    states = []
    for m in range(0, 41):
        res = ev.evaluate(T0 + m * M)
        states += [(a.labels["feature"], a.state) for a in res.alerts]
    firing = [a for a in res.alerts if a.state is AlertState.FIRING]
    assert firing, states
    for alert in firing:
        text = alert.annotations[EXPLANATION]
        assert text.startswith("rate of outcome=refused +"), text
        assert "from prompt_version=v42 on model=gpt-4o" in text.split("; ")[0], text
        assert alert.annotations["summary"].startswith("refusals at")
        assert alert.annotations[RELEASE].startswith("started "), alert.annotations
        assert (
            "after prompt version v42 of the chat prompt (2026-11-02 11:56 UTC)" in alert.annotations[RELEASE]
        )
    # one query when each episode became pending, one when it fired; none on the other ticks
    episodes = {(f, s) for f, s in states if s is not AlertState.INACTIVE}
    assert 0 < len(queries) <= len(episodes) * 2 + 2, len(queries)
    # stored with the alert: a restarted daemon restores it
    restored = {a.fingerprint: a for a in AlertStore(store).load()}
    for alert in firing:
        assert restored[alert.fingerprint].annotations[EXPLANATION] == alert.annotations[EXPLANATION]


def test_no_explanation_without_sql_rows_and_no_release_without_a_marker(store: Store) -> None:
    refusal_incident(store, onset=T0, end=T0 + 30 * M)
    ev = GroupEvaluator(REFUSALS, {"calls": SqlSource(store)}, explain=False)
    for m in range(0, 31):
        res = ev.evaluate(T0 + m * M)
    assert res.alerts and all(EXPLANATION not in a.annotations for a in res.alerts)
    assert all(RELEASE not in a.annotations for a in res.alerts)


def test_a_marker_naming_other_labels_is_not_cited(store: Store) -> None:
    refusal_incident(store, onset=T0, end=T0 + 30 * M)
    markers = StaticMarkers([Marker(T0 - 2 * M, "deploy", "billing-svc", {"feature": "billing"})])
    ev = GroupEvaluator(REFUSALS, {"calls": SqlSource(store)}, markers=markers)
    for m in range(0, 31):
        res = ev.evaluate(T0 + m * M)
    assert res.alerts and all(RELEASE not in a.annotations for a in res.alerts)


# --- re-baselining -----------------------------------------------------------------------------

LEVEL = Group.model_validate(
    {
        "name": "cost",
        "interval": "1m",
        "rules": [
            {
                "alert": "SpendShift",
                "expr": "sum by (tenant) (rate(llm_cost_usd_total[5m]))",
                "detector": {"kind": "rolling", "window": "2h", "min_history": "1h", "sensitivity": 4},
                "lookback": "3h",
                "for": "2m",
            }
        ],
    }
)


def _level_series(src: MemorySource, start: int, end: int, shift_at: int, rng: random.Random) -> None:
    for m in range(start, end):
        base = 10.0 if m < shift_at else 16.0
        src.series("SpendShift", {"tenant": "acme"}).add(to_epoch(T0 + m * M), base + rng.gauss(0, 0.3))


def _run(markers: list[Marker]) -> tuple[list[AlertState], GroupEvaluator]:
    rng = random.Random(2)
    src = MemorySource()
    _level_series(src, -180, 120, 0, rng)
    ev = GroupEvaluator(LEVEL, {"prometheus": src}, markers=StaticMarkers(markers))
    states = []
    for m in range(0, 120):
        res = ev.evaluate(T0 + m * M)
        states += [a.state for a in res.alerts]
    return states, ev


def test_a_planned_level_change_re_baselines_without_paging() -> None:
    states, _ = _run([])
    assert AlertState.FIRING in states  # the step is an anomaly to a detector that was not told

    marker = Marker(
        T0 - 30 * 1e-6 * M, "model_switch", "gpt-4o", {"tenant": "acme"}, grace=timedelta(minutes=15)
    )
    states, ev = _run([marker])
    assert AlertState.FIRING not in states and AlertState.PENDING not in states
    hist = ev.history("SpendShift", Labels(tenant="acme"))
    after = [v for v in hist if v.ts > to_epoch(T0 + 20 * M)]
    assert after and all(v.ready for v in after)  # no cold start: verdicts right after the grace
    assert after[-1].expected == pytest.approx(16.0, abs=0.5)  # the new level is expected
    during = [v for v in hist if to_epoch(T0) <= v.ts < to_epoch(T0 + 15 * M)]
    assert during and all(not v.ready for v in during)  # the grace: no verdict, no new alert


def test_a_marker_for_other_labels_does_not_re_baseline() -> None:
    marker = Marker(T0 - M / 2, "deploy", "x", {"tenant": "globex"}, grace=timedelta(minutes=15))
    states, _ = _run([marker])
    assert AlertState.FIRING in states


def test_the_wrapper_is_the_wrapped_detector_until_a_marker() -> None:
    spec = RollingDetector(kind="rolling", window=timedelta(hours=1), min_points=10)
    plain, wrapped = make_detector(spec), Rebaselining(make_detector(spec))
    rng = random.Random(4)
    for i in range(200):
        t, v = 60.0 * i, 5 + rng.gauss(0, 1)
        assert wrapped.update(t, v) == plain.update(t, v)
    wrapped.mark(60.0 * 100, 600, "too late")  # before the last point: ignored
    assert wrapped.update(60.0 * 200, 5.0) == plain.update(60.0 * 200, 5.0)
    wrapped.mark(60.0 * 200.5, 300, "deploy v2")
    in_grace = wrapped.update(60.0 * 201, 9.0)
    assert in_grace is not None and not in_grace.ready and in_grace.reason == "re-baselining after deploy v2"
    assert wrapped.in_grace


def test_a_storm_of_alerts_is_explained_over_several_ticks(store: Store) -> None:
    refusal_incident(store, onset=T0, end=T0 + 40 * M)
    queries = _count_contribution_queries(store)
    ev = GroupEvaluator(REFUSALS, {"calls": SqlSource(store)}, explain_budget=1)
    explained: list[int] = []
    for m in range(0, 41):
        before = len(queries)
        res = ev.evaluate(T0 + m * M)
        assert len(queries) - before <= 1  # the budget holds per evaluation
        explained.append(sum(1 for a in res.alerts if EXPLANATION in a.annotations))
    active = [a for a in res.alerts if a.state is not AlertState.INACTIVE]
    assert len(active) == 2 and all(EXPLANATION in a.annotations for a in active)  # deferred, not lost


def test_a_restart_keeps_the_explanations_without_analysing_again(store: Store) -> None:
    refusal_incident(store, onset=T0, end=T0 + 40 * M)
    ev = GroupEvaluator(REFUSALS, {"calls": SqlSource(store)}, alert_store=AlertStore(store))
    for m in range(0, 31):
        before = ev.evaluate(T0 + m * M).alerts
    queries = _count_contribution_queries(store)
    restarted = GroupEvaluator(REFUSALS, {"calls": SqlSource(store)}, alert_store=None)
    restarted.restore(AlertStore(store).load())
    after = restarted.evaluate(T0 + 31 * M).alerts
    n_restarted = len(queries)
    ev.evaluate(T0 + 31 * M)  # the evaluator that kept running, at the same tick
    assert n_restarted == len(queries) - n_restarted  # only what this tick's transitions need
    want = {a.fingerprint: a.annotations[EXPLANATION] for a in before if a.state is AlertState.FIRING}
    assert (
        want
        and {a.fingerprint: a.annotations.get(EXPLANATION) for a in after if a.fingerprint in want} == want
    )
