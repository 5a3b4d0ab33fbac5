"""Failing receivers: telling the delivery-failure receivers that a receiver keeps failing, and when
it recovers.

This module owns the failing *episode* of a receiver: it starts when a receiver has failed
``after`` delivery attempts in a row or has kept failing for ``for_`` since its first failed
attempt; then each ``delivery_failure_receivers`` entry (but the failing one) gets one notice,
alert ``WatcherReceiverFailing{receiver=…}``. The first successful delivery ends the episode and
sends the matching resolve (same dedup key, so PagerDuty closes the incident). It does not own
delivery (``outbox``) nor the per-message dead-letter notice (``deadletter``).

Which notices were sent is kept in the notification log (receiver = the told receiver, fingerprint
= the notice alert's), written in the same transaction as the outbox rows of the notices, so a
restart neither repeats the notice of an open episode nor forgets to resolve it. The streak of
failures itself is in memory: after a restart it is counted afresh.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlmodel import Session

from ..core import Alert, AlertState, Labels, Listed, Notice, Notification, NotificationKind, utc
from ..store.tables import NotificationLogRow
from .templates import _fmt_duration

logger = logging.getLogger(__name__)

ALERTNAME = "WatcherReceiverFailing"


class _Sessions(Protocol):
    def session(self) -> Session: ...


Enqueue = Callable[[Session, Notification, datetime], Any]


@dataclass
class _Streak:
    count: int
    since: datetime
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class ReceiverFailures:
    """A receiver's current run of failed attempts, for the status page."""

    receiver: str
    consecutive: int
    since: datetime
    reason: str
    error: str
    failing: bool
    """Whether the delivery-failure receivers were told (the run reached the thresholds)."""


def notice_fingerprint(receiver: str) -> str:
    """Return the fingerprint of the ``WatcherReceiverFailing`` alert about ``receiver``."""
    return Labels({"alertname": ALERTNAME, "receiver": receiver}).fingerprint


def _iso(ts: datetime) -> str:
    return utc(ts).isoformat().replace("+00:00", "Z")


def receiver_notice(
    *,
    failing: str,
    to: str,
    kind: NotificationKind,
    since: datetime,
    now: datetime,
    attempts: int,
    reason: str,
    error: str,
    dedup_key: str | None = None,
) -> Notification:
    """Return the notice for ``to`` that ``failing`` keeps failing (FIRING) or recovered (RESOLVED)."""
    labels = Labels({"receiver": failing, "reason": reason})
    firing = kind is NotificationKind.FIRING
    lasted = _fmt_duration(utc(now) - utc(since))
    if firing:
        summary = f"receiver {failing} keeps failing: {attempts} failed attempt(s) in {lasted} ({reason})"
        title = f"[RECEIVER FAILING] {failing}: {reason}"
        body = f"{summary}.\n\nFailing since {_iso(since)}.\n\nLast error: {error}"
    else:
        summary = f"receiver {failing} delivers again after failing for {lasted}"
        title = f"[RECOVERED] receiver {failing}"
        body = f"{summary} (since {_iso(since)})."
    key = dedup_key or hashlib.sha256(f"failing|{failing}|{_iso(since)}".encode()).hexdigest()[:32]
    alert = Alert(
        rule=ALERTNAME,
        group="watcher",
        labels=labels,
        state=AlertState.FIRING if firing else AlertState.INACTIVE,
        active_at=since,
        fired_at=now if firing else since,
        resolved_at=None if firing else now,
        last_eval=now,
        annotations={"summary": summary, "error": error} if firing else {"summary": summary},
    )
    return Notification(
        receiver=to,
        kind=kind,
        dedup_key=key,
        title=title,
        body=body,
        alert=alert,
        listed=(Listed(alert, kind),),
        notice=Notice(value=float(attempts)),
    )


