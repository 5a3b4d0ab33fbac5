"""The cost digest: a scheduled message per receiver with spend vs budget, top models and forecasts.

This module owns what the digest says (``collect`` reads the store at ``now``: for every loaded
``budget`` rule, each key's spend this period against its budget with the forecast of
``detectors.budget``; the total spend and the top models over ``window``), its wording (``render``:
a ``Notification`` of the pseudo-alert ``WatcherCostDigest``, its data-derived text escaped by each
receiver as an alert's is), when it is due (``due``: once a day at ``at`` in ``time_zone``, caught up
later that day if the daemon was down; an outbox row of the day's dedup key means sent) and queuing
it (``enqueue_due``) in the outbox, so it is retried in order and dead-lettered like an alert.
It does not own reading the clock (the daemon's job and the CLI pass ``now``), delivery
(``outbox``) nor the budget arithmetic (``detectors.budget``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..config import CostDigestSettings
from ..core import Alert, AlertState, Labels, Listed, Notification, NotificationKind, utc
from ..detectors.budget import Forecast, money, period_bounds
from ..rules.schema import GUARDED_LABELS, BudgetDetector, Group, Rule
from ..store.tables import Call, OutboxRow
from .outbox import enqueue

ALERTNAME = "WatcherCostDigest"
NONE = "(none)"
"""How a digest names the key of rows without that label."""
FINGERPRINT = "cost-digest"
"""The outbox key of every digest row: a receiver's digests are delivered in the order queued."""


class _Sessions(Protocol):
    def session(self) -> Session: ...


@dataclass(frozen=True, slots=True)
class BudgetLines:
    """The forecasts of one budget rule's keys, biggest share first (``hidden``: keys not listed)."""

    rule: str
    period: str
    label: str | None
    forecasts: tuple[Forecast, ...]
    hidden: int = 0
    unit: str = "$"


@dataclass(frozen=True, slots=True)
class Digest:
    """What one digest says, at ``now``."""

    now: datetime
    window: timedelta
    total: float
    models: tuple[tuple[str, float], ...]
    budgets: tuple[BudgetLines, ...]


def budget_rules(groups: Iterable[Group]) -> list[Rule]:
    """Return the rules with a ``budget`` detector on the calls table, in file order."""
    return [
        r
        for g in groups
        for r in g.rules
        if isinstance(r.detector, BudgetDetector) and r.source == "calls" and r.query is not None
    ]


def _where(c: Any, filters: Mapping[str, str | list[str]]) -> list[Any]:
    out = []
    for name, wanted in filters.items():
        values = [wanted] if isinstance(wanted, str) else list(wanted)
        cond = c[name].in_(values)
        out.append(sa.or_(cond, c[name].is_(None)) if "" in values else cond)
    return out


def _sums(store: _Sessions, measure: Any, key: Any | None, conds: Sequence[Any]) -> dict[str | None, float]:
    """Return ``{key value: sum}`` of ``measure`` over the rows matching ``conds``."""
    cols = [key, sa.func.sum(measure)] if key is not None else [sa.func.sum(measure)]
    stmt = sa.select(*cols).where(*conds)
    if key is not None:
        stmt = stmt.group_by(key)
    with store.session() as s:
        rows = s.execute(stmt).all()
    if key is None:
        return {None: float(rows[0][0] or 0.0)} if rows else {}
    return {(None if k is None else str(k)): float(v or 0.0) for k, v in rows}


def _budget_lines(store: _Sessions, rule: Rule, now: datetime, top: int) -> BudgetLines:
    """Return the forecasts of one budget rule's keys at ``now``."""
    spec = rule.detector
    q = rule.query
    assert isinstance(spec, BudgetDetector) and q is not None
    c: Any = Call.__table__.c  # type: ignore[attr-defined]
    measure = sa.literal(1.0) if q.agg == "count" or q.field is None else c[q.field]
    if q.field == "total_tokens":
        measure = c.input_tokens + c.output_tokens
    label = q.by[0] if q.by else None
    key = c[label] if label is not None else None
    ts = now.timestamp()
    start, end = period_bounds(ts, spec.period)
    horizon = max(w.long for w in spec.windows)
    conds = _where(c, q.where)
    at = utc(now)
    spent = _sums(store, measure, key, [c.ts > datetime.fromtimestamp(start, UTC), c.ts <= at, *conds])
    recent = _sums(store, measure, key, [c.ts > at - horizon, c.ts <= at, *conds])
    keys = set(spent) | set(spec.amounts if label is not None else ())
    if label in GUARDED_LABELS:
        keys.discard(None)  # rows without a user are nobody's spend
    forecasts = [
        Forecast(
            name=(k if k else NONE) if label is not None else "",
            amount=spec.amount_for(k),
            spent=spent.get(k, 0.0),
            rate=recent.get(k, 0.0) / horizon.total_seconds(),
            now=ts,
            period=spec.period,
            period_end=end,
        )
        for k in keys
    ]
    forecasts.sort(key=lambda f: (-f.share, f.name))
    hidden = max(0, len(forecasts) - top)
    return BudgetLines(rule.alert, spec.period, label, tuple(forecasts[:top]), hidden, spec.unit)


