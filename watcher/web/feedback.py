"""``/api/v1/alerts/feedback``: the on-call marks an alert episode a real incident or a false alarm.

This module owns the routes: ``POST /api/v1/alerts/feedback`` (scope ``admin``) records a verdict
on an alert the daemon holds (by fingerprint; its current or just-resolved episode) or, for an
alert no longer held, on the episode the body names (``alertname``, ``labels``, ``startsAt``);
``GET /api/v1/alerts/feedback`` (scope ``read``) lists the verdicts, or with ``format=incidents``
returns them as the incidents file ``watcher backtest --incidents`` reads (false alarms as
``expect: quiet`` windows). It does not own the storage (``store.feedback``). Handlers get the
store, the clock and a function returning the alerts held, never the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import Field

from ..core import Alert, AlertState, Labels, utc
from ..errors import WatcherError
from ..store.db import Store
from ..store.feedback import FeedbackIn, incidents_document, list_feedback, record
from .tokens import Grant, Scope

log = logging.getLogger(__name__)


class FeedbackBody(FeedbackIn):
    """``FeedbackIn`` plus what names an episode of an alert the daemon no longer holds."""

    alertname: str | None = Field(None, min_length=1, max_length=256)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    endsAt: datetime | None = None


def find_alert(alerts: Iterable[Alert], fingerprint: str) -> Alert | None:
    """Return the held alert with ``fingerprint``, if any."""
    return next((a for a in alerts if a.fingerprint == fingerprint), None)


def add_feedback_routes(
    app: FastAPI,
    store: Store,
    clock: Callable[[], datetime],
    require: Callable[..., Any],
    held: Callable[[], Iterable[Alert]],
) -> None:
    """Add ``POST/GET /api/v1/alerts/feedback`` to ``app``."""
    admin = require(Scope.ADMIN)
    read = [Depends(require(Scope.READ))]

    @app.post(
        "/api/v1/alerts/feedback", tags=["alerts"], responses={401: {}, 403: {}, 404: {}, 422: {}, 503: {}}
    )
    def mark_alert(body: FeedbackBody, grant: Grant = Depends(admin)) -> dict[str, Any]:  # noqa: B008
        """Mark an alert episode a real incident (``real``) or a false alarm (``false``)."""
        alert = find_alert(held(), body.fingerprint)
        if alert is None:
            if body.alertname is None or body.startsAt is None:
                raise HTTPException(
                    404,
                    "no current alert has this fingerprint; for an older episode send alertname, "
                    "labels and startsAt (and endsAt)",
                )
            alert = Alert(
                rule=body.alertname,
                group="",
                labels=Labels(body.labels),
                state=AlertState.INACTIVE,
                active_at=utc(body.startsAt),
                resolved_at=utc(body.endsAt) if body.endsAt is not None else None,
            )
            if alert.fingerprint != body.fingerprint:
                raise HTTPException(422, "fingerprint does not match alertname and labels")
        who = body.createdBy or grant.who
        start = utc(body.startsAt) if body.startsAt is not None else None
        try:
            saved = record(
                store,
                alert=alert,
                verdict=body.verdict,
                note=body.note,
                who=who,
                now=clock(),
                episode_start=start,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except WatcherError as exc:
            log.warning("api: recording alert feedback failed: %s", exc)
            raise HTTPException(503, "the store is unavailable; retry later") from None
        log.info("alert %s %s marked %s by %s", alert.rule, alert.fingerprint, saved.verdict, who)
        return {"status": "success", "data": {"feedback": saved.to_dict()}}

    @app.get(
        "/api/v1/alerts/feedback", tags=["alerts"], dependencies=read, responses={401: {}, 403: {}, 503: {}}
    )
    def get_feedback(
        from_: Annotated[datetime | None, Query(alias="from")] = None,
        to: datetime | None = None,
        format: Literal["json", "incidents"] = "json",
    ) -> dict[str, Any]:
        """List the verdicts on episodes starting in ``[from, to]``; ``format=incidents``: as incidents."""
        try:
            rows = list_feedback(store, utc(from_) if from_ else None, utc(to) if to else None)
        except WatcherError as exc:
            log.warning("api: listing alert feedback failed: %s", exc)
            raise HTTPException(503, "the store is unavailable; retry later") from None
        if format == "incidents":
            return {"status": "success", "data": {"incidents": incidents_document(rows)}}
        return {"status": "success", "data": {"feedback": [f.to_dict() for f in rows]}}


__all__ = ["FeedbackBody", "add_feedback_routes", "find_alert"]
