"""Receivers: the named delivery targets of the config, built once at start-up.

This package owns mapping ``Settings.receivers`` to ``Receiver`` objects. Each transport lives in
its own module (``console``, ``apprise``, ``pagerduty``, ``webhook``, ``alertmanager``, ``slack``; the shared
HTTP edge in ``http``); the seam is ``base.Receiver``.
"""

from __future__ import annotations

from ...config import ReceiverSettings, Settings
from ...signing import derive_key
from .alertmanager import AlertmanagerReceiver
from .apprise import AppriseReceiver
from .base import Receiver, RecordingReceiver
from .console import ConsoleReceiver
from .pagerduty import PagerDutyReceiver
from .slack import ChartSigner, SlackReceiver
from .webhook import WebhookReceiver

__all__ = [
    "AlertmanagerReceiver",
    "AppriseReceiver",
    "ConsoleReceiver",
    "PagerDutyReceiver",
    "Receiver",
    "RecordingReceiver",
    "SlackReceiver",
    "WebhookReceiver",
    "build_receiver",
    "build_receivers",
]


def build_receiver(name: str, rs: ReceiverSettings, settings: Settings | None = None) -> Receiver:
    """Return the receiver for one settings entry; a bad Apprise URL raises ``ConfigError``.

    ``settings`` gives the Slack receiver the status page's addresses (``external_url`` for its
    buttons, ``public_url`` for the chart image, and with ``server.read_token`` set a key derived
    from it that signs the chart links); without it, the defaults apply.
    """
    if rs.type == "console":
        return ConsoleReceiver(name)
    if rs.type == "pagerduty":
        return PagerDutyReceiver(name, rs)
    if rs.type == "webhook":
        return WebhookReceiver(name, rs)
    if rs.type == "alertmanager":
        return AlertmanagerReceiver(name, rs)
    if rs.type == "slack":
        s = settings if settings is not None else Settings()
        token = s.server.read_token
        signer = ChartSigner(derive_key(token.get_secret_value()), s.server.chart_url_ttl) if token else None
        feedback = s.server.slack_signing_secret is not None
        return SlackReceiver(
            name, rs, external_url=s.external_url, public_url=s.public_url, signer=signer, feedback=feedback
        )
    urls = [u.get_secret_value() for u in rs.urls]
    return AppriseReceiver(name, urls, timeout_s=rs.timeout_s)


def build_receivers(settings: Settings) -> dict[str, Receiver]:
    """Return a receiver for every entry of ``settings.receivers``; a bad URL raises ``ConfigError``."""
    return {name: build_receiver(name, rs, settings) for name, rs in settings.receivers.items()}
