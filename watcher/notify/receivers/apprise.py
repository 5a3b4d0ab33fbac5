"""The Apprise receiver: any Apprise URL (Slack, PagerDuty, Teams, mail, ``json://`` …).

This module owns turning one notification into one ``Apprise.notify`` call, translating its
outcome into ``NotifyError`` (retryable or not, with a reason) and keeping the configured URLs out
of every error and log line. It does not own retries (the outbox retries; Apprise's own retries
are off) nor rendering (``notify.templates``).

Apprise never raises on a failed delivery: ``notify()`` returns a result whose truth says whether
every service accepted it, and whose per-service logs say why not (``error=500``, "Connection
error"). The reason is read from those per-call logs (thread-safe, unlike the global
``apprise.LogCapture``), then redacted: every configured URL, its user, password, token-like host,
path segments and query values, and any long token-looking string become ``***``. A redacting
filter on the ``apprise`` and ``urllib3`` loggers does the same for their own log records.

Files (the chart PNG) are in-memory attachments, and never cost the message: services that carry
them in the message's own request (``json://``, ``form://``, ``xml://``, mail) get them with it —
refused with a client error, the message goes again at once without them; services that upload
them in separate requests (Slack bot mode, Discord, Telegram, …) get the message first and the
files in a second, best-effort call (a failed upload is logged, never retried: Apprise reports a
failed upload as a failed notification, and retrying it would post the message again). Slack
webhooks take no files; a receiver whose URLs take none never gets them.

``pagerduty://`` URLs left at Apprise's default ``action=trigger`` are sent with ``action=map``
and, unless the URL sets ``dedup=``, the notification's dedup key, so a resolve closes the
incident its trigger opened instead of opening a new one.

A receiver with several URLs that partly fails is retried as a whole (the services that accepted
get the message again): Apprise cannot resend to a subset of one object's services.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
from apprise.attachment.memory import AttachMemory

from ...core import Notification, NotificationKind
from ...errors import ConfigError, NotifyError
from ...redact import redact as redact_text

logger = logging.getLogger(__name__)

_HTTP_CODE_RE = re.compile(r"error=(\d{3})\b")
_MIN_SECRET_LEN = 4
_MAX_ERROR_LEN = 400


def secret_parts(url: str) -> set[str]:
    """Return the substrings of an Apprise URL that may be secret (the URL itself included)."""
    parts = {url}
    try:
        u = urlsplit(url)
    except ValueError:
        return parts
    candidates: list[str] = [u.username or "", u.password or ""]
    host = u.netloc.rsplit("@", 1)[-1].split(":", 1)[0]  # as written: tokens are case-sensitive
    if "." not in host and host.lower() != "localhost":
        candidates += [host, host.lower()]  # Slack, Discord …: the "host" is a token
    candidates += u.path.split("/")
    candidates += [v for _, v in parse_qsl(u.query, keep_blank_values=True)]
    candidates.append(u.fragment)
    for c in candidates:
        for form in (c, unquote(c)):
            if len(form) >= _MIN_SECRET_LEN:
                parts.add(form)
    return parts


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every secret and every long token-looking string replaced by ``***``."""
    return redact_text(text, secrets, tokens=True, min_len=1)


