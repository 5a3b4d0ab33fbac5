"""Opening the store: engine, sessions, SQLite pragmas, schema migrations and error translation.

This module owns the connection to the one database watcher uses (SQLite by default, PostgreSQL in
production), the versioned migrations that bring its schema up to date at start-up, and turning
driver failures into one-line ``StoreError`` messages that name the place and never the password.
It does not own the table shapes (``store.tables``) nor any query: callers open sessions.

Migrations: ``MIGRATIONS[v]`` brings a database from version ``v - 1`` to ``v``. A fresh database
gets the current tables from ``create_all`` and is stamped with the newest version at once; an
older one gets every missing step in order, inside one transaction that holds a write lock
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL) so that two replicas starting
together migrate once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel

from ..errors import StoreError
from ..redact import Masker, display_url, url_secrets
from .tables import SCHEMA_VERSION, SchemaVersionRow

PG_CONNECT_TIMEOUT_S = 10
_PG_MIGRATION_LOCK = 0x77617463  # "watc": the advisory lock key replicas serialise migrations on


def _v1_create_all(conn: Connection) -> None:
    """Create every table of ``store.tables`` that does not exist yet."""
    SQLModel.metadata.create_all(conn)


def _v2_cluster(conn: Connection) -> None:
    """Add the replica tables (``cluster_*``) and the outbox claim columns (issue #9)."""
    from .tables import EvaluationRow, LeaseRow, ReplicaRow

    tables = [getattr(t, "__table__") for t in (ReplicaRow, LeaseRow, EvaluationRow)]  # noqa: B009
    SQLModel.metadata.create_all(conn, tables=tables)
    have = {c["name"] for c in sa.inspect(conn).get_columns("outbox")}
    stamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    if "claimed_by" not in have:
        conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN claimed_by VARCHAR(128)")
    if "claimed_until" not in have:
        conn.exec_driver_sql(f"ALTER TABLE outbox ADD COLUMN claimed_until {stamp}")


def _v3_outbox_key_index(conn: Connection) -> None:
    """Index the outbox by receiver × fingerprint: delivery keeps one alert's messages in order (#16)."""
    have = {ix["name"] for ix in sa.inspect(conn).get_indexes("outbox")}
    if "ix_outbox_key" not in have:
        conn.exec_driver_sql("CREATE INDEX ix_outbox_key ON outbox (receiver, fingerprint, status, id)")


def _v4_payload_access(conn: Connection) -> None:
    """Add the audit log of payload reads (``payload_access``, issue #18)."""
    from .tables import PayloadAccessRow

    SQLModel.metadata.create_all(conn, tables=[getattr(PayloadAccessRow, "__table__")])  # noqa: B009


def _v5_alert_surprise(conn: Connection) -> None:
    """Add ``alerts.surprise`` (-log10 tail probability; alerts are ordered by it, issue #15)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("alerts")}
    if "surprise" not in have:
        conn.exec_driver_sql("ALTER TABLE alerts ADD COLUMN surprise FLOAT")


def _v6_tick_done(conn: Connection) -> None:
    """Add ``cluster_evaluations.done``: only completed evaluations count as evaluated (#16).

    Rows claimed before this version were written by replicas that deleted a discarded claim, so
    they count as done.
    """
    have = {c["name"] for c in sa.inspect(conn).get_columns("cluster_evaluations")}
    if "done" not in have:
        conn.exec_driver_sql("ALTER TABLE cluster_evaluations ADD COLUMN done BOOLEAN NOT NULL DEFAULT TRUE")


def _v7_detector_state(conn: Connection) -> None:
    """Add ``detector_state``: checkpointed detector state per series (issue #19)."""
    from .tables import DetectorStateRow

    SQLModel.metadata.create_all(conn, tables=[getattr(DetectorStateRow, "__table__")])  # noqa: B009


def _v8_markers_feedback(conn: Connection) -> None:
    """Add release markers (``release_markers``) and on-call feedback (``alert_feedback``, issue #22)."""
    from .tables import FeedbackRow, MarkerRow

    tables = [getattr(t, "__table__") for t in (MarkerRow, FeedbackRow)]  # noqa: B009
    SQLModel.metadata.create_all(conn, tables=tables)


def _v9_call_cache_writes(conn: Connection) -> None:
    """Add ``calls.cache_creation_tokens`` and ``calls.conversation_id`` (GenAI conventions, issue #20)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("calls")}
    if "cache_creation_tokens" not in have:
        conn.exec_driver_sql("ALTER TABLE calls ADD COLUMN cache_creation_tokens INTEGER NOT NULL DEFAULT 0")
    if "conversation_id" not in have:
        conn.exec_driver_sql("ALTER TABLE calls ADD COLUMN conversation_id VARCHAR(128)")


def _v10_alert_transitions(conn: Connection) -> None:
    """Add ``alert_transitions``: the state history of every alert (issue #21)."""
    from .tables import TransitionRow

    SQLModel.metadata.create_all(conn, tables=[getattr(TransitionRow, "__table__")])  # noqa: B009


def _v12_shard_stats(conn: Connection) -> None:
    """Add ``cluster_leases.series``/``tick_s`` (what a unit's holder last evaluated) and an index of
    ``notification_log`` by group dedup key (a group's alerts on other replicas), issue #19."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("cluster_leases")}
    if "series" not in have:
        conn.exec_driver_sql("ALTER TABLE cluster_leases ADD COLUMN series INTEGER")
    if "tick_s" not in have:
        conn.exec_driver_sql("ALTER TABLE cluster_leases ADD COLUMN tick_s FLOAT")
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_notification_log_dedup ON notification_log (receiver, dedup_key)"
    )


LABEL_TIME_INDEXES: tuple[tuple[str, str, str], ...] = (
    ("ix_calls_tenant_ts", "calls", "tenant, ts"),
    ("ix_calls_feature_ts", "calls", "feature, ts"),
    ("ix_calls_model_ts", "calls", "model, ts"),
    ("ix_scores_name_feature_ts", "scores", "name, feature, ts"),
)
"""The label × time indexes of migration 15 (name, table, columns), as ``store.tables`` declares them."""


def _v15_label_time_indexes(conn: Connection) -> None:
    """Index ``calls`` by tenant, feature and model and ``scores`` by name and feature, each with time.

    The contribution analysis of an alerting series reads one label value's rows over two periods;
    without these it scanned every series' rows of those periods (issue #19). On a large PostgreSQL
    table, build them beforehand with ``CREATE INDEX CONCURRENTLY`` under the same names
    (docs/scaling.md): this step then finds them and does nothing.
    """
    for name, table, cols in LABEL_TIME_INDEXES:
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols})")


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _v1_create_all,
    2: _v2_cluster,
    3: _v3_outbox_key_index,
    4: _v4_payload_access,
    5: _v5_alert_surprise,
    6: _v6_tick_done,
    7: _v7_detector_state,
    8: _v8_markers_feedback,
    9: _v9_call_cache_writes,
    10: _v10_alert_transitions,
    12: _v12_shard_stats,
    15: _v15_label_time_indexes,
}
"""Schema steps by the version they produce, applied in ascending order to older databases."""


@dataclass(eq=False)
class Store:
    """An open database: the engine, how to show it in messages, and sessions on it."""

    engine: Engine
    url_display: str
    """The URL with the password masked, safe for logs, errors and the status page."""
    dialect: str
    """``"sqlite"`` or ``"postgresql"``."""
    _secrets: Masker | str | None = None
    """What to mask in messages: the password, or a ``Masker`` of every secret part of the URL."""

    def __post_init__(self) -> None:
        if not isinstance(self._secrets, Masker):
            self._secrets = Masker([self._secrets] if self._secrets else [])

    def session(self) -> Session:
        """Return a new session; objects stay usable after commit (``expire_on_commit=False``)."""
        return Session(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        """Check that the database answers a trivial query; raise ``StoreError`` if it does not."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.SQLAlchemyError as exc:
            raise self.error("ping", exc) from None

    def redact(self, text: str) -> str:
        """Return ``text`` with the database password (and secret query values) replaced by ``***``."""
        assert isinstance(self._secrets, Masker)
        return self._secrets(text)

    def error(self, action: str, exc: BaseException) -> StoreError:
        """Return a one-line ``StoreError`` for ``exc`` raised while doing ``action``."""
        return StoreError(self.redact(f"store {self.url_display}: {action} failed: {describe_error(exc)}"))

    def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        self.engine.dispose()


def open_store(url: str, *, busy_timeout_ms: int = 5000, echo: bool = False) -> Store:
    """Open (creating and migrating if needed) the database at ``url`` and return a ``Store``.

    ``sqlite:///path`` creates the parent directory; ``sqlite://`` is an in-memory database shared
    by every session of the store. ``postgresql://`` means psycopg 3. Any failure raises
    ``StoreError`` with a one-line message that names the database without its password.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError("store: not a database URL (expected sqlite:///path or postgresql://…)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    display = display_url(parsed.render_as_string(hide_password=False))
    secrets = url_secrets(url) | url_secrets(parsed.render_as_string(hide_password=False))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(parsed, display, busy_timeout_ms, echo)
    elif backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        try:
            engine = sa.create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args=connect_args)
        except ImportError:
            raise StoreError(
                f"store {display}: PostgreSQL needs psycopg, which is not installed: "
                "pip install 'watcher-llm[postgres]'"
            ) from None
        except sa.exc.SQLAlchemyError as exc:
            why = Masker(secrets)(describe_error(exc))
            raise StoreError(f"store {display}: cannot create engine: {why}") from None
    else:
        raise StoreError(f"store {display}: unsupported database {backend!r} (use sqlite or postgresql)")
    store = Store(engine, display, backend, Masker(secrets))
    try:
        migrate(store)
    except StoreError:
        store.close()
        raise
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        store.close()
        raise store.error("open", exc) from None
    return store


def _sqlite_engine(parsed: sa.URL, display: str, busy_timeout_ms: int, echo: bool) -> Engine:
    """Return a SQLite engine with WAL, busy_timeout, synchronous=NORMAL and foreign keys."""
    database = parsed.database or ""
    memory = database in ("", ":memory:")
    kwargs: dict[str, Any] = {
        "echo": echo,
        "connect_args": {"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
    }
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store {display}: cannot create directory {path.parent}: {exc.strerror or exc}"
            ) from None
    engine = sa.create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not memory:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    return engine


def schema_version(conn: Connection) -> int:
    """Return the version recorded in ``schema_version`` (0 when the table is absent or empty)."""
    if not sa.inspect(conn).has_table(SchemaVersionRow.__tablename__):
        return 0
    table = SchemaVersionRow.__table__  # type: ignore[attr-defined]
    version = conn.execute(sa.select(sa.func.max(table.c.version))).scalar()
    return int(version or 0)


def migrate(store: Store) -> int:
    """Bring the schema up to the newest version in ``MIGRATIONS`` and return that version."""
    target = max(MIGRATIONS)
    with store.engine.connect() as conn:
        current = schema_version(conn)
    if current == target:
        return current
    with store.engine.connect() as conn:
        _lock_for_migration(conn, store.dialect)
        current = schema_version(conn)  # another replica may have migrated while we waited
        if current > target:
            conn.rollback()
            raise StoreError(
                f"store {store.url_display}: schema version {current} is newer than this watcher "
                f"understands ({target}); upgrade watcher"
            )
        if current == 0 and not _has_any_table(conn):
            SQLModel.metadata.create_all(conn)
        else:
            for version in sorted(v for v in MIGRATIONS if v > current):
                MIGRATIONS[version](conn)
        _stamp(conn, target)
        conn.commit()
    return target


def _lock_for_migration(conn: Connection, dialect: str) -> None:
    """Start the migration transaction holding a database-wide write lock."""
    if dialect == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})


def _has_any_table(conn: Connection) -> bool:
    """Tell whether any watcher table already exists (an unversioned, older database)."""
    existing = set(sa.inspect(conn).get_table_names())
    return any(name in existing for name in SQLModel.metadata.tables)


def _stamp(conn: Connection, version: int) -> None:
    """Record ``version`` as the single row of ``schema_version``."""
    if not sa.inspect(conn).has_table(SchemaVersionRow.__tablename__):
        SQLModel.metadata.create_all(conn, tables=[SchemaVersionRow.__table__])  # type: ignore[attr-defined]
    table = SchemaVersionRow.__table__  # type: ignore[attr-defined]
    conn.execute(sa.delete(table))
    conn.execute(sa.insert(table).values(id=1, version=version, migrated_at=datetime.now(UTC)))


_KNOWN = (
    ("file is not a database", "not a SQLite database (corrupt, or some other kind of file)"),
    ("database disk image is malformed", "the database file is corrupt"),
    ("database is locked", "database is locked by another connection (gave up after busy_timeout)"),
    ("database table is locked", "a table is locked by another connection (gave up after busy_timeout)"),
    (
        "unable to open database file",
        "cannot open the database file (missing directory or permission denied)",
    ),
    ("readonly database", "the database is read-only (permission denied)"),
    ("password authentication failed", "authentication failed"),
)


def describe_error(exc: BaseException) -> str:
    """Return a short, single-line description of a driver or OS error."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    lowered = text.lower()
    for needle, meaning in _KNOWN:
        if needle in lowered:
            return meaning
    if isinstance(orig, OSError) and orig.strerror:
        text = f"{orig.strerror}: {orig.filename}" if orig.filename else orig.strerror
    first = text.splitlines()[0] if text else type(orig).__name__
    return first[:300]


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Store",
    "describe_error",
    "migrate",
    "open_store",
    "schema_version",
]
