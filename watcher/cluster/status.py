"""``watcher cluster status``: the replicas, their shards, series, leases and the outbox, from the store.

This module owns collecting the cluster's state into one document (``collect``) and printing it
as tables or JSON (``print_tables``). It does not own the tables' meaning (``leases``,
``member``). Ages and expiries are computed by the database clock, like the leases themselves.
A lease's ``series`` and ``tick_s`` are what its holder reported of its last evaluation of the
unit (a group or one of its shards); ``lag_s`` is the age of the unit's last evaluated tick.
Exit codes follow ``watcher.cli``: 0 ok, 1 a store error (one line, without the password).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any, TextIO

import sqlalchemy as sa

from ..core import utc
from .assign import Peer, majority_hash, parse_unit


def _sqlite_holder(store: Any) -> int | None:
    """Return the pid of the ``watcher run`` holding the SQLite lock (``sqlitelock``), if one does."""
    import fcntl
    from pathlib import Path

    database = store.engine.url.database or ""
    if database in ("", ":memory:"):
        return None
    path = Path(database).expanduser().resolve()
    lock = path.with_name(path.name + ".lock")
    if not lock.is_file():
        return None
    with open(lock, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


def collect(store: Any, ttl: timedelta) -> dict[str, Any]:
    """Return replicas, leases, groups per replica and outbox depth as plain data."""
    if store.dialect != "postgresql":
        with store.engine.connect() as conn:
            depth = conn.execute(sa.text("SELECT count(*) FROM outbox WHERE status = 'pending'")).scalar()
        return {
            "store": store.url_display,
            "mode": "sqlite-single-replica",
            "running_pid": _sqlite_holder(store),
            "replicas": [],
            "leases": [],
            "groups_per_replica": {},
            "outbox_pending": int(depth or 0),
        }
    with store.engine.connect() as conn:
        reps = conn.execute(
            sa.text(
                "SELECT replica_id, host, pid, version, rules_hash, started_at, "
                "EXTRACT(EPOCH FROM (clock_timestamp() - heartbeat_at)) AS age_s FROM cluster_replicas "
                "ORDER BY replica_id"
            )
        ).all()
        leases = conn.execute(
            sa.text(
                "SELECT q.*, EXTRACT(EPOCH FROM (clock_timestamp() - q.last_tick)) AS lag_s FROM ("
                "SELECT l.group_name, l.owner, l.epoch, l.expires_at, l.series, l.tick_s, "
                "EXTRACT(EPOCH FROM (l.expires_at - clock_timestamp())) AS left_s, "
                "(SELECT max(tick) FROM cluster_evaluations e WHERE e.group_name = l.group_name "
                "AND e.done) AS last_tick "
                "FROM cluster_leases l) q ORDER BY q.group_name"
            )
        ).all()
        outbox = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
                "count(*) FILTER (WHERE status = 'pending' AND claimed_until > clock_timestamp()) AS "
                "claimed, "
                "count(*) FILTER (WHERE status = 'dead') AS dead FROM outbox"
            )
        ).one()
    ttl_s = ttl.total_seconds()
    live = [r for r in reps if float(r.age_s) < ttl_s]
    majority = majority_hash([Peer(r.replica_id, r.rules_hash, utc(r.started_at)) for r in live])
    valid = [lz for lz in leases if float(lz.left_s) > 0]
    held = Counter(lz.owner for lz in valid)
    series: Counter[str] = Counter()
    tick_s: dict[str, float] = {}
    last: dict[str, float] = {}
    for lz in valid:
        series[lz.owner] += int(lz.series or 0)
        tick_s[lz.owner] = tick_s.get(lz.owner, 0.0) + float(lz.tick_s or 0.0)
        if lz.lag_s is not None:
            last[lz.owner] = max(last.get(lz.owner, float("-inf")), -float(lz.lag_s))
    total = sum(series.values())
    mean = total / len(held) if held else 0.0
    return {
        "store": store.url_display,
        "mode": "postgresql",
        "lease_ttl_s": ttl_s,
        "majority_rules_hash": majority,
        "replicas": [
            {
                "replica_id": r.replica_id,
                "host": r.host,
                "pid": r.pid,
                "version": r.version,
                "rules_hash": r.rules_hash,
                "rules_hash_mismatch": bool(majority and r.rules_hash != majority),
                "heartbeat_age_s": round(float(r.age_s), 3),
                "live": float(r.age_s) < ttl_s,
                "groups": held.get(r.replica_id, 0),
                "units": held.get(r.replica_id, 0),
                "series": series.get(r.replica_id, 0),
                "tick_s": round(tick_s.get(r.replica_id, 0.0), 3),
                "last_tick_age_s": round(-last[r.replica_id], 3) if r.replica_id in last else None,
            }
            for r in reps
        ],
        "leases": [
            {
                "group": lz.group_name,
                "rule_group": parse_unit(lz.group_name).group,
                "shard": parse_unit(lz.group_name).shard,
                "shards": parse_unit(lz.group_name).shards,
                "series": lz.series,
                "tick_s": round(float(lz.tick_s), 4) if lz.tick_s is not None else None,
                "lag_s": round(float(lz.lag_s), 3) if lz.lag_s is not None else None,
                "owner": lz.owner,
                "epoch": lz.epoch,
                "expires_at": utc(lz.expires_at).isoformat(),
                "expires_in_s": round(float(lz.left_s), 3),
                "valid": float(lz.left_s) > 0,
                "last_tick": utc(lz.last_tick).isoformat() if lz.last_tick is not None else None,
            }
            for lz in leases
        ],
        "groups_per_replica": dict(sorted(held.items())),
        "series_per_replica": dict(sorted(series.items())),
        "series_total": total,
        "series_balance": round(max(series.values()) / mean, 3) if total and mean else None,
        "outbox_pending": int(outbox.pending),
        "outbox_claimed": int(outbox.claimed),
        "outbox_dead": int(outbox.dead),
    }


def print_tables(doc: dict[str, Any], out: TextIO) -> None:
    """Print ``doc`` as rich tables (plain text when ``out`` is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, width=120, soft_wrap=False)
    console.print(f"store {doc['store']} — {doc['mode']}")
    if doc["mode"] != "postgresql":
        pid = doc.get("running_pid")
        running = f"watcher run pid {pid} holds the database" if pid else "no watcher run holds the database"
        console.print(f"single replica (SQLite, no leases): {running}")
        console.print(f"outbox: {doc['outbox_pending']} pending")
        return
    reps = Table(title="replicas")
    columns = ("replica", "host", "pid", "version", "rules hash", "heartbeat age", "live", "units", "series")
    for col in (*columns, "tick", "last tick age"):
        reps.add_column(col)
    for r in doc["replicas"]:
        mark = f"{r['rules_hash']} (differs)" if r["rules_hash_mismatch"] else r["rules_hash"]
        reps.add_row(
            r["replica_id"],
            r["host"],
            str(r["pid"]),
            r["version"],
            mark,
            f"{r['heartbeat_age_s']:.1f}s",
            "yes" if r["live"] else "no",
            str(r["groups"]),
            str(r["series"]),
            f"{r['tick_s']:.2f}s",
            f"{r['last_tick_age_s']:.1f}s" if r["last_tick_age_s"] is not None else "-",
        )
    console.print(reps)
    leases = Table(title="leases (a group, or a shard group#k/N)")
    for col in ("unit", "owner", "epoch", "expires in", "series", "tick", "last tick", "lag"):
        leases.add_column(col)
    for lz in doc["leases"]:
        left = f"{lz['expires_in_s']:.1f}s" if lz["valid"] else "expired"
        leases.add_row(
            lz["group"],
            lz["owner"],
            str(lz["epoch"]),
            left,
            str(lz["series"]) if lz["series"] is not None else "-",
            f"{lz['tick_s']:.3f}s" if lz["tick_s"] is not None else "-",
            lz["last_tick"] or "-",
            f"{lz['lag_s']:.1f}s" if lz["lag_s"] is not None else "-",
        )
    console.print(leases)
    per = ", ".join(f"{k}: {v}" for k, v in doc["groups_per_replica"].items()) or "none"
    console.print(f"units per replica: {per}")
    if doc.get("series_total"):
        spr = ", ".join(f"{k}: {v}" for k, v in doc["series_per_replica"].items())
        console.print(f"series per replica: {spr} (max/mean {doc['series_balance']})")
    console.print(
        f"outbox: {doc['outbox_pending']} pending"
        + (
            f" ({doc.get('outbox_claimed', 0)} claimed), {doc.get('outbox_dead', 0)} dead"
            if doc["mode"] == "postgresql"
            else ""
        )
    )
