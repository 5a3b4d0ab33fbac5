"""Structured logging: JSON lines off a terminal, readable lines on one, context fields, no secrets.

This module owns how a log record becomes one line (``JsonFormatter``, ``TextFormatter``), binding
context once (``bind``), installing the handler (``setup_logging``) and the last line of defence
against secrets: every configured secret value is replaced by ``***`` in the rendered line. It does
not own what is logged (each module logs with ``logging.getLogger(__name__)``) nor the settings.

Context goes in ``extra=`` (or a ``bind()``-ed adapter) and comes out as fields: ``group``,
``rule``, ``fingerprint``, ``trace_id`` and any other key. A JSON line looks like::

    {"ts": "2025-05-01T12:00:00.123Z", "level": "warning", "logger": "watcher.engine.group",
     "msg": "rule evaluation failed: ...", "group": "cost", "rule": "Spend", "reason": "QueryError"}
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from .redact import Masker, url_secrets

LogFormat = Literal["auto", "json", "text"]

CONTEXT_KEYS = ("group", "rule", "fingerprint", "trace_id")
"""Context fields rendered first, in this order, when present."""

REDACTED = "***"
_MIN_SECRET_LEN = 4
_MIN_URL_PART_LEN = 10
_STD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
_HANDLER_MARK = "_watcher_handler"


def _timestamp(record: logging.LogRecord) -> str:
    """Return the record's time as ISO-8601 UTC with milliseconds and a ``Z``."""
    dt = datetime.fromtimestamp(record.created, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the ``extra=`` fields of ``record``: context keys first, then the rest sorted."""
    extra = {k: v for k, v in vars(record).items() if k not in _STD_ATTRS and not k.startswith("_")}
    ordered = {k: extra.pop(k) for k in CONTEXT_KEYS if k in extra}
    ordered.update(sorted(extra.items()))
    return ordered


class _Redacting(logging.Formatter):
    """A formatter that masks known secret values in whatever its subclass renders."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """Replace the secret values to mask (longest first, so a prefix never leaves a tail)."""
        self._masker = Masker(secrets, mask=REDACTED, min_len=_MIN_SECRET_LEN)
        self.secrets = self._masker.secrets

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret value replaced by ``***``."""
        return self._masker(text)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line (subclasses)."""
        raise NotImplementedError


class JsonFormatter(_Redacting):
    """One JSON object per line: ts, level, logger, msg, context fields, exc."""

    def render(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON object on one line."""
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in context_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def _text_value(value: Any) -> str:
    """Return ``value`` as a logfmt value, quoted when it has spaces, quotes or is empty."""
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(_Redacting):
    """A readable line: time, level, logger, message, then ``key=value`` context."""

    def render(self, record: logging.LogRecord) -> str:
        """Render ``record`` for a human at a terminal."""
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = context_fields(record)
        if fields:
            line += "  " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class ContextLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger with context bound once; ``extra=`` at the call site adds to it (call site wins)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the bound context into the call's ``extra``."""
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs

    def bind(self, **context: Any) -> ContextLogger:
        """Return a new adapter with ``context`` added to this one's."""
        return ContextLogger(self.logger, {**(self.extra or {}), **context})


def bind(logger: logging.Logger | str, **context: Any) -> ContextLogger:
    """Return ``logger`` with ``context`` (group, rule, fingerprint, trace_id, …) on every record."""
    base = logging.getLogger(logger) if isinstance(logger, str) else logger
    return ContextLogger(base, dict(context))


def secret_values(obj: Any) -> list[str]:
    """Return every ``SecretStr`` value in ``obj`` (settings), plus the passwords and long path
    parts of secret URLs, so that a fragment logged by a library is masked too."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.extend(_secret_parts(value.get_secret_value()))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    walk(obj)
    return found


def _secret_parts(secret: str) -> list[str]:
    """Return ``secret`` and, when it is a URL, its password and long host/path/query parts."""
    if "://" not in secret:
        return [secret]
    try:
        url = urlsplit(secret)
        password = url.password
    except ValueError:
        return [secret]
    if url.scheme.startswith(("sqlite", "file")) and not password:
        return []  # a file path is not a secret, and masking it would hide where the store is
    parts = [secret, *url_secrets(secret)]  # the password and secret query values (``?password=``)
    if password:
        parts += [password, unquote(password)]
    pieces = [url.username or "", *url.path.split("/"), *url.query.split("&")]
    for piece in pieces:
        value = piece.split("=", 1)[-1]
        # tokens (long, with digits), not words such as "services" or "enqueue"
        if len(value) >= _MIN_URL_PART_LEN and any(c.isdigit() for c in value):
            parts.append(value)
    return parts


def choose_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "text"]:
    """Return ``text`` for ``auto`` on a terminal and ``json`` otherwise (journald, files, pipes)."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    try:
        return "text" if callable(isatty) and isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


def setup_logging(
    level: str = "info",
    *,
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> logging.Handler:
    """Install watcher's handler on the root logger (replacing a previous one) and return it."""
    out = stream if stream is not None else sys.stderr
    formatter: _Redacting = (
        JsonFormatter(secrets) if choose_format(fmt, out) == "json" else TextFormatter(secrets)
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Libraries that chat at INFO (HTTP clients) stay at WARNING unless we debug.
    quiet = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    for name in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(name).setLevel(quiet)
    return handler


__all__ = [
    "CONTEXT_KEYS",
    "ContextLogger",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "bind",
    "choose_format",
    "context_fields",
    "secret_values",
    "setup_logging",
]
