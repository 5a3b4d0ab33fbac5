"""Expiring signed URLs: the chart links that chat services fetch without the read token.

This module owns the signature of a URL path with an expiry time: the key is derived from a
secret of the configuration (``server.read_token``) with HMAC-SHA256 and a fixed label, so the
secret itself is never put in a URL, a log line or a message, and changing the token withdraws
every link signed with it. A link carries ``exp`` (Unix seconds) and ``sig`` (the HMAC of the path
and the expiry, hex). It does not own which URLs are signed (``notify.receivers.slack``) nor the
route that checks them (``web.page``). Time is a parameter: nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlencode

_LABEL = b"watcher chart-url signing key v1"
SIG_HEX = 64
"""Length of ``sig``: the whole SHA-256 HMAC in hex."""


class Check(StrEnum):
    """The outcome of checking a signed link."""

    OK = "ok"
    EXPIRED = "expired"
    FORGED = "forged"
    """Malformed, signed with another key, or for another path or expiry."""


def derive_key(secret: str) -> bytes:
    """Return the signing key derived from ``secret`` (never the secret itself)."""
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


def _mac(key: bytes, path: str, expires: int) -> str:
    return hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, path: str, at: datetime, ttl: timedelta) -> str:
    """Return the query string (``exp=…&sig=…``) that makes ``path`` readable until ``at + ttl``."""
    expires = int((at + ttl).timestamp())
    return urlencode({"exp": expires, "sig": _mac(key, path, expires)})


def check(key: bytes, path: str, exp: str | None, sig: str | None, now: datetime) -> Check:
    """Tell whether ``exp``/``sig`` sign ``path`` with ``key`` and are still valid at ``now``.

    The signature is compared in constant time before the expiry is looked at, so an expired link
    answers ``EXPIRED`` only when it was genuine.
    """
    if not exp or not sig or len(exp) > 12 or not exp.isdigit() or len(sig) != SIG_HEX:
        return Check.FORGED
    if not hmac.compare_digest(_mac(key, path, int(exp)), sig.lower()):
        return Check.FORGED
    return Check.OK if now.timestamp() < int(exp) else Check.EXPIRED


__all__ = ["SIG_HEX", "Check", "check", "derive_key", "sign"]