class _RedactingFilter(logging.Filter):
    """Rewrite log records of third-party loggers so no registered secret reaches a handler."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets |= set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = tuple(self._secrets)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: drop its arguments rather than risk a leak
            message = str(record.msg)
        record.msg = redact(message, secrets)
        record.args = None
        return True


_FILTER = _RedactingFilter()
_FILTERED_LOGGERS = (
    "apprise",
    "urllib3.connectionpool",
    "requests",
    "httpx",  # the JSON receivers (``http``) log their request URL here at INFO
    "httpcore.connection",
    "httpcore.http11",
)
_install_lock = threading.Lock()
_installed = False


def install_filter(secrets: Iterable[str]) -> None:
    """Register ``secrets`` with the process-wide redacting filter (installed once)."""
    global _installed
    _FILTER.add(secrets)
    with _install_lock:
        if not _installed:
            for name in _FILTERED_LOGGERS:
                logging.getLogger(name).addFilter(_FILTER)
            _installed = True


def _classify(messages: Sequence[str], status: apprise.AppriseResultStatus) -> tuple[bool, str]:
    """Return (retryable, reason) for a failed call from its status and log messages."""
    if status == apprise.AppriseResultStatus.TIMEOUT:
        return True, "timeout"
    if status == apprise.AppriseResultStatus.NOMATCH:
        return False, "unknown"
    text = " ".join(messages)
    m = _HTTP_CODE_RE.search(text)
    if m:
        code = int(m.group(1))
        if code == 429:
            return True, "rate_limited"
        if code == 408:
            return True, "timeout"
        if 400 <= code < 500:
            return False, "client_error"
        return True, "server_error"
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return True, "timeout"
    if "connection" in lowered or "socket" in lowered:
        return True, "connection"
    return True, "unknown"


_INLINE_FILES = frozenset({"NotifyJSON", "NotifyForm", "NotifyXML", "NotifyEmail"})
"""Plugins that send attachments in the same request as the message."""


@dataclass(frozen=True, slots=True)
class _Failure:
    text: str
    retryable: bool
    reason: str


def _takes_files(plugin: Any) -> bool:
    """Tell whether an Apprise plugin can deliver attachments as configured (Slack: bot mode only)."""
    if not getattr(plugin, "attachment_support", False):
        return False
    mode = getattr(plugin, "mode", None)
    return not (type(plugin).__name__ == "NotifySlack" and mode != "bot")


def _inline_files(plugin: Any) -> bool:
    return _takes_files(plugin) and type(plugin).__name__ in _INLINE_FILES


def _instantiate(url: str, asset: apprise.AppriseAsset) -> Any:
    """Return the Apprise plugin for ``url`` (None if invalid).

    The first call makes Apprise import its ~190 plugins; some import deprecated stdlib modules
    (``imghdr``), which must not turn into errors under ``-W error``. ``catch_warnings`` is not
    thread-safe, so plugin loading is serialised (it only happens while receivers are built).
    """
    with _install_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return apprise.Apprise.instantiate(url, asset=asset)


class AppriseReceiver:
    """Deliver notifications to every configured Apprise URL."""

    def __init__(self, name: str, urls: Sequence[str], *, timeout_s: float = 10.0) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._secrets: set[str] = set()
        for url in urls:
            self._secrets |= secret_parts(url)
        install_filter(self._secrets)
        asset = apprise.AppriseAsset(storage_mode="memory", service_timeout=timeout_s)
        self._apprise = apprise.Apprise(asset=asset)
        for i, url in enumerate(urls, 1):
            plugin = _instantiate(url, asset)
            if plugin is None:
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                raise ConfigError(f"receiver {name}: url #{i} ({scheme}://***) is not a valid Apprise URL")
            # The outbox owns retries and the deadline: one attempt, bounded by timeout_s.
            plugin.retry = 0
            plugin.socket_connect_timeout = timeout_s
            plugin.socket_read_timeout = timeout_s
            self._apprise.add(plugin)
        self.accepts_files = any(_takes_files(p) for p in self._apprise)
        """Whether ``send`` can deliver ``files`` (the outbox attaches the chart only then)."""
        self._pagerduty: list[Any] = [p for p in self._apprise if type(p).__name__ == "NotifyPagerDuty"]
        plugins = list(self._apprise)
        self._inline = self._subset(asset, [p for p in plugins if _inline_files(p)])
        self._plain = self._subset(asset, [p for p in plugins if not _inline_files(p)])
        self._uploads = self._subset(asset, [p for p in plugins if _takes_files(p) and not _inline_files(p)])
        self._lock = threading.Lock()

    @staticmethod
    def _subset(asset: apprise.AppriseAsset, plugins: Sequence[Any]) -> apprise.Apprise | None:
        if not plugins:
            return None
        a = apprise.Apprise(asset=asset)
        for p in plugins:
            a.add(p)
        return a

    def redact(self, text: str) -> str:
        """Return ``text`` without this receiver's secrets."""
        return redact(text, self._secrets)

    def send(self, n: Notification, *, files: Sequence[tuple[str, bytes]] = ()) -> None:
        """Send ``n`` (title and Markdown body, ``files`` as (name, PNG) attachments) to every URL.

        Raise ``NotifyError`` if any service refused the message (a refused file alone is logged).
        """
        firing = n.kind is NotificationKind.FIRING
        notify_type = apprise.NotifyType.FAILURE if firing else apprise.NotifyType.SUCCESS
        with self._lock:
            saved = [(p, p.action, p.dedup) for p in self._pagerduty]
            for p in self._pagerduty:  # trigger on FAILURE, resolve on SUCCESS, one incident per episode
                p.action = "map" if p.action == "trigger" else p.action
                p.dedup = p.dedup or n.dedup_key
            try:
                if not files or not self.accepts_files:
                    errors = [self._notify(self._apprise, n.title, n.body, notify_type)]
                else:
                    errors = [
                        self._notify_inline(n, notify_type, files),
                        self._notify(self._plain, n.title, n.body, notify_type),
                    ]
            finally:
                for p, action, dedup in saved:
                    p.action, p.dedup = action, dedup
            failures = [e for e in errors if e is not None]
            if not failures and files and self._uploads is not None:
                self._upload(n, notify_type, files)
        if failures:
            text = self.redact(f"receiver {self.name}: " + "; ".join(e.text for e in failures))
            retryable = any(e.retryable for e in failures)
            reason = next(e.reason for e in failures if e.retryable == retryable)
            raise NotifyError(text[:_MAX_ERROR_LEN], retryable=retryable, reason=reason, receiver=self.name)

    def _notify_inline(
        self, n: Notification, notify_type: apprise.NotifyType, files: Sequence[tuple[str, bytes]]
    ) -> _Failure | None:
        """Send to the services that carry files in the message; without them if refused for them."""
        failure = self._notify(self._inline, n.title, n.body, notify_type, files)
        if failure is None or failure.retryable:
            return failure
        logger.warning(
            "receiver %s: refused with the chart (%s); sending without it", self.name, failure.reason
        )
        return self._notify(self._inline, n.title, n.body, notify_type)

    def _upload(
        self, n: Notification, notify_type: apprise.NotifyType, files: Sequence[tuple[str, bytes]]
    ) -> None:
        """Post the files to the services that upload them separately; log a failure, never raise."""
        failure = self._notify(self._uploads, "", f"Chart: {n.title}", notify_type, files)
        if failure is not None:
            text = self.redact(failure.text)
            logger.warning("receiver %s: message sent, chart not attached: %s", self.name, text)

    def _notify(
        self,
        target: apprise.Apprise | None,
        title: str,
        body: str,
        notify_type: apprise.NotifyType,
        files: Sequence[tuple[str, bytes]] = (),
    ) -> _Failure | None:
        """Make one Apprise call; return what failed (None when every service accepted, or none)."""
        if target is None:
            return None
        attach = [
            AttachMemory(content=data, name=name, mimetype="image/png")  # type: ignore[no-untyped-call]
            for name, data in files
        ] or None
        result = target.notify(
            body=body,
            title=title,
            notify_type=notify_type,
            body_format=apprise.NotifyFormat.MARKDOWN,
            timeout=self.timeout_s,
            attach=attach,
        )
        with result:
            if result:
                return None
            failed = [r for r in result if not r]
            messages = [e.message for e in result.logs()]
            retryable, reason = _classify(messages, result.status)
            where = ", ".join(f"{r.name}" for r in failed) or "no service"
        detail = "; ".join(dict.fromkeys(m.strip() for m in messages if m.strip())) or result.status.name
        return _Failure(f"{where} failed: {detail}", retryable, reason)
