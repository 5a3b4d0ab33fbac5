"""Migration 10: ``alert_transitions`` on a version 9 store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from watcher.core import Alert, AlertState, Labels
from watcher.engine.state import AlertStore
from watcher.store.db import open_store, schema_version
from watcher.store.tables import SCHEMA_VERSION, TransitionRow

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return (
        f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    )


def test_a_version_9_store_gets_the_transition_table_and_keeps_its_alerts(url: str) -> None:
    store = open_store(url)
    firing = Alert(
        "R", "g", Labels(tenant="acme"), AlertState.FIRING, active_at=T0, fired_at=T0, last_eval=T0
    )
    AlertStore(store).save([firing], [])
    with store.engine.begin() as conn:  # as the previous release left it
        conn.exec_driver_sql("DROP TABLE alert_transitions")
        conn.exec_driver_sql("UPDATE schema_version SET version = 9")
    store.close()
    for _ in range(2):  # the second open finds nothing to do
        store = open_store(url)
        try:
            with store.engine.connect() as conn:
                assert schema_version(conn) == SCHEMA_VERSION
                assert sa.inspect(conn).has_table("alert_transitions")
            assert [a.fingerprint for a in AlertStore(store).load()] == [firing.fingerprint]
            resolved = Alert(
                "R", "g", Labels(tenant="acme"), AlertState.INACTIVE,
                active_at=T0, fired_at=T0, resolved_at=T0.replace(hour=10), last_eval=T0.replace(hour=10),
            )  # fmt: skip
            AlertStore(store).save([resolved], [])
            with store.session() as s:
                rows = s.exec(sa.select(TransitionRow.to_state)).all()  # type: ignore[call-overload]
            assert [r[0] for r in rows] == ["resolved"]  # kept once across both opens
        finally:
            store.close()
