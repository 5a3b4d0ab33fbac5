"""The cluster's SQL on PostgreSQL: heartbeats, group leases, tick claims and the fence.

This module owns every statement that coordinates replicas, and nothing else: which groups a
replica wants comes from ``assign``, when to run a cycle and what to do with the result from
``member``. Every time comparison uses the database clock (``clock_timestamp()``), so replicas'
clocks never need to agree; a replica's own, conservative view of its lease comes from its
monotonic clock (``member``).

- A **heartbeat cycle** is one short transaction: upsert this replica's row, read the live
  replicas (heartbeat within the TTL), then acquire or renew the wanted groups and release the
  others. Acquiring is a conditional upsert that succeeds only if the lease is free, expired or
  already ours; a change of hands increments ``epoch``, the fencing token.
- A **tick claim** inserts ``(group, tick)`` into ``cluster_evaluations`` only while the caller's
  lease is valid; the primary key makes a tick evaluated at most once, across all replicas. The
  claim is marked ``done`` in the transaction that commits the evaluation's results (``mark_done``,
  behind the fence), so only completed evaluations count as evaluated (``last_ticks``). A claim
  left not done (its evaluation discarded, or its owner killed mid-way) is re-claimable by the
  group's next lease epoch, i.e. once the claimer's lease has run out (one ``lease_ttl``).
- The **fence** (``check_fence``) runs inside the transactions that write an evaluation's
  results (alert state, outbox rows): it locks the lease row ``FOR SHARE`` and fails unless the
  lease still has the caller's owner and epoch and has not expired. A takeover's ``UPDATE`` of that
  row waits for such a transaction to commit, so the new owner always reads what the old one wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session

from ..core import utc
from ..errors import LeaseLostError
from .assign import Peer

STATEMENT_TIMEOUT_MS = 2000
"""Cluster statements are tiny; one that waits longer is stuck behind a dead connection."""


@dataclass(frozen=True, slots=True)
class Me:
    """This replica, as it describes itself in ``cluster_replicas``."""

    replica_id: str
    host: str
    pid: int
    version: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One row of ``cluster_leases`` with its validity by the database clock."""

    group: str
    owner: str
    epoch: int
    expires_at: datetime
    valid: bool
    expires_in_s: float


def _timeout(conn: Connection) -> None:
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")


def heartbeat(conn: Connection, me: Me, rules_hash: str, ttl: timedelta) -> list[Peer]:
    """Record a heartbeat of ``me`` and return the live replicas (``me`` included)."""
    _timeout(conn)
    conn.execute(
        sa.text(
            "INSERT INTO cluster_replicas (replica_id, host, pid, version, rules_hash, started_at, "
            "heartbeat_at) "
            "VALUES (:id, :host, :pid, :version, :hash, :started, clock_timestamp()) "
            "ON CONFLICT (replica_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
            "version = EXCLUDED.version, rules_hash = EXCLUDED.rules_hash, heartbeat_at = clock_timestamp()"
        ),
        {
            "id": me.replica_id,
            "host": me.host,
            "pid": me.pid,
            "version": me.version,
            "hash": rules_hash,
            "started": me.started_at,
        },
    )
    rows = conn.execute(
        sa.text(
            "SELECT replica_id, rules_hash, started_at FROM cluster_replicas "
            "WHERE heartbeat_at > clock_timestamp() - :ttl"
        ),
        {"ttl": ttl},
    ).all()
    return [Peer(r.replica_id, r.rules_hash, utc(r.started_at)) for r in rows]


def read_leases(conn: Connection) -> list[LeaseView]:
    """Return every lease with its validity and seconds to expiry by the database clock."""
    rows = conn.execute(
        sa.text(
            "SELECT group_name, owner, epoch, expires_at, expires_at > clock_timestamp() AS valid, "
            "EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) AS left_s FROM cluster_leases "
            "ORDER BY group_name"
        )
    ).all()
    return [
        LeaseView(r.group_name, r.owner, r.epoch, utc(r.expires_at), r.valid, float(r.left_s)) for r in rows
    ]


def acquire(conn: Connection, group: str, owner: str, ttl: timedelta, *, fresh: bool = False) -> int | None:
    """Take or renew the lease of ``group`` for ``owner``; return its epoch, or None if held by another.

    The epoch stays when ``owner`` renews a lease it still holds, and grows when the lease changes
    hands or is taken back after it expired (the holder's memory of the group may be stale). With
    ``fresh`` (the caller does not hold the group in memory: e.g. a replica restarted under the same
    id before its old lease ran out) it grows too, so the claims the previous holder left not done
    become re-claimable and the old incarnation's writes fail the fence.
    """
    row = conn.execute(
        sa.text(
            "INSERT INTO cluster_leases AS l (group_name, owner, epoch, acquired_at, expires_at) "
            "VALUES (:g, :o, 1, clock_timestamp(), clock_timestamp() + :ttl) "
            "ON CONFLICT (group_name) DO UPDATE SET "
            "epoch = CASE WHEN l.owner = :o AND l.expires_at > clock_timestamp() AND NOT :fresh "
            "THEN l.epoch ELSE l.epoch + 1 END, "
            "acquired_at = CASE WHEN l.owner = :o AND l.expires_at > clock_timestamp() AND NOT :fresh "
            "THEN l.acquired_at ELSE clock_timestamp() END, "
            "owner = :o, expires_at = clock_timestamp() + :ttl "
            "WHERE l.owner = :o OR l.expires_at <= clock_timestamp() "
            "RETURNING l.epoch"
        ),
        {"g": group, "o": owner, "ttl": ttl, "fresh": fresh},
    ).first()
    return None if row is None else int(row.epoch)


