"""The "store down" self-alert: ``WatcherStoreDown``, sent straight to the receivers.

This module owns noticing that the store has been unreachable for ``store.down_after`` and telling
the receivers that route ``alertname=WatcherStoreDown`` (the rule's default receivers otherwise),
and, once the store answers again, sending them the resolve with the same dedup key. The alert
cannot go through the outbox (it lives in the store that is down), so it is sent directly, from
memory: a receiver that fails is tried again at the next check, and a restart during an outage
starts the delay again. It does not own pinging the store (the daemon's ``store`` job calls
:meth:`StoreDownMonitor.update` with the outcome) nor the receivers' transports.

While the store is down, nothing is evaluated (every evaluation needs the store to commit), so
the daemon also stops its heartbeat (``evaluating``): the outside dead-man's switch then fires.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from ..config import Settings
from ..core import Alert, AlertState, Labels, NotificationKind
from ..errors import NotifyError
from ..notify.receivers.base import Receiver
from ..notify.routing import route_receivers
from ..notify.templates import render_notification

logger = logging.getLogger(__name__)

ALERTNAME = "WatcherStoreDown"
GROUP = "watcher"


class StoreDownMonitor:
    """Tracks the store's reachability and sends ``WatcherStoreDown`` and its resolve directly."""

    def __init__(
        self,
        settings: Settings,
        receivers: Mapping[str, Receiver],
        *,
        rule_url: Callable[[str, str], str],
        store_name: str = "",
    ) -> None:
        self._settings = settings
        self._receivers = receivers
        self._rule_url = rule_url
        self._store_name = store_name
        self._down_after: timedelta = settings.store.down_after
        self._down_since: datetime | None = None
        self._error: str | None = None
        self._alert: Alert | None = None
        self._told: set[str] = set()
        """Receivers that accepted the firing of the current episode (owed a resolve)."""
        self._owed: set[str] = set()
        """Receivers still to be told the current state (failed or not tried yet)."""
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        """Tell whether the store answered at the last check."""
        return self._down_since is None

    def alert(self) -> Alert | None:
        """Return the current ``WatcherStoreDown`` alert (firing, or resolved while owed), if any."""
        return self._alert

    def update(self, ok: bool, now: datetime, error: str | None = None) -> list[str]:
        """Record a check of the store at ``now``; send what is due; return the receivers told now."""
        with self._lock:
            if not ok:
                if self._down_since is None:
                    self._down_since = now
                    logger.warning("store unreachable: %s", error or "unknown error")
                self._error = error
                ongoing = self._alert is not None and self._alert.state is AlertState.FIRING
                if not ongoing and now - self._down_since >= self._down_after:
                    if self._told:  # the resolve of the last outage never got through: a new episode
                        logger.warning(
                            "%s resolve not delivered to %s", ALERTNAME, ", ".join(sorted(self._told))
                        )
                    self._alert = self._firing(now)
                    self._owed = set(self._targets())
                    self._told = set()
                    logger.error(
                        "store unreachable since %s: sending %s", self._down_since.isoformat(), ALERTNAME
                    )
            elif self._down_since is not None:
                logger.info("store reachable again")
                self._down_since = None
                if self._alert is not None and self._alert.state is AlertState.FIRING:
                    self._alert = replace(
                        self._alert, state=AlertState.INACTIVE, resolved_at=now, last_eval=now
                    )
                    self._owed = set(self._told)
            if self._alert is None or not self._owed:
                return []
            return self._send(self._alert)

    def _targets(self) -> list[str]:
        labels = {"alertname": ALERTNAME, **self._labels()}
        return [r for r in route_receivers(self._settings.route, labels) if r in self._receivers]

    def _labels(self) -> dict[str, str]:
        return {"severity": self._settings.store.down_severity}

    def _firing(self, now: datetime) -> Alert:
        assert self._down_since is not None
        since = self._down_since
        return Alert(
            rule=ALERTNAME,
            group=GROUP,
            labels=Labels(self._labels()),
            state=AlertState.FIRING,
            active_at=since,
            fired_at=now,
            last_eval=now,
            annotations={
                "summary": f"watcher's store unreachable since {since:%Y-%m-%d %H:%M:%S}Z",
                "store": self._store_name,
                "description": (
                    "No rule is evaluated and no notification is queued or delivered until it answers "
                    f"again. Last error: {self._error or 'unknown'}"
                ),
            },
        )

    def _send(self, alert: Alert) -> list[str]:
        kind = NotificationKind.FIRING if alert.state is AlertState.FIRING else NotificationKind.RESOLVED
        told: list[str] = []
        for name in sorted(self._owed):
            receiver = self._receivers.get(name)
            rs = self._settings.receivers.get(name)
            if receiver is None or rs is None:
                self._owed.discard(name)
                continue
            n = render_notification(
                alert,
                kind=kind,
                receiver=name,
                settings=self._settings,
                rule_url=self._rule_url(GROUP, ALERTNAME),
                title_template=rs.title_template,
                body_template=rs.body_template,
            )
            try:
                receiver.send(n)
            except NotifyError as exc:
                logger.warning(
                    "%s %s to %s failed (%s), retried at the next check", ALERTNAME, kind, name, exc.reason
                )
                continue
            except Exception as exc:  # a receiver bug must not stop the check; its message may hold secrets
                logger.warning("%s %s to %s failed: %s", ALERTNAME, kind, name, type(exc).__name__)
                continue
            self._owed.discard(name)
            told.append(name)
            if kind is NotificationKind.FIRING:
                self._told.add(name)
            else:
                self._told.discard(name)
        if kind is NotificationKind.RESOLVED and not self._owed:
            self._alert = None
            self._told.clear()
        return told
