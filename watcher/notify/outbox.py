"""The durable outbox: queued notifications, their delivery, retries with backoff and dead letters.

This module owns the ``outbox`` table's life cycle: writing a rendered notification (inside the
caller's transaction), serialising it so a restarted process can send it without the alert in
memory, picking what is due, calling the receiver, and recording the outcome. It does not own
deciding what to send (``pipeline``), rendering (``templates``) nor any transport (``receivers``).

Delivery is at-least-once: a row is marked ``sent`` only after the receiver accepted it, and each
outcome is committed on its own, so a crash repeats at most the sends in flight.

**Order per alert.** Rows about the same thing for the same receiver (``receiver`` ×
``fingerprint``: an alert, or a group key for grouped receivers) are sent strictly in the order
they were queued: a row is due only when no older row of its key is still pending, across
retries, restarts and replicas (the rule is in the query that picks rows, so it holds for any
sender). A firing overtaken by its own resolve before delivery is therefore sent first, then the
resolve (both, in order: a receiver such as PagerDuty drops a resolve for an unknown dedup key).
A dead-lettered row no longer holds its successors back.

**Concurrency.** Rows of different keys are sent concurrently by a bounded pool
(``delivery_workers``), at most ``delivery_per_receiver`` at a time to one receiver, so one slow
or failing receiver does not hold the others back. A stop budget (``stop_by``) keeps the sender
from starting a send it could not finish in time; what is not sent stays queued. A retryable
failure waits ``min(retry_max, retry_initial · 2^(attempts-1))`` with ±20 % jitter; a
non-retryable failure, a message older than ``max_age`` or a receiver no longer configured makes
the row ``dead`` and, in the same transaction, queues a notice to each
``delivery_failure_receivers`` entry (``deadletter``). Each row carries a ``notification_id`` fixed
at enqueue time, so a redelivery after a crash is recognisable as the same message. Alone (SQLite,
or one replica) the sender relies on the scheduler's per-job lock; replicas sharing a PostgreSQL
store claim rows ``FOR UPDATE SKIP LOCKED`` with an expiry (``share``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, col, select

from ..core import (
    Alert,
    AlertState,
    GroupRef,
    Labels,
    Listed,
    Notice,
    Notification,
    NotificationKind,
    TraceLink,
    alert_from_dict,
    alert_to_dict,
    trace_from_dict,
    trace_to_dict,
    utc,
)
from ..errors import NotifyError
from ..selfmetrics import SelfMetrics
from ..store.tables import OutboxRow
from .charts import CHART_NAME, snapshot_png
from .deadletter import failure_notice, is_notice
from .failing import FailureTracker
from .faults import checkpoint
from .receivers.base import Receiver

logger = logging.getLogger(__name__)

PENDING, SENT, DEAD = "pending", "sent", "dead"
JITTER = 0.2
_MAX_ERROR_LEN = 500
POLL_S = 0.5
"""How often a flush waiting on slow sends looks for rows queued since (other processes write too)."""
STOP_SLACK_S = 0.5
"""Margin kept, besides the receiver's own timeout, before a stop deadline when starting a send."""


class SessionFactory(Protocol):
    """Anything that opens sessions on the store (``store.db.Store`` or a test double)."""

    def session(self) -> Session:
        """Return a new session."""
        ...


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one flush did: rows sent, failed (will retry), dead-lettered, and still pending."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    pending: int = 0


def _parse(ts: Any) -> datetime | None:
    return utc(datetime.fromisoformat(str(ts).replace("Z", "+00:00"))) if ts else None


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _listed_to_dict(item: Listed) -> dict[str, Any]:
    return {
        "alert": alert_to_dict(item.alert),
        "kind": str(item.kind),
        "rule_url": item.rule_url,
        "traces": [{"trace": trace_to_dict(t.trace), "url": t.url} for t in item.traces],
    }


def _listed_from_dict(d: Mapping[str, Any]) -> Listed:
    return Listed(
        alert=alert_from_dict(d["alert"]),
        kind=NotificationKind(d["kind"]),
        rule_url=str(d.get("rule_url") or ""),
        traces=tuple(TraceLink(trace_from_dict(t["trace"]), str(t["url"])) for t in d.get("traces") or []),
    )


