"""Keeping the store small: TTL purges in batches, per-table statistics, VACUUM.

This module owns which rows expire (``policies``), deleting them in short transactions so that
writers are never blocked for long (``purge``), and the maintenance views behind ``watcher db``
(``table_stats``, ``database_size``, ``vacuum``). It does not own the TTLs' defaults (``config``),
when the purge runs (the daemon's scheduler) nor the command line (``cli.store``).

Never purged: alert state (the engine owns it), pending notifications (the outbox owns them) and
the schema version. A TTL of ``0`` keeps a table forever. Time is a parameter: ``now`` is passed in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..config import RetentionSettings
from .db import Store
from .tables import (
    AlertRow,
    Call,
    EvalRunRow,
    NotificationLogRow,
    OutboxRow,
    Payload,
    PayloadAccessRow,
    Score,
    SilenceRow,
    TransitionRow,
)

logger = logging.getLogger(__name__)


def _table(model: Any) -> sa.Table:
    return model.__table__  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Policy:
    """Rows of ``table`` whose ``column`` is older than ``ttl`` (and that match ``where``) expire."""

    name: str
    """The retention setting, also the metric label: ``payloads``, ``outbox_sent``, …"""
    table: sa.Table
    column: str
    ttl: timedelta
    where: Callable[[sa.Table], sa.ColumnElement[bool]] | None = None

    def condition(self, now: datetime) -> sa.ColumnElement[bool]:
        """Return the SQL condition selecting the expired rows at ``now``."""
        cond: sa.ColumnElement[bool] = self.table.c[self.column] < now - self.ttl
        if self.where is not None:
            cond = sa.and_(cond, self.where(self.table))
        return cond


def policies(settings: RetentionSettings) -> list[Policy]:
    """Return the purge policies of ``settings``, skipping the tables kept forever (TTL 0)."""
    outbox = _table(OutboxRow)
    candidates = [
        Policy("payloads", _table(Payload), "ts", settings.payloads),
        Policy("payload_access", _table(PayloadAccessRow), "ts", settings.payload_access),
        Policy("calls", _table(Call), "ts", settings.calls),
        Policy("scores", _table(Score), "ts", settings.scores),
        Policy("notification_log", _table(NotificationLogRow), "notified_at", settings.notification_log),
        Policy("outbox_sent", outbox, "created_at", settings.outbox_sent, lambda t: t.c.status == "sent"),
        Policy("outbox_dead", outbox, "created_at", settings.outbox_dead, lambda t: t.c.status == "dead"),
        Policy("eval_runs", _table(EvalRunRow), "last_eval", settings.eval_runs),
        Policy("silences", _table(SilenceRow), "ends_at", settings.silences),
        Policy("alert_transitions", _table(TransitionRow), "at", settings.alert_transitions),
    ]
    return [p for p in candidates if p.ttl > timedelta(0)]


def _delete_batch(store: Store, policy: Policy, now: datetime, batch_size: int) -> int:
    """Delete at most ``batch_size`` expired rows of one policy in one transaction; return how many."""
    table = policy.table
    keys = list(table.primary_key.columns)
    victims = sa.select(*keys).where(policy.condition(now)).limit(batch_size)
    if len(keys) == 1:
        # A derived table: MySQL-style "same table in subquery" limits do not bite, and it is
        # portable across SQLite and PostgreSQL.
        chosen = sa.select(victims.subquery().c[0])
        # the condition again outside: a partitioned table then prunes to the expired partitions
        stmt = sa.delete(table).where(keys[0].in_(chosen), policy.condition(now))
    else:
        stmt = sa.delete(table).where(sa.tuple_(*keys).in_(victims))
    with store.engine.begin() as conn:
        return int(conn.execute(stmt).rowcount or 0)


def purge(
    store: Store,
    settings: RetentionSettings,
    now: datetime,
    *,
    batch_size: int | None = None,
    on_deleted: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Delete every expired row, batch by batch; return the rows deleted per policy.

    ``on_deleted(policy, n)`` is called after each batch (self-metrics). A failure raises
    ``StoreError`` after the batches already committed, which stay deleted.
    """
    from .partitions import drop_expired, partitioned_tables

    size = batch_size or settings.batch_size
    deleted: dict[str, int] = {}
    split = set(partitioned_tables(store))
    for policy in policies(settings):
        total = 0
        if policy.table.name in split and policy.where is None:
            # whole partitions past the TTL go at once; the row deletes below take the rest
            gone = sum(drop_expired(store, policy.table.name, now - policy.ttl).values())
            total += gone
            if on_deleted is not None and gone:
                on_deleted(policy.name, gone)
        while True:
            try:
                n = _delete_batch(store, policy, now, size)
            except sa.exc.SQLAlchemyError as exc:
                raise store.error(f"purging {policy.name}", exc) from None
            total += n
            if on_deleted is not None and n:
                on_deleted(policy.name, n)
            if n < size:
                break
        deleted[policy.name] = total
        if total:
            logger.info(
                "retention: deleted %d row(s) older than %s",
                total,
                now - policy.ttl,
                extra={"table": policy.table.name, "policy": policy.name},
            )
    return deleted


