"""Who may call what on the HTTP server: the token scopes, checked in constant time.

This module owns the scopes, which setting grants which, reading the credential of a request
(``Authorization: Bearer <token>``, or ``Basic`` with the token as the password so that a browser
can open the status page) and the answer: a ``Grant`` naming who called, or an ``AuthProblem``
with the status, a reason for the metrics and a message that names the setting to change.

==================  ===============================  ==========================================
scope               granted by                       needed for
==================  ===============================  ==========================================
``ingest``          ``server.ingest_token``          POST /api/v1/calls|scores|feedback,
                                                     POST /v1/traces (OTLP)
``admin``           ``server.admin_token``           POST/DELETE /api/v1/silences, POST
                                                     /api/v1/alerts/feedback (and reads)
``admin|ingest``    either token                     POST /api/v1/annotations (release markers)
``read``            ``server.read_token``, admin     the status page, its charts, GET /api/v1/*
                                                     (only when ``server.read_token`` is set)
``payload_read``    ``server.payload_tokens[name]``  GET /api/v1/payloads/{trace_id} (audited)
==================  ===============================  ==========================================

A value configured under two settings carries both scopes. Every configured token is compared
with ``hmac.compare_digest``, all of them on every request, so the time taken does not say which
one (or how much of one) matched. It does not own the routes (``server``, ``statusapi``,
``status``) nor the audit log (``payloads``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final


class Scope(StrEnum):
    """What a token may do."""

    INGEST = "ingest"
    ADMIN = "admin"
    READ = "read"
    PAYLOAD_READ = "payload_read"


SETTING: Final = {
    Scope.INGEST: "server.ingest_token",
    Scope.ADMIN: "server.admin_token",
    Scope.READ: "server.read_token",
    Scope.PAYLOAD_READ: "server.payload_tokens",
}
"""The setting that grants each scope."""

ENV: Final = {scope: "WATCHER_" + setting.upper().replace(".", "__") for scope, setting in SETTING.items()}

_WHAT: Final = {
    Scope.INGEST: "ingest",
    Scope.ADMIN: "admin writes (silences, alert feedback)",
    Scope.READ: "reading the status page and the API",
    Scope.PAYLOAD_READ: "reading captured prompts and responses",
}


@dataclass(frozen=True, slots=True)
class Grant:
    """Who called (``ingest``, ``admin``, ``read``, ``payload:<name>``, or ``anonymous``) and may do what."""

    who: str
    scopes: frozenset[Scope]


ANONYMOUS: Final = Grant("anonymous", frozenset({Scope.READ}))
"""The grant of a read when ``server.read_token`` is unset (reads are open)."""


@dataclass(frozen=True, slots=True)
class AuthProblem(Exception):
    """A request that may not do what it asks: 401 (who are you?) or 403 (not allowed / disabled)."""

    status: int
    reason: str
    """``disabled`` | ``unauthenticated`` | ``bad_token`` | ``forbidden``: the metric label"""
    detail: str
    challenge: str | None = None
    """The ``WWW-Authenticate`` header of a 401."""

    def __str__(self) -> str:
        return self.detail


def credential(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization`` header: Bearer's token, or Basic's password."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


class TokenTable:
    """The configured tokens of ``server`` settings and the scopes each carries."""

    def __init__(self, server: Any) -> None:
        grants: dict[bytes, tuple[str, set[Scope]]] = {}

        def add(secret: Any, who: str, *scopes: Scope) -> None:
            if secret is None:
                return
            value = secret.get_secret_value().encode()
            if not value:
                return
            name, have = grants.setdefault(value, (who, set()))
            have.update(scopes)
            if name != who:  # one value under two settings: name both
                grants[value] = (f"{name}+{who}", have)

        add(getattr(server, "ingest_token", None), "ingest", Scope.INGEST)
        add(getattr(server, "admin_token", None), "admin", Scope.ADMIN, Scope.READ)
        add(getattr(server, "read_token", None), "read", Scope.READ)
        for name, secret in (getattr(server, "payload_tokens", None) or {}).items():
            add(secret, f"payload:{name}", Scope.PAYLOAD_READ)
        self._entries = [(value, Grant(who, frozenset(s))) for value, (who, s) in grants.items()]
        self.configured = frozenset(s for _, g in self._entries for s in g.scopes)
        """The scopes some token grants; reads are open while ``read_token`` is unset."""
        self.reads_open = getattr(server, "read_token", None) is None

    def identify(self, token: str | None) -> Grant | None:
        """Return the grant of ``token`` (None when it is no configured token), in constant time."""
        if token is None:
            return None
        presented = token.encode()
        found: Grant | None = None
        for value, grant in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, value):
                found = grant
        return found

    def check(
        self,
        scope: Scope,
        authorization: str | None,
        *,
        challenge: str = "Bearer",
        also: tuple[Scope, ...] = (),
    ) -> Grant:
        """Return the grant of a request with header ``authorization`` needing ``scope`` or one of ``also``.

        Raise ``AuthProblem``: 403 when nothing grants ``scope`` (naming the setting), 401 without a
        credential or with an unknown one, 403 when the token is known but lacks ``scope``.
        """
        if scope is Scope.READ and self.reads_open:
            token = credential(authorization)
            grant = self.identify(token) if token is not None else None
            return grant or ANONYMOUS
        wanted = (scope, *also)
        if not any(s in self.configured for s in wanted):
            raise AuthProblem(403, "disabled", "; or ".join(disabled_message(s) for s in wanted))
        token = credential(authorization)
        if token is None:
            raise AuthProblem(401, "unauthenticated", "missing `Authorization: Bearer <token>`", challenge)
        grant = self.identify(token)
        if grant is None:
            raise AuthProblem(401, "bad_token", "bad bearer token", challenge)
        if not any(s in grant.scopes for s in wanted):
            raise AuthProblem(
                403,
                "forbidden",
                f"this token may not do {_WHAT[scope]}: that needs the token of "
                + " or ".join(SETTING[s] for s in wanted),
            )
        return grant


def disabled_message(scope: Scope) -> str:
    """Return why ``scope`` is refused when no token grants it, and the setting that enables it."""
    base = f"{_WHAT[scope]} is disabled: set {SETTING[scope]} ({ENV[scope]})"
    if scope is Scope.ADMIN:
        return base + "; the ingest token no longer writes silences (README, Upgrading)"
    return base


__all__ = [
    "ANONYMOUS",
    "ENV",
    "SETTING",
    "AuthProblem",
    "Grant",
    "Scope",
    "TokenTable",
    "credential",
    "disabled_message",
]
