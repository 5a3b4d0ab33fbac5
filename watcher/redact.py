"""The one secret-redaction helper: URLs, password-like query parameters, headers, SecretStr values.

This module owns answering "what in this value is secret?" and "how do I show it without the
secret?" for everything watcher prints: database URLs (``watcher db stats``, ``watcher cluster
status``, start-up errors, the status page), receiver and endpoint URLs, HTTP headers, and the
``SecretStr`` values of the settings. It does not own PII in captured payloads
(``instrument.redact``) nor where the masking is applied (log formatters, the status page's
``Redactor``, ``Store.redact``), which all ask this module.

A URL's secrets are its password (``user:pw@``) and the value of every query parameter whose name
says it is one (``?password=``, ``sslpassword``, ``token``, ``api_key``, ``secret``, ``sig`` …):
SQLAlchemy's own ``hide_password`` masks only the first, and psycopg accepts the password as
a query parameter too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_SECRET_LEN = 4
"""Shorter values are not masked in free text: ``pw`` would mask every "pw" in a message."""

_SECRET_PARAM = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|auth|credential|"
    r"sig(nature)?|private[-_]?key|session|cookie|routing[-_]?key|x-amz-security-token)",
    re.IGNORECASE,
)
_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-amz-security-token",
        "private-token",
    }
)


def is_secret_param(name: str) -> bool:
    """Tell whether a query parameter (or settings key) named ``name`` holds a secret."""
    return _SECRET_PARAM.search(name) is not None


def is_secret_header(name: str) -> bool:
    """Tell whether an HTTP header named ``name`` carries credentials."""
    lowered = name.strip().lower()
    return lowered in _SECRET_HEADERS or is_secret_param(lowered.removeprefix("x-"))


def url_secrets(url: str) -> set[str]:
    """Return the secret parts of ``url`` (password, secret query values, in raw and decoded forms)."""
    out: set[str] = set()
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return out
    if password:
        out |= {password, unquote(password)}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and is_secret_param(name):
            out |= {value, quote(value, safe=""), quote(value)}
    return {s for s in out if s}


def display_url(url: str) -> str:
    """Return ``url`` safe to print: the password and every secret query value replaced by ``***``.

    Works on database URLs (``postgresql+psycopg://u:pw@h/db?password=S``) and HTTP URLs alike; a
    value that does not parse as a URL is masked whole.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
        host = parts.hostname
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme:
        return MASK if url else url
    if not url_secrets(url) and password is None:
        return url  # nothing to hide: keep it exactly as written (``sqlite:///…`` keeps its slashes)
    netloc = parts.netloc
    if password is not None or parts.username is not None:
        user = parts.username or ""
        where = (host or "") if ":" not in (host or "") else f"[{host}]"
        if port is not None:
            where += f":{port}"
        netloc = f"{user}:{MASK}@{where}" if password is not None else f"{user}@{where}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if v and is_secret_param(k) else v) for k, v in pairs], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``headers`` with the value of every credential-carrying header replaced by ``***``."""
    return {k: (MASK if is_secret_header(str(k)) else v) for k, v in headers.items()}


def secret_values(obj: Any) -> Iterator[str]:
    """Yield every secret inside ``obj``: SecretStr values (pydantic models, dicts, lists) and the
    secret parts of those that are URLs."""
    if isinstance(obj, SecretStr):
        value = obj.get_secret_value()
        yield value
        yield from url_secrets(value)
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from secret_values(getattr(obj, name, None))
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from secret_values(v)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            yield from secret_values(v)


class Masker:
    """Replace known secret values in free text with ``***`` (longest first; tiny values ignored).

    ``min_len`` is the shortest value masked: free text (log lines, store errors) keeps the
    default so a 2-letter password does not blank every "pw"; a receiver's own error, which can
    only echo its own URL's parts, masks every non-empty one (``min_len=1``).
    """

    def __init__(
        self, secrets: Iterable[str] = (), *, mask: str = MASK, min_len: int = MIN_SECRET_LEN
    ) -> None:
        self.mask = mask
        keep = {s for s in secrets if s and len(s) >= min_len}
        self.secrets = tuple(sorted(keep, key=len, reverse=True))
        self._rx = re.compile("|".join(re.escape(s) for s in self.secrets)) if self.secrets else None

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret masked."""
        return self._rx.sub(self.mask, text) if self._rx is not None and text else text


TOKEN_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9_\-+/=]{24,}")
"""A long token-looking string (webhook path tokens, API keys) that no secret list may name."""


def redact(
    text: str, secrets: Iterable[str] = (), *, tokens: bool = False, min_len: int = MIN_SECRET_LEN
) -> str:
    """Return ``text`` with every value of ``secrets`` (and, with ``tokens``, every long
    token-looking string) replaced by ``***``: the one helper every masking site calls."""
    text = Masker(secrets, min_len=min_len)(text)
    return TOKEN_RE.sub(MASK, text) if tokens else text
