"""Alert state and rule health round-trip through the store, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.core import Alert, AlertState, Labels, TraceRef
from watcher.engine.state import AlertStore, RuleHealth
from watcher.store.db import open_store

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return str(request.getfixturevalue("pg_url"))


def test_round_trip(url: str) -> None:
    store = open_store(url)
    try:
        alerts = AlertStore(store)
        a = Alert(
            rule="R",
            group="g",
            labels=Labels(tenant="acme"),
            state=AlertState.FIRING,
            active_at=T0,
            fired_at=T0 + timedelta(minutes=2),
            last_eval=T0 + timedelta(minutes=3),
            value=3.5,
            expected=1.0,
            annotations={"summary": "s"},
            traces=(TraceRef("abc", "def", 0.4, T0, "note"),),
        )
        alerts.save([a], [])
        (back,) = alerts.load("g")
        assert back == a and back.fired_at is not None and back.fired_at.tzinfo is not None
        alerts.save([], [a.fingerprint])
        assert alerts.load() == []

        alerts.record_health([RuleHealth("g", "R", True, T0, 0.1, None, 3)])
        alerts.record_health([RuleHealth("g", "R", False, T0 + timedelta(minutes=1), 0.2, "boom", 0)])
        (h,) = alerts.health()
        assert (h["evaluations"], h["failures"], h["health"], h["last_error"]) == (2, 1, "err", "boom")
    finally:
        store.close()


def test_many_alerts_upsert_in_one_batch(url: str) -> None:
    """A tick's changed alerts are written in one batched upsert: new rows, updated rows, NaN/None."""
    store = open_store(url)
    try:
        alerts = AlertStore(store)

        def make(i: int, state: AlertState, value: float) -> Alert:
            return Alert(
                rule="R",
                group="g",
                labels=Labels(tenant=f"t{i:04d}"),
                state=state,
                active_at=T0,
                fired_at=T0 if state is AlertState.FIRING else None,
                last_eval=T0 + timedelta(minutes=i % 7),
                value=value,
                annotations={"summary": f"tenant {i}"},
                traces=(TraceRef(f"tr{i}", None, None, None, None),) if i % 2 else (),
            )

        first = [make(i, AlertState.PENDING, float(i)) for i in range(300)]
        alerts.save(first, [])
        second = [make(i, AlertState.FIRING, float("nan") if i == 5 else i * 2.0) for i in range(0, 300, 3)]
        alerts.save(second, [first[1].fingerprint])
        back = {a.fingerprint: a for a in alerts.load("g")}
        want = {a.fingerprint: a for a in first}
        want.update({a.fingerprint: a for a in second})
        del want[first[1].fingerprint]
        assert set(back) == set(want)
        for fp, a in want.items():
            b = back[fp]
            assert (b.state, b.labels, b.annotations, b.traces, b.fired_at) == (
                a.state,
                a.labels,
                a.annotations,
                a.traces,
                a.fired_at,
            )
            assert b.value == a.value or (b.value != b.value and a.value != a.value)
    finally:
        store.close()
