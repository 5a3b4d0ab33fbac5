"""A state transition and its notification are committed in one transaction, or not at all.

The outbox write is made to fail by a real SQLite trigger (the database refuses the insert, as a
full disk or a lost connection would): the alert's new state must not be committed either, and
the next evaluation that can write commits both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from pydantic import SecretStr
from sqlmodel import select

from tests.groups import cost_group
from watcher.config import ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.core import AlertState, to_epoch
from watcher.daemon import Daemon
from watcher.errors import StoreError
from watcher.sources.memory import MemorySource
from watcher.store.tables import AlertRow, NotificationLogRow, OutboxRow

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def _daemon(tmp_path: Path) -> Daemon:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(yaml.safe_dump({"groups": [cost_group()]}))
    settings = Settings(
        store=StoreSettings(url=SecretStr(f"sqlite:///{tmp_path}/w.db")),
        rules=[tmp_path / "rules"],
        receivers={"hook": ReceiverSettings(type="webhook", url=SecretStr("http://127.0.0.1:9/in"))},
        route=RouteSettings(receivers=["hook"]),
        server={"enabled": False},
    )
    return Daemon(settings, sources={"prometheus": MemorySource()})


def _refuse_outbox(d: Daemon, on: bool) -> None:
    with d.store.engine.begin() as conn:
        if on:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        else:
            conn.exec_driver_sql("DROP TRIGGER refuse")


def _stored(d: Daemon) -> tuple[list[AlertRow], list[OutboxRow], list[NotificationLogRow]]:
    with d.store.session() as s:
        return (
            list(s.exec(select(AlertRow)).all()),
            list(s.exec(select(OutboxRow).order_by(sa.text("id"))).all()),
            list(s.exec(select(NotificationLogRow)).all()),
        )


def test_a_resolve_that_cannot_be_queued_leaves_the_alert_firing_in_the_store(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    src = d.sources["prometheus"]
    assert isinstance(src, MemorySource)
    series = src.series("CostHigh", {"tenant": "acme"})
    try:
        for m, v in enumerate([3.0, 42.0]):
            series.add(to_epoch(T0 + m * M), v)
            d.evaluate_group("g", T0 + m * M)
        alerts, outbox, log = _stored(d)
        assert [a.state for a in alerts] == [int(AlertState.FIRING)]
        assert [r.kind for r in outbox] == ["firing"] and [r.kind for r in log] == ["firing"]

        series.add(to_epoch(T0 + 2 * M), 2.0)
        _refuse_outbox(d, True)
        with pytest.raises(StoreError, match="disk full"):
            d.evaluate_group("g", T0 + 2 * M)
        alerts, outbox, log = _stored(d)
        assert [a.state for a in alerts] == [int(AlertState.FIRING)] and alerts[0].resolved_at is None
        assert [r.kind for r in outbox] == ["firing"] and [r.kind for r in log] == ["firing"]

        # the store takes writes again: the transition not committed before is committed now,
        # with its resolve, although nothing changed in memory since
        _refuse_outbox(d, False)
        series.add(to_epoch(T0 + 3 * M), 2.0)
        d.evaluate_group("g", T0 + 3 * M)
        alerts, outbox, log = _stored(d)
        assert alerts[0].state == int(AlertState.INACTIVE) and alerts[0].resolved_at is not None
        assert [r.kind for r in outbox] == ["firing", "resolved"] and [r.kind for r in log] == ["resolved"]
        assert outbox[0].dedup_key == outbox[1].dedup_key
    finally:
        d.close()


def test_a_state_change_that_cannot_be_committed_is_carried_to_the_next_evaluation(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    src = d.sources["prometheus"]
    assert isinstance(src, MemorySource)
    series = src.series("CostHigh", {"tenant": "acme"})
    try:
        series.add(to_epoch(T0), 42.0)  # fires at once (no `for`)
        with d.store.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        with pytest.raises(StoreError):
            d.evaluate_group("g", T0)
        assert _stored(d)[0] == []
        with d.store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse")
        d.evaluate_group("g", T0 + timedelta(seconds=10))  # same point: no change in memory
        (alert,), outbox, _ = _stored(d)
        assert alert.state == int(AlertState.FIRING) and [r.kind for r in outbox] == ["firing"]
    finally:
        d.close()