def collect(store: _Sessions, rules: Sequence[Rule], now: datetime, settings: CostDigestSettings) -> Digest:
    """Read what the digest at ``now`` says from the store."""
    now = utc(now)
    c: Any = Call.__table__.c  # type: ignore[attr-defined]
    span = [c.ts > now - settings.window, c.ts <= now, c.cost_usd.is_not(None)]
    total = _sums(store, c.cost_usd, None, span).get(None, 0.0)
    models: list[tuple[str, float]] = []
    if settings.top_models:
        stmt = (
            sa.select(c.model, sa.func.sum(c.cost_usd).label("spend"))
            .where(*span)
            .group_by(c.model)
            .order_by(sa.desc("spend"), c.model)
            .limit(settings.top_models)
        )
        with store.session() as s:
            models = [(str(m or "(none)"), float(v or 0.0)) for m, v in s.execute(stmt).all()]
    lines = tuple(_budget_lines(store, r, now, settings.top_keys) for r in rules)
    return Digest(now, settings.window, total, tuple(models), lines)


def _span_text(window: timedelta) -> str:
    hours = window.total_seconds() / 3600
    return f"the last {hours:g}h" if hours < 48 else f"the last {hours / 24:g} days"


def text(d: Digest) -> tuple[str, str]:
    """Return the digest's headline and its detail lines (plain text; receivers escape it)."""
    head = f"LLM spend: {money(d.total)} in {_span_text(d.window)}"
    lines: list[str] = []
    for b in d.budgets:
        per = "daily" if b.period == "day" else "monthly"
        by = f" per {b.label}" if b.label else ""
        lines.append(f"{b.rule} ({per} budget{by}):")
        if not b.forecasts:
            lines.append("  no spend this period")
        for f in b.forecasts:
            who = f.name or "total"
            u = b.unit
            share = f"{f.share * 100:.0f}%"
            lines.append(f"  {who}: {money(f.spent, u)} of {money(f.amount, u)} ({share}); {f.text(u)}")
        if b.hidden:
            lines.append(f"  … and {b.hidden} more")
    if d.models:
        lines.append(f"Top models ({_span_text(d.window)}):")
        lines.extend(f"  {m}: {money(v)}" for m, v in d.models)
    if not lines:
        lines.append("no budget rules are loaded (docs/budgets.md)")
    return head, "\n".join(lines)


def dedup_key(receiver: str, day: str) -> str:
    """Return the dedup key of one receiver's digest of one local day (``2026-12-07``)."""
    return hashlib.sha256(f"{FINGERPRINT}|{receiver}|{day}".encode()).hexdigest()[:32]


def render(d: Digest, receiver: str, day: str) -> Notification:
    """Return the digest as a notification for ``receiver`` (the pseudo-alert ``WatcherCostDigest``)."""
    head, body = text(d)
    alert = Alert(
        rule=ALERTNAME,
        group="watcher",
        labels=Labels({"digest": "cost"}),
        state=AlertState.FIRING,
        active_at=d.now,
        fired_at=d.now,
        last_eval=d.now,
        value=d.total,
        annotations={"summary": head, "description": body, "unit": "$"},
    )
    return Notification(
        receiver=receiver,
        kind=NotificationKind.FIRING,
        dedup_key=dedup_key(receiver, day),
        title=f"[COST DIGEST] {day}: {head}",
        body=f"{head}\n\n{body}",
        alert=alert,
        listed=(Listed(alert, NotificationKind.FIRING),),
    )


def local_day(now: datetime, settings: CostDigestSettings) -> tuple[str, bool]:
    """Return the local day of ``now`` (``2026-12-07``) and whether its digest time has come."""
    local = utc(now).astimezone(ZoneInfo(settings.time_zone))
    hh, mm = (int(x) for x in settings.at.split(":"))
    return local.date().isoformat(), (local.hour, local.minute) >= (hh, mm)


def due(store: _Sessions, now: datetime, settings: CostDigestSettings) -> list[str]:
    """Return the receivers whose digest of today is due at ``now`` and not queued yet."""
    day, time_has_come = local_day(now, settings)
    if not time_has_come:
        return []
    keys = {dedup_key(r, day): r for r in settings.receivers}
    with store.session() as s:
        stmt = select(OutboxRow.dedup_key).where(col(OutboxRow.dedup_key).in_(list(keys)))
        queued = set(s.exec(stmt).all())
    return [r for k, r in keys.items() if k not in queued]


def enqueue_due(
    store: _Sessions, rules: Sequence[Rule], now: datetime, settings: CostDigestSettings
) -> list[str]:
    """Queue today's digest for each receiver it is due for; return those receivers."""
    receivers = due(store, now, settings)
    if not receivers:
        return []
    d = collect(store, rules, now, settings)
    day, _ = local_day(now, settings)
    with store.session() as s:
        for receiver in receivers:
            enqueue(s, render(d, receiver, day), utc(now), fingerprint=FINGERPRINT)
        s.commit()
    return receivers


__all__ = [
    "ALERTNAME",
    "BudgetLines",
    "Digest",
    "budget_rules",
    "collect",
    "dedup_key",
    "due",
    "enqueue_due",
    "local_day",
    "render",
    "text",
]
