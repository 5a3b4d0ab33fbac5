"""The webhook receiver: the notification's JSON payload, POSTed and signed with HMAC-SHA256.

This module owns the webhook body (the versioned document of ``document`` plus ``notification_id``,
``receiver``, ``title`` and ``body``; documented in ``docs/notifications.md``) and its signature
header ``X-Watcher-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>``. It does
not own the HTTP edge (``http``) nor retries (``outbox``).

``notification_id`` is fixed when the notification is enqueued, so a redelivery after a crash
carries the same ID and the consumer can drop the duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from ...config import ReceiverSettings
from ...core import Notification
from ..document import notification_document
from .http import JsonPoster, url_secrets

SIGNATURE_HEADER = "X-Watcher-Signature"
ID_HEADER = "X-Watcher-Notification-Id"


def sign(body: bytes, secret: str) -> str:
    """Return the signature header value for ``body``: ``sha256=<hex digest>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(n: Notification) -> dict[str, Any]:
    """Return the JSON document a webhook consumer receives for ``n``."""
    doc = notification_document(n)
    doc["receiver"] = n.receiver
    doc["title"] = n.title
    doc["body"] = n.body
    return doc


class WebhookReceiver:
    """POST signed JSON notifications to one URL."""

    def __init__(self, name: str, rs: ReceiverSettings) -> None:
        assert rs.url is not None  # guaranteed by ReceiverSettings
        self.name = name
        url = rs.url.get_secret_value()
        self._secret = rs.secret.get_secret_value() if rs.secret is not None else None
        secrets = url_secrets(url) | ({self._secret} if self._secret else set())
        self._http = JsonPoster(name, url, timeout_s=rs.timeout_s, secrets=secrets)
        self.timeout_s = rs.timeout_s  # the longest a send may take (the stop budget uses it)

    @property
    def last_response(self) -> str | None:
        """Return what the endpoint answered last (redacted)."""
        return self._http.last_response

    def redact(self, text: str) -> str:
        """Return ``text`` without the URL or secret."""
        return self._http.redact(text)

    def send(self, n: Notification) -> None:
        """POST ``n`` as signed JSON; raise ``NotifyError`` unless the endpoint answers 2xx."""
        doc = webhook_body(n)
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        headers = {ID_HEADER: doc["notification_id"]}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        self._http.post(body, headers)
