"""Tests for store.db: pragmas, UTC round trips on both backends, migrations and error translation."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import select

from watcher.errors import StoreError
from watcher.store import db
from watcher.store.db import MIGRATIONS, Store, open_store, schema_version
from watcher.store.tables import SCHEMA_VERSION, Call, SchemaVersionRow

BAD_PG = "postgresql+psycopg://u:s3cret@127.0.0.1:1/x?connect_timeout=2"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db", busy_timeout_ms=1234)
    yield s
    s.close()


def _version(store: Store) -> int:
    with store.engine.connect() as conn:
        return schema_version(conn)


def _one_line_store_error(excinfo: pytest.ExceptionInfo[StoreError]) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_sqlite_pragmas_are_set_on_every_connection(store: Store) -> None:
    assert store.dialect == "sqlite"
    with store.engine.connect() as conn:
        pragma = {
            p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
        }
    assert pragma == {"journal_mode": "wal", "busy_timeout": 1234, "synchronous": 1, "foreign_keys": 1}


def test_parent_directory_is_created(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/a/b/w.db")
    s.close()
    assert (tmp_path / "a" / "b" / "w.db").is_file()


def test_in_memory_database_is_shared_by_sessions() -> None:
    s = open_store("sqlite://")
    try:
        with s.session() as session:
            session.add(Call(trace_id="t1", ts=datetime(2024, 1, 1, tzinfo=UTC)))
            session.commit()
        with s.session() as session:
            assert [c.trace_id for c in session.exec(select(Call))] == ["t1"]
        s.ping()
    finally:
        s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


def test_datetimes_read_back_utc_aware_with_equal_instants(any_store: Store) -> None:
    naive = datetime(2024, 3, 1, 12, 0, 0, 123456)  # naive means UTC
    aware = datetime(2024, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    with any_store.session() as session:
        session.add(Call(trace_id="naive", ts=naive))
        session.add(Call(trace_id="aware", ts=aware))
        session.commit()
    with any_store.session() as session:
        got = {c.trace_id: c.ts for c in session.exec(select(Call))}
        # The comparison in SQL uses the same normalisation.
        hit = session.exec(select(Call).where(Call.ts == aware)).all()
    for ts in got.values():
        assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
        assert ts == datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert got["naive"] == got["aware"]
    assert len(hit) == 2


def test_postgresql_url_means_psycopg3(pg_url: str) -> None:
    s = open_store(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert s.engine.url.drivername == "postgresql+psycopg"
        assert s.dialect == "postgresql"
        assert _version(s) == SCHEMA_VERSION
        s.ping()
    finally:
        s.close()


def test_schema_version_matches_the_migration_list() -> None:
    assert max(MIGRATIONS) == SCHEMA_VERSION


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    for _ in range(3):
        s = open_store(url)
        with s.session() as session:
            rows = session.exec(select(SchemaVersionRow)).all()
        s.close()
        assert [r.version for r in rows] == [SCHEMA_VERSION]
        assert rows[0].migrated_at.tzinfo is not None


NEXT = SCHEMA_VERSION + 1
"""A version one past the newest: the fake migration below brings a current database to it."""


def _fake_v2(calls: list[int]) -> dict[int, object]:
    def v2(conn: Connection) -> None:
        calls.append(NEXT)
        conn.exec_driver_sql("ALTER TABLE calls ADD COLUMN region VARCHAR(32)")

    return {**MIGRATIONS, NEXT: v2}


def test_older_database_is_upgraded_in_order_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    open_store(url).close()  # a database at the current version
    applied: list[int] = []
    monkeypatch.setattr(db, "MIGRATIONS", _fake_v2(applied))
    for _ in range(2):
        s = open_store(url)
        try:
            assert _version(s) == NEXT
            columns = {c["name"] for c in sa.inspect(s.engine).get_columns("calls")}
        finally:
            s.close()
        assert "region" in columns
    assert applied == [NEXT]


def test_fresh_database_is_created_current_and_stamped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[int] = []
    monkeypatch.setattr(db, "MIGRATIONS", _fake_v2(applied))
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    try:
        assert _version(s) == NEXT
    finally:
        s.close()
    assert applied == []  # create_all already built the newest schema


def test_unversioned_tables_get_every_migration(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/w.db")
    Call.__table__.create(engine)  # type: ignore[attr-defined]
    engine.dispose()
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    try:
        assert _version(s) == SCHEMA_VERSION
        assert sa.inspect(s.engine).has_table("alerts")
    finally:
        s.close()


def test_newer_schema_than_known_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    monkeypatch.setattr(db, "MIGRATIONS", _fake_v2([]))
    open_store(url).close()
    monkeypatch.setattr(db, "MIGRATIONS", dict(MIGRATIONS))
    with pytest.raises(StoreError) as excinfo:
        open_store(url)
    assert f"schema version {NEXT} is newer" in _one_line_store_error(excinfo)


def test_corrupt_file_is_a_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    path.write_bytes(b"this is not a database\n" * 500)
    with pytest.raises(StoreError) as excinfo:
        open_store(f"sqlite:///{path}")
    msg = _one_line_store_error(excinfo)
    assert str(path) in msg
    assert "not a SQLite database" in msg


def test_database_locked_beyond_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("CREATE TABLE other (x INTEGER)")
        with pytest.raises(StoreError) as excinfo:
            open_store(f"sqlite:///{path}", busy_timeout_ms=100)
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    msg = _one_line_store_error(excinfo)
    assert "locked" in msg and str(path) in msg


def test_unreachable_server_error_never_shows_the_password() -> None:
    with pytest.raises(StoreError) as excinfo:
        open_store(BAD_PG)
    msg = _one_line_store_error(excinfo)
    assert "s3cret" not in msg
    assert "u:***@127.0.0.1:1/x" in msg
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is not None
    assert "s3cret" not in repr(excinfo.value.args)


def test_ping_raises_store_error_without_password() -> None:
    s = Store(sa.create_engine(BAD_PG), "postgresql+psycopg://u:***@127.0.0.1:1/x", "postgresql", "s3cret")
    try:
        with pytest.raises(StoreError) as excinfo:
            s.ping()
    finally:
        s.close()
    msg = _one_line_store_error(excinfo)
    assert "s3cret" not in msg and "ping" in msg


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as excinfo:
        open_store(f"sqlite:///{blocker}/sub/w.db")
    assert "cannot create directory" in _one_line_store_error(excinfo)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_permission_denied_directory(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreError) as excinfo:
            open_store(f"sqlite:///{locked}/sub/w.db")
    finally:
        locked.chmod(0o700)
    assert "Permission denied" in _one_line_store_error(excinfo)


def test_unsupported_url_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        open_store("mysql://u:s3cret@h/db")
    with pytest.raises(StoreError):
        open_store("not a url")


def test_a_version_4_store_gets_the_alerts_surprise_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    store = open_store(url)
    with store.engine.begin() as conn:  # as the previous release wrote it
        conn.exec_driver_sql("ALTER TABLE alerts DROP COLUMN surprise")
        conn.exec_driver_sql("UPDATE schema_version SET version = 4")
    store.close()
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            assert schema_version(conn) == SCHEMA_VERSION
            assert "surprise" in {c["name"] for c in sa.inspect(conn).get_columns("alerts")}
    finally:
        store.close()


V5_EVALUATIONS = (
    "CREATE TABLE cluster_evaluations (group_name VARCHAR(256) NOT NULL, tick {ts} NOT NULL, "
    "replica_id VARCHAR(128) NOT NULL, epoch INTEGER NOT NULL, claimed_at {ts} NOT NULL, "
    "PRIMARY KEY (group_name, tick))"
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_6_marks_existing_tick_claims_done_and_new_ones_start_not_done(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/w.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    ts = "DATETIME" if s.dialect == "sqlite" else "TIMESTAMP WITH TIME ZONE"
    with s.engine.begin() as conn:  # the table as version 5 left it, with a claim of an older replica
        conn.exec_driver_sql("DROP TABLE cluster_evaluations")
        conn.exec_driver_sql(V5_EVALUATIONS.format(ts=ts))
        conn.execute(
            sa.text(
                "INSERT INTO cluster_evaluations (group_name, tick, replica_id, epoch, claimed_at) "
                "VALUES ('cost', :t, 'old', 1, :t)"
            ),
            {"t": datetime(2026, 11, 27, tzinfo=UTC).replace(tzinfo=None)},
        )
        conn.execute(sa.text("UPDATE schema_version SET version = 5"))
    s.close()
    s = open_store(url)
    try:
        assert _version(s) == SCHEMA_VERSION
        with s.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO cluster_evaluations (group_name, tick, replica_id, epoch, claimed_at, done) "
                    "VALUES ('cost', :t, 'new', 2, :t, :d)"
                ),
                {"t": datetime(2026, 11, 27, 0, 1), "d": False},
            )
            rows = conn.execute(
                sa.text("SELECT replica_id, done FROM cluster_evaluations ORDER BY tick")
            ).all()
    finally:
        s.close()
    assert [(r.replica_id, bool(r.done)) for r in rows] == [("old", True), ("new", False)]


def test_a_version_5_store_gets_the_marker_and_feedback_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old5.db"
    store = open_store(url)
    with store.engine.begin() as conn:  # as the release before issue #22 wrote it
        conn.exec_driver_sql("DROP TABLE release_markers")
        conn.exec_driver_sql("DROP TABLE alert_feedback")
        conn.exec_driver_sql("UPDATE schema_version SET version = 5")
    store.close()
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            assert schema_version(conn) == SCHEMA_VERSION
            names = set(sa.inspect(conn).get_table_names())
            assert {"release_markers", "alert_feedback"} <= names
    finally:
        store.close()


def test_a_version_5_store_gets_the_detector_state_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    store = open_store(url)
    with store.engine.begin() as conn:  # as the release before checkpoints wrote it
        conn.exec_driver_sql("DROP TABLE detector_state")
        conn.exec_driver_sql("UPDATE schema_version SET version = 5")
    store.close()
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            assert schema_version(conn) == SCHEMA_VERSION
            cols = {c["name"] for c in sa.inspect(conn).get_columns("detector_state")}
            assert {"group_name", "rule", "fingerprint", "spec", "version", "cursor", "state"} <= cols
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_15_indexes_calls_and_scores_by_label_and_time(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from watcher.store.db import LABEL_TIME_INDEXES

    url = f"sqlite:///{tmp_path}/w.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    with s.engine.begin() as conn:  # as version 12 left the store: no label × time indexes
        for name, _, _ in LABEL_TIME_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        conn.execute(sa.text("UPDATE schema_version SET version = 12"))
    s.close()
    s = open_store(url)
    try:
        assert _version(s) == SCHEMA_VERSION
        with s.engine.connect() as conn:
            insp = sa.inspect(conn)
            have = {
                ix["name"]: tuple(ix["column_names"])
                for table in ("calls", "scores")
                for ix in insp.get_indexes(table)
            }
    finally:
        s.close()
    assert have["ix_calls_tenant_ts"] == ("tenant", "ts")
    assert have["ix_calls_model_ts"] == ("model", "ts") and have["ix_calls_feature_ts"] == ("feature", "ts")
    assert have["ix_scores_name_feature_ts"] == ("name", "feature", "ts")
