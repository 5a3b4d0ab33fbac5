"""Reading captured prompts and responses, and the audit log of every such read.

This module owns the one way payloads leave the store: ``read_payloads`` returns a trace's
``payloads`` rows and writes who read them, when and which trace to ``payload_access`` in the same
transaction (no read without its audit row). Through it go ``GET /api/v1/payloads/{trace_id}``
(scope ``payload_read``: a token of ``server.payload_tokens``; who = ``payload:<name>``, when = the
daemon's clock) and ``watcher payloads show TRACE_ID`` (who = ``cli:<OS user>``, when = now);
``watcher payloads audit`` lists the log. Nothing else serves payloads: not the status page, not
``/api/v1/alerts``, not a notification.

It does not own capturing or redacting payloads (``instrument``), how long they are kept
(``retention.payloads``, default 7 days, and ``retention.payload_access``: ``store.retention``),
nor the scopes (``tokens``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Path, Request

from ..errors import WatcherError
from ..store.db import Store
from ..store.tables import Payload, PayloadAccessRow
from .tokens import Grant, Scope
from .view import DaemonView

log = logging.getLogger(__name__)

TRACE_ID_RE = re.compile(r"^[0-9A-Za-z_.:-]{1,64}$")
MAX_ROWS = 100
"""Payload rows returned for one trace (a trace with more calls is cut, newest first)."""


@dataclass(frozen=True, slots=True)
class Access:
    """One audited read."""

    ts: datetime
    who: str
    via: str
    trace_id: str
    rows: int
    client: str | None


def read_payloads(
    store: Store, trace_id: str, *, who: str, via: str, now: datetime, client: str | None = None
) -> list[dict[str, Any]]:
    """Return the payloads of ``trace_id`` (newest first) and record the read in ``payload_access``.

    The audit row is written in the same transaction as the read, even when nothing is found.
    Raise ``StoreError`` (no password in it) when the store fails; then nothing was returned.
    """
    payloads = Payload.__table__  # type: ignore[attr-defined]
    audit = PayloadAccessRow.__table__  # type: ignore[attr-defined]
    try:
        with store.engine.begin() as conn:
            rows = conn.execute(
                sa.select(payloads.c.ts, payloads.c.prompt, payloads.c.response)
                .where(payloads.c.trace_id == trace_id)
                .order_by(payloads.c.ts.desc(), payloads.c.id.desc())
                .limit(MAX_ROWS)
            ).all()
            conn.execute(
                sa.insert(audit).values(
                    ts=now, who=who[:128], via=via, trace_id=trace_id, rows=len(rows), client=client
                )
            )
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("reading payloads", exc) from None
    log.info("payloads of trace %s read by %s via %s (%d row(s))", trace_id, who, via, len(rows))
    return [{"ts": iso_utc(r.ts), "prompt": r.prompt, "response": r.response} for r in rows]


def audit_log(
    store: Store, *, since: datetime | None = None, trace_id: str | None = None, limit: int = 1000
) -> list[Access]:
    """Return the audited reads, newest first (``since``, ``trace_id`` narrow them)."""
    audit = PayloadAccessRow.__table__  # type: ignore[attr-defined]
    query = sa.select(audit).order_by(audit.c.ts.desc(), audit.c.id.desc()).limit(limit)
    if since is not None:
        query = query.where(audit.c.ts >= since)
    if trace_id is not None:
        query = query.where(audit.c.trace_id == trace_id)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("reading the payload audit log", exc) from None
    return [Access(r.ts, r.who, r.via, r.trace_id, r.rows, r.client) for r in rows]


def iso_utc(ts: datetime | None) -> str | None:
    """Return ``ts`` as ISO-8601 UTC with a ``Z`` (None stays None)."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


# --- HTTP ------------------------------------------------------------------------------------


def add_payload_routes(app: FastAPI, daemon: DaemonView, require: Callable[..., Any], redact: Any) -> None:
    """Add ``GET /api/v1/payloads/{trace_id}`` (scope ``payload_read``, audited) to ``app``."""
    guard = require(Scope.PAYLOAD_READ)

    @app.get(
        "/api/v1/payloads/{trace_id}",
        tags=["payloads"],
        responses={401: {}, 403: {}, 404: {}, 503: {}},
    )
    def get_payloads(
        request: Request,
        trace_id: str = Path(min_length=1, max_length=64, pattern=TRACE_ID_RE.pattern),
        grant: Grant = Depends(guard),  # noqa: B008 (FastAPI's idiom)
    ) -> dict[str, Any]:
        """Return the captured (redacted) prompts and responses of one trace; the read is audited."""
        client = request.client.host if request.client is not None else None
        try:
            rows = read_payloads(
                daemon.store, trace_id, who=grant.who, via="api", now=daemon.clock(), client=client
            )
        except WatcherError as exc:
            log.warning("api: reading payloads failed: %s", type(exc).__name__)
            raise HTTPException(503, "the store is unavailable; retry later") from None
        if not rows:
            raise HTTPException(404, "no payloads for this trace (not captured, or past retention.payloads)")
        return {"status": "success", "data": {"trace_id": trace_id, "payloads": redact.deep(rows)}}


# --- command line ----------------------------------------------------------------------------


__all__ = [
    "MAX_ROWS",
    "Access",
    "add_payload_routes",
    "audit_log",
    "read_payloads",
]
