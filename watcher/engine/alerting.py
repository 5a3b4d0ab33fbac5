"""The alert state machine: one pure step from the previous alert and this evaluation's observation.

This module owns the transitions inactive → pending → firing → resolved, ``for``,
``keep_firing_for`` and the retention of resolved alerts. It does not own fetching, detection,
persistence or notification, and it never reads the clock: ``now`` is a parameter, so tests step
through evaluations as a table.

Semantics follow Prometheus:

* an active observation makes a new alert pending at ``now``; it fires once it has been active for
  ``for`` (``for: 0`` fires on the first evaluation);
* a pending alert whose condition stops holding is dropped (it never fired, nothing to resolve);
* a firing alert whose condition stops holding stays firing until it has been inactive for
  ``keep_firing_for``, then resolves (``resolved_at``) and is kept ``resolved_retention`` so the
  resolve can be re-sent; an active observation during that time starts a new episode;
* ``None`` as the observation means "no verdict this time" (no data under the keep_state policy):
  nothing changes except that an expired resolved alert is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ..core import Alert, AlertState, Labels, TraceRef


@dataclass(frozen=True, slots=True)
class Timing:
    """The durations that drive the state machine for one rule."""

    for_: timedelta = timedelta(0)
    keep_firing_for: timedelta = timedelta(0)
    resolved_retention: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one evaluation saw for one label set."""

    active: bool
    value: float = math.nan
    expected: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    score: float = 0.0
    annotations: Mapping[str, str] = field(default_factory=dict)
    traces: tuple[TraceRef, ...] = ()
    surprise: float = 0.0


def step(
    prev: Alert | None,
    obs: Observation | None,
    now: datetime,
    timing: Timing,
    *,
    rule: str,
    group: str,
    labels: Labels,
) -> Alert | None:
    """Return the alert after one evaluation at ``now``, or None when there is no alert to keep."""
    if obs is None:
        return _expire(prev, now, timing)

    if prev is None or prev.state is AlertState.INACTIVE:
        if not obs.active:
            return _expire(prev, now, timing)
        state = AlertState.FIRING if timing.for_ <= timedelta(0) else AlertState.PENDING
        return _with_obs(
            Alert(
                rule=rule,
                group=group,
                labels=labels,
                state=state,
                active_at=now,
                fired_at=now if state is AlertState.FIRING else None,
            ),
            obs,
            now,
        )

    if prev.state is AlertState.PENDING:
        if not obs.active:
            return None
        assert prev.active_at is not None
        if now - prev.active_at >= timing.for_:
            return _with_obs(replace(prev, state=AlertState.FIRING, fired_at=now), obs, now)
        return _with_obs(prev, obs, now)

    # FIRING
    if obs.active:
        return _with_obs(replace(prev, keep_firing_since=None), obs, now)
    since = prev.keep_firing_since or now
    if now - since < timing.keep_firing_for:
        return _with_obs(replace(prev, keep_firing_since=since), obs, now, keep_traces=True)
    return _with_obs(
        replace(prev, state=AlertState.INACTIVE, resolved_at=now, keep_firing_since=None),
        obs,
        now,
        keep_traces=True,
    )


def _expire(prev: Alert | None, now: datetime, timing: Timing) -> Alert | None:
    if prev is None:
        return None
    if prev.state is AlertState.INACTIVE and (
        prev.resolved_at is None or now - prev.resolved_at > timing.resolved_retention
    ):
        return None
    return prev


def _with_obs(alert: Alert, obs: Observation, now: datetime, *, keep_traces: bool = False) -> Alert:
    """Return ``alert`` carrying the observation's numbers; an inactive observation keeps the traces."""
    value_known = not math.isnan(obs.value)
    return replace(
        alert,
        last_eval=now,
        value=obs.value if value_known else alert.value,
        expected=obs.expected if value_known else alert.expected,
        lower=obs.lower if value_known else alert.lower,
        upper=obs.upper if value_known else alert.upper,
        score=obs.score if value_known else alert.score,
        surprise=obs.surprise if value_known else alert.surprise,
        # an active observation says everything that holds now (stale notes go); an inactive one
        # without annotations keeps what the alert said
        annotations=dict(obs.annotations) if obs.annotations or obs.active else dict(alert.annotations),
        traces=alert.traces if keep_traces or not obs.traces else obs.traces,
    )
