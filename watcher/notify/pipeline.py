"""The notification pipeline: route → mute → dedup → render → enqueue, and the outbox flush.

This module owns deciding, for each alert the engine hands over, which receivers hear about it and
whether now is the time: silences mute it, the notification log deduplicates it (with a reason:
``first``, ``new_episode``, ``repeat_interval``, ``resolved``), templates render it, and the outbox
row and the log entry are written in one transaction. It does not own matcher semantics
(``silences``), wording (``templates``), delivery and retries (``outbox``) nor transports.

The log records what was *enqueued* (transactional outbox): once a row is committed it will be
delivered or dead-lettered, so the next evaluation must not enqueue the same thing again.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import quote

import sqlalchemy as sa
from sqlmodel import Session

from ..config import RouteSettings, Settings
from ..core import Alert, AlertState, NotificationKind, utc
from ..errors import StoreError
from ..store.tables import NotificationLogRow
from .outbox import FlushResult, Outbox, SessionFactory, enqueue
from .receivers.base import Receiver
from .silences import active_silences, is_silenced
from .templates import render_notification

__all__ = ["FlushResult", "Notifier", "SessionFactory", "decide", "episode_start", "route_receivers"]

logger = logging.getLogger(__name__)


def episode_start(alert: Alert) -> datetime | None:
    """Return when the alert's current episode began (``active_at``, else ``fired_at``)."""
    start = alert.active_at or alert.fired_at
    return utc(start) if start is not None else None


def _route_matches(match: Mapping[str, str], match_re: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    if any(labels.get(k, "") != v for k, v in match.items()):
        return False
    try:
        return all(re.fullmatch(v, labels.get(k, "")) is not None for k, v in match_re.items())
    except re.error as exc:
        logger.warning("route match_re is not a valid regex: %s", exc)
        return False


def route_receivers(route: RouteSettings, labels: Mapping[str, str]) -> list[str]:
    """Return the receivers of the routes that match ``labels``, or the default receivers.

    Routes are tried in order; a matching route adds its receivers and stops the walk unless it has
    ``continue: true``. Labels missing from the alert compare as the empty string.
    """
    chosen: list[str] = []
    matched = False
    for r in route.routes:
        if _route_matches(r.match, r.match_re, labels):
            matched = True
            chosen += [name for name in r.receivers if name not in chosen]
            if not r.continue_:
                break
    return chosen if matched else list(route.receivers)


def decide(
    last: NotificationLogRow | None, alert: Alert, now: datetime, settings: Settings, *, send_resolved: bool
) -> tuple[NotificationKind, str] | None:
    """Return (kind, reason) when ``alert`` should be notified to the receiver ``last`` is about."""
    episode = episode_start(alert)
    same_episode = last is not None and (
        (last.episode_start is None and episode is None)
        or (last.episode_start is not None and episode is not None and utc(last.episode_start) == episode)
    )
    if alert.resolved:
        if send_resolved and last is not None and last.kind == NotificationKind.FIRING and same_episode:
            return NotificationKind.RESOLVED, "resolved"
        return None
    if alert.state is not AlertState.FIRING:
        return None
    if last is None:
        return NotificationKind.FIRING, "first"
    if last.kind == NotificationKind.RESOLVED or not same_episode:
        return NotificationKind.FIRING, "new_episode"
    if utc(now) - utc(last.notified_at) >= settings.notify.repeat_interval:
        return NotificationKind.FIRING, "repeat_interval"
    return None


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
        self.outbox = Outbox(
            store,
            self.receivers,
            retry_initial=settings.notify.retry_initial,
            retry_max=settings.notify.retry_max,
            max_age=settings.notify.max_age,
            rng=rng,
        )

    def _default_rule_url(self, group: str, rule: str) -> str:
        base = self.settings.external_url.rstrip("/")
        return f"{base}/rules/{quote(group, safe='')}/{quote(rule, safe='')}"

    def submit(self, items: Sequence[tuple[Alert, Sequence[str]]], now: datetime) -> int:
        """Route, mute, dedup, render and enqueue each alert; return how many notifications were queued."""
        if not items:
            return 0
        enqueued = 0
        with _store_errors(self.store, "notify submit"), self.store.session() as session:
            silences = active_silences(session, now)
            for alert, rule_receivers in items:
                if alert.state is AlertState.PENDING or (
                    alert.state is AlertState.INACTIVE and not alert.resolved
                ):
                    continue
                labels = dict(alert.labels.merge({"alertname": alert.rule}))
                ctx = {"fingerprint": alert.fingerprint, "rule": alert.rule}
                silence = is_silenced(labels, silences, now)
                if silence is not None:
                    logger.info("%s %s silenced by %s", alert.rule, alert.labels, silence.id, extra=ctx)
                    continue
                targets = list(dict.fromkeys(rule_receivers)) or route_receivers(self.settings.route, labels)
                for name in targets:
                    enqueued += self._submit_one(session, alert, name, now)
            session.commit()
        return enqueued

    def _submit_one(self, session: Session, alert: Alert, receiver: str, now: datetime) -> int:
        """Dedup and enqueue ``alert`` for one receiver inside ``session``; return 1 if enqueued."""
        ctx = {"fingerprint": alert.fingerprint, "receiver": receiver, "rule": alert.rule}
        rs = self.settings.receivers.get(receiver)
        if rs is None:
            logger.warning("%s: receiver %s is not configured; not notified", alert.rule, receiver, extra=ctx)
            return 0
        last = session.get(NotificationLogRow, (receiver, alert.fingerprint))
        verdict = decide(last, alert, now, self.settings, send_resolved=rs.send_resolved)
        if verdict is None:
            return 0
        kind, reason = verdict
        n = render_notification(
            alert,
            kind=kind,
            receiver=receiver,
            settings=self.settings,
            rule_url=self._rule_url(alert.group, alert.rule),
            title_template=rs.title_template,
            body_template=rs.body_template,
        )
        enqueue(session, n, now)
        episode = episode_start(alert)
        if last is None:
            last = NotificationLogRow(
                receiver=receiver,
                fingerprint=alert.fingerprint,
                kind=str(kind),
                dedup_key=n.dedup_key,
                notified_at=now,
                episode_start=episode,
                count=0,
            )
        elif reason == "new_episode":
            last.count = 0
        last.kind = str(kind)
        last.dedup_key = n.dedup_key
        last.notified_at = now
        last.episode_start = episode
        last.count += 1  # notifications in this episode
        session.add(last)
        session.flush()
        logger.info("%s %s → %s: %s (%s)", kind, alert.rule, receiver, reason, alert.labels, extra=ctx)
        return 1

    def flush(self, now: datetime, *, deadline_s: float | None = None) -> FlushResult:
        """Deliver what is due in the outbox at ``now``; see ``outbox.Outbox.flush``."""
        with _store_errors(self.store, "outbox flush"):
            return self.outbox.flush(now, deadline_s=deadline_s)

    def pending_count(self) -> int:
        """Return how many notifications wait in the outbox."""
        with _store_errors(self.store, "outbox count"):
            return self.outbox.pending_count()
