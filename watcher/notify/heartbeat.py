"""The heartbeat: a dead-man's switch pinged every ``notify.heartbeat.interval``.

This module owns one ping (GET or POST to the configured URL, e.g. a healthchecks.io check, a
PagerDuty/Opsgenie heartbeat or a Dead Man's Snitch), its outcome and keeping the URL out of logs.
The scheduler decides when to ping; an outside system pages when the pings stop, which is how
anyone learns that watcher itself died. It does not own retries: the next tick is the retry.
"""

from __future__ import annotations

import logging

import httpx

from ..config import HeartbeatSettings
from .receivers.apprise import install_filter, redact
from .receivers.http import url_secrets

logger = logging.getLogger(__name__)


class Heartbeat:
    """Ping one URL; never raise."""

    def __init__(self, settings: HeartbeatSettings) -> None:
        self.settings = settings
        self._url = settings.url.get_secret_value()
        self._secrets = url_secrets(self._url)
        install_filter(self._secrets)
        self.failures = 0

    def ping(self) -> bool:
        """Send one ping; return whether it was accepted (2xx), logging a redacted reason if not."""
        try:
            with httpx.Client(timeout=self.settings.timeout_s) as client:
                response = client.request(self.settings.method, self._url, content=b"watcher ok")
        except httpx.HTTPError as exc:
            self.failures += 1
            logger.warning("heartbeat failed: %s", redact(f"{type(exc).__name__}: {exc}", self._secrets))
            return False
        if response.is_success:
            self.failures = 0
            return True
        self.failures += 1
        logger.warning("heartbeat refused: HTTP %d", response.status_code)
        return False
