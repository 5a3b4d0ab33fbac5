"""The notification pipeline: route → mute → group → dedup → render → enqueue, and the outbox flush.

This module owns the order of the stages and the transaction around them: for each alert the
engine hands over it picks the receivers (the rule's, else ``routing``), drops muted alerts
(``mute``: silences, maintenance windows, inhibition), puts the rest into their receivers'
groups (``grouping``), and for every group whose timer has come decides what is new, renders it
(``digest``) and writes the outbox row and the notification-log entries in one transaction. It
does not own any stage's semantics, nor delivery and retries (``outbox``) nor transports.

The log records what was *enqueued* (transactional outbox): once a row is committed it will be
delivered or dead-lettered, so the next evaluation must not enqueue the same thing again. Group
timers are also advanced by ``flush`` (the scheduler's outbox job), so ``group_wait`` expires
without waiting for the next evaluation.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from urllib.parse import quote

import sqlalchemy as sa
from sqlmodel import Session

from ..config import Settings
from ..core import Alert, AlertState, Notification, NotificationKind, utc
from ..errors import StoreError
from ..store.tables import NotificationLogRow
from .digest import render_group
from .faults import checkpoint
from .grouping import AggGroup, Aggregator, Decision, decide_group, episode_start, same_episode
from .mute import Muter
from .outbox import FlushResult, Outbox, SessionFactory, enqueue
from .receivers.base import Receiver
from .routing import route_receivers

__all__ = ["FlushResult", "Notifier", "SessionFactory", "episode_start", "route_receivers"]

logger = logging.getLogger(__name__)

_MIN_STALE = timedelta(hours=1)


@contextmanager
def _store_errors(store: object, action: str) -> Iterator[None]:
    """Translate database failures into ``StoreError`` (one line, password redacted)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        make = getattr(store, "error", None)
        if callable(make):
            raise make(action, exc) from None
        orig = getattr(exc, "orig", None) or exc
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]
        raise StoreError(f"store: {action} failed: {first}") from None


