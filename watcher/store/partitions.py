"""Time partitions of ``calls`` and ``scores`` on PostgreSQL: conversion, upkeep and dropping by age.

This module owns turning the two high-volume tables into range-partitioned tables on ``ts``
(``convert``: one transaction, the rows and their ids kept), keeping partitions ready ahead of the
clock (``ensure``), and retention by ``DROP TABLE`` of whole expired partitions instead of row
deletes (``drop_expired``). It does not own when these run (the daemon's retention job and
``watcher db partition``), nor the row-level purge of what is left (``store.retention``).

Layout: ``calls`` becomes the parent, partitioned ``BY RANGE (ts)``, with one partition per
interval (``calls_p20261207`` for a day, ``calls_p2026w49`` for an ISO week, ``calls_p202612`` for a
month) and a default partition (``calls_default``) that catches rows outside every range (a
backfill of old data, a clock far ahead), so that an insert never fails for want of a partition.
A partition made for a range moves the default partition's rows of that range into itself before
it is attached. The primary key becomes ``(id, ts)`` (PostgreSQL requires the partition key in
it); ids still come from the table's one sequence, so they stay unique, and the public columns are
unchanged. Indexes declared in ``store.tables`` are made on the parent and so on every partition.

Time is a parameter: ``now`` is passed in. SQLite has no partitions: every function here is
for PostgreSQL only and raises ``StoreError`` elsewhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import StoreError
from .db import Store
from .tables import Call, Score

logger = logging.getLogger(__name__)

Interval = Literal["day", "week", "month"]
TABLES: tuple[str, ...] = ("calls", "scores")
"""The tables that may be partitioned (the ones that grow with traffic)."""
MAX_BACK = timedelta(days=400)
"""How far back of ``now`` ``convert`` makes partitions for existing rows."""
_LOCK = 0x77617470  # "watp": one replica at a time changes partitions


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of a table: its name and range ``[lo, hi)`` (both None for the default one)."""

    table: str
    name: str
    lo: datetime | None
    hi: datetime | None


def _model_table(name: str) -> sa.Table:
    model: Any = {"calls": Call, "scores": Score}[name]
    return model.__table__  # type: ignore[no-any-return]


def _need_pg(store: Store) -> None:
    if store.dialect != "postgresql":
        raise StoreError("time partitions need PostgreSQL (SQLite has none: its retention deletes rows)")


def floor_to(ts: datetime, interval: Interval) -> datetime:
    """Return the start of the interval holding ``ts`` (UTC midnight, ISO Monday, first of month)."""
    ts = ts.astimezone(UTC)
    day = datetime(ts.year, ts.month, ts.day, tzinfo=UTC)
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def next_start(start: datetime, interval: Interval) -> datetime:
    """Return the start of the interval after the one starting at ``start``."""
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def partition_name(table: str, start: datetime, interval: Interval) -> str:
    """Return ``calls_p20261207`` (day), ``calls_p2026w49`` (ISO week) or ``calls_p202612`` (month)."""
    if interval == "day":
        return f"{table}_p{start:%Y%m%d}"
    if interval == "week":
        year, week, _ = start.isocalendar()
        return f"{table}_p{year}w{week:02d}"
    return f"{table}_p{start:%Y%m}"


def is_partitioned(conn: Connection, table: str) -> bool:
    """Return whether ``table`` (in the current schema) is a partitioned table."""
    got = conn.exec_driver_sql(
        "SELECT 1 FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %(t)s AND n.nspname = current_schema()",
        {"t": table},
    ).first()
    return got is not None


def partitions(store: Store, table: str) -> list[Partition]:
    """Return the partitions of ``table``, oldest first, the default one last ([] if not partitioned)."""
    _need_pg(store)
    try:
        with store.engine.connect() as conn:
            return _partitions(conn, table)
    except sa.exc.SQLAlchemyError as exc:
        raise store.error(f"listing the partitions of {table}", exc) from None


def _partitions(conn: Connection, table: str) -> list[Partition]:
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE p.relname = %(t)s AND n.nspname = current_schema()",
        {"t": table},
    ).all()
    out: list[Partition] = []
    default: Partition | None = None
    for name, bound in rows:
        if bound is None or bound.strip().upper() == "DEFAULT":
            default = Partition(table, name, None, None)
            continue
        lo, hi = _parse_bound(bound)
        out.append(Partition(table, name, lo, hi))
    out.sort(key=lambda p: p.lo or datetime.min.replace(tzinfo=UTC))
    return [*out, default] if default is not None else out


