"""Feedback from the pager: the on-call's verdict on an alert episode, and its export as incidents.

This module owns validating a verdict (``real`` incident or ``false`` alarm), writing it to
``alert_feedback`` (one verdict per episode: a second one replaces the first), reading the verdicts
of a time range, and turning them into the incidents file ``watcher backtest --incidents`` reads:
a real incident becomes an incident the rule must catch; a false alarm becomes a *quiet* window
(``expect: quiet``) the rule must not fire in, so every false alarm becomes a regression case. It
does not own the HTTP route (``web.feedback``) nor the CLI (``watcher feedback``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from ..core import Alert, utc
from .db import Store
from .tables import FeedbackRow

Verdict = Literal["real", "false"]
VERDICTS: tuple[str, ...] = ("real", "false")


@dataclass(frozen=True, slots=True)
class Feedback:
    """One verdict on one alert episode (``fingerprint`` + ``episode_start``)."""

    fingerprint: str
    rule: str
    group: str
    labels: Mapping[str, str]
    episode_start: datetime
    episode_end: datetime | None
    verdict: str
    note: str = ""
    created_by: str = ""
    created_at: datetime | None = None
    id: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (API, CLI)."""
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "alertname": self.rule,
            "group": self.group,
            "labels": dict(self.labels),
            "startsAt": _iso(self.episode_start),
            "endsAt": _iso(self.episode_end),
            "verdict": self.verdict,
            "note": self.note,
            "createdBy": self.created_by,
            "createdAt": _iso(self.created_at),
        }

    def incident(self) -> dict[str, Any]:
        """Return this verdict as one entry of an incidents file (``backtest --incidents``)."""
        kind = "incident" if self.verdict == "real" else "false-alarm"
        entry: dict[str, Any] = {
            "id": f"{kind}-{self.rule}-{self.fingerprint[:8]}-{self.episode_start:%Y%m%dT%H%M}",
            "start": _iso(self.episode_start),
            "end": _iso(self.episode_end),
            "alert": self.rule,
            "labels": {k: v for k, v in self.labels.items() if k != "alertname"},
        }
        if self.verdict == "false":
            entry["expect"] = "quiet"
        if self.note:
            entry["note"] = self.note
        if entry["end"] is None:
            del entry["end"]
        return entry


class FeedbackIn(BaseModel):
    """What the pager sends: which alert (and episode), the verdict, a note."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: str = Field(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")
    verdict: Verdict
    note: str = Field("", max_length=2000)
    startsAt: datetime | None = None
    """The episode's start (``activeAt``); default: the alert's current or latest episode."""
    createdBy: str = Field("", max_length=128)


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else utc(ts).isoformat().replace("+00:00", "Z")


def record(
    store: Store,
    *,
    alert: Alert,
    verdict: str,
    note: str = "",
    who: str = "",
    now: datetime,
    episode_start: datetime | None = None,
) -> Feedback:
    """Store the verdict on ``alert``'s episode, replacing an earlier one; return it (``StoreError``)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    start = episode_start or alert.active_at or alert.fired_at
    if start is None:
        raise ValueError("the alert has no episode start; pass the episode's start time")
    end = alert.resolved_at if episode_start is None or episode_start == alert.active_at else None
    try:
        with store.session() as s:
            row = s.exec(
                select(FeedbackRow).where(
                    col(FeedbackRow.fingerprint) == alert.fingerprint, col(FeedbackRow.episode_start) == start
                )
            ).first()
            if row is None:
                row = FeedbackRow(
                    fingerprint=alert.fingerprint, episode_start=start, verdict=verdict, rule=alert.rule
                )
            row.rule = alert.rule
            row.group_name = alert.group
            row.labels = dict(alert.labels)
            row.episode_end = end
            row.verdict = verdict
            row.note = note
            row.created_by = who[:128]
            row.created_at = now
            s.add(row)
            s.commit()
            s.refresh(row)
            return _feedback(row)
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("record alert feedback", exc) from None


def list_feedback(
    store: Store, start: datetime | None = None, end: datetime | None = None, *, limit: int = 10_000
) -> list[Feedback]:
    """Return the verdicts on episodes starting in ``[start, end]``, oldest first. Raises ``StoreError``."""
    stmt = select(FeedbackRow)
    if start is not None:
        stmt = stmt.where(col(FeedbackRow.episode_start) >= start)
    if end is not None:
        stmt = stmt.where(col(FeedbackRow.episode_start) <= end)
    stmt = stmt.order_by(col(FeedbackRow.episode_start), col(FeedbackRow.id)).limit(limit)
    try:
        with store.session() as s:
            return [_feedback(r) for r in s.exec(stmt).all()]
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("read alert feedback", exc) from None


def _feedback(row: FeedbackRow) -> Feedback:
    return Feedback(
        fingerprint=row.fingerprint,
        rule=row.rule,
        group=row.group_name,
        labels=dict(row.labels or {}),
        episode_start=utc(row.episode_start),
        episode_end=utc(row.episode_end) if row.episode_end is not None else None,
        verdict=row.verdict,
        note=row.note,
        created_by=row.created_by,
        created_at=utc(row.created_at) if row.created_at is not None else None,
        id=row.id,
    )


def incidents_document(feedback: list[Feedback]) -> list[dict[str, Any]]:
    """Return the incidents file (a YAML/JSON list) for ``feedback``: real incidents and quiet windows."""
    return [f.incident() for f in feedback]


__all__ = [
    "VERDICTS",
    "Feedback",
    "FeedbackIn",
    "Verdict",
    "incidents_document",
    "list_feedback",
    "record",
]
