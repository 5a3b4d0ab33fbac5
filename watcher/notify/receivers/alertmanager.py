"""The Alertmanager receiver: POST alerts to an existing Alertmanager's ``/api/v2/alerts``.

This module owns mapping a notification (one alert or a group) to Alertmanager's postable alerts:
labels with ``alertname``, annotations with the summary, value, band, trace links and the stable
``watcher_notification_id``, ``startsAt``, ``endsAt`` and ``generatorURL`` (the rule on the status
page). It does not own the HTTP edge (``http``) nor retries (``outbox``).

Alertmanager resolves an alert on its own once ``endsAt`` passes, so a firing alert is sent with
``endsAt = last evaluation + horizon`` and must be re-sent before then: give this receiver a short
``repeat_interval`` (the default for this type is 1m, horizon 4 × repeat_interval, as Prometheus
does). A resolved alert is sent once with ``endsAt`` = when it resolved.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ...config import ReceiverSettings
from ...core import Listed, Notification, NotificationKind, json_num, utc
from ..document import shown_value
from .http import JsonPoster, url_secrets

DEFAULT_REPEAT = timedelta(minutes=1)
API_PATH = "/api/v2/alerts"


def _iso(ts: datetime) -> str:
    return utc(ts).isoformat().replace("+00:00", "Z")


def _one(item: Listed, n: Notification, horizon: timedelta) -> dict[str, Any]:
    a = item.alert
    labels = {str(k): str(v) for k, v in a.labels.items()}
    labels["alertname"] = a.rule or "watcher"
    notes = {str(k): str(v) for k, v in a.annotations.items()}
    numbers = {
        "value": shown_value(n, item),
        "expected": json_num(a.expected),
        "lower": json_num(a.lower),
        "upper": json_num(a.upper),
    }
    for key, x in numbers.items():
        if x is not None:
            notes[key] = f"{x:.6g}"
    for i, t in enumerate(item.traces, 1):
        notes[f"trace_{i}"] = t.url
    notes["watcher_notification_id"] = n.message_id
    out: dict[str, Any] = {"labels": labels, "annotations": notes}
    start = a.active_at or a.fired_at
    if start is not None:
        out["startsAt"] = _iso(start)
    if item.kind is NotificationKind.RESOLVED and a.resolved_at is not None:
        out["endsAt"] = _iso(a.resolved_at)
    else:
        seen = n.alert.last_eval or start
        if seen is not None:
            out["endsAt"] = _iso(seen + horizon)
    if item.rule_url or n.rule_url:
        out["generatorURL"] = item.rule_url or n.rule_url
    return out


def postable_alerts(n: Notification, horizon: timedelta) -> list[dict[str, Any]]:
    """Return the ``/api/v2/alerts`` body for ``n``: one entry per alert it lists."""
    return [_one(item, n, horizon) for item in n.items]


class AlertmanagerReceiver:
    """Forward alerts to an Alertmanager (v2 API)."""

    def __init__(self, name: str, rs: ReceiverSettings) -> None:
        assert rs.url is not None  # guaranteed by ReceiverSettings
        self.name = name
        base = rs.url.get_secret_value().rstrip("/")
        url = base if base.endswith(API_PATH) else base + API_PATH
        self.horizon = 4 * (rs.repeat_interval or DEFAULT_REPEAT)
        self._http = JsonPoster(name, url, timeout_s=rs.timeout_s, secrets=url_secrets(base))
        self.timeout_s = rs.timeout_s  # the longest a send may take (the stop budget uses it)

    @property
    def last_response(self) -> str | None:
        """Return what Alertmanager answered last."""
        return self._http.last_response

    def redact(self, text: str) -> str:
        """Return ``text`` without credentials of the URL."""
        return self._http.redact(text)

    def send(self, n: Notification) -> None:
        """POST the alerts of ``n``; raise ``NotifyError`` unless Alertmanager answers 2xx."""
        self._http.post(json.dumps(postable_alerts(n, self.horizon)).encode())