def report(conn: Connection, owner: str, held: Iterable[str], stats: dict[str, tuple[int, float]]) -> None:
    """Record, on the leases ``owner`` holds, the series and seconds of its last evaluation of each."""
    mine = set(held)
    rows = [{"g": g, "o": owner, "n": n, "s": s} for g, (n, s) in stats.items() if g in mine]
    if rows:
        conn.execute(
            sa.text(
                "UPDATE cluster_leases SET series = :n, tick_s = :s WHERE group_name = :g AND owner = :o"
            ),
            rows,
        )


def release(conn: Connection, groups: Iterable[str], owner: str) -> list[str]:
    """Let the leases of ``groups`` held by ``owner`` expire now; return the groups released."""
    names = list(groups)
    if not names:
        return []
    rows = conn.execute(
        sa.text(
            "UPDATE cluster_leases SET expires_at = clock_timestamp() "
            "WHERE owner = :o AND group_name = ANY(:gs) AND expires_at > clock_timestamp() RETURNING "
            "group_name"
        ),
        {"o": owner, "gs": names},
    ).all()
    return [r.group_name for r in rows]


def housekeeping(conn: Connection, ttl: timedelta, keep_evaluations: timedelta) -> None:
    """Forget replicas silent for long and per-tick rows past their retention."""
    forget = max(ttl * 20, timedelta(minutes=10))
    conn.execute(
        sa.text("DELETE FROM cluster_replicas WHERE heartbeat_at < clock_timestamp() - :f"), {"f": forget}
    )
    conn.execute(
        sa.text("DELETE FROM cluster_evaluations WHERE claimed_at < clock_timestamp() - :k"),
        {"k": keep_evaluations},
    )


def claim_tick(conn: Connection, group: str, tick: datetime, owner: str, epoch: int) -> bool:
    """Record that ``owner`` evaluates ``group`` at ``tick``; False if the tick is taken or the lease gone.

    A tick is taken when it is done, or claimed at this or a later epoch. A claim of an earlier
    epoch that is not done was abandoned (that lease is over: its owner's results can no longer
    pass the fence) and is taken over.
    """
    _timeout(conn)
    result = conn.execute(
        sa.text(
            "INSERT INTO cluster_evaluations AS c (group_name, tick, replica_id, epoch, claimed_at, done) "
            "SELECT CAST(:g AS VARCHAR), CAST(:t AS TIMESTAMPTZ), CAST(:o AS VARCHAR), CAST(:e AS INTEGER), "
            "clock_timestamp(), FALSE WHERE EXISTS ("
            "SELECT 1 FROM cluster_leases WHERE group_name = :g AND owner = :o AND epoch = :e "
            "AND expires_at > clock_timestamp()) "
            "ON CONFLICT (group_name, tick) DO UPDATE SET replica_id = EXCLUDED.replica_id, "
            "epoch = EXCLUDED.epoch, claimed_at = EXCLUDED.claimed_at "
            "WHERE NOT c.done AND c.epoch < EXCLUDED.epoch"
        ),
        {"g": group, "t": tick, "o": owner, "e": epoch},
    )
    return bool(result.rowcount == 1)


def mark_done(session: Session, group: str, tick: datetime, owner: str, epoch: int) -> None:
    """Mark ``owner``'s claim of ``(group, tick)`` done, inside the transaction of its results.

    Call after ``check_fence`` in the same transaction (the lease row is locked, so a takeover waits
    for this commit and then reads the tick as done). Raise ``LeaseLostError`` if the claim is no
    longer ``owner``'s at ``epoch`` (a later epoch took it over): the results must not commit.
    """
    result = session.connection().execute(
        sa.text(
            "UPDATE cluster_evaluations SET done = TRUE WHERE group_name = :g AND tick = :t "
            "AND replica_id = :o AND epoch = :e"
        ),
        {"g": group, "t": tick, "o": owner, "e": epoch},
    )
    if result.rowcount != 1:
        raise LeaseLostError(
            f"rule group {group}: the claim of {tick.isoformat()} (epoch {epoch}) was taken over"
        )


def last_ticks(conn: Connection, groups: Iterable[str]) -> dict[str, float]:
    """Return the last tick evaluated to completion for each of ``groups`` (epoch s); never: absent.

    Claims not done do not count: their ticks are still to be evaluated (by the next epoch).
    """
    names = list(groups)
    if not names:
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT group_name, max(tick) AS tick FROM cluster_evaluations WHERE group_name = ANY(:gs) "
            "AND done GROUP BY group_name"
        ),
        {"gs": names},
    ).all()
    return {r.group_name: utc(r.tick).timestamp() for r in rows if r.tick is not None}


def check_fence(session: Session, group: str, owner: str, epoch: int) -> None:
    """Lock the lease of ``group`` for this transaction; raise ``LeaseLostError`` unless it is still ours."""
    row = (
        session.connection()
        .execute(
            sa.text(
                "SELECT 1 FROM cluster_leases WHERE group_name = :g AND owner = :o AND epoch = :e "
                "AND expires_at > clock_timestamp() FOR SHARE"
            ),
            {"g": group, "o": owner, "e": epoch},
        )
        .first()
    )
    if row is None:
        raise LeaseLostError(f"rule group {group}: lease (epoch {epoch}) no longer held by {owner}")


def prune_alerts(conn: Connection, groups: Iterable[str]) -> int:
    """Delete stored alerts of rule groups not in ``groups``; return how many were deleted."""
    result = conn.execute(
        sa.text("DELETE FROM alerts WHERE NOT (group_name = ANY(:gs))"), {"gs": list(groups)}
    )
    return int(result.rowcount or 0)