def count_expired(store: Store, settings: RetentionSettings, now: datetime) -> dict[str, int]:
    """Return how many rows ``purge`` would delete at ``now``, per policy (a dry run)."""
    out: dict[str, int] = {}
    with store.engine.connect() as conn:
        for policy in policies(settings):
            stmt = sa.select(sa.func.count()).select_from(policy.table).where(policy.condition(now))
            out[policy.name] = int(conn.execute(stmt).scalar() or 0)
    return out


# --- maintenance views ------------------------------------------------------------------------

TIME_COLUMNS: dict[str, str] = {
    "calls": "ts",
    "scores": "ts",
    "payloads": "ts",
    "payload_access": "ts",
    "alerts": "last_eval",
    "notification_log": "notified_at",
    "outbox": "created_at",
    "silences": "created_at",
    "eval_runs": "last_eval",
    "alert_transitions": "at",
}
"""The column that dates a row, per table (for oldest/newest in ``watcher db stats``)."""


@dataclass(frozen=True, slots=True)
class TableStats:
    """Row count and time span of one table."""

    table: str
    rows: int
    oldest: datetime | None
    newest: datetime | None


def table_stats(store: Store, tables: Sequence[str] | None = None) -> list[TableStats]:
    """Return rows, oldest and newest per table (tables absent from the database are skipped)."""
    kept: list[Any] = [Call, Score, Payload, PayloadAccessRow, AlertRow, NotificationLogRow, OutboxRow]
    kept += [SilenceRow, EvalRunRow, TransitionRow]
    models = {t.name: t for t in (_table(m) for m in kept)}
    names = list(tables) if tables is not None else list(TIME_COLUMNS)
    out: list[TableStats] = []
    try:
        with store.engine.connect() as conn:
            existing = set(sa.inspect(conn).get_table_names())
            for name in names:
                if name not in existing or name not in models:
                    continue
                table = models[name]
                col = table.c[TIME_COLUMNS[name]]
                rows, oldest, newest = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(col), sa.func.max(col)).select_from(table)
                ).one()
                ts_type = col.type
                assert isinstance(ts_type, sa.types.TypeDecorator)
                # min()/max() lose the column type on SQLite: normalise to UTC-aware here too.
                oldest = ts_type.process_result_value(_as_datetime(oldest), conn.dialect)
                newest = ts_type.process_result_value(_as_datetime(newest), conn.dialect)
                out.append(TableStats(name, int(rows), oldest, newest))
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("reading table statistics", exc) from None
    return out


def _as_datetime(value: Any) -> datetime | None:
    """Return ``value`` (a datetime, or SQLite's ISO text) as a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def sqlite_path(store: Store) -> Path | None:
    """Return the file of a SQLite store (``None`` for PostgreSQL or an in-memory database)."""
    if store.dialect != "sqlite":
        return None
    database = store.engine.url.database or ""
    if database in ("", ":memory:"):
        return None
    return Path(database).expanduser()


def database_size(store: Store) -> dict[str, int]:
    """Return the on-disk size in bytes: the SQLite file, its WAL and shm; or the PostgreSQL database."""
    path = sqlite_path(store)
    if path is not None:
        sizes = {}
        for suffix in ("", "-wal", "-shm"):
            f = Path(f"{path}{suffix}")
            if f.exists():
                sizes[f.name] = os.path.getsize(f)
        return sizes
    if store.dialect == "postgresql":
        try:
            with store.engine.connect() as conn:
                name, size = conn.execute(
                    sa.text("SELECT current_database(), pg_database_size(current_database())")
                ).one()
        except sa.exc.SQLAlchemyError as exc:
            raise store.error("reading the database size", exc) from None
        return {str(name): int(size)}
    return {}


def vacuum(store: Store) -> None:
    """Reclaim the space of deleted rows and refresh planner statistics (``VACUUM``/``ANALYZE``).

    SQLite rewrites the file (it needs free disk about the size of the database) and truncates
    the WAL; PostgreSQL runs ``VACUUM (ANALYZE)`` on watcher's tables, which does not lock them.
    """
    try:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if store.dialect == "sqlite":
                conn.exec_driver_sql("VACUUM")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.exec_driver_sql("ANALYZE")
            else:
                existing = set(sa.inspect(conn).get_table_names())
                for name in sorted(existing & set(TIME_COLUMNS)):
                    conn.exec_driver_sql(f'VACUUM (ANALYZE) "{name}"')
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("vacuum", exc) from None


__all__ = [
    "TIME_COLUMNS",
    "Policy",
    "TableStats",
    "count_expired",
    "database_size",
    "policies",
    "purge",
    "sqlite_path",
    "table_stats",
    "vacuum",
]