def _parse_bound(bound: str) -> tuple[datetime, datetime]:
    """Parse ``FOR VALUES FROM ('2026-12-07 00:00:00+00') TO ('2026-12-08 00:00:00+00')``."""
    parts = bound.split("'")
    return _stamp(parts[1]), _stamp(parts[3])


def _stamp(text: str) -> datetime:
    ts = datetime.fromisoformat(text.strip())
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _lit(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("'%Y-%m-%d %H:%M:%S+00'")


def _attach(conn: Connection, table: str, start: datetime, interval: Interval) -> Partition:
    """Make the partition of ``[start, next)``: rows of that range in the default partition move in."""
    end = next_start(start, interval)
    name = partition_name(table, start, interval)
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
    default = f"{table}_default"
    cond = f"ts >= {_lit(start)} AND ts < {_lit(end)}"
    conn.exec_driver_sql(f"INSERT INTO {name} SELECT * FROM {default} WHERE {cond}")
    conn.exec_driver_sql(f"DELETE FROM {default} WHERE {cond}")
    conn.exec_driver_sql(
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({_lit(start)}) TO ({_lit(end)})"
    )
    return Partition(table, name, start, end)


def convert(store: Store, table: str, interval: Interval, now: datetime, *, ahead: int = 3) -> int:
    """Turn ``table`` into a table partitioned by ``ts``; return the rows carried over.

    One transaction: the old table is renamed, the partitioned one made with the same columns,
    defaults and indexes, partitions from the oldest row's interval to ``ahead`` intervals past
    ``now`` (and the default one), the rows copied with their ids, the old table dropped. Readers
    wait for it; on a large table run it when traffic is low (``watcher db partition``). Does
    nothing (returns 0) when the table is already partitioned.
    """
    _need_pg(store)
    model = _model_table(table)
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s)", {"k": _LOCK})
            if is_partitioned(conn, table):
                return 0
            old = f"{table}_unpartitioned"
            conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            oldest = conn.exec_driver_sql(f"SELECT min(ts) FROM {table}").scalar()
            conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
            for (ix,) in conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = %(t)s AND schemaname = current_schema()",
                {"t": old},
            ).all():
                conn.exec_driver_sql(f'ALTER INDEX "{ix}" RENAME TO "{ix}_unpartitioned"')
            conn.exec_driver_sql(
                f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE (ts)"
            )
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD PRIMARY KEY (id, ts)")
            # the id sequence now belongs to the new table (dropping the old one would drop it)
            seq = conn.exec_driver_sql("SELECT pg_get_serial_sequence(%(t)s, 'id')", {"t": old}).scalar()
            if seq:
                conn.exec_driver_sql(f"ALTER SEQUENCE {seq} OWNED BY {table}.id")
            for index in sorted(model.indexes, key=lambda i: str(i.name)):
                cols = ", ".join(str(c.name) for c in index.columns)
                conn.exec_driver_sql(f"CREATE INDEX {index.name} ON {table} ({cols})")
            conn.exec_driver_sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
            # older rows than MAX_BACK stay in the default partition (a stray ancient row must
            # not make thousands of partitions); the row-level purge expires them
            first = max(_as_utc(oldest) if oldest is not None else now, now - MAX_BACK)
            _make_range(conn, table, interval, first, now, ahead)
            moved = conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM {old}").rowcount
            conn.exec_driver_sql(f"DROP TABLE {old}")
    except sa.exc.SQLAlchemyError as exc:
        raise store.error(f"partitioning {table}", exc) from None
    logger.info(
        "partitioned %s by %s: %d row(s) carried over", table, interval, moved, extra={"table": table}
    )
    return int(moved or 0)


def _as_utc(ts: Any) -> datetime:
    assert isinstance(ts, datetime)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _make_range(
    conn: Connection, table: str, interval: Interval, first: datetime, now: datetime, ahead: int
) -> list[Partition]:
    """Make every missing partition from ``first``'s interval to ``ahead`` intervals past ``now``'s."""
    have = {p.lo for p in _partitions(conn, table) if p.lo is not None}
    last = floor_to(now, interval)
    for _ in range(ahead):
        last = next_start(last, interval)
    made: list[Partition] = []
    start = floor_to(first, interval)
    while start <= last:
        if start not in have:
            made.append(_attach(conn, table, start, interval))
        start = next_start(start, interval)
    return made


