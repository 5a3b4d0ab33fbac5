"""Receivers: the named delivery targets of the config, built once at start-up.

This package owns mapping ``Settings.receivers`` to ``Receiver`` objects. Each transport lives in
its own module (``console``, ``apprise``); the seam is ``base.Receiver``.
"""

from __future__ import annotations

from ...config import Settings
from .apprise import AppriseReceiver
from .base import Receiver, RecordingReceiver
from .console import ConsoleReceiver

__all__ = ["AppriseReceiver", "ConsoleReceiver", "Receiver", "RecordingReceiver", "build_receivers"]


def build_receivers(settings: Settings) -> dict[str, Receiver]:
    """Return a receiver for every entry of ``settings.receivers``; a bad URL raises ``ConfigError``."""
    out: dict[str, Receiver] = {}
    for name, rs in settings.receivers.items():
        if rs.type == "console":
            out[name] = ConsoleReceiver(name)
        else:
            urls = [u.get_secret_value() for u in rs.urls]
            out[name] = AppriseReceiver(name, urls, timeout_s=rs.timeout_s)
    return out
