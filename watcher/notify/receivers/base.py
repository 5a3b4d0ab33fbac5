"""The receiver seam: something with a name that delivers one rendered notification.

This module owns the ``Receiver`` protocol and a recording fake for tests. It does not own any
transport (``console``, ``apprise``), retries or backoff (``outbox``).

Contract: ``send`` returns only once the target accepted the notification; otherwise it raises
``NotifyError`` whose ``retryable`` tells the outbox whether to try again and whose ``reason`` is a
short metric-label-safe word. Its message never contains a secret (URL, token, password).
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from ...core import Notification
from ...errors import NotifyError


@runtime_checkable
class Receiver(Protocol):
    """A named delivery target."""

    name: str

    def send(self, n: Notification) -> None:
        """Deliver ``n`` or raise ``NotifyError`` (retryable or not, with a reason)."""
        ...


class RecordingReceiver:
    """A fake receiver that keeps what it was sent, failing on demand (for tests and dry runs)."""

    def __init__(self, name: str = "recorder", failures: list[NotifyError] | None = None) -> None:
        self.name = name
        self.sent: list[Notification] = []
        self.failures = list(failures or [])
        self._lock = threading.Lock()

    def send(self, n: Notification) -> None:
        """Record ``n``, or raise the next queued failure instead."""
        with self._lock:
            if self.failures:
                raise self.failures.pop(0)
            self.sent.append(n)
