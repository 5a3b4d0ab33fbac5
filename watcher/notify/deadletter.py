"""Dead letters: the notice the delivery-failure receivers get when a notification is given up.

This module owns the wording and identity of that notice (alert ``WatcherDeliveryFailed`` with
labels ``receiver`` and ``reason``, a dedup key per dead row). It does not own when a row dies
(``outbox``) nor delivering the notice (it is an ordinary outbox row).

It also owns reading dead letters back (``list_dead_letters``, ``count_dead_letters``: the status
page, ``watcher notify dead-letters`` and the self-metrics) and giving one another chance
(``requeue_dead_letter``).

A notice about a notice is never made, so a failing delivery-failure receiver cannot loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func
from sqlmodel import Session, col, select

from ..core import Alert, AlertState, Labels, Listed, Notice, Notification, NotificationKind, utc
from ..store.tables import OutboxRow

ALERTNAME = "WatcherDeliveryFailed"
DEAD = "dead"


class _Sessions(Protocol):
    def session(self) -> Session: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered outbox row, as the status page and the CLI show it (no secrets in it)."""

    id: int
    receiver: str
    kind: str
    title: str
    created_at: datetime
    attempts: int
    reason: str
    error: str
    dedup_key: str
    notification_id: str
    is_notice: bool
    """True if this was itself a delivery-failure notice."""


def _dead_letter(row: OutboxRow) -> DeadLetter:
    message = row.message or {}
    return DeadLetter(
        id=int(row.id or 0),
        receiver=row.receiver,
        kind=row.kind,
        title=str(message.get("title") or ""),
        created_at=utc(row.created_at),
        attempts=row.attempts,
        reason=row.last_reason or "unknown",
        error=row.last_error or "",
        dedup_key=row.dedup_key,
        notification_id=stored_notification_id(message),
        is_notice=is_notice(message),
    )


def list_dead_letters(store: _Sessions, *, limit: int = 100, receiver: str | None = None) -> list[DeadLetter]:
    """Return up to ``limit`` dead letters, newest first (optionally of one receiver only)."""
    stmt = select(OutboxRow).where(col(OutboxRow.status) == DEAD)
    if receiver is not None:
        stmt = stmt.where(col(OutboxRow.receiver) == receiver)
    with store.session() as s:
        rows = s.exec(stmt.order_by(col(OutboxRow.id).desc()).limit(limit)).all()
        return [_dead_letter(r) for r in rows]


def count_dead_letters(store: _Sessions) -> dict[str, int]:
    """Return how many dead letters each receiver has (receivers without any are absent)."""
    stmt = (
        select(OutboxRow.receiver, func.count())
        .where(col(OutboxRow.status) == DEAD)
        .group_by(col(OutboxRow.receiver))
    )
    with store.session() as s:
        return {str(r): int(n) for r, n in s.exec(stmt).all()}


def requeue_dead_letter(store: _Sessions, row_id: int, now: datetime) -> bool:
    """Give dead letter ``row_id`` a fresh delivery (new age, attempts reset; same notification ID).

    Return False if there is no such dead letter.
    """
    with store.session() as s:
        row = s.get(OutboxRow, row_id)
        if row is None or row.status != DEAD:
            return False
        row.status = "pending"
        row.attempts = 0
        row.created_at = now
        row.next_attempt_at = now
        s.add(row)
        s.commit()
        return True


_NOTICES = frozenset({ALERTNAME, "WatcherReceiverFailing"})  # the latter: ``failing.ALERTNAME``


def is_notice(message: Mapping[str, Any]) -> bool:
    """Tell whether a stored outbox message is itself a delivery-failure notice (dead letter or failing)."""
    alert = message.get("alert") or {}
    name = alert.get("rule") if "rule" in alert else (message.get("payload") or {}).get("alertname")
    return name in _NOTICES


def stored_notification_id(message: Mapping[str, Any]) -> str:
    """Return the ``notification_id`` of a stored outbox message ("" if it has none), either shape."""
    return str(message.get("notification_id") or (message.get("payload") or {}).get("notification_id") or "")


def failure_notice(
    *,
    row_id: int | None,
    dead_receiver: str,
    reason: str,
    error: str,
    message: Mapping[str, Any],
    attempts: int,
    to: str,
    now: datetime,
) -> Notification:
    """Return the notice for ``to`` that the message for ``dead_receiver`` was dead-lettered."""
    original = str(message.get("title") or "(untitled)")
    labels = Labels({"receiver": dead_receiver, "reason": reason})
    summary = f"a notification to {dead_receiver} was given up after {attempts} attempt(s) ({reason})"
    alert = Alert(
        rule=ALERTNAME,
        group="watcher",
        labels=labels,
        state=AlertState.FIRING,
        active_at=now,
        fired_at=now,
        last_eval=now,
        annotations={"summary": summary, "error": error, "original": original},
    )
    key = hashlib.sha256(f"dead|{row_id}|{dead_receiver}".encode()).hexdigest()[:32]
    body = f"{summary}.\n\nMessage: {original}\n\nLast error: {error}"
    return Notification(
        receiver=to,
        kind=NotificationKind.FIRING,
        dedup_key=key,
        title=f"[DELIVERY FAILED] {dead_receiver}: {reason}",
        body=body,
        alert=alert,
        listed=(Listed(alert, NotificationKind.FIRING),),
        notice=Notice(dead_outbox_id=row_id),
    )