def ensure(
    store: Store,
    table: str,
    interval: Interval,
    now: datetime,
    *,
    ahead: int = 3,
    keep: timedelta | None = None,
) -> list[Partition]:
    """Make the partitions of ``table`` up to ``ahead`` past ``now``'s interval; return the new ones.

    Starts where the newest partition ends, when that is before ``now``; rows waiting in the
    default partition get the partitions of their intervals and move into them. Never further back
    than ``keep`` (the table's retention: older rows are about to be purged) nor ``MAX_BACK``.

    Also gives the default partition's rows their own partitions when they fall in that span. Does
    nothing when ``table`` is not partitioned.
    """
    _need_pg(store)
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s)", {"k": _LOCK})
            if not is_partitioned(conn, table):
                return []
            # from the newest partition's end (a daemon stopped for a while leaves no gap)
            ends = [p.hi for p in _partitions(conn, table) if p.hi is not None]
            back = min(keep, MAX_BACK) if keep is not None and keep > timedelta(0) else MAX_BACK
            first = max(min(max(ends, default=now), now), now - back)
            made = _make_range(conn, table, interval, first, now, ahead)
            # and the intervals of rows waiting in the default partition (a backfill of older
            # data), within the retention: older ones are about to be purged anyway
            made += _adopt_waiting(conn, table, interval, now - back, now, ahead)
    except sa.exc.SQLAlchemyError as exc:
        raise store.error(f"making partitions of {table}", exc) from None
    for p in made:
        logger.info("partition %s made (%s to %s)", p.name, p.lo, p.hi, extra={"table": table})
    return made


def _adopt_waiting(
    conn: Connection, table: str, interval: Interval, lo: datetime, now: datetime, ahead: int
) -> list[Partition]:
    """Make the partitions of the intervals that rows in the default partition fall in (``lo`` to
    ``ahead`` intervals past ``now``); the rows move in."""
    hi = floor_to(now, interval)
    for _ in range(ahead + 1):
        hi = next_start(hi, interval)
    waiting = conn.exec_driver_sql(
        f"SELECT DISTINCT date_trunc('{interval}', ts AT TIME ZONE 'UTC') FROM {table}_default "
        "WHERE ts >= %(lo)s AND ts < %(hi)s",
        {"lo": floor_to(lo, interval), "hi": hi},
    ).all()
    have = {p.lo for p in _partitions(conn, table) if p.lo is not None}
    made = []
    for (start,) in sorted(waiting):
        start = _as_utc(start)
        if start not in have:
            made.append(_attach(conn, table, start, interval))
    return made


def drop_expired(store: Store, table: str, cutoff: datetime) -> dict[str, int]:
    """Drop the partitions of ``table`` whose whole range is older than ``cutoff``; return their rows.

    The rows are counted before the drop (what retention reports as deleted). Rows of partly
    expired partitions and of the default partition are left to the row-level purge.
    """
    _need_pg(store)
    dropped: dict[str, int] = {}
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s)", {"k": _LOCK})
            if not is_partitioned(conn, table):
                return {}
            for p in _partitions(conn, table):
                if p.hi is None or p.hi > cutoff:
                    continue
                n = conn.exec_driver_sql(f"SELECT count(*) FROM {p.name}").scalar()
                conn.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {p.name}")
                conn.exec_driver_sql(f"DROP TABLE {p.name}")
                dropped[p.name] = int(n or 0)
    except sa.exc.SQLAlchemyError as exc:
        raise store.error(f"dropping expired partitions of {table}", exc) from None
    for name, n in dropped.items():
        logger.info("retention: dropped partition %s (%d row(s))", name, n, extra={"table": table})
    return dropped


def partitioned_tables(store: Store) -> list[str]:
    """Return which of ``TABLES`` are partitioned ([] on SQLite)."""
    if store.dialect != "postgresql":
        return []
    try:
        with store.engine.connect() as conn:
            return [t for t in TABLES if is_partitioned(conn, t)]
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("reading the partitioned tables", exc) from None


__all__ = [
    "TABLES",
    "Interval",
    "Partition",
    "convert",
    "drop_expired",
    "ensure",
    "floor_to",
    "is_partitioned",
    "next_start",
    "partition_name",
    "partitioned_tables",
    "partitions",
]
