"""Grouping and timing: which alerts share a message, and when each group is due (Alertmanager's rules).

This module owns the aggregation groups of each receiver (alerts whose ``group_by`` labels are
equal), their timers and the dedup decision with its reason. It does not own muting (``mute``),
wording (``templates``, ``digest``), the store transaction nor the outbox (``pipeline``).

Timing has Alertmanager's meanings: a new group waits ``group_wait`` before its first message (so
alerts that start together arrive together); afterwards it is looked at every ``group_interval``
and a message goes out when it has firing alerts not yet notified (``first``, ``new_episode``,
``new_alerts``), alerts that resolved since (``resolved``), or when ``repeat_interval`` passed since
the last message (``repeat_interval``). ``group_by`` unset means every label: one alert per group.

Groups live in memory, like Alertmanager's; what each receiver was told is in the notification
log (one row per alert, plus one ``g:``-prefixed row per group when grouping), so a restarted
process rebuilds its groups from the next evaluations without notifying twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from ..config import RouteRule, Settings
from ..core import Alert, AlertState, Labels, NotificationKind, utc
from ..store.tables import NotificationLogRow

_T = TypeVar("_T")
GROUP_PREFIX = "g:"
ALERTMANAGER_REPEAT = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Timing:
    """The effective grouping settings of one receiver."""

    group_by: tuple[str, ...] | None
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    send_resolved: bool = True


def _first(*values: _T | None, default: _T) -> _T:
    return next((v for v in values if v is not None), default)


def timing_for(settings: Settings, receiver: str, route: RouteRule | None = None) -> Timing:
    """Return the timing of ``receiver`` for alerts ``route`` sent it.

    Each setting comes from the route if it sets it, else the receiver, else ``notify.*``
    (Alertmanager receivers repeat every minute by default).
    """
    rs = settings.receivers[receiver]
    n = settings.notify
    r = route
    group_by = _first(r.group_by if r else None, rs.group_by, default=n.group_by)
    repeat = _first(
        r.repeat_interval if r else None,
        rs.repeat_interval,
        default=ALERTMANAGER_REPEAT if rs.type == "alertmanager" else n.repeat_interval,
    )
    wait = _first(r.group_wait if r else None, rs.group_wait, default=n.group_wait)
    interval = _first(r.group_interval if r else None, rs.group_interval, default=n.group_interval)
    return Timing(
        group_by=tuple(group_by) if group_by is not None and "..." not in group_by else None,
        group_wait=wait,
        group_interval=interval,
        repeat_interval=repeat,
        send_resolved=rs.send_resolved,
    )


def episode_start(alert: Alert) -> datetime | None:
    """Return when the alert's current episode began (``active_at``, else ``fired_at``)."""
    start = alert.active_at or alert.fired_at
    return utc(start) if start is not None else None


def same_episode(row: NotificationLogRow | None, start: datetime | None) -> bool:
    """Tell whether the log ``row`` is about the episode that began at ``start``."""
    if row is None:
        return False
    if row.episode_start is None or start is None:
        return row.episode_start is None and start is None
    return utc(row.episode_start) == start


def group_dedup_key(group_fp: str, episode: datetime | None) -> str:
    """Return the dedup key of one group episode (PagerDuty incident, webhook/AM idempotency)."""
    material = "group|" + group_fp + "|" + (utc(episode).isoformat() if episode else "")
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(slots=True)
class AggGroup:
    """One receiver's group of alerts sharing the ``group_by`` labels."""

    receiver: str
    key: str
    """Notification-log fingerprint: the alert's own when not grouping, else ``g:`` + label hash."""
    labels: Labels
    timing: Timing
    created_at: datetime
    next_flush: datetime
    alerts: dict[str, Alert] = field(default_factory=dict)
    seen: dict[str, datetime] = field(default_factory=dict)

    @property
    def grouped(self) -> bool:
        """Tell whether this group can hold several alerts (``group_by`` set)."""
        return self.timing.group_by is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """What one flush of a group sends: kind, reason and the alerts the message lists."""

    kind: NotificationKind
    reason: str
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]


def group_identity(alert: Alert, timing: Timing) -> tuple[str, Labels]:
    """Return (log key, group labels) of the group ``alert`` belongs to under ``timing``."""
    labels = alert.labels.merge({"alertname": alert.rule})
    if timing.group_by is None:
        return alert.fingerprint, labels
    group_labels = Labels({k: labels.get(k, "") for k in timing.group_by})
    return GROUP_PREFIX + group_labels.fingerprint, group_labels


