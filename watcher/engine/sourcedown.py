"""The "source down" alert: one ``WatcherSourceDown`` per PromQL endpoint that stays unavailable.

This module owns turning the endpoints' statuses (``PrometheusSource.endpoint_status()``, the
outcome of each endpoint's latest call) into one alert per endpoint: it becomes active once the
endpoint has been unavailable for its ``down_after`` (``prometheus.<name>.down_after``, default 5m)
and resolves at the first evaluation that finds it up again. The alert goes through the normal
notify pipeline (routing by labels, silences, inhibition, dedup), so it is sent once, not per
rule or per tick, and it can inhibit the symptoms it explains (``notify.inhibit_rules`` with
``source_matchers: [alertname=WatcherSourceDown]``). It does not own the per-rule alerts, which a
failed fetch leaves untouched (``group``), nor the backoff (``sources.prometheus``).

Labels: ``alertname=WatcherSourceDown``, ``source=<endpoint name>``, ``severity`` from the
endpoint's ``down_severity``. The state is kept in memory: after a restart during an outage the
delay starts again (the notification log still suppresses a repeat within ``repeat_interval``).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..config import PrometheusEndpoint
from ..core import Alert, AlertState, Labels
from .alerting import Observation, Timing, step

ALERTNAME = "WatcherSourceDown"
GROUP = "watcher"
"""The group name the alert carries (it belongs to no rule file; its rule link is this name)."""


class _Status(Protocol):
    up: bool
    error: str | None


class SourceDownMonitor:
    """Tracks how long each endpoint has been unavailable and steps its WatcherSourceDown alert."""

    def __init__(
        self,
        endpoints: Mapping[str, PrometheusEndpoint],
        *,
        resolved_retention: timedelta = timedelta(minutes=15),
    ) -> None:
        self._endpoints = dict(endpoints)
        self._timing = Timing(resolved_retention=resolved_retention)
        self._down_since: dict[str, datetime] = {}
        self._alerts: dict[str, Alert] = {}
        self._lock = threading.Lock()

    def update(
        self, sources: Mapping[str, Any], now: datetime, in_use: Collection[str] | None = None
    ) -> list[tuple[Alert, Sequence[str]]]:
        """Read the endpoints' statuses at ``now``; return the source-down alerts worth notifying.

        Firing alerts are returned at every update (the pipeline's dedup sends them once, then on
        ``repeat_interval``), a resolved one while it is kept for re-sending. ``in_use`` names the
        endpoints some rule queries (None: all): an endpoint no rule uses any more is never called
        again, so its last status would be stale for ever; its alert resolves instead.
        """
        statuses: dict[str, _Status] = {}
        for source in {id(s): s for s in sources.values()}.values():
            report = getattr(source, "endpoint_status", None)
            if callable(report):
                statuses.update(report())
        with self._lock:
            for name, status in statuses.items():
                cfg = self._endpoints.get(name)
                if cfg is None:
                    continue
                if status.up or (in_use is not None and name not in in_use):
                    self._down_since.pop(name, None)
                else:
                    self._down_since.setdefault(name, now)
                since = self._down_since.get(name)
                active = since is not None and now - since >= cfg.down_after
                obs = Observation(active=active, annotations=self._notes(name, status, since))
                labels = Labels(source=name, severity=cfg.down_severity)
                prev = self._alerts.get(name)
                new = step(prev, obs, now, self._timing, rule=ALERTNAME, group=GROUP, labels=labels)
                if new is None:
                    self._alerts.pop(name, None)
                else:
                    self._alerts[name] = new
            return [(a, ()) for a in self._alerts.values() if a.state is AlertState.FIRING or a.resolved]

    def alerts(self) -> list[Alert]:
        """Return the current source-down alerts (any state), for the status page."""
        with self._lock:
            return list(self._alerts.values())

    @staticmethod
    def _notes(name: str, status: _Status, since: datetime | None) -> dict[str, str]:
        if since is None:
            return {"summary": f"Prometheus endpoint {name} answers again"}
        return {
            "summary": f"Prometheus endpoint {name} unavailable since {since:%Y-%m-%d %H:%M:%S}Z",
            "description": (
                f"Rules on {name} are not evaluated (their alerts keep their state) until it answers "
                f"again. Last error: {status.error or 'unknown'}"
            ),
        }
