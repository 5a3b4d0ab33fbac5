"""The structured form of a notification: the webhook body's fields, built from the typed notification.

This module owns the versioned JSON document of one alert as a message lists it (``version``,
``status``, ``alertname`` … ``traces``, ``rule_url``; documented in ``docs/notifications.md``) and
of a whole notification (the lead alert's fields, the group's ``group_key``, ``group_labels`` and
``alerts``, ``notification_id``), the per-episode dedup key of an alert and the trace deep links.
It does not own wording (``templates``), transports (``receivers``) nor storage (``outbox``): the
outbox stores the typed notification (``core.alert_to_dict``), and a receiver that sends the
document builds it here from that.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from ..core import (
    Alert,
    Listed,
    Notification,
    NotificationKind,
    TraceLink,
    iso,
    json_num,
    trace_to_dict,
)

PAYLOAD_VERSION = "1"


def trace_link(trace_url: str, trace_id: str) -> str:
    """Return the deep link to one trace: ``trace_url`` with ``{trace_id}`` replaced (URL-quoted)."""
    return trace_url.replace("{trace_id}", quote(trace_id, safe=""))


def trace_links(alert: Alert, trace_url: str, top: int) -> tuple[TraceLink, ...]:
    """Return the links of the ``top`` first traces of ``alert``."""
    return tuple(TraceLink(t, trace_link(trace_url, t.trace_id)) for t in alert.traces[:top])


def alert_dedup_key(alert: Alert) -> str:
    """Return a key stable across re-sends of one alert episode and different for the next one."""
    start = alert.active_at or alert.fired_at
    material = alert.fingerprint + "|" + (iso(start) or "")
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def trace_document(link: TraceLink) -> dict[str, Any]:
    """Return one trace of the document: ``core.trace_to_dict`` plus its ``url``."""
    doc = trace_to_dict(link.trace)
    return {
        "trace_id": doc["trace_id"],
        "span_id": doc["span_id"],
        "value": doc["value"],
        "ts": doc["ts"],
        "url": link.url,
        "note": doc["note"],
    }


def alert_document(item: Listed) -> dict[str, Any]:
    """Return the document of one listed alert (an ungrouped message's body, a group's member)."""
    alert, kind = item.alert, item.kind
    return {
        "version": PAYLOAD_VERSION,
        "status": str(kind),
        "alertname": alert.rule,
        "group": alert.group,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "value": json_num(alert.value),
        "expected": json_num(alert.expected),
        "lower": json_num(alert.lower),
        "upper": json_num(alert.upper),
        "score": json_num(alert.score),
        "surprise": json_num(alert.surprise),
        "starts_at": iso(alert.active_at or alert.fired_at),
        "ends_at": iso(alert.resolved_at) if kind is NotificationKind.RESOLVED else None,
        "fingerprint": alert.fingerprint,
        "dedup_key": alert_dedup_key(alert),
        "traces": [trace_document(t) for t in item.traces],
        "rule_url": item.rule_url,
    }


def shown_value(n: Notification, item: Listed) -> float | None:
    """Return the ``value`` the structured form shows for ``item`` of ``n`` (a notice shows its own)."""
    if n.notice is not None:
        return json_num(n.notice.value)
    return json_num(item.alert.value)


def notification_document(n: Notification, *, with_id: bool = True) -> dict[str, Any]:
    """Return the structured form of ``n``: its lead alert's document with the message's fields.

    ``status`` and ``dedup_key`` are the message's; a grouped receiver's message adds ``group_key``,
    ``group_labels`` and ``alerts`` (every listed alert's document); ``notification_id`` (unless
    ``with_id`` is False) is the outbox's ID, else the dedup key.
    """
    doc = alert_document(n.lead)
    doc["status"] = str(n.kind)
    doc["dedup_key"] = n.dedup_key
    if n.notice is not None:
        doc["value"] = json_num(n.notice.value)
        doc["score"] = None
        del doc["surprise"]
        if n.notice.dead_outbox_id is not None:
            doc["dead_outbox_id"] = n.notice.dead_outbox_id
    if n.group is not None:
        doc["group_key"] = n.group.key
        doc["group_labels"] = dict(n.group.labels)
        doc["alerts"] = [alert_document(item) for item in n.items]
    if with_id:
        doc["notification_id"] = n.message_id
    return doc
