"""``/api/v1/annotations``: release markers (deploys, prompt versions, model switches) over HTTP.

This module owns the two routes: ``POST /api/v1/annotations`` (a deploy pipeline or an admin adds
a marker; scope ``admin`` or ``ingest``) and ``GET /api/v1/annotations`` (scope ``read``). The body
is validated strictly (``store.markers.MarkerIn``: unknown fields, bad labels and durations are a
422 naming the field); a store failure is a 503. It does not own the markers' storage or meaning
(``store.markers``) nor what the engine does with them (``engine.why``, ``engine.rebaseline``).
Handlers get the store and the daemon's clock, never the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query

from ..core import utc
from ..errors import WatcherError
from ..store.db import Store
from ..store.markers import MarkerIn, add_marker, list_markers
from .tokens import Grant, Scope

log = logging.getLogger(__name__)

DEFAULT_SPAN = timedelta(days=7)
MAX_SPAN = timedelta(days=90)


def add_annotation_routes(
    app: FastAPI, store: Store, clock: Callable[[], datetime], require: Callable[..., Any]
) -> None:
    """Add ``POST/GET /api/v1/annotations`` to ``app`` (``require(scope, also=…)``: ``server``)."""
    writer = require(Scope.ADMIN, also=(Scope.INGEST,))
    read = [Depends(require(Scope.READ))]

    @app.post("/api/v1/annotations", tags=["annotations"], responses={401: {}, 403: {}, 422: {}, 503: {}})
    def create_annotation(body: MarkerIn, grant: Grant = Depends(writer)) -> dict[str, Any]:  # noqa: B008
        """Add a release marker: alerts that start after it say so; with ``rebaseline`` the series it
        names adapt to their new level without paging."""
        now = clock()
        marker = body.marker(now, grant.who)
        if marker.ts > now + timedelta(days=1):
            raise HTTPException(422, "time is more than a day in the future")
        try:
            saved = add_marker(store, marker, now=now)
        except WatcherError as exc:
            log.warning("api: adding a release marker failed: %s", exc)
            raise HTTPException(503, "the store is unavailable; retry later") from None
        log.info("release marker %s added by %s: %s", saved.id, grant.who, saved.title())
        return {"status": "success", "data": {"annotation": saved.to_dict()}}

    @app.get(
        "/api/v1/annotations", tags=["annotations"], dependencies=read, responses={401: {}, 403: {}, 503: {}}
    )
    def get_annotations(
        from_: Annotated[datetime | None, Query(alias="from")] = None,
        to: datetime | None = None,
    ) -> dict[str, Any]:
        """List the release markers between ``from`` and ``to`` (default: the last 7 days)."""
        end = utc(to) if to is not None else clock()
        start = utc(from_) if from_ is not None else end - DEFAULT_SPAN
        if end < start or end - start > MAX_SPAN:
            raise HTTPException(422, "from must precede to, at most 90 days apart")
        try:
            markers = list_markers(store, start, end)
        except WatcherError as exc:
            log.warning("api: listing release markers failed: %s", exc)
            raise HTTPException(503, "the store is unavailable; retry later") from None
        return {"status": "success", "data": {"annotations": [m.to_dict() for m in markers]}}


__all__ = ["add_annotation_routes"]
