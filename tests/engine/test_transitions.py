"""The state history: every transition is written with the alert state, once, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from watcher.core import Alert, AlertState, Labels
from watcher.engine.alerting import Observation, Timing, step
from watcher.engine.state import transition_of, write_alerts
from watcher.store.db import Store, open_store
from watcher.store.tables import AlertRow, TransitionRow

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)
LABELS = Labels(tenant="acme")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return str(request.getfixturevalue("pg_url"))


def _alert(state: AlertState, **stamps: datetime | None) -> Alert:
    return Alert(rule="R", group="g", labels=LABELS, state=state, **stamps)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("alert", "expected"),
    [
        (_alert(AlertState.PENDING, active_at=T0, last_eval=T0), ("inactive", "pending")),
        (_alert(AlertState.PENDING, active_at=T0, last_eval=T0 + M), None),
        (
            _alert(AlertState.FIRING, active_at=T0, fired_at=T0 + 2 * M, last_eval=T0 + 2 * M),
            ("pending", "firing"),
        ),
        (
            _alert(AlertState.FIRING, active_at=T0, fired_at=T0, last_eval=T0),
            ("inactive", "firing"),
        ),  # for: 0
        (_alert(AlertState.FIRING, active_at=T0, fired_at=T0, last_eval=T0 + M), None),
        (
            _alert(
                AlertState.INACTIVE, active_at=T0, fired_at=T0, resolved_at=T0 + 5 * M, last_eval=T0 + 5 * M
            ),
            ("firing", "resolved"),
        ),
        (
            _alert(
                AlertState.INACTIVE, active_at=T0, fired_at=T0, resolved_at=T0 + 5 * M, last_eval=T0 + 6 * M
            ),
            None,
        ),
        (_alert(AlertState.FIRING, active_at=T0, fired_at=T0), None),  # never evaluated
    ],
)
def test_transition_of(alert: Alert, expected: tuple[str, str] | None) -> None:
    assert transition_of(alert) == expected


def _history(store: Store) -> list[tuple[datetime, str, str, float | None]]:
    engine = store.engine
    table = TransitionRow.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(TransitionRow).order_by(table.c.at, table.c.id)  # type: ignore[call-overload]
        ).all()
    return [(r.at, r.from_state, r.to_state, r.value) for r in rows]


def test_two_episodes_through_the_state_machine_are_recorded_once_each(url: str) -> None:
    store = open_store(url)
    try:
        timing = Timing(for_=2 * M, keep_firing_for=M, resolved_retention=30 * M)
        # minutes 0-4 active (pending, firing at 2), 5-6 clear (resolves at 6), 10-12 active again
        active = {0, 1, 2, 3, 4, 10, 11, 12}
        alert: Alert | None = None
        for k in range(14):
            now = T0 + k * M
            obs = Observation(active=k in active, value=float(k), expected=1.0, lower=0.0, upper=2.0)
            alert = step(alert, obs, now, timing, rule="R", group="g", labels=LABELS)
            assert alert is not None
            with store.session() as s:
                write_alerts(s, [alert], [])
                if k == 3:  # a retried commit writes the same alert again: still one row
                    write_alerts(s, [alert], [])
                s.commit()
        assert _history(store) == [
            (T0, "inactive", "pending", 0.0),
            (T0 + 2 * M, "pending", "firing", 2.0),
            (T0 + 6 * M, "firing", "resolved", 6.0),
            (T0 + 10 * M, "inactive", "pending", 10.0),
            (T0 + 12 * M, "pending", "firing", 12.0),
        ]
        table = TransitionRow.__table__  # type: ignore[attr-defined]
        with store.engine.connect() as conn:
            lower, upper, episode = conn.execute(
                sa.select(table.c.lower, table.c.upper, table.c.episode_start).where(
                    table.c.to_state == "resolved"
                )
            ).one()
        assert (lower, upper) == (0.0, 2.0)
        # the episode is the first one's start (SQLite reads back naive: compare in UTC)
        assert episode.replace(tzinfo=UTC) == T0
    finally:
        store.close()


def test_a_failed_transaction_writes_neither_state_nor_transition(url: str) -> None:
    store = open_store(url)
    try:
        alert = _alert(AlertState.FIRING, active_at=T0, fired_at=T0, last_eval=T0)
        with store.session() as s:
            write_alerts(s, [alert], [])
            s.rollback()
        with store.session() as s:
            assert s.get(AlertRow, alert.fingerprint) is None
        assert _history(store) == []
    finally:
        store.close()
