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
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote

import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..config import RouteRule, Settings
from ..core import Alert, AlertState, Notification, NotificationKind, Verdict, utc
from ..errors import StoreError
from ..selfmetrics import SelfMetrics
from ..store.tables import NotificationLogRow
from .charts import chart_snapshot
from .deadletter import count_dead_letters
from .digest import render_group
from .faults import checkpoint
from .grouping import AggGroup, Aggregator, Decision, decide_group, episode_start, same_episode
from .mute import Muter
from .outbox import FlushResult, Outbox, SessionFactory, enqueue
from .receivers.base import Receiver
from .routing import route_receivers, route_targets
from .templates import UNIT_ANNOTATION

_PRELOAD_CHUNK = 500


def _preload_log(session: Session, fingerprints: Sequence[str]) -> list[NotificationLogRow]:
    """Load the notification log rows of ``fingerprints`` in a few queries, into ``session``.

    Dedup then finds each row in the session (``session.get`` by primary key) instead of asking
    the database once per firing alert and receiver on every evaluation.
    """
    fps = sorted(set(fingerprints))
    rows: list[NotificationLogRow] = []
    for first in range(0, len(fps), _PRELOAD_CHUNK):
        chunk = fps[first : first + _PRELOAD_CHUNK]
        stmt = select(NotificationLogRow).where(col(NotificationLogRow.fingerprint).in_(chunk))
        rows.extend(session.exec(stmt).all())
    return rows


__all__ = ["FlushResult", "GroupPeers", "Notifier", "SessionFactory", "episode_start", "route_receivers"]

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


