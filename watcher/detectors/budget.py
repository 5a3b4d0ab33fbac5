"""The ``budget`` detector kind: multi-window burn-rate alerts on a spend budget, with a forecast.

This module owns the budget period arithmetic (calendar day or month, UTC), the burn rates of a
series of per-step spends and the exhaustion forecast (``Forecast``, also what the cost digest
words). It does not own validating the spec (``rules.schema.BudgetDetector``) nor reading the
spend (``sources.sql``; ``notify.costdigest`` for the digest).

Input: each point is the spend of one step, ``(t - step, t]`` (the rule checker makes the query's
window equal to its step), so the detector adds up the period's spend point by point. A point
without rows (NaN) spent nothing: its verdict is "no data" (the rule's ``no_data`` policy) and the
sums, kept by time, are unchanged. A point on a period boundary belongs to the period it closes.

Burn rate of a window ``W`` at ``t``: the spend of ``(t - W, t]`` divided by what an even spend of
the budget over the period would have spent in ``W`` (``amount · W / period length``; a month is
its own number of days). A burn window pair fires when both its ``long`` and ``short`` windows burn
at ``burn`` or more times that rate (the short window makes the alert stop as soon as the spending
does); the point is anomalous when any pair fires (``require: all``: every pair). The value is the
burn rate both windows of the leading pair reach (the smaller of the two), ``upper`` that pair's
``burn`` and ``expected`` 1 (the even rate); the leading pair is the one nearest to firing or
furthest past it (``require: all``: the one furthest from firing), so a point is anomalous exactly
when its value is above its ``upper``. There is no warm-up: the lookback reaches the
period's start (``engine.group.rule_lookback``), and a time without rows spent nothing.

Forecast (``Forecast``): linear from the spend so far this period and the recent rate (the longest
burn window's spend per second): exhausted at ``now + (amount - spent) / rate`` when that falls in
the period, else the projection ``spent + rate · (period end - now)``. ``now`` is the point's time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core import Verdict
from .base import Detector, register, register_keyed
from .stats import excess_score

_EPS = 1e-6


def period_bounds(ts: float, period: str) -> tuple[float, float]:
    """Return the Unix start and end of the UTC day or month holding the point at ``ts``.

    A point at ``ts`` covers the step that ends at ``ts``, so a point exactly on a boundary belongs
    to the period it closes.
    """
    dt = datetime.fromtimestamp(ts - _EPS, UTC)
    start = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        end = start + timedelta(days=1)
    else:
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


def money(x: float, unit: str = "$") -> str:
    """Return ``$5,000`` (whole above $100) or ``$12.34`` (a negative sign before the unit)."""
    sign = "-" if x < 0 else ""
    x = abs(x)
    return f"{sign}{unit}{x:,.0f}" if x >= 100 else f"{sign}{unit}{x:,.2f}"


def when(ts: float, period: str) -> str:
    """Return when ``ts`` is, as a forecast says it: ``on Dec 19`` (month) or ``at 14:05 UTC`` (day)."""
    dt = datetime.fromtimestamp(ts, UTC)
    if period == "day":
        return f"at {dt:%H:%M} UTC"
    return f"on {dt:%b} {dt.day}"


@dataclass(frozen=True, slots=True)
class Forecast:
    """Where one budget stands at ``now`` and where the recent rate takes it."""

    name: str
    amount: float
    spent: float
    rate: float
    """Recent spend per second."""
    now: float
    period: str
    period_end: float
    exceeded_at: float | None = None
    """When the period's spend first reached the budget (None: not yet)."""

    @property
    def exhausted_at(self) -> float | None:
        """Return when the budget runs out at the recent rate, or None if not within the period."""
        if self.spent >= self.amount:
            return self.exceeded_at if self.exceeded_at is not None else self.now
        if not self.rate > 0:
            return None
        at = self.now + (self.amount - self.spent) / self.rate
        return at if at <= self.period_end else None

    @property
    def projected(self) -> float:
        """Return the spend at the period's end at the recent rate."""
        return self.spent + max(self.rate, 0.0) * max(self.period_end - self.now, 0.0)

    @property
    def share(self) -> float:
        """Return the spent share of the budget (1.0 = all of it)."""
        return self.spent / self.amount

    def text(self, unit: str = "$") -> str:
        """Return the sentence: ``at this rate acme exceeds $5,000 on Dec 19 ($3,100 spent, 62%)``."""
        who = self.name or "the budget"
        cap = money(self.amount, unit)
        this = "today" if self.period == "day" else "this month"
        spent = f"{money(self.spent, unit)} spent {this}, {self.share * 100:.0f}%"
        if self.spent >= self.amount:
            if self.exceeded_at is None:  # a total read from the store: when is not known
                return f"{who} has exceeded {cap} ({spent})"
            return f"{who} exceeded {cap} {when(self.exceeded_at, self.period)} ({spent})"
        at = self.exhausted_at
        if at is not None:
            return f"at this rate {who} exceeds {cap} {when(at, self.period)} ({spent})"
        end = when(self.period_end - 1, self.period) if self.period == "month" else "by midnight UTC"
        by = f"by {end.removeprefix('on ')}" if self.period == "month" else end
        return f"at this rate {who} stays within {cap} (forecast {money(self.projected, unit)} {by}; {spent})"


