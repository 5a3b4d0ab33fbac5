"""Persistence of alert state and rule health in the store.

This module owns the mapping between ``core.Alert`` and the ``alerts`` table, and the per-rule
health rows of ``eval_runs``. It does not own the transitions (``alerting``) nor when to save
(``group``). Saving after every evaluation is what lets a restart neither re-page nor forget a
firing alert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, delete, select

from ..core import Alert, AlertState, Labels, trace_from_dict, trace_to_dict
from ..errors import StoreError
from ..store.tables import AlertRow, EvalRunRow, TransitionRow


class SessionSource(Protocol):
    """Anything that opens sessions on the store (``store.db.Store``)."""

    def session(self) -> Session: ...


@contextmanager
def _translated(store: SessionSource, action: str) -> Iterator[None]:
    """Turn database errors into a one-line StoreError (password redacted by the store)."""
    try:
        yield
    except SQLAlchemyError as exc:
        make = getattr(store, "error", None)
        if make is not None:
            raise make(action, exc) from None
        raise StoreError(f"store: {action} failed: {type(exc).__name__}") from None


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _unnum(x: float | None) -> float:
    return math.nan if x is None else float(x)


def alert_to_row(alert: Alert) -> AlertRow:
    """Return the table row for ``alert``."""
    return AlertRow(
        fingerprint=alert.fingerprint,
        rule=alert.rule,
        group_name=alert.group,
        labels=dict(alert.labels),
        state=int(alert.state),
        active_at=alert.active_at,
        fired_at=alert.fired_at,
        resolved_at=alert.resolved_at,
        last_eval=alert.last_eval,
        keep_firing_since=alert.keep_firing_since,
        value=_num(alert.value),
        expected=_num(alert.expected),
        lower=_num(alert.lower),
        upper=_num(alert.upper),
        score=_num(alert.score),
        surprise=_num(alert.surprise),
        annotations=dict(alert.annotations),
        traces=[trace_to_dict(t) for t in alert.traces],
    )


def row_to_alert(row: AlertRow) -> Alert:
    """Return the alert stored in ``row``."""
    traces = tuple(trace_from_dict(t) for t in (row.traces or []))
    return Alert(
        rule=row.rule,
        group=row.group_name,
        labels=Labels(row.labels or {}),
        state=AlertState(row.state),
        active_at=row.active_at,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        last_eval=row.last_eval,
        keep_firing_since=row.keep_firing_since,
        value=_unnum(row.value),
        expected=_unnum(row.expected),
        lower=_unnum(row.lower),
        upper=_unnum(row.upper),
        score=_unnum(row.score) if row.score is not None else 0.0,
        surprise=_unnum(row.surprise) if row.surprise is not None else 0.0,
        annotations=dict(row.annotations or {}),
        traces=traces,
    )


def transition_of(alert: Alert) -> tuple[str, str] | None:
    """Return ``(from, to)`` when ``alert`` changed state at its last evaluation, else None.

    The state machine stamps the time of each transition (``active_at``, ``fired_at``,
    ``resolved_at``), so a stamp equal to ``last_eval`` says the alert changed state just now,
    without reading the previous row. A pending alert that clears is dropped, not written, and
    so has no transition here.
    """
    at = alert.last_eval
    if at is None:
        return None
    if alert.state is AlertState.PENDING and alert.active_at == at:
        return ("inactive", "pending")
    if alert.state is AlertState.FIRING and alert.fired_at == at:
        return ("pending" if alert.active_at is not None and alert.active_at < at else "inactive", "firing")
    if alert.resolved and alert.resolved_at == at:
        return ("firing", "resolved")
    return None


def transition_rows(changed: Iterable[Alert]) -> list[dict[str, Any]]:
    """Return the ``alert_transitions`` rows of the alerts in ``changed`` that changed state."""
    out = []
    for alert in changed:
        step = transition_of(alert)
        if step is None:
            continue
        out.append(
            {
                "fingerprint": alert.fingerprint,
                "rule": alert.rule,
                "group_name": alert.group,
                "at": alert.last_eval,
                "from_state": step[0],
                "to_state": step[1],
                "episode_start": alert.active_at or alert.fired_at,
                "value": _num(alert.value),
                "expected": _num(alert.expected),
                "lower": _num(alert.lower),
                "upper": _num(alert.upper),
            }
        )
    return out


def write_alerts(session: Session, changed: Iterable[Alert], deleted: Iterable[str]) -> None:
    """Upsert ``changed`` and delete ``deleted`` inside the caller's transaction (no commit here).

    The daemon calls it in the transaction that also writes the notification log and the outbox,
    so a state transition and the message about it are committed together or not at all. The
    transitions among ``changed`` are appended to ``alert_transitions`` in the same transaction.
    """
    changed = list(changed)
    rows = [alert_to_row(alert).model_dump() for alert in changed]
    if rows:
        # One upsert for the whole tick (executemany): a merge per alert costs a SELECT and an
        # UPDATE each, ~1 ms, which is seconds per tick in an alert storm.
        table = AlertRow.__table__  # type: ignore[attr-defined]
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.fingerprint],
            set_={c.name: stmt.excluded[c.name] for c in table.c if c.name != "fingerprint"},
        )
        session.execute(stmt, rows)
        steps = transition_rows(changed)
        if steps:
            history = TransitionRow.__table__  # type: ignore[attr-defined]
            keys = ["fingerprint", "at", "to_state"]
            session.execute(insert(history).on_conflict_do_nothing(index_elements=keys), steps)
    gone = list(deleted)
    if gone:
        session.exec(delete(AlertRow).where(col(AlertRow.fingerprint).in_(gone)))


@dataclass(frozen=True, slots=True)
class RuleHealth:
    """The outcome of one rule evaluation, as the status page and ``eval_runs`` show it."""

    group: str
    rule: str
    ok: bool
    at: datetime
    duration_s: float
    error: str | None = None
    series: int = 0


class AlertStore:
    """Reads and writes alert state and rule health."""

    def __init__(self, store: SessionSource) -> None:
        self._store = store

    def load(self, group: str | None = None) -> list[Alert]:
        """Return every stored alert, or those of one group."""
        with _translated(self._store, "loading alerts"), self._store.session() as s:
            q = select(AlertRow)
            if group is not None:
                q = q.where(AlertRow.group_name == group)
            return [row_to_alert(r) for r in s.exec(q).all()]

    def save(self, changed: Iterable[Alert], deleted: Iterable[str]) -> None:
        """Upsert ``changed`` alerts and delete the ``deleted`` fingerprints, in one transaction."""
        changed = list(changed)
        deleted = list(deleted)
        if not changed and not deleted:
            return
        with _translated(self._store, "saving alert state"), self._store.session() as s:
            write_alerts(s, changed, deleted)
            s.commit()

    def record_health(self, results: Iterable[RuleHealth]) -> None:
        """Upsert the health row of each evaluated rule, in one statement."""
        rows = [
            {
                "group_name": h.group,
                "rule": h.rule,
                "last_eval": h.at,
                "duration_s": h.duration_s,
                "health": "ok" if h.ok else "err",
                "last_error": h.error,
                "evaluations": 1,
                "failures": 0 if h.ok else 1,
                "series": h.series,
            }
            for h in results
        ]
        if not rows:
            return
        table = EvalRunRow.__table__  # type: ignore[attr-defined]
        with _translated(self._store, "recording rule health"), self._store.session() as s:
            insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
            stmt = insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.group_name, table.c.rule],
                set_={
                    "last_eval": stmt.excluded.last_eval,
                    "duration_s": stmt.excluded.duration_s,
                    "health": stmt.excluded.health,
                    "last_error": stmt.excluded.last_error,
                    "series": stmt.excluded.series,
                    "evaluations": table.c.evaluations + 1,
                    "failures": table.c.failures + stmt.excluded.failures,
                },
            )
            s.execute(stmt, rows)
            s.commit()

    def health(self) -> list[dict[str, Any]]:
        """Return every rule's health row as a plain dict."""
        with _translated(self._store, "reading rule health"), self._store.session() as s:
            return [r.model_dump() for r in s.exec(select(EvalRunRow)).all()]