def to_message(n: Notification) -> dict[str, Any]:
    """Return the JSON form of ``n`` stored in ``OutboxRow.message``: enough to send it again.

    Every alert goes through the one codec (``core.alert_to_dict``); the structured form a webhook
    receives is rebuilt from these typed fields at delivery (``document``), never stored.
    """
    return {
        "receiver": n.receiver,
        "kind": str(n.kind),
        "dedup_key": n.dedup_key,
        "title": n.title,
        "body": n.body,
        "links": [list(link) for link in n.links],
        "notification_id": n.notification_id,
        "alert": alert_to_dict(n.alert),
        "listed": [_listed_to_dict(item) for item in n.listed],
        "group": {"key": n.group.key, "labels": dict(n.group.labels)} if n.group is not None else None,
        "notice": (
            {"value": n.notice.value, "dead_outbox_id": n.notice.dead_outbox_id}
            if n.notice is not None
            else None
        ),
    }


def from_message(m: Mapping[str, Any]) -> Notification:
    """Rebuild the notification stored by ``to_message`` (or, from its payload, by an earlier version)."""
    if "listed" not in m:
        return _from_payload_message(m)
    group: Mapping[str, Any] | None = m.get("group")
    notice: Mapping[str, Any] | None = m.get("notice")
    return Notification(
        receiver=str(m["receiver"]),
        kind=NotificationKind(m["kind"]),
        dedup_key=str(m["dedup_key"]),
        title=str(m["title"]),
        body=str(m["body"]),
        alert=alert_from_dict(m["alert"]),
        links=tuple((str(t), str(u)) for t, u in m.get("links") or []),
        listed=tuple(_listed_from_dict(d) for d in m["listed"]),
        group=GroupRef(str(group["key"]), Labels(group.get("labels") or {})) if group else None,
        notification_id=str(m.get("notification_id") or ""),
        notice=(
            Notice(
                value=None if notice.get("value") is None else float(notice["value"]),
                dead_outbox_id=notice.get("dead_outbox_id"),
            )
            if notice
            else None
        ),
    )


def _from_payload_message(m: Mapping[str, Any]) -> Notification:
    """Rebuild a row an earlier version queued: title, body, links and the webhook payload as a dict.

    The typed fields are read back from the payload (each listed alert, its rule page and trace
    links, the group, the notification ID, a notice's fields), so the row is sent as it would have
    been; the lead alert comes from the stored alert when the row has it whole.
    """
    p: Mapping[str, Any] = m.get("payload") or {}
    kind = NotificationKind(m["kind"])
    extra: Mapping[str, Any] = m.get("alert") or {}
    lead = alert_from_dict(extra) if "rule" in extra else _legacy_alert(p, kind, extra)
    lead = replace(lead, annotations=dict(p.get("annotations") or lead.annotations))
    members: list[Mapping[str, Any]] = list(p.get("alerts") or [p])
    listed = []
    for i, doc in enumerate(members):
        item_kind = NotificationKind(doc.get("status") or kind)
        alert = lead if i == 0 else _legacy_alert(doc, item_kind, {})
        traces = tuple(
            TraceLink(trace_from_dict(t), str(t.get("url") or "")) for t in doc.get("traces") or []
        )
        listed.append(Listed(alert, item_kind, str(doc.get("rule_url") or ""), traces))
    notice = None
    if is_notice(m):
        value = p.get("value")
        notice = Notice(value=None if value is None else float(value), dead_outbox_id=p.get("dead_outbox_id"))
    return Notification(
        receiver=str(m["receiver"]),
        kind=kind,
        dedup_key=str(m["dedup_key"]),
        title=str(m["title"]),
        body=str(m["body"]),
        alert=lead,
        links=tuple((str(t), str(u)) for t, u in m.get("links") or []),
        listed=tuple(listed),
        group=GroupRef(str(p["group_key"]), Labels(p.get("group_labels") or {}))
        if "group_key" in p
        else None,
        notification_id=str(p.get("notification_id") or ""),
        notice=notice,
    )