class BudgetBurn(Detector):
    """Adds up a series' per-step spend per period and judges its burn rates against the budget."""

    kind = "budget"

    def __init__(
        self,
        amount: float,
        windows: Sequence[tuple[float, float, float]],
        *,
        period: str = "month",
        require: str = "any",
        name: str = "",
        unit: str = "$",
    ) -> None:
        """``windows``: ``(long_s, short_s, burn)`` per condition."""
        super().__init__()
        self.amount = float(amount)
        self.windows = [(float(lo), float(sh), float(b)) for lo, sh, b in windows]
        self.period = period
        self.require = require
        self.name = name
        self.unit = unit
        self.horizon = max(lo for lo, _, _ in self.windows)
        self.period_start = -math.inf
        self.period_end = -math.inf
        self.spent = 0.0
        self.exceeded_at: float | None = None
        self.recent: deque[tuple[float, float]] = deque()

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        if ts > self.period_end or ts <= self.period_start:
            self.period_start, self.period_end = period_bounds(ts, self.period)
            self.spent = 0.0
            self.exceeded_at = None
        self.spent += value
        if self.exceeded_at is None and self.spent >= self.amount:
            self.exceeded_at = ts
        recent = self.recent
        if value != 0.0:
            recent.append((ts, value))
        while recent and recent[0][0] <= ts - self.horizon:
            recent.popleft()
        even = self.amount / (self.period_end - self.period_start)  # per second

        def burn(window: float) -> float:
            return sum(v for t, v in recent if t > ts - window) / window / even

        # any: the pair nearest to firing (or furthest past it) leads; all: the one furthest from it
        lead: tuple[float, float, float] | None = None  # both windows' burn, threshold, nearness
        for long_s, short_s, threshold in self.windows:
            both = min(burn(long_s), burn(short_s))
            here = (both, threshold, both / threshold)
            if lead is None or (here[2] > lead[2] if self.require == "any" else here[2] < lead[2]):
                lead = here
        assert lead is not None
        value_burn, threshold, nearness = lead
        anomalous = value_burn > threshold
        excess = max(nearness - 1.0, 0.0) if anomalous else 0.0
        forecast = Forecast(
            name=self.name,
            amount=self.amount,
            spent=self.spent,
            rate=burn(self.horizon) * even,
            now=ts,
            period=self.period,
            period_end=self.period_end,
            exceeded_at=self.exceeded_at,
        )
        return Verdict(
            ts=ts,
            value=value_burn,
            expected=1.0,
            upper=threshold,
            score=excess_score(excess, 1.0),
            anomalous=anomalous,
            surprise=excess / math.log(10.0),
            note=forecast.text(self.unit),
        )

    def forecast(self) -> Forecast | None:
        """Return the forecast at the last point seen (None before any point)."""
        if self.last_ts is None or not math.isfinite(self.period_end):
            return None
        last = self.last_ts
        rate = sum(v for t, v in self.recent if t > last - self.horizon) / self.horizon
        return Forecast(
            self.name, self.amount, self.spent, rate, last, self.period, self.period_end, self.exceeded_at
        )


def series_key(rule: Any, labels: Mapping[str, str]) -> str | None:
    """Return the value of a series' first ``query.by`` label (what ``amounts`` is keyed by), or None."""
    q = getattr(rule, "query", None)
    by: Sequence[str] = q.by if q is not None else ()
    return labels.get(by[0]) if by else None


def build_budget(spec: Any, key: str | None = None) -> Detector:
    """Build a budget detector from a ``BudgetDetector`` spec for the series whose key is ``key``."""
    return BudgetBurn(
        spec.amount_for(key),
        [(w.long.total_seconds(), w.short.total_seconds(), w.burn) for w in spec.windows],
        period=spec.period,
        require=spec.require,
        name=key or "",
        unit=spec.unit,
    )


register("budget")(build_budget)
register_keyed("budget", build_budget)
