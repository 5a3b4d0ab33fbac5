"""Dead letters: the notice the delivery-failure receivers get when a notification is given up.

This module owns the wording and identity of that notice (alert ``WatcherDeliveryFailed`` with
labels ``receiver`` and ``reason``, a dedup key per dead row). It does not own when a row dies
(``outbox``) nor delivering the notice (it is an ordinary outbox row).

A notice about a notice is never made, so a failing delivery-failure receiver cannot loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..core import Alert, AlertState, Labels, Notification, NotificationKind, utc

ALERTNAME = "WatcherDeliveryFailed"


def is_notice(message: Mapping[str, Any]) -> bool:
    """Tell whether a stored outbox message is itself a delivery-failure notice."""
    return (message.get("payload") or {}).get("alertname") == ALERTNAME


def failure_notice(
    *,
    row_id: int | None,
    dead_receiver: str,
    reason: str,
    error: str,
    message: Mapping[str, Any],
    attempts: int,
    to: str,
    now: datetime,
) -> Notification:
    """Return the notice for ``to`` that the message for ``dead_receiver`` was dead-lettered."""
    original = str(message.get("title") or "(untitled)")
    labels = Labels({"receiver": dead_receiver, "reason": reason})
    summary = f"a notification to {dead_receiver} was given up after {attempts} attempt(s) ({reason})"
    alert = Alert(
        rule=ALERTNAME,
        group="watcher",
        labels=labels,
        state=AlertState.FIRING,
        active_at=now,
        fired_at=now,
        last_eval=now,
        annotations={"summary": summary},
    )
    key = hashlib.sha256(f"dead|{row_id}|{dead_receiver}".encode()).hexdigest()[:32]
    iso = utc(now).isoformat().replace("+00:00", "Z")
    payload: dict[str, Any] = {
        "version": "1",
        "status": "firing",
        "alertname": ALERTNAME,
        "group": "watcher",
        "labels": dict(labels),
        "annotations": {"summary": summary, "error": error, "original": original},
        "value": None,
        "expected": None,
        "lower": None,
        "upper": None,
        "score": None,
        "starts_at": iso,
        "ends_at": None,
        "fingerprint": alert.fingerprint,
        "dedup_key": key,
        "traces": [],
        "rule_url": "",
        "dead_outbox_id": row_id,
    }
    body = f"{summary}.\n\nMessage: {original}\n\nLast error: {error}"
    return Notification(
        receiver=to,
        kind=NotificationKind.FIRING,
        dedup_key=key,
        title=f"[DELIVERY FAILED] {dead_receiver}: {reason}",
        body=body,
        alert=alert,
        payload=payload,
    )
