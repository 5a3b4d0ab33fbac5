"""Release markers: deploys, prompt versions and model switches, stored and looked up by time.

This module owns the ``Marker`` noun, validating what a caller sends (the API, ``watcher annotate``),
writing it to ``release_markers`` and reading the markers of a time range, and the one matching
rule shared by alerts ("started 4 min after deploy X") and re-baselining: a marker applies to a
label set when every label both carry agrees. It does not own what the engine does with a marker
(``engine.rebaseline``, ``engine.group``) nor the HTTP route (``web.annotations``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import col, select

from ..core import format_duration, parse_duration, utc
from .db import Store
from .tables import MarkerRow

MarkerKind = Literal["deploy", "prompt_version", "model_switch"]
KINDS: tuple[str, ...] = ("deploy", "prompt_version", "model_switch")
DEFAULT_GRACE = timedelta(0)
"""Markers only annotate alerts unless they ask to re-baseline: a bad deploy must still page."""
MAX_GRACE = timedelta(days=1)
MAX_LABELS = 16


@dataclass(frozen=True, slots=True)
class Marker:
    """One planned change at ``ts``: what (``kind``, ``text``), where (``labels``), and its grace."""

    ts: datetime
    kind: str
    text: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    grace: timedelta = DEFAULT_GRACE
    """How long after ``ts`` the series it applies to re-baseline instead of alerting (0: none)."""
    id: int | None = None
    created_by: str = ""

    def title(self) -> str:
        """Return ``deploy api-v2.3`` (the kind, then the text or the labels)."""
        what = self.text or ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        kind = self.kind.replace("_", " ")
        return f"{kind} {what}".strip()

    def applies_to(self, labels: Mapping[str, str]) -> bool:
        """Tell whether every label both the marker and ``labels`` carry agrees."""
        return all(labels[k] == v for k, v in self.labels.items() if k in labels)

    def overlaps(self, labels: Mapping[str, str]) -> bool:
        """Tell whether the marker names this label set: no label of its own, or one shared and agreeing."""
        if not self.applies_to(labels):
            return False
        return not self.labels or any(k in labels for k in self.labels)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (API, CLI)."""
        return {
            "id": self.id,
            "time": utc(self.ts).isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "text": self.text,
            "labels": dict(self.labels),
            "rebaseline_s": self.grace.total_seconds(),
            "created_by": self.created_by,
        }


class MarkerIn(BaseModel):
    """What a caller may send: validated strictly (unknown fields are refused)."""

    model_config = ConfigDict(extra="forbid")

    kind: MarkerKind
    text: str = Field("", max_length=512)
    labels: dict[str, str] = Field(default_factory=dict)
    time: datetime | None = None
    """When the change happened; default: now (the caller's clock)."""
    rebaseline: timedelta | None = None
    """How long after ``time`` matching series re-baseline (``30m``); default none: only annotate."""

    @field_validator("rebaseline", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is None or isinstance(v, timedelta):
            return v
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError("a duration such as 30m, or seconds")
        d = timedelta(seconds=float(v)) if not isinstance(v, str) else parse_duration(v)
        if not timedelta(0) <= d <= MAX_GRACE:
            raise ValueError(f"between 0 and {format_duration(MAX_GRACE)}")
        return d

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for k, val in v.items():
            if not k or len(k) > 128 or not k.replace("_", "a").isalnum():
                raise ValueError(f"label name {k[:40]!r}: letters, digits and _ only (1-128)")
            if len(val) > 256:
                raise ValueError(f"label {k}: value longer than 256 characters")
        return v

    def marker(self, now: datetime, who: str) -> Marker:
        """Return the marker this asks for, dated ``now`` when no time was given."""
        grace = DEFAULT_GRACE if self.rebaseline is None else self.rebaseline
        ts = utc(self.time) if self.time is not None else utc(now)
        return Marker(ts, self.kind, self.text, dict(self.labels), grace, None, who)


def add_marker(store: Store, marker: Marker, *, now: datetime) -> Marker:
    """Write ``marker``; return it with its id. Raises ``StoreError``."""
    row = MarkerRow(
        ts=marker.ts,
        kind=marker.kind,
        text=marker.text,
        labels=dict(marker.labels),
        grace_s=marker.grace.total_seconds(),
        created_by=marker.created_by[:128],
        created_at=now,
    )
    try:
        with store.session() as s:
            s.add(row)
            s.commit()
            return _marker(row)
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("add release marker", exc) from None


def list_markers(store: Store, start: datetime, end: datetime, *, limit: int = 1000) -> list[Marker]:
    """Return the markers with ``start <= ts <= end``, oldest first. Raises ``StoreError``."""
    stmt = (
        select(MarkerRow)
        .where(col(MarkerRow.ts) >= start, col(MarkerRow.ts) <= end)
        .order_by(col(MarkerRow.ts), col(MarkerRow.id))
        .limit(limit)
    )
    try:
        with store.session() as s:
            return [_marker(r) for r in s.exec(stmt).all()]
    except sa.exc.SQLAlchemyError as exc:
        raise store.error("read release markers", exc) from None


def _marker(row: MarkerRow) -> Marker:
    return Marker(
        utc(row.ts),
        row.kind,
        row.text,
        dict(row.labels or {}),
        timedelta(seconds=row.grace_s or 0.0),
        row.id,
        row.created_by,
    )


def preceding(
    markers: Sequence[Marker], labels: Mapping[str, str], start: datetime, within: timedelta
) -> Marker | None:
    """Return the newest marker naming ``labels`` at or before ``start`` and at most ``within`` earlier."""
    best = None
    for m in markers:
        if start - within <= m.ts <= start and m.overlaps(labels) and (best is None or m.ts >= best.ts):
            best = m
    return best


__all__ = [
    "DEFAULT_GRACE",
    "KINDS",
    "Marker",
    "MarkerIn",
    "MarkerKind",
    "StaticMarkers",
    "StoreMarkers",
    "add_marker",
    "list_markers",
    "preceding",
]


class StoreMarkers:
    """The markers of the store, for the evaluator (``MarkerFeed``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def between(self, start: datetime, end: datetime) -> list[Marker]:
        """Return the markers with ``start < ts <= end``. Raises ``StoreError``."""
        return [m for m in list_markers(self.store, start, end) if m.ts > start]


class StaticMarkers:
    """A fixed list of markers (a backtest's, a test's), for the evaluator (``MarkerFeed``)."""

    def __init__(self, markers: Sequence[Marker]) -> None:
        self.markers = sorted(markers, key=lambda m: m.ts)

    def between(self, start: datetime, end: datetime) -> list[Marker]:
        """Return the markers with ``start < ts <= end``."""
        return [m for m in self.markers if start < m.ts <= end]
