"""The read/write HTTP API about alerting state: ``/api/v1/alerts``, ``/api/v1/rules``, silences.

This module owns these routes and the silence request model. Reads need scope ``read`` when
``server.read_token`` is set and are open otherwise (the server binds to localhost by default, like
Prometheus' and Alertmanager's APIs); writes (``POST`` and ``DELETE`` on silences) need scope
``admin`` (``server.admin_token``; unset: 403 naming it; the ingest token does not write).
Silences are written exactly as ``watcher silence add|expire`` writes them (``SilenceRow``,
matchers validated by ``notify.silences.parse_matcher``), so the CLI, the API and the muting stage agree.

It does not own what is shown (``data``), the app (``app``) nor the scopes (``tokens``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core import AlertState, format_duration, parse_duration, utc
from ..notify.silences import Matcher, matches_everything, parse_matcher
from ..regex import compile_linear
from ..store.tables import SilenceRow
from .data import (
    Redactor,
    active_alerts,
    filter_alerts,
    find_alert,
    mute_status,
    parse_filters,
    rule_groups,
    silence_dict,
    silences,
    state_history,
    with_thresholds,
)
from .tokens import Scope
from .view import DaemonView

log = logging.getLogger(__name__)

MAX_SILENCE = timedelta(days=30)
"""The default of ``notify.max_silence``."""


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("NUL characters are not allowed")
    return text


class MatcherIn(BaseModel):
    """One label matcher: ``name op value`` (ops ``=``, ``!=``, ``=~``, ``!~``; regexes fully anchored)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    value: str = Field("", max_length=1024)
    op: Literal["=", "!=", "=~", "!~"] = "="


class SilenceIn(BaseModel):
    """A new silence. Matchers are objects or text (``team=~"ml|data"``); give ``endsAt`` or ``duration``."""

    model_config = ConfigDict(extra="forbid")

    matchers: list[MatcherIn | str] = Field(min_length=1, max_length=50)
    startsAt: datetime | None = Field(None, description="default: now")
    endsAt: datetime | None = Field(None, description="default: startsAt + duration")
    duration: str | None = Field(None, max_length=32, description="e.g. 30m, 2h, 1d (default 1h)")
    createdBy: str = Field("", max_length=128)
    comment: str = Field("", max_length=4096)
    matchAll: bool = Field(
        False, description='required for a silence that mutes (nearly) every alert, e.g. alertname=~".*"'
    )

    @field_validator("createdBy", "comment")
    @classmethod
    def _text(cls, v: str) -> str:
        return _no_nul(v)

    @field_validator("matchers")
    @classmethod
    def _parse(cls, items: list[MatcherIn | str]) -> list[MatcherIn | str]:
        out: list[MatcherIn | str] = []
        for m in items:
            if isinstance(m, str):
                parsed = parse_matcher(_no_nul(m))  # ValueError → 422 with its reason
                out.append(MatcherIn(name=parsed.name, value=parsed.value, op=parsed.op))
                continue
            _no_nul(m.value)
            if m.op in ("=~", "!~"):
                try:
                    compile_linear(m.value)
                except ValueError as exc:
                    raise ValueError(f"matcher {m.name}{m.op}{m.value!r}: {exc}") from None
            out.append(m)
        return out

    @model_validator(mode="after")
    def _window(self) -> SilenceIn:
        if self.endsAt is not None and self.duration is not None:
            raise ValueError("give endsAt or duration, not both")
        if self.duration is not None and parse_duration(self.duration) <= timedelta(0):
            raise ValueError("duration must be positive")
        return self

    def window(self, now: datetime, longest: timedelta = MAX_SILENCE) -> tuple[datetime, datetime]:
        """Return (start, end), UTC; raise ValueError when the end is not after the start or too far."""
        try:
            start = utc(self.startsAt) if self.startsAt is not None else now
            if self.endsAt is not None:
                end = utc(self.endsAt)
            else:
                end = start + parse_duration(self.duration or "1h")
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"bad silence window: {exc}") from None
        if end <= now:
            raise ValueError("the silence would already be over (endsAt is in the past)")
        if end <= start:
            raise ValueError("endsAt must be after startsAt")
        if end - start > longest:
            raise ValueError(f"a silence may last at most {format_duration(longest)} (notify.max_silence)")
        return start, end

    def matcher_dicts(self) -> list[dict[str, str]]:
        """Return the stored form of the matchers."""
        out = []
        for m in self.matchers:
            assert isinstance(m, MatcherIn)
            Matcher(name=m.name, value=m.value, op=m.op)
            out.append({"name": m.name, "value": m.value, "op": m.op})
        return out


def silence_row(daemon: DaemonView, body: SilenceIn, t: datetime) -> SilenceRow:
    """Return the row of a new silence asked for at ``t`` (raise ValueError saying what is wrong).

    The API and the status page's silence form both create silences through here.
    """
    notify = getattr(daemon.settings, "notify", None)
    start, end = body.window(t, getattr(notify, "max_silence", MAX_SILENCE))
    if not body.matchAll and matches_everything(body.matcher_dicts()):
        raise ValueError(
            "these matchers mute (nearly) every alert; name a value (tenant=acme) "
            "or confirm with matchAll: true"
        )
    return SilenceRow(
        id=str(uuid.uuid4()),
        matchers=body.matcher_dicts(),
        starts_at=start,
        ends_at=end,
        created_by=body.createdBy,
        comment=body.comment,
        created_at=t,
    )


def _envelope(**data: Any) -> dict[str, Any]:
    return {"status": "success", "data": data}


