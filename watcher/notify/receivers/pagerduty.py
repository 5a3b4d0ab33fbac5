"""The PagerDuty receiver: Events API v2 trigger and resolve, sent directly with httpx.

This module owns the Events v2 request body: ``dedup_key`` is the notification's dedup key (stable
for one alert group episode, so a redelivery or a repeat updates the same incident and the resolve
closes it), ``severity`` is mapped from a label, ``links`` point at the top traces and the rule on
the status page, and ``custom_details`` carry value, expected, band and labels. It does not own
the HTTP edge (``http``), retries (``outbox``) nor wording (``templates``).

A direct client rather than Apprise's ``pagerduty://``: the request is small, and the behaviour
(one event per notification, exact dedup key, 202 vs 400 vs 429) is then exact and testable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...config import PAGERDUTY_EVENTS_URL, ReceiverSettings
from ...core import Notification, NotificationKind, iso, json_num
from ..document import shown_value
from .http import JsonPoster, url_secrets

SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_MAX = 1024


def map_severity(labels: Mapping[str, str], rs: ReceiverSettings) -> str:
    """Return the PagerDuty severity for ``labels``: mapped, already valid, else the default."""
    value = str(labels.get(rs.severity_label, "")).lower()
    if value in rs.severity_map:
        return rs.severity_map[value]
    if value in SEVERITIES:
        return value
    return rs.default_severity


def _details(n: Notification) -> dict[str, Any]:
    lead = n.lead
    a = lead.alert
    details: dict[str, Any] = {
        "value": shown_value(n, lead),
        "expected": json_num(a.expected),
        "band": [json_num(a.lower), json_num(a.upper)],
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "starts_at": iso(a.active_at or a.fired_at),
        "rule_url": lead.rule_url,
    }
    if n.group is not None:
        details["alerts"] = [
            {"status": str(item.kind), "labels": dict(item.alert.labels), "value": shown_value(n, item)}
            for item in n.items
        ]
    return details


def event(n: Notification, routing_key: str, rs: ReceiverSettings) -> dict[str, Any]:
    """Return the Events v2 body (trigger or resolve) for ``n``."""
    if n.kind is NotificationKind.RESOLVED:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": n.dedup_key}
    a = n.alert
    labels = a.labels
    starts_at = iso(a.active_at or a.fired_at)
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.dedup_key,
        "payload": {
            "summary": n.title[:SUMMARY_MAX],
            "source": str(labels.get("instance") or labels.get("tenant") or "watcher"),
            "severity": map_severity(labels, rs),
            "component": str(labels.get("model") or labels.get("feature") or "") or None,
            "group": a.group or None,
            "class": a.rule or None,
            "custom_details": _details(n),
        },
        "links": [{"href": url, "text": text} for text, url in n.links],
        "client": "watcher",
    }
    if starts_at:
        body["payload"]["timestamp"] = starts_at
    if n.rule_url:
        body["client_url"] = n.rule_url
    body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
    return body


class PagerDutyReceiver:
    """Trigger and resolve PagerDuty incidents through Events API v2."""

    def __init__(self, name: str, rs: ReceiverSettings) -> None:
        assert rs.routing_key is not None  # guaranteed by ReceiverSettings
        self.name = name
        self._rs = rs
        self._key = rs.routing_key.get_secret_value()
        url = rs.url.get_secret_value() if rs.url is not None else PAGERDUTY_EVENTS_URL
        secrets = {self._key} | (url_secrets(url) if rs.url is not None else set())
        self._http = JsonPoster(name, url, timeout_s=rs.timeout_s, secrets=secrets)
        self.timeout_s = rs.timeout_s  # the longest a send may take (the stop budget uses it)

    @property
    def last_response(self) -> str | None:
        """Return what PagerDuty answered to the last event (redacted)."""
        return self._http.last_response

    def redact(self, text: str) -> str:
        """Return ``text`` without the routing key or URL."""
        return self._http.redact(text)

    def send(self, n: Notification) -> None:
        """Send the trigger or resolve event of ``n``; raise ``NotifyError`` unless PagerDuty accepts it."""
        self._http.post(json.dumps(event(n, self._key, self._rs)).encode())