def _legacy_alert(p: Mapping[str, Any], kind: NotificationKind, extra: Mapping[str, Any]) -> Alert:
    """Rebuild an alert from its payload document (rows of earlier versions)."""
    return Alert(
        rule=str(p.get("alertname", "")),
        group=str(p.get("group", "")),
        labels=Labels(p.get("labels") or {}),
        state=AlertState.FIRING if kind is NotificationKind.FIRING else AlertState.INACTIVE,
        active_at=_parse(p.get("starts_at")),
        fired_at=_parse(extra.get("fired_at")),
        resolved_at=_parse(p.get("ends_at")),
        last_eval=_parse(extra.get("last_eval")),
        value=_num(p.get("value")),
        expected=_num(p.get("expected")),
        lower=_num(p.get("lower")),
        upper=_num(p.get("upper")),
        score=_num(p.get("score")) if p.get("score") is not None else 0.0,
        surprise=_num(p.get("surprise")) if p.get("surprise") is not None else 0.0,
        annotations=dict(p.get("annotations") or {}),
        traces=tuple(trace_from_dict(t) for t in p.get("traces") or []),
    )


def notification_id(n: Notification, now: datetime) -> str:
    """Return the ID of one enqueued notification (stable across its redeliveries)."""
    material = f"{n.receiver}|{n.dedup_key}|{n.kind}|{utc(now).isoformat()}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def enqueue(
    session: Session,
    n: Notification,
    now: datetime,
    *,
    fingerprint: str | None = None,
    chart: Mapping[str, Any] | None = None,
) -> OutboxRow:
    """Add ``n`` to the outbox, due at ``now``, in the caller's transaction (no commit here).

    The stored message gains ``notification_id`` (see ``notification_id``); ``fingerprint`` (default:
    the alert's) is what the row is about, a group key for grouped notifications. ``chart`` is a
    ``charts.chart_snapshot``, drawn at delivery for receivers that take files.
    """
    message = to_message(replace(n, notification_id=notification_id(n, now)))
    if chart:
        message["chart"] = dict(chart)
    row = OutboxRow(
        receiver=n.receiver,
        fingerprint=fingerprint or n.alert.fingerprint,
        dedup_key=n.dedup_key,
        kind=str(n.kind),
        created_at=now,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        message=message,
    )
    session.add(row)
    return row


def _head_of_key(table: sa.Table) -> sa.ColumnElement[bool]:
    """Return the condition "no older row of the same receiver × fingerprint is still pending"."""
    older = table.alias("older")
    return ~sa.exists().where(
        older.c.receiver == table.c.receiver,
        older.c.fingerprint == table.c.fingerprint,
        older.c.status == PENDING,
        older.c.id < table.c.id,
    )


def backoff(attempts: int, initial: timedelta, maximum: timedelta, rng: random.Random) -> timedelta:
    """Return the wait before retry number ``attempts`` (≥ 1): capped exponential, ±20 % jitter."""
    base = min(maximum.total_seconds(), initial.total_seconds() * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base * rng.uniform(1 - JITTER, 1 + JITTER))


