"""``watcher db stats|vacuum|purge|partition``: look after the store from the command line.

This module owns the ``db`` subcommands' arguments and output. It does not own the queries
(``store.retention``) nor opening the store (``store.db``). Exit codes follow ``watcher.cli``:
0 ok, 1 a store error (printed by ``cli.main`` as one line, without the password; no JSON then),
2 a missing store or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from ..config import Settings


def _open(args: argparse.Namespace) -> tuple[Settings, Any]:
    """Return the settings and the open store named by ``--config``."""
    from ..config import load_settings
    from .common import open_existing_store

    settings = load_settings(args.config)
    return settings, open_existing_store(settings)


def _human_bytes(n: int) -> str:
    """Return ``n`` bytes as a short human figure (``12.3 MiB``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def cmd_stats(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print rows, oldest and newest per table, and the database size."""
    out = out or sys.stdout
    from ..store.retention import count_expired, database_size, table_stats

    settings, store = _open(args)
    try:
        stats = table_stats(store)
        sizes = database_size(store)
        expired = count_expired(store, settings.retention, datetime.now(UTC))
    finally:
        store.close()
    if args.json:
        doc = {
            "store": store.url_display,
            "tables": [
                {"table": s.table, "rows": s.rows, "oldest": _iso(s.oldest), "newest": _iso(s.newest)}
                for s in stats
            ],
            "size_bytes": sizes,
            "expired": expired,
        }
        print(json.dumps(doc, indent=2), file=out)
        return 0
    print(f"store {store.url_display}", file=out)
    print(f"{'table':<18} {'rows':>10}  {'oldest':<20}  {'newest':<20}", file=out)
    for s in stats:
        oldest, newest = _iso(s.oldest) or "-", _iso(s.newest) or "-"
        print(f"{s.table:<18} {s.rows:>10}  {oldest:<20}  {newest:<20}", file=out)
    for name, size in sizes.items():
        print(f"size {name}: {_human_bytes(size)} ({size} bytes)", file=out)
    due = {k: v for k, v in expired.items() if v}
    if due:
        print(
            "past retention (deleted by the next purge): " + ", ".join(f"{k} {v}" for k, v in due.items()),
            file=out,
        )
    return 0


def cmd_vacuum(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Optionally purge expired rows, then VACUUM; print the size before and after."""
    out = out or sys.stdout
    from ..store.retention import database_size, purge, vacuum

    settings, store = _open(args)
    deleted: dict[str, int] | None = None
    try:
        before = sum(database_size(store).values())
        if args.purge:
            deleted = purge(store, settings.retention, datetime.now(UTC))
        vacuum(store)
        after = sum(database_size(store).values())
    finally:
        store.close()
    if args.json:
        doc = {"store": store.url_display, "purged": deleted, "size_before": before, "size_after": after}
        print(json.dumps(doc, indent=2), file=out)
        return 0
    if deleted is not None:
        done = ", ".join(f"{k} {v}" for k, v in deleted.items() if v) or "nothing"
        print(f"purged: {done}", file=out)
    print(f"vacuumed {store.url_display}: {_human_bytes(before)} -> {_human_bytes(after)}", file=out)
    return 0


def cmd_purge(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Delete the rows past their retention now (what the daemon's job does every interval)."""
    out = out or sys.stdout
    from ..store.retention import count_expired, purge

    settings, store = _open(args)
    try:
        now = datetime.now(UTC)
        if args.dry_run:
            counts = count_expired(store, settings.retention, now)
        else:
            counts = purge(store, settings.retention, now)
    finally:
        store.close()
    if args.json:
        doc = {"store": store.url_display, "at": _iso(now), "dry_run": bool(args.dry_run), "rows": counts}
        print(json.dumps(doc, indent=2), file=out)
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for name, n in counts.items():
        print(f"{verb} {n:>8} {name}", file=out)
    return 0


def cmd_partition(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Partition ``calls`` and ``scores`` by time (PostgreSQL), make the partitions ahead, list them."""
    out = out or sys.stdout
    from ..store import partitions as parts

    settings, store = _open(args)
    try:
        if store.dialect != "postgresql":
            print(
                f"watcher: error: {store.url_display}: time partitions need PostgreSQL "
                "(on SQLite the retention job deletes rows)",
                file=sys.stderr,
            )
            return 2
        interval = args.interval or settings.store.partition
        ahead = args.ahead if args.ahead is not None else settings.store.partition_ahead
        now = datetime.now(UTC)
        carried: dict[str, int | None] = {}
        if not args.list:
            if interval == "off":
                print(
                    "watcher: error: no interval: pass --interval day|week|month or set store.partition",
                    file=sys.stderr,
                )
                return 2
            for table in parts.TABLES:
                with store.engine.connect() as conn:
                    already = parts.is_partitioned(conn, table)
                carried[table] = None if already else parts.convert(store, table, interval, now, ahead=ahead)
                parts.ensure(store, table, interval, now, ahead=ahead)
        listed = {table: parts.partitions(store, table) for table in parts.TABLES}
    finally:
        store.close()
    if args.json:
        doc = {
            "store": store.url_display,
            "tables": {
                table: {
                    "converted_rows": carried.get(table),
                    "partitions": [{"name": p.name, "from": _iso(p.lo), "to": _iso(p.hi)} for p in ps],
                }
                for table, ps in listed.items()
            },
        }
        print(json.dumps(doc, indent=2), file=out)
        return 0
    for table, ps in listed.items():
        n = carried.get(table)
        if n is not None:
            print(f"{table}: partitioned by {interval}, {n} row(s) carried over", file=out)
        if not ps:
            print(f"{table}: not partitioned", file=out)
            continue
        ranged = [p for p in ps if p.lo is not None]
        span = f"{_iso(ranged[0].lo)} to {_iso(ranged[-1].hi)}" if ranged else "no ranges"
        print(f"{table}: {len(ranged)} partition(s), {span}, plus a default partition", file=out)
    return 0


def add_db_parser(subparsers: Any) -> None:
    """Register ``watcher db stats|vacuum|purge|partition`` on the ``watcher`` subparsers."""
    db = subparsers.add_parser("db", help="store maintenance: stats, purge, vacuum, partition")
    sub = db.add_subparsers(dest="db_command", required=True)

    stats = sub.add_parser("stats", help="rows, oldest and newest per table, file size")
    stats.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=cmd_stats)

    vac = sub.add_parser("vacuum", help="reclaim space (SQLite VACUUM, PostgreSQL VACUUM ANALYZE)")
    vac.add_argument("--config", "-c")
    vac.add_argument("--purge", action="store_true", help="delete rows past their retention first")
    vac.add_argument(
        "--json", action="store_true", help="print {store, purged, size_before, size_after} as JSON"
    )
    vac.set_defaults(func=cmd_vacuum)

    pur = sub.add_parser("purge", help="delete rows past their retention now")
    pur.add_argument("--config", "-c")
    pur.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    pur.add_argument("--json", action="store_true", help="print {store, at, dry_run, rows} as JSON")
    pur.set_defaults(func=cmd_purge)

    par = sub.add_parser(
        "partition",
        help="PostgreSQL: partition calls and scores by time (converts them once; retention then drops "
        "whole partitions)",
    )
    par.add_argument("--config", "-c")
    par.add_argument("--interval", choices=["day", "week", "month"], help="default: store.partition")
    par.add_argument("--ahead", type=int, help="partitions made past the current one (store.partition_ahead)")
    par.add_argument("--list", action="store_true", help="only list the partitions")
    par.add_argument("--json", action="store_true", help="print {store, tables: {name: {...}}} as JSON")
    par.set_defaults(func=cmd_partition)