class Notifier:
    """Turn alerts into outbox rows and deliver them; the one object the scheduler talks to."""

    def __init__(
        self,
        store: SessionFactory,
        settings: Settings,
        receivers: Mapping[str, Receiver] | None = None,
        *,
        rule_url: Callable[[str, str], str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if receivers is None:
            from .receivers import build_receivers

            receivers = build_receivers(settings)
        self.store = store
        self.settings = settings
        self.receivers = dict(receivers)
        self._rule_url = rule_url or self._default_rule_url
        stale = max(settings.notify.resolved_retention, _MIN_STALE)
        self.groups = Aggregator(settings, stale_after=stale)
        self._firing: dict[str, tuple[dict[str, str], datetime]] = {}
        self._lock = threading.RLock()
        self.outbox = Outbox(
            store,
            self.receivers,
            retry_initial=settings.notify.retry_initial,
            retry_max=settings.notify.retry_max,
            max_age=settings.notify.max_age,
            rng=rng,
            failure_receivers=settings.notify.delivery_failure_receivers,
        )

    def _default_rule_url(self, group: str, rule: str) -> str:
        base = self.settings.external_url.rstrip("/")
        return f"{base}/rules/{quote(group, safe='')}/{quote(rule, safe='')}"

    def submit(self, items: Sequence[tuple[Alert, Sequence[str]]], now: datetime) -> int:
        """Route, mute, group, dedup, render and enqueue; return how many notifications were queued."""
        if not items:
            return 0
        with self._lock, _store_errors(self.store, "notify submit"), self.store.session() as session:
            self._remember_firing(items, now)
            muter = Muter.load(session, self.settings, now, [lbl for lbl, _ in self._firing.values()])
            for alert, rule_receivers in items:
                if alert.state is AlertState.PENDING or (
                    alert.state is AlertState.INACTIVE and not alert.resolved
                ):
                    continue
                labels = dict(alert.labels.merge({"alertname": alert.rule}))
                ctx = {"fingerprint": alert.fingerprint, "rule": alert.rule}
                why = muter.why(labels)
                if why is not None:
                    logger.info("%s %s muted: %s", alert.rule, alert.labels, why, extra=ctx)
                    continue
                targets = list(dict.fromkeys(rule_receivers)) or route_receivers(self.settings.route, labels)
                for name in targets:
                    self._add(session, alert, name, now)
            enqueued = self._flush_groups(session, now)
            session.commit()
        if enqueued:
            checkpoint("enqueue")
        return enqueued

    def _remember_firing(self, items: Sequence[tuple[Alert, Sequence[str]]], now: datetime) -> None:
        """Track the alerts firing anywhere (inhibition sources), forgetting resolved and stale ones."""
        for alert, _ in items:
            if alert.state is AlertState.FIRING:
                self._firing[alert.fingerprint] = (dict(alert.labels.merge({"alertname": alert.rule})), now)
            else:
                self._firing.pop(alert.fingerprint, None)
        horizon = utc(now) - self.groups.stale_after
        for fp, (_, seen) in list(self._firing.items()):
            if utc(seen) < horizon:
                del self._firing[fp]

    def _add(self, session: Session, alert: Alert, receiver: str, now: datetime) -> None:
        """Put ``alert`` into its group for ``receiver`` (unknown receivers are skipped, logged)."""
        if receiver not in self.settings.receivers:
            ctx = {"fingerprint": alert.fingerprint, "receiver": receiver, "rule": alert.rule}
            logger.warning("%s: receiver %s is not configured; not notified", alert.rule, receiver, extra=ctx)
            return
        key = self.groups.key_for(receiver, alert)
        self.groups.add(receiver, alert, now, session.get(NotificationLogRow, (receiver, key)))

    def _flush_groups(self, session: Session, now: datetime) -> int:
        """Decide, render and enqueue every due group inside ``session``; return how many were queued."""
        enqueued = 0
        for group in self.groups.due(now):
            rows = {fp: session.get(NotificationLogRow, (group.receiver, fp)) for fp in group.alerts}
            group_row = (
                session.get(NotificationLogRow, (group.receiver, group.key)) if group.grouped else None
            )
            decision = decide_group(group, rows, group_row if group.grouped else rows[group.key], now)
            if decision is not None:
                episode = group.created_at
                if group_row is not None and group_row.kind == NotificationKind.FIRING:
                    episode = group_row.episode_start or group.created_at
                n = render_group(
                    group, decision, settings=self.settings, rule_url=self._rule_url, episode=episode
                )
                enqueue(session, n, now, fingerprint=group.key)
                self._log(session, group, decision, n, rows, group_row, episode, now)
                enqueued += 1
                logger.info(
                    "%s %s → %s: %s (%d alert(s))",
                    decision.kind,
                    n.alert.rule,
                    group.receiver,
                    decision.reason,
                    len(decision.firing) + len(decision.resolved),
                    extra={"fingerprint": group.key, "receiver": group.receiver, "rule": n.alert.rule},
                )
            elif (
                group_row is not None
                and group_row.kind == NotificationKind.FIRING
                and not any(a.state is AlertState.FIRING for a in group.alerts.values())
            ):
                group_row.kind = str(
                    NotificationKind.RESOLVED
                )  # closed without a message (send_resolved off)
                session.add(group_row)
            self.groups.after_flush(group, decision, now)
        session.flush()
        return enqueued

    def flush(self, now: datetime, *, deadline_s: float | None = None) -> FlushResult:
        """Enqueue the groups due at ``now``, then deliver what is due in the outbox (``Outbox.flush``)."""
        queued = 0
        with self._lock:
            if self.groups.due(now):
                with _store_errors(self.store, "notify group flush"), self.store.session() as session:
                    queued = self._flush_groups(session, now)
                    session.commit()
        if queued:
            checkpoint("enqueue")
        with _store_errors(self.store, "outbox flush"):
            return self.outbox.flush(now, deadline_s=deadline_s)

    def pending_count(self) -> int:
        """Return how many notifications wait in the outbox."""
        with _store_errors(self.store, "outbox count"):
            return self.outbox.pending_count()

    def _log(
        self,
        session: Session,
        group: AggGroup,
        decision: Decision,
        n: Notification,
        rows: Mapping[str, NotificationLogRow | None],
        group_row: NotificationLogRow | None,
        episode: datetime,
        now: datetime,
    ) -> None:
        """Record what ``group.receiver`` was told: one row per listed alert, one per group."""
        for alert in (*decision.firing, *decision.resolved):
            kind = NotificationKind.FIRING if alert.state is AlertState.FIRING else NotificationKind.RESOLVED
            _touch(
                session,
                rows.get(alert.fingerprint),
                group.receiver,
                alert.fingerprint,
                kind,
                n.dedup_key,
                episode_start(alert),
                now,
            )
        if group.grouped:
            _touch(session, group_row, group.receiver, group.key, decision.kind, n.dedup_key, episode, now)


def _touch(
    session: Session,
    row: NotificationLogRow | None,
    receiver: str,
    fingerprint: str,
    kind: NotificationKind,
    dedup_key: str,
    episode: datetime | None,
    now: datetime,
) -> None:
    """Create or update one notification-log row (``count`` = messages in this episode)."""
    if row is None:
        row = NotificationLogRow(
            receiver=receiver,
            fingerprint=fingerprint,
            kind=str(kind),
            dedup_key=dedup_key,
            notified_at=now,
            episode_start=episode,
            count=0,
        )
    elif not same_episode(row, utc(episode) if episode is not None else None):
        row.count = 0
    row.kind = str(kind)
    row.dedup_key = dedup_key
    row.notified_at = now
    row.episode_start = episode
    row.count += 1
    session.add(row)
