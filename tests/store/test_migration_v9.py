"""Migration 9: ``calls.cache_creation_tokens`` and ``calls.conversation_id`` on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from watcher.store.db import open_store, schema_version
from watcher.store.tables import SCHEMA_VERSION


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return (
        f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    )


def test_a_version_5_store_gets_the_new_call_columns(url: str) -> None:
    store = open_store(url)
    with store.engine.begin() as conn:  # make it look like a store written by the previous release
        conn.exec_driver_sql("ALTER TABLE calls DROP COLUMN cache_creation_tokens")
        conn.exec_driver_sql("ALTER TABLE calls DROP COLUMN conversation_id")
        conn.exec_driver_sql("UPDATE schema_version SET version = 5")
        conn.exec_driver_sql(
            "INSERT INTO calls (trace_id, ts, provider, model, operation, tenant, feature,"
            " input_tokens, output_tokens, cached_tokens, reasoning_tokens, tokens_estimated,"
            " cost_usd, cost_known, outcome) VALUES ('old', '2026-01-01 00:00:00', 'openai',"
            " 'gpt-4o', 'chat', '', '', 1, 1, 0, 0, false, 0, true, 'ok')"
        )
    store.close()
    for _ in range(2):  # the second open finds nothing to do
        store = open_store(url)
        try:
            with store.engine.connect() as conn:
                assert schema_version(conn) == SCHEMA_VERSION
                columns = {c["name"]: c for c in sa.inspect(conn).get_columns("calls")}
                old = conn.execute(sa.text("select cache_creation_tokens, conversation_id from calls")).one()
        finally:
            store.close()
        assert {"cache_creation_tokens", "conversation_id"} <= set(columns)
        assert columns["cache_creation_tokens"]["nullable"] is False
        assert tuple(old) == (0, None)  # rows written before the migration read as "no cache writes"
