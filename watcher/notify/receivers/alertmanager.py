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
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ...config import ReceiverSettings
from ...core import Notification, utc
from .http import JsonPoster, url_secrets

DEFAULT_REPEAT = timedelta(minutes=1)
API_PATH = "/api/v2/alerts"


def _iso(ts: datetime) -> str:
    return utc(ts).isoformat().replace("+00:00", "Z")


def _parse(text: Any) -> datetime | None:
    return utc(datetime.fromisoformat(str(text).replace("Z", "+00:00"))) if text else None


def _one(a: Mapping[str, Any], n: Notification, horizon: timedelta) -> dict[str, Any]:
    labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
    labels["alertname"] = str(a.get("alertname") or n.payload.get("alertname") or "watcher")
    notes = {str(k): str(v) for k, v in (a.get("annotations") or {}).items()}
    for key in ("value", "expected", "lower", "upper"):
        if a.get(key) is not None:
            notes[key] = f"{a[key]:.6g}"
    for i, t in enumerate(a.get("traces") or [], 1):
        notes[f"trace_{i}"] = str(t["url"])
    notes["watcher_notification_id"] = str(n.payload.get("notification_id") or n.dedup_key)
    out: dict[str, Any] = {"labels": labels, "annotations": notes}
    start = _parse(a.get("starts_at"))
    if start is not None:
        out["startsAt"] = _iso(start)
    end = _parse(a.get("ends_at"))
    if a.get("status") == "resolved" and end is not None:
        out["endsAt"] = _iso(end)
    else:
        seen = n.alert.last_eval or start
        if seen is not None:
            out["endsAt"] = _iso(seen + horizon)
    if a.get("rule_url") or n.payload.get("rule_url"):
        out["generatorURL"] = str(a.get("rule_url") or n.payload.get("rule_url"))
    return out


def postable_alerts(n: Notification, horizon: timedelta) -> list[dict[str, Any]]:
    """Return the ``/api/v2/alerts`` body for ``n``: one entry per alert of the group."""
    members = n.payload.get("alerts") or [n.payload]
    return [_one(a, n, horizon) for a in members]


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