def decide_group(
    group: AggGroup,
    alert_rows: Mapping[str, NotificationLogRow | None],
    group_row: NotificationLogRow | None,
    now: datetime,
) -> Decision | None:
    """Return what to send for ``group`` at ``now`` given the log, or None (nothing new)."""
    firing = [a for a in group.alerts.values() if a.state is AlertState.FIRING]
    new = [a for a in firing if not _notified_firing(alert_rows.get(a.fingerprint), a)]
    resolved = [
        a for a in group.alerts.values() if a.resolved and _notified_firing(alert_rows.get(a.fingerprint), a)
    ]
    if not group.timing.send_resolved:
        resolved = []
    if new:
        if group_row is None:
            reason = "first"
        elif group_row.kind == NotificationKind.RESOLVED or (
            not group.grouped and not same_episode(group_row, episode_start(new[0]))
        ):
            reason = "new_episode"
        else:
            reason = "new_alerts"
    elif resolved:
        reason = "resolved"
    elif (
        firing
        and group_row is not None
        and utc(now) - utc(group_row.notified_at) >= group.timing.repeat_interval
    ):
        reason = "repeat_interval"
    else:
        return None
    kind = NotificationKind.FIRING if firing else NotificationKind.RESOLVED
    return Decision(kind, reason, tuple(firing), tuple(resolved))


def _notified_firing(row: NotificationLogRow | None, alert: Alert) -> bool:
    """Tell whether the log says this receiver was told ``alert`` fires, in its current episode."""
    return row is not None and row.kind == NotificationKind.FIRING and same_episode(row, episode_start(alert))


class Aggregator:
    """The in-memory groups of every receiver, keyed by (receiver, log key)."""

    def __init__(self, settings: Settings, *, stale_after: timedelta) -> None:
        self.settings = settings
        self.stale_after = stale_after
        self.groups: dict[tuple[str, str], AggGroup] = {}
        self._latest: datetime | None = None

    def add(
        self,
        receiver: str,
        alert: Alert,
        now: datetime,
        group_row: NotificationLogRow | None,
        route: RouteRule | None = None,
    ) -> AggGroup:
        """Put ``alert`` (its latest state) into its group for ``receiver``; create the group if new.

        ``group_row`` is the log row of the group (looked up by the caller with ``key_for``): a group
        that was already notified and is still firing resumes its interval instead of waiting again.
        ``route`` is the route that sent the alert here (its grouping settings win). A group that
        exists keeps the timing it was created with.
        """
        timing = timing_for(self.settings, receiver, route)
        key, labels = group_identity(alert, timing)
        group = self.groups.get((receiver, key))
        if group is None:
            first = now + timing.group_wait
            if group_row is not None and group_row.kind == NotificationKind.FIRING:
                first = max(utc(now), utc(group_row.notified_at) + timing.group_interval)
            group = AggGroup(receiver, key, labels, timing, created_at=now, next_flush=first)
            self.groups[(receiver, key)] = group
        group.alerts[alert.fingerprint] = alert
        group.seen[alert.fingerprint] = now
        return group

    def key_for(self, receiver: str, alert: Alert, route: RouteRule | None = None) -> str:
        """Return the log key of the group ``alert`` joins for ``receiver`` (sent by ``route``)."""
        return group_identity(alert, timing_for(self.settings, receiver, route))[0]

    def due(self, now: datetime) -> list[AggGroup]:
        """Return the groups whose timer has come at ``now``, oldest timer first.

        The timers never run backwards: an evaluation that read the clock before the outbox job
        flushed the groups still finds them due (with ``group_interval: 0``, a transition's
        message must be decided in the transaction that commits the transition).
        """
        self._latest = max(self._latest, utc(now)) if self._latest is not None else utc(now)
        due = [g for g in self.groups.values() if utc(g.next_flush) <= self._latest]
        return sorted(due, key=lambda g: utc(g.next_flush))  # stable: arrival order on ties

    def after_flush(self, group: AggGroup, decision: Decision | None, now: datetime) -> None:
        """Restart the group's timer and drop alerts that are done (resolved, or gone stale)."""
        group.next_flush = now + group.timing.group_interval
        for fp, alert in list(group.alerts.items()):
            stale = utc(now) - utc(group.seen[fp]) > self.stale_after
            if alert.state is not AlertState.FIRING or stale:
                del group.alerts[fp]
                del group.seen[fp]
        if not group.alerts:
            del self.groups[(group.receiver, group.key)]