def add_api_routes(app: FastAPI, daemon: DaemonView, require: Callable[..., Any], redact: Redactor) -> None:
    """Add ``/api/v1/alerts``, ``/api/v1/rules`` and ``/api/v1/silences`` to ``app``.

    ``require(scope)`` returns the dependency that admits a request with that scope (``app``).
    """
    auth = [Depends(require(Scope.ADMIN))]
    read = [Depends(require(Scope.READ))]

    @contextmanager
    def store_errors(action: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            log.warning("api: %s failed: %s", action, type(exc).__name__)
            raise HTTPException(503, "the store is unavailable; retry later") from None

    now = daemon.clock

    @app.get("/api/v1/alerts", tags=["alerts"], dependencies=read, responses={400: {}, 401: {}, 403: {}})
    def list_alerts(
        state: Literal["firing", "pending", "all"] = "all",
        filter: Annotated[  # Alertmanager's name for it
            list[str] | None,
            Query(
                max_length=2048,
                description="label matchers, Alertmanager's syntax: "
                'filter=tenant="acme"&filter=severity=~"page|ticket"',
            ),
        ] = None,
    ) -> dict[str, Any]:
        """List the current alerts: labels, state, value, expected band or threshold, since when,
        trace links, and why an alert is muted (``silencedBy``, ``inhibitedBy``, ``maintenance``)."""
        wanted = {"firing": [AlertState.FIRING], "pending": [AlertState.PENDING]}.get(
            state, [AlertState.FIRING, AlertState.PENDING]
        )
        try:
            matchers = parse_filters(("filter", f) for f in filter or [])
        except ValueError as exc:
            raise HTTPException(400, f"bad filter: {exc}"[:500]) from None
        alerts = with_thresholds(daemon, filter_alerts(active_alerts(daemon, wanted), matchers))
        body = _envelope(alerts=alerts)
        try:
            mute_status(daemon, alerts, now())
        except sa.exc.SQLAlchemyError as exc:  # the alerts are still served, without why they are muted
            log.warning("api: reading silences for the alerts failed: %s", type(exc).__name__)
            body["warnings"] = ["the store is unavailable: silencedBy/inhibitedBy are missing"]
        return redact.deep(body)  # type: ignore[no-any-return]

    @app.get(
        "/api/v1/alerts/{fingerprint}/history",
        tags=["alerts"],
        dependencies=read,
        responses={401: {}, 403: {}, 404: {}, 503: {}},
    )
    def alert_history(fingerprint: Annotated[str, PathParam(max_length=64)]) -> dict[str, Any]:
        """List one alert's state transitions, newest first: ``at``, ``from``, ``state`` (the state
        it went to), the episode's start, and the value and band at that evaluation."""
        with store_errors("reading the state history"):
            found = find_alert(daemon, fingerprint)
            if found is None:
                raise HTTPException(
                    404, f"no alert with fingerprint {fingerprint!r} (never seen, or long resolved)"
                )
            history = state_history(daemon, found[0])
        return redact.deep(_envelope(fingerprint=fingerprint, history=history))  # type: ignore[no-any-return]

    @app.get("/api/v1/rules", tags=["alerts"], dependencies=read, responses={401: {}, 403: {}, 503: {}})
    def list_rules() -> dict[str, Any]:
        """List the rule groups and rules with their health, last evaluation and last error."""
        body = _envelope(
            groups=rule_groups(daemon), lastReloadError=getattr(daemon, "last_reload_error", None)
        )
        return redact.deep(body)  # type: ignore[no-any-return]

    @app.get("/api/v1/silences", tags=["silences"], dependencies=read, responses={401: {}, 403: {}, 503: {}})
    def list_silences(include_expired: bool = False) -> dict[str, Any]:
        """List active and pending silences (``include_expired=true``: all)."""
        with store_errors("listing silences"):
            rows = silences(daemon, now(), include_expired=include_expired)
        return redact.deep(_envelope(silences=rows))  # type: ignore[no-any-return]

    @app.post(
        "/api/v1/silences",
        tags=["silences"],
        dependencies=auth,
        responses={401: {}, 403: {}, 413: {}, 503: {}},
    )
    def create_silence(body: SilenceIn) -> dict[str, Any]:
        """Mute the alerts matching every matcher between startsAt and endsAt."""
        t = now()
        try:
            row = silence_row(daemon, body, t)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        with store_errors("creating a silence"), daemon.store.session() as s:
            s.add(row)
            s.commit()
            out = silence_dict(row, t)
        log.info("silence %s created by %s via the API: %s", row.id, row.created_by or "-", out["text"])
        return redact.deep(_envelope(silence=out))  # type: ignore[no-any-return]

    @app.delete(
        "/api/v1/silences/{silence_id}",
        tags=["silences"],
        dependencies=auth,
        responses={401: {}, 403: {}, 404: {}, 503: {}},
    )
    def expire_silence(silence_id: str) -> dict[str, Any]:
        """End a silence now (an expired one is left as it is)."""
        t = now()
        with store_errors("expiring a silence"), daemon.store.session() as s:
            row = s.get(SilenceRow, silence_id)
            if row is None:
                raise HTTPException(404, f"no silence {silence_id!r}"[:200])
            if utc(row.ends_at) > t:
                row.ends_at = t
                s.add(row)
                s.commit()
                s.refresh(row)
                log.info("silence %s expired via the API", row.id)
            out = silence_dict(row, t)
        return redact.deep(_envelope(silence=out))  # type: ignore[no-any-return]