class FailureTracker:
    """Count failed attempts per receiver and report failing episodes (start once, end once)."""

    def __init__(
        self,
        store: _Sessions,
        targets: Sequence[str],
        enqueue: Enqueue,
        *,
        after: int = 3,
        for_: timedelta = timedelta(minutes=10),
    ) -> None:
        self._store = store
        self._targets = list(targets)
        self._enqueue = enqueue
        self._after = after
        self._for = for_
        self._streaks: dict[str, _Streak] = {}
        self._open: set[str] = set()
        self._checked: set[str] = set()
        """Receivers whose open-notice state was read from the log since this process started."""
        self._lock = threading.Lock()

    def status(self) -> list[ReceiverFailures]:
        """Return the receivers whose last attempt failed (their run of failures), by name."""
        with self._lock:
            return [
                ReceiverFailures(r, st.count, st.since, st.reason, st.error, r in self._open)
                for r, st in sorted(self._streaks.items())
            ]

    def consecutive(self, receiver: str) -> int:
        """Return how many attempts to ``receiver`` failed in a row (0 after a delivery)."""
        with self._lock:
            st = self._streaks.get(receiver)
            return st.count if st is not None else 0

    def failed(self, receiver: str, now: datetime, reason: str, error: str) -> list[str]:
        """Record a failed attempt; return the receivers told that ``receiver`` is failing (if now)."""
        targets = [t for t in self._targets if t != receiver]
        with self._lock:
            st = self._streaks.get(receiver)
            if st is None:
                st = self._streaks[receiver] = _Streak(0, now, reason, error)
            st.count, st.reason, st.error = st.count + 1, reason, error
            if not targets or receiver in self._open:
                return []
            if st.count < self._after and utc(now) - utc(st.since) < self._for:
                return []
            self._open.add(receiver)
            self._checked.add(receiver)
            streak = _Streak(st.count, st.since, st.reason, st.error)
        try:
            told = self._tell_failing(receiver, targets, streak, now)
        except BaseException:
            with self._lock:
                self._open.discard(receiver)  # not told: try again at the next failure
            raise
        if told:
            logger.warning(
                "receiver %s keeps failing (%d attempts, %s); told %s",
                receiver,
                streak.count,
                streak.reason,
                ", ".join(told),
                extra={"receiver": receiver},
            )
        return told

    def _tell_failing(self, receiver: str, targets: list[str], streak: _Streak, now: datetime) -> list[str]:
        fp = notice_fingerprint(receiver)
        told: list[str] = []
        with self._store.session() as s:
            for to in targets:
                row = s.get(NotificationLogRow, (to, fp))
                if row is not None and row.kind == str(NotificationKind.FIRING):
                    continue  # told before a restart; this is the same episode
                n = receiver_notice(
                    failing=receiver,
                    to=to,
                    kind=NotificationKind.FIRING,
                    since=streak.since,
                    now=now,
                    attempts=streak.count,
                    reason=streak.reason,
                    error=streak.error,
                )
                self._enqueue(s, n, now)
                _log(s, row, to, fp, NotificationKind.FIRING, n.dedup_key, streak.since, now)
                told.append(to)
            s.commit()
        return told

    def succeeded(self, receiver: str, now: datetime) -> list[str]:
        """Record a delivery; return the receivers told that ``receiver`` recovered (if it had failed)."""
        with self._lock:
            st = self._streaks.pop(receiver, None)
            if receiver not in self._open and receiver in self._checked:
                return []
            self._open.discard(receiver)
            self._checked.add(receiver)
        targets = [t for t in self._targets if t != receiver]
        if not targets:
            return []
        fp = notice_fingerprint(receiver)
        told: list[str] = []
        with self._store.session() as s:
            for to in targets:
                row = s.get(NotificationLogRow, (to, fp))
                if row is None or row.kind != str(NotificationKind.FIRING):
                    continue
                since = utc(row.episode_start) if row.episode_start is not None else (st.since if st else now)
                n = receiver_notice(
                    failing=receiver,
                    to=to,
                    kind=NotificationKind.RESOLVED,
                    since=since,
                    now=now,
                    attempts=st.count if st else 0,
                    reason=st.reason if st else "recovered",
                    error="",
                    dedup_key=row.dedup_key,
                )
                self._enqueue(s, n, now)
                _log(s, row, to, fp, NotificationKind.RESOLVED, row.dedup_key, since, now)
                told.append(to)
            s.commit()
        if told:
            ctx = {"receiver": receiver}
            logger.info("receiver %s recovered; told %s", receiver, ", ".join(told), extra=ctx)
        return told


def _log(
    s: Session,
    row: NotificationLogRow | None,
    to: str,
    fp: str,
    kind: NotificationKind,
    dedup_key: str,
    since: datetime,
    now: datetime,
) -> None:
    if row is None:
        row = NotificationLogRow(
            receiver=to,
            fingerprint=fp,
            kind=str(kind),
            dedup_key=dedup_key,
            notified_at=now,
            episode_start=since,
            count=0,
        )
    row.kind = str(kind)
    row.dedup_key = dedup_key
    row.notified_at = now
    row.episode_start = since
    row.count += 1
    s.add(row)
