"""The alert state machine as tables: each row is one evaluation and the state after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.core import Alert, AlertState, Labels
from watcher.engine.alerting import Observation, Timing, step

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
LABELS = Labels(tenant="acme")

# Each case: timing, then a list of (minute, observation) where observation is True (active),
# False (inactive) or None (no data, keep_state), and the expected state after each step:
# "-" no alert, "P" pending, "F" firing, "R" resolved (inactive, kept for the resend).
CASES = {
    "for 0 fires on the first evaluation": (
        Timing(),
        [(0, True, "F"), (1, True, "F"), (2, False, "R")],
    ),
    "for 3m pends then fires": (
        Timing(for_=3 * M),
        [(0, True, "P"), (1, True, "P"), (2, True, "P"), (3, True, "F"), (4, False, "R")],
    ),
    "pending that clears is dropped without a resolve": (
        Timing(for_=3 * M),
        [(0, True, "P"), (1, False, "-"), (2, True, "P"), (5, True, "F")],
    ),
    "keep_firing_for holds through a short dip": (
        Timing(keep_firing_for=5 * M),
        [
            (0, True, "F"),
            (1, False, "F"),
            (3, False, "F"),
            (4, True, "F"),
            (5, False, "F"),
            (9, False, "F"),
            (10, False, "R"),
        ],
    ),
    "flapping with for 2m never fires": (
        Timing(for_=2 * M),
        [(0, True, "P"), (1, False, "-"), (2, True, "P"), (3, False, "-"), (4, True, "P"), (5, False, "-")],
    ),
    "resolved is retained then dropped": (
        Timing(resolved_retention=10 * M),
        [(0, True, "F"), (1, False, "R"), (5, False, "R"), (11, False, "R"), (12, False, "-")],
    ),
    "resolved re-activates as a new episode": (
        Timing(for_=1 * M),
        [(0, True, "P"), (1, True, "F"), (2, False, "R"), (3, True, "P"), (4, True, "F")],
    ),
    "no data keeps firing and pending as they are": (
        Timing(for_=1 * M),
        [(0, True, "P"), (1, None, "P"), (2, True, "F"), (3, None, "F"), (30, None, "F"), (31, False, "R")],
    ),
    "no data never creates an alert": (
        Timing(),
        [(0, None, "-"), (1, None, "-")],
    ),
    "no data lets a resolved alert expire": (
        Timing(resolved_retention=2 * M),
        [(0, True, "F"), (1, False, "R"), (2, None, "R"), (4, None, "-")],
    ),
}


def _code(alert: Alert | None) -> str:
    if alert is None:
        return "-"
    if alert.state is AlertState.INACTIVE:
        assert alert.resolved_at is not None
        return "R"
    return "P" if alert.state is AlertState.PENDING else "F"


@pytest.mark.parametrize("name", list(CASES))
def test_state_machine_table(name: str) -> None:
    timing, rows = CASES[name]
    alert: Alert | None = None
    for minute, active, expected in rows:
        obs = None if active is None else Observation(active=active, value=float(minute))
        alert = step(alert, obs, T0 + minute * M, timing, rule="R", group="g", labels=LABELS)
        assert _code(alert) == expected, f"{name}: at minute {minute}"


def test_episode_timestamps_and_final_value() -> None:
    timing = Timing(for_=2 * M, keep_firing_for=2 * M)
    a = None
    for minute, active, value in [
        (0, True, 5.0),
        (1, True, 6.0),
        (2, True, 7.0),
        (3, False, 1.0),
        (4, False, 0.7),
        (5, False, 0.5),
    ]:
        a = step(
            a,
            Observation(active=active, value=value, expected=1.0),
            T0 + minute * M,
            timing,
            rule="R",
            group="g",
            labels=LABELS,
        )
    assert a is not None and a.resolved
    assert a.active_at == T0
    assert a.fired_at == T0 + 2 * M
    assert a.resolved_at == T0 + 5 * M  # inactive from 3m, kept firing for 2m
    assert a.value == 0.5  # the resolve carries the final value
    assert a.expected == 1.0


def test_new_episode_gets_new_active_at() -> None:
    a = step(None, Observation(active=True), T0, Timing(), rule="R", group="g", labels=LABELS)
    a = step(a, Observation(active=False), T0 + M, Timing(), rule="R", group="g", labels=LABELS)
    a = step(a, Observation(active=True), T0 + 2 * M, Timing(), rule="R", group="g", labels=LABELS)
    assert a is not None and a.state is AlertState.FIRING
    assert a.active_at == T0 + 2 * M and a.resolved_at is None


def test_states_are_ordered() -> None:
    assert max(AlertState.INACTIVE, AlertState.FIRING, AlertState.PENDING) is AlertState.FIRING
