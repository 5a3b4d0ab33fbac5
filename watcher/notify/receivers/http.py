"""The shared HTTP edge of the JSON receivers (PagerDuty, webhook, Alertmanager).

This module owns one POST with a timeout, translating its outcome into ``NotifyError`` (retryable
or not, with a reason) and keeping the receiver's secrets (URL, routing key, signing secret) out of
every error and log line. It does not own payloads (each receiver builds its own) nor retries (the
outbox retries).

Status classes follow the Alertmanager notifiers: 2xx accepted; 429 ``rate_limited`` and 408
``timeout`` retryable; any other 4xx ``client_error``, not retryable (the same request would fail
again); 5xx ``server_error`` retryable; connection failures and timeouts retryable.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import httpx

from ...errors import NotifyError
from .apprise import install_filter, redact, secret_parts

logger = logging.getLogger(__name__)

_MAX_BODY_SHOWN = 200


def url_secrets(url: str) -> set[str]:
    """Return the parts of an HTTP URL that may be secret (the URL, credentials, path, query)."""
    parts = secret_parts(url)
    host = urlsplit(url).hostname or ""
    return {p for p in parts if p != host}


def classify(status: int) -> tuple[bool, str]:
    """Return (retryable, reason) for a non-2xx HTTP status."""
    if status == 429:
        return True, "rate_limited"
    if status == 408:
        return True, "timeout"
    if 400 <= status < 500:
        return False, "client_error"
    return True, "server_error"


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """Return the TLS context every POST uses, built once.

    Building it loads the CA bundle (~20 ms of CPU under the GIL); per request, that was most of
    the cost of a send and kept concurrent sends from scaling. It is the context httpx would build.
    """
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


class JsonPoster:
    """POST raw JSON bodies to one URL for one named receiver, with ``secrets`` redacted from errors.

    The caller says what is secret (``url_secrets`` of a configured URL, a routing key …): a fixed
    public endpoint such as PagerDuty's is not, and redacting its path would only garble errors.
    """

    def __init__(self, name: str, url: str, *, timeout_s: float, secrets: Iterable[str]) -> None:
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self.secrets: set[str] = {s for s in secrets if s}
        install_filter(self.secrets)
        self.last_response: str | None = None
        """``HTTP 202: {"status":"success"…}`` of the last call (for ``watcher notify test``)."""

    def redact(self, text: str) -> str:
        """Return ``text`` without this receiver's secrets."""
        return redact(text, self.secrets)

    def post(self, body: bytes, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST ``body`` as JSON; return the 2xx response or raise a redacted ``NotifyError``."""
        all_headers = {"Content-Type": "application/json", "User-Agent": "watcher", **(headers or {})}
        try:
            with httpx.Client(
                timeout=self.timeout_s, follow_redirects=False, verify=shared_ssl_context()
            ) as client:
                response = client.post(self.url, content=body, headers=all_headers)
        except httpx.TimeoutException as exc:
            raise self._error(f"timed out ({type(exc).__name__})", True, "timeout") from None
        except httpx.HTTPError as exc:
            raise self._error(
                f"connection failed ({type(exc).__name__}: {exc})", True, "connection"
            ) from None
        shown = response.text[:_MAX_BODY_SHOWN].strip()
        self.last_response = self.redact(f"HTTP {response.status_code}: {shown}")
        if response.is_success:
            logger.debug("receiver %s: %s", self.name, self.last_response)
            return response
        retryable, reason = classify(response.status_code)
        raise self._error(f"error={response.status_code} {shown}", retryable, reason)

    def _error(self, detail: str, retryable: bool, reason: str) -> NotifyError:
        text = self.redact(f"receiver {self.name}: {detail}")
        return NotifyError(text, retryable=retryable, reason=reason, receiver=self.name)