class Outbox:
    """Send due outbox rows through the receivers and record each outcome."""

    def __init__(
        self,
        store: SessionFactory,
        receivers: Mapping[str, Receiver],
        *,
        retry_initial: timedelta,
        retry_max: timedelta,
        max_age: timedelta,
        rng: random.Random | None = None,
        batch: int = 100,
        failure_receivers: Sequence[str] = (),
        failing_after: int = 3,
        failing_for: timedelta = timedelta(minutes=10),
        metrics: SelfMetrics | None = None,
        workers: int = 8,
        per_receiver: int = 4,
    ) -> None:
        """``workers`` sends run at once at most, ``per_receiver`` of them to the same receiver."""
        self._store = store
        self._failure_receivers = list(failure_receivers)
        self.metrics = metrics
        self.failing = FailureTracker(
            store, failure_receivers, self._enqueue_notice, after=failing_after, for_=failing_for
        )
        self._receivers = receivers
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._max_age = max_age
        self._rng = rng or random.Random()
        self._batch = batch
        self._workers = max(1, workers)
        self._per_receiver = max(1, min(per_receiver, self._workers))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._stop_by: float | None = None
        self._notices: list[OutboxRow] = []

    def pending_count(self) -> int:
        """Return how many rows wait for delivery (due or not)."""
        with self._store.session() as s:
            stmt = select(func.count()).select_from(OutboxRow).where(col(OutboxRow.status) == PENDING)
            return int(s.exec(stmt).one())

    _owner: str | None = None
    _claim_for: timedelta = timedelta(0)
    _may_send: Callable[[], bool] | None = None

    def share(self, owner: str, claim_for: timedelta, may_send: Callable[[], bool]) -> None:
        """Deliver alongside other replicas (PostgreSQL): claim due rows ``FOR UPDATE SKIP LOCKED``.

        A claim marks rows ``claimed_by`` ``owner`` until ``claim_for`` from now (database clock);
        other replicas skip them until then, so a killed sender's rows are retried once its claim
        runs out. This sender stops before ``0.8 · claim_for`` by its own clock, and before each
        send asks ``may_send`` (the replica's leases are still valid), so a replica cut off from the
        database never sends what another replica may already be sending.
        """
        self._owner = owner
        self._claim_for = claim_for
        self._may_send = may_send
        self._claimed: dict[int, float] = {}

    def _shared(self) -> bool:
        return self._owner is not None and getattr(self._store, "dialect", "postgresql") == "postgresql"

    def _claim(self, now: datetime, limit: int, exclude: Collection[str] = ()) -> list[OutboxRow]:
        """Claim up to ``limit`` due rows no other live sender holds; return them, oldest first."""
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        c = table.c
        pick = (
            sa.select(c.id)
            .where(
                c.status == PENDING,
                c.next_attempt_at <= now,
                sa.or_(c.claimed_until.is_(None), c.claimed_until < func.clock_timestamp()),
                _head_of_key(table),
                sa.true() if not exclude else c.receiver.not_in(list(exclude)),
            )
            .order_by(c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            sa.update(table)
            .where(c.id.in_(pick))
            .values(claimed_by=self._owner, claimed_until=func.clock_timestamp() + self._claim_for)
            .returning(*c)
        )
        started = time.monotonic()
        with self._store.session() as s:
            rows = [OutboxRow(**dict(r._mapping)) for r in s.connection().execute(stmt)]
            s.commit()
        until = started + 0.8 * self._claim_for.total_seconds()
        for r in rows:
            self._claimed[r.id or 0] = until
        return sorted(rows, key=lambda r: r.id or 0)

    def _unclaim(self, ids: Sequence[int | None]) -> None:
        """Let other senders take the rows of this flush again (sent ones are no longer pending)."""
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        stmt = (
            sa.update(table)
            .where(table.c.id.in_([i for i in ids if i is not None]), table.c.claimed_by == self._owner)
            .values(claimed_until=None)
        )
        with self._store.session() as s:
            s.connection().execute(stmt)
            s.commit()

    def _may_deliver(self, row: OutboxRow) -> bool:
        if not self._shared():
            return True
        if time.monotonic() >= self._claimed.get(row.id or 0, 0.0):
            return False
        return self._may_send is None or self._may_send()

    def stop_by(self, deadline: float | None) -> None:
        """Start no send that could not finish before ``deadline`` (monotonic seconds; None: no limit).

        A send may take up to its receiver's ``timeout_s``: it is started only while that much time
        (and ``STOP_SLACK_S``) is left. What is not started stays queued for the next start.
        """
        self._stop_by = deadline

    def can_start(self) -> bool:
        """Tell whether the stop budget still holds a send to the quickest receiver (no budget: True)."""
        if self._stop_by is None:
            return True
        timeouts = [float(getattr(r, "timeout_s", 10.0) or 10.0) for r in self._receivers.values()]
        return time.monotonic() + min(timeouts, default=10.0) + STOP_SLACK_S <= self._stop_by

    def _in_budget(self, row: OutboxRow) -> bool:
        if self._stop_by is None:
            return True
        timeout = float(getattr(self._receivers.get(row.receiver), "timeout_s", 10.0) or 10.0)
        return time.monotonic() + timeout + STOP_SLACK_S <= self._stop_by

    def due(
        self,
        now: datetime,
        limit: int | None = None,
        *,
        exclude: Collection[str] = (),
    ) -> list[OutboxRow]:
        """Return up to ``limit`` (default: one batch) rows due at ``now``, oldest first.

        A row is due when its time has come and no older row of its key (receiver × fingerprint)
        is still pending; ``exclude`` leaves out the rows of those receivers. When shared, the
        rows are claimed for this sender.
        """
        n = self._batch if limit is None else limit
        if self._shared():
            if self._may_send is not None and not self._may_send():
                return []
            return self._claim(now, n, exclude)
        table = OutboxRow.__table__  # type: ignore[attr-defined]
        c = table.c
        stmt = (
            sa.select(table)
            .where(c.status == PENDING, c.next_attempt_at <= now, _head_of_key(table))
            .order_by(c.id)
            .limit(n)
        )
        if exclude:
            stmt = stmt.where(c.receiver.not_in(list(exclude)))
        with self._store.session() as s:
            return [OutboxRow(**dict(r._mapping)) for r in s.connection().execute(stmt)]

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="watcher-send")
            return self._pool

    def close(self) -> None:
        """Stop the sending threads (after the sends in flight)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def flush(self, now: datetime, *, deadline_s: float | None = None) -> FlushResult:
        """Deliver what is due at ``now`` until nothing is, or ``deadline_s`` of wall time has passed.

        Sends run on the pool, one at a time per key and at most ``per_receiver`` per receiver;
        when a row of a key is done, the next row of that key is picked up in the same flush.
        Rows queued meanwhile are picked up too (a new page does not wait behind a slow
        receiver's backlog), except the delivery-failure notices this flush queued: they wait
        for the next one.
        """
        started = time.monotonic()
        with self._pool_lock:
            self._notices = []
        counts = {SENT: 0, "failed": 0, DEAD: 0}
        running: dict[Future[str], OutboxRow] = {}
        per_receiver: dict[str, int] = {}
        waiting: list[OutboxRow] = []  # picked (claimed, when shared) but not started yet
        touched: list[int | None] = []
        done: set[int | None] = set()
        lost_claim = False

        def may_start() -> bool:
            if lost_claim or len(running) >= self._workers:
                return False
            return deadline_s is None or time.monotonic() - started < deadline_s

        while True:
            full = {name for name, n in per_receiver.items() if n >= self._per_receiver}
            startable = sum(1 for r in waiting if r.receiver not in full)
            if may_start() and startable < self._workers - len(running):
                # a pending row of a key in flight is skipped by id; rows tried in this flush too
                # (their next attempt lies ahead, unless retries are immediate); receivers at
                # their limit are left out, so their backlog never crowds out the others
                skip = {r.id for r in running.values()} | {r.id for r in waiting} | done
                with self._pool_lock:
                    skip |= {r.id for r in self._notices if r.id is not None}
                picked = self.due(now, self._batch + len(skip), exclude=full)
                fresh = [r for r in picked if r.id not in skip]
                touched += [r.id for r in fresh]
                waiting += fresh
            for row in list(waiting):
                if not may_start():
                    break
                if per_receiver.get(row.receiver, 0) >= self._per_receiver:
                    continue
                waiting.remove(row)
                if not self._in_budget(row):
                    done.add(row.id)  # stays queued: the stop budget cannot hold its send
                    continue
                if not self._may_deliver(row):
                    lost_claim = True
                    break
                per_receiver[row.receiver] = per_receiver.get(row.receiver, 0) + 1
                running[self._executor().submit(self._deliver, row, now)] = row
            if not running:
                break
            # look for new rows now and then while sends hang (pages queued since, a receiver freed)
            finished, _ = wait(list(running), timeout=POLL_S, return_when=FIRST_COMPLETED)
            for fut in finished:
                row = running.pop(fut)
                per_receiver[row.receiver] -= 1
                done.add(row.id)
                try:
                    counts[fut.result()] += 1
                except Exception:  # _deliver records every receiver outcome: this is the store failing
                    logger.exception("outbox: recording the outcome of a send failed")
                    counts["failed"] += 1
        if lost_claim:
            logger.warning("outbox: claim or lease ran out; message(s) left to other senders")
        if touched and self._shared():
            self._unclaim(touched)
            for i in touched:
                self._claimed.pop(i or 0, None)
        return FlushResult(counts[SENT], counts["failed"], counts[DEAD], self.pending_count())

    def _deliver(self, row: OutboxRow, now: datetime) -> str:
        """Try one row and commit its outcome; return ``sent``, ``failed`` or ``dead``."""
        ctx = {"receiver": row.receiver, "fingerprint": row.fingerprint, "outbox_id": row.id}
        receiver = self._receivers.get(row.receiver)
        age = utc(now) - utc(row.created_at)
        if age >= self._max_age:
            error = f"not delivered within max_age {self._max_age} ({row.attempts} attempts)"
            return self._dead(row, now, error, "expired", ctx)
        if receiver is None:
            error = f"receiver {row.receiver} is no longer configured"
            return self._dead(row, now, error, "no_receiver", ctx)
        try:
            _send(receiver, row.message or {})
        except NotifyError as exc:
            error, reason, retryable = str(exc), exc.reason, exc.retryable
        except Exception as exc:  # a receiver bug must not stop the outbox; its message may hold secrets
            error, reason, retryable = f"unexpected {type(exc).__name__} in receiver", "unknown", True
        else:
            checkpoint("send")
            self._update(row.id, status=SENT, sent_at=now, attempts=row.attempts + 1)
            logger.info("sent %s to %s", row.kind, row.receiver, extra=ctx)
            if self.metrics is not None:
                self.metrics.notifications_sent.labels(row.receiver).inc()
                self.metrics.receiver_failures.labels(row.receiver).set(0)
            self.failing.succeeded(row.receiver, now)
            return SENT
        self.failing.failed(row.receiver, now, reason, error[:_MAX_ERROR_LEN])
        if self.metrics is not None:
            self.metrics.notifications_failed.labels(row.receiver, reason).inc()
            self.metrics.receiver_failures.labels(row.receiver).set(self.failing.consecutive(row.receiver))
        if not retryable:
            return self._dead(row, now, error, reason, ctx, attempts=row.attempts + 1)
        attempts = row.attempts + 1
        wait = backoff(attempts, self._retry_initial, self._retry_max, self._rng)
        self._update(
            row.id,
            attempts=attempts,
            next_attempt_at=utc(now) + wait,
            last_error=error[:_MAX_ERROR_LEN],
            last_reason=reason,
        )
        logger.warning(
            "delivery to %s failed (%s, attempt %d), retry in %.0fs: %s",
            row.receiver,
            reason,
            attempts,
            wait.total_seconds(),
            error,
            extra=ctx,
        )
        return "failed"

    def _dead(
        self,
        row: OutboxRow,
        now: datetime,
        error: str,
        reason: str,
        ctx: dict[str, Any],
        *,
        attempts: int | None = None,
    ) -> str:
        """Dead-letter ``row`` with ``error`` and queue the delivery-failure notices; return ``dead``."""
        tries = row.attempts if attempts is None else attempts
        fields = {
            "status": DEAD,
            "attempts": tries,
            "last_error": error[:_MAX_ERROR_LEN],
            "last_reason": reason,
        }
        with self._store.session() as s:
            stored = s.get(OutboxRow, row.id)
            if stored is None:
                return DEAD
            for k, v in fields.items():
                setattr(stored, k, v)
            s.add(stored)
            message = row.message or {}
            targets = [] if is_notice(message) else [r for r in self._failure_receivers if r != row.receiver]
            for to in targets:
                notice = failure_notice(
                    row_id=row.id,
                    dead_receiver=row.receiver,
                    reason=reason,
                    error=error[:_MAX_ERROR_LEN],
                    message=message,
                    attempts=tries,
                    to=to,
                    now=now,
                )
                self._note_notice(enqueue(s, notice, now))
            s.commit()
        if self.metrics is not None:
            self.metrics.notifications_dead.labels(row.receiver, reason).inc()
            for to in targets:
                self.metrics.notifications_enqueued.labels(to).inc()
        if targets:
            logger.info("delivery failure of %s reported to %s", row.receiver, ", ".join(targets), extra=ctx)
        logger.error("notification to %s dead-lettered (%s): %s", row.receiver, reason, error, extra=ctx)
        return DEAD

    def _note_notice(self, row: OutboxRow) -> None:
        """Remember a notice queued while sending: it waits for the next flush (no notice storms)."""
        with self._pool_lock:
            self._notices.append(row)

    def _enqueue_notice(self, session: Session, n: Notification, now: datetime) -> None:
        """Queue a receiver-failing notice (``failing``) in ``session`` and count it."""
        self._note_notice(enqueue(session, n, now))
        if self.metrics is not None:
            self.metrics.notifications_enqueued.labels(n.receiver).inc()

    def _update(self, row_id: int | None, **fields: Any) -> None:
        """Write ``fields`` to one outbox row in its own transaction."""
        with self._store.session() as s:
            row = s.get(OutboxRow, row_id)
            if row is None:
                return
            for k, v in fields.items():
                setattr(row, k, v)
            s.add(row)
            s.commit()


def _send(receiver: Receiver, message: Mapping[str, Any]) -> None:
    """Send one stored message; attach its chart where the receiver takes files and drawing works."""
    n = from_message(message)
    if getattr(receiver, "accepts_files", False):
        png = snapshot_png(message.get("chart"))
        if png is not None:
            receiver.send(n, files=[(CHART_NAME, png)])  # type: ignore[call-arg]
            return
    receiver.send(n)
