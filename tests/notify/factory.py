"""Builders for the notify tests: a real SQLite store, settings, alerts on a virtual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, create_engine

from watcher.config import NotifySettings, ReceiverSettings, RouteSettings, Settings
from watcher.core import Alert, AlertState, Labels, TraceRef

T0 = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
TRACE_URL = "http://jaeger.test/trace/{trace_id}"


class SqliteStore:
    """The smallest thing with ``.session()``: what the notifier needs from ``store.db.Store``."""

    def __init__(self, path: Path) -> None:
        self.engine: sa.Engine = create_engine(f"sqlite:///{path}")
        SQLModel.metadata.create_all(self.engine)

    def session(self) -> Session:
        """Return a session whose objects stay usable after commit."""
        return Session(self.engine, expire_on_commit=False)


def make_settings(**overrides: Any) -> Settings:
    """Return settings with a recording-friendly default: one ``console`` receiver, fast retries."""
    notify = {
        "repeat_interval": timedelta(hours=4),
        "retry_initial": timedelta(seconds=5),
        "retry_max": timedelta(minutes=5),
        "max_age": timedelta(hours=24),
        **overrides.pop("notify", {}),
    }
    base: dict[str, Any] = {
        "receivers": {"console": ReceiverSettings(type="console")},
        "route": RouteSettings(receivers=["console"]),
        "trace_url": TRACE_URL,
        "external_url": "http://watcher.test",
        "notify": NotifySettings(**notify),
    }
    base.update(overrides)
    return Settings(**base)


def firing(
    rule: str = "SpendAnomaly",
    *,
    labels: dict[str, str] | None = None,
    active_at: datetime = T0,
    now: datetime | None = None,
    **kw: Any,
) -> Alert:
    """Return a firing alert whose episode started at ``active_at``."""
    defaults: dict[str, Any] = {
        "value": 12.3456,
        "expected": 1.2,
        "lower": 0.8,
        "upper": 2.1,
        "score": 0.97,
        "annotations": {"summary": "acme spends too much"},
        "traces": (
            TraceRef("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0.42, T0, "gpt-4o · acme"),
            TraceRef("a" * 32),
        ),
    }
    defaults.update(kw)
    return Alert(
        rule=rule,
        group="llm-cost",
        labels=Labels(labels if labels is not None else {"tenant": "acme"}),
        state=AlertState.FIRING,
        active_at=active_at,
        fired_at=active_at,
        last_eval=now or active_at + timedelta(minutes=25),
        **defaults,
    )


def resolved(alert: Alert, at: datetime) -> Alert:
    """Return ``alert`` resolved at ``at``."""
    from dataclasses import replace

    return replace(alert, state=AlertState.INACTIVE, resolved_at=at, last_eval=at)