class GroupPeers(Protocol):
    """Other replicas' share of notification groups (a cluster whose shards split a group's alerts)."""

    def lock(self, session: Session, receiver: str, key: str) -> None:
        """Hold the group ``key`` of ``receiver`` for this transaction (one decision at a time)."""
        ...

    def firing_elsewhere(
        self, session: Session, receiver: str, dedup_key: str, local: Collection[str]
    ) -> list[Alert]:
        """Return the alerts ``receiver`` was told fire under ``dedup_key``, still firing, less ``local``."""
        ...


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
        metrics: SelfMetrics | None = None,
        history: Callable[[Alert], Sequence[Verdict]] | None = None,
    ) -> None:
        """``history`` returns the recent verdicts of an alert's series (the engine's), for charts."""
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
        self.peers: GroupPeers | None = None
        """Set by a cluster replica: grouped decisions then see the group's alerts on other replicas."""
        self.metrics = metrics
        self.history = history
        self.outbox = Outbox(
            store,
            self.receivers,
            retry_initial=settings.notify.retry_initial,
            retry_max=settings.notify.retry_max,
            max_age=settings.notify.max_age,
            rng=rng,
            failure_receivers=settings.notify.delivery_failure_receivers,
            failing_after=settings.notify.delivery_failure_after,
            failing_for=settings.notify.delivery_failure_for,
            metrics=metrics,
            workers=settings.notify.delivery_workers,
            per_receiver=settings.notify.delivery_per_receiver,
        )

    def _default_rule_url(self, group: str, rule: str) -> str:
        base = self.settings.external_url.rstrip("/")
        return f"{base}/rules/{quote(group, safe='')}/{quote(rule, safe='')}"

    def submit(
        self,
        items: Sequence[tuple[Alert, Sequence[str]]],
        now: datetime,
        *,
        fence: Callable[[Session], None] | None = None,
        state: Callable[[Session], None] | None = None,
    ) -> int:
        """Route, mute, group, dedup, render and enqueue; return how many notifications were queued.

        ``fence`` runs first inside the transaction (a cluster replica checks it still holds the
        group's lease there, ``cluster.leases.check_fence``); when it raises, nothing is enqueued.
        ``state`` then writes the engine's alert state in the same transaction, so a transition
        and its notification (log entry and outbox row) are committed together or not at all.
        """
        if not items and state is None:
            return 0
        with self._lock, _store_errors(self.store, "notify submit"), self.store.session() as session:
            if fence is not None:
                fence(session)
            if state is not None:
                state(session)
            self._remember_firing(items, now)
            # kept referenced: the session's identity map holds its objects weakly
            logged = _preload_log(
                session, [a.fingerprint for a, _ in items if a.state is not AlertState.PENDING]
            )
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
                targets: list[tuple[str, RouteRule | None]] = [
                    (name, None) for name in dict.fromkeys(rule_receivers)
                ] or route_targets(self.settings.route, labels)
                for name, route in targets:
                    self._add(session, alert, name, now, route)
            enqueued = self._flush_groups(session, now)
            session.commit()
            del logged
        self._count_enqueued(enqueued)
        if enqueued:
            checkpoint("enqueue")
        return len(enqueued)

    def _count_enqueued(self, receivers: Sequence[str]) -> None:
        if self.metrics is not None:
            for name in receivers:
                self.metrics.notifications_enqueued.labels(name).inc()

    def _chart(self, n: Notification) -> dict[str, object] | None:
        """Return the chart snapshot for ``n`` if its receiver takes files and wants one, else None."""
        rs = self.settings.receivers.get(n.receiver)
        if self.history is None or rs is None or not rs.attach_chart:
            return None
        if not getattr(self.receivers.get(n.receiver), "accepts_files", False):
            return None
        a = n.alert
        try:
            verdicts = self.history(a)
        except Exception as exc:  # a chart is decoration: never let it stop the notification
            logger.warning("no chart for %s: %s: %s", a.rule, type(exc).__name__, exc)
            return None
        labels = ", ".join(f"{k}={v}" for k, v in a.labels.items())
        unit = a.annotations.get(UNIT_ANNOTATION, "")
        return chart_snapshot(verdicts, title=f"{a.rule} {{{labels}}}", unit=unit)

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

    def _add(
        self, session: Session, alert: Alert, receiver: str, now: datetime, route: RouteRule | None = None
    ) -> None:
        """Put ``alert`` into its group for ``receiver`` (unknown receivers are skipped, logged)."""
        if receiver not in self.settings.receivers:
            ctx = {"fingerprint": alert.fingerprint, "receiver": receiver, "rule": alert.rule}
            logger.warning("%s: receiver %s is not configured; not notified", alert.rule, receiver, extra=ctx)
            return
        key = self.groups.key_for(receiver, alert, route)
        self.groups.add(receiver, alert, now, session.get(NotificationLogRow, (receiver, key)), route)

    def _flush_groups(self, session: Session, now: datetime) -> list[str]:
        """Decide, render and enqueue every due group inside ``session``; return the receivers queued for."""
        enqueued: list[str] = []
        muter: Muter | None = None
        for group in self.groups.due(now):
            peers = self.peers if group.grouped else None
            if peers is not None:
                # replicas holding other shards decide for the same group: one at a time, each
                # reading the log as the previous one left it (no second "first", no double repeat)
                peers.lock(session, group.receiver, group.key)
            rows = {fp: session.get(NotificationLogRow, (group.receiver, fp)) for fp in group.alerts}
            group_row = (
                session.get(NotificationLogRow, (group.receiver, group.key)) if group.grouped else None
            )
            decision = decide_group(group, rows, group_row if group.grouped else rows[group.key], now)
            elsewhere: list[Alert] = []
            if peers is not None and group_row is not None and group_row.kind == NotificationKind.FIRING:
                elsewhere = peers.firing_elsewhere(session, group.receiver, group_row.dedup_key, group.alerts)
            if decision is not None and elsewhere:
                # the group still fires on another replica: what one process seeing every alert
                # would send (a resolve of these alerts inside a firing group, never the group's)
                decision = replace(
                    decision, kind=NotificationKind.FIRING, firing=(*decision.firing, *elsewhere)
                )
                for alert in elsewhere:  # their log rows are updated with the group's
                    rows[alert.fingerprint] = session.get(
                        NotificationLogRow, (group.receiver, alert.fingerprint)
                    )
            if decision is not None and decision.reason == "repeat_interval":
                # the alerts passed the mute stage when submitted, but a cause (or a silence or
                # window) may have appeared since: a repeat re-checks, and the log stays as it
                # was so the repeat resumes once nothing mutes the alert any more
                if muter is None:
                    muter = Muter.load(session, self.settings, now, [lbl for lbl, _ in self._firing.values()])
                decision = self._unmuted_repeat(decision, muter, group.key)
            if decision is not None:
                episode = group.created_at
                if group_row is not None and group_row.kind == NotificationKind.FIRING:
                    episode = group_row.episode_start or group.created_at
                prev = rows.get(group.key) if not group.grouped else None
                superseded = (
                    decision.reason == "new_episode" and prev is not None and group.timing.send_resolved
                )
                if (
                    superseded
                    and prev is not None
                    and self._close_superseded(session, group, decision, prev, now)
                ):
                    enqueued.append(group.receiver)
                n = render_group(
                    group, decision, settings=self.settings, rule_url=self._rule_url, episode=episode
                )
                enqueue(session, n, now, fingerprint=group.key, chart=self._chart(n))
                self._log(session, group, decision, n, rows, group_row, episode, now)
                enqueued.append(group.receiver)
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
                and not elsewhere
            ):
                group_row.kind = str(
                    NotificationKind.RESOLVED
                )  # closed without a message (send_resolved off)
                session.add(group_row)
            self.groups.after_flush(group, decision, now)
        session.flush()
        return enqueued

    def _close_superseded(
        self, session: Session, group: AggGroup, decision: Decision, prev: NotificationLogRow, now: datetime
    ) -> bool:
        """Queue the resolve of an episode the receiver was told fires, before its successor's firing.

        An alert that resolved and fired again before the resolve was decided (a ``group_interval``
        in between, or a restart) would otherwise leave the first episode's incident open for
        ever: its resolve goes first, under its own dedup key (the outbox keeps the order).
        """
        if prev.kind != NotificationKind.FIRING or not decision.firing:
            return False
        alert = decision.firing[0]
        old = replace(
            alert,
            state=AlertState.INACTIVE,
            active_at=prev.episode_start,
            fired_at=prev.episode_start,
            resolved_at=episode_start(alert) or now,
        )
        closing = Decision(NotificationKind.RESOLVED, "superseded", (), (old,))
        n = render_group(
            group, closing, settings=self.settings, rule_url=self._rule_url, episode=prev.episode_start
        )
        n = replace(n, dedup_key=prev.dedup_key)
        enqueue(session, n, now, fingerprint=group.key)
        logger.info(
            "resolved %s → %s: superseded by a new episode",
            alert.rule,
            group.receiver,
            extra={"fingerprint": group.key, "receiver": group.receiver, "rule": alert.rule},
        )
        return True

    def _unmuted_repeat(self, decision: Decision, muter: Muter, key: str) -> Decision | None:
        """Return ``decision`` listing only its firing alerts not muted now, or None if all are."""
        firing = []
        for alert in decision.firing:
            why = muter.why(dict(alert.labels.merge({"alertname": alert.rule})))
            if why is None:
                firing.append(alert)
            else:
                ctx = {"fingerprint": key, "rule": alert.rule}
                logger.info("%s %s repeat muted: %s", alert.rule, alert.labels, why, extra=ctx)
        if not firing:
            return None
        return replace(decision, firing=tuple(firing))

    def flush(self, now: datetime, *, deadline_s: float | None = None) -> FlushResult:
        """Enqueue the groups due at ``now``, then deliver what is due in the outbox (``Outbox.flush``)."""
        queued: list[str] = []
        with self._lock:
            if self.groups.due(now):
                with _store_errors(self.store, "notify group flush"), self.store.session() as session:
                    queued = self._flush_groups(session, now)
                    session.commit()
        self._count_enqueued(queued)
        if queued:
            checkpoint("enqueue")
        with _store_errors(self.store, "outbox flush"):
            return self.outbox.flush(now, deadline_s=deadline_s)

    def export_dead_letters(self) -> dict[str, int]:
        """Set the ``watcher_outbox_dead`` gauge per receiver; return the dead letters per receiver."""
        with _store_errors(self.store, "dead-letter count"):
            counts = count_dead_letters(self.store)
        if self.metrics is not None:
            for name in set(self.receivers) | set(counts):
                self.metrics.outbox_dead.labels(name).set(counts.get(name, 0))
        return counts

    def forget_group(self, rule_group: str, only: Callable[[Alert], bool] | None = None) -> None:
        """Drop the alerts of ``rule_group`` from the in-memory groups (it moved to another replica).

        What was notified is in the notification log; the group's new owner rebuilds its own
        in-memory groups from its evaluations, so this replica must not act on stale copies.
        ``only`` limits it to some of the group's alerts (a shard of it that moved).
        """
        with self._lock:
            for key, group in list(self.groups.groups.items()):
                gone = [
                    fp
                    for fp, a in group.alerts.items()
                    if a.group == rule_group and (only is None or only(a))
                ]
                for fp in gone:
                    del group.alerts[fp]
                    group.seen.pop(fp, None)
                if not group.alerts:
                    del self.groups.groups[key]

    def close(self) -> None:
        """Stop the outbox's sending threads (after the sends in flight)."""
        self.outbox.close()

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
