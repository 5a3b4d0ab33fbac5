"""Silence matchers (Alertmanager semantics) and which silences are in force."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.notify.factory import T0, SqliteStore
from watcher.notify.silences import Matcher, active_silences, is_silenced, matches_all
from watcher.store.tables import SilenceRow

LABELS = {"alertname": "SpendAnomaly", "tenant": "acme", "severity": "page"}


@pytest.mark.parametrize(
    ("name", "op", "value", "expected"),
    [
        ("tenant", "=", "acme", True),
        ("tenant", "=", "acm", False),
        ("tenant", "!=", "globex", True),
        ("tenant", "!=", "acme", False),
        ("tenant", "=~", "ac.*", True),
        ("tenant", "=~", "ac", False),  # anchored: a prefix is not a match
        ("tenant", "=~", "cme", False),
        ("tenant", "=~", "acme|globex", True),
        ("tenant", "!~", "glo.*", True),
        ("tenant", "!~", "a.*", False),
        ("team", "=", "", True),  # a missing label is the empty string
        ("team", "!=", "", False),
        ("team", "=~", ".*", True),
        ("team", "=~", ".+", False),
        ("alertname", "=", "SpendAnomaly", True),
    ],
)
def test_matcher_table(name: str, op: str, value: str, expected: bool) -> None:
    assert Matcher(name, value, op).matches(LABELS) is expected


def test_unknown_operator_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown matcher operator"):
        Matcher("a", "b", "==")


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        (
            [
                {"name": "tenant", "value": "acme", "op": "="},
                {"name": "severity", "value": "page", "op": "="},
            ],
            True,
        ),
        (
            [
                {"name": "tenant", "value": "acme", "op": "="},
                {"name": "severity", "value": "info", "op": "="},
            ],
            False,
        ),
        ([{"name": "tenant", "value": "acme"}], True),  # op defaults to =
        ([], False),  # an empty silence mutes nothing
        ([{"name": "tenant", "value": "(", "op": "=~"}], False),  # invalid regex mutes nothing
        ([{"name": "tenant", "value": "(", "op": "!~"}], False),
        ([{"value": "acme"}], False),  # malformed
    ],
)
def test_matches_all(matchers: list[dict[str, str]], expected: bool) -> None:
    assert matches_all(matchers, LABELS) is expected


def _silence(start_min: int, end_min: int, **matchers: str) -> SilenceRow:
    return SilenceRow(
        id=str(uuid.uuid4()),
        matchers=[{"name": k, "value": v, "op": "="} for k, v in matchers.items()],
        starts_at=T0 + timedelta(minutes=start_min),
        ends_at=T0 + timedelta(minutes=end_min),
        created_by="test",
        comment="maintenance",
        created_at=T0,
    )


@pytest.mark.parametrize(
    ("offset_min", "silenced"),
    [(-1, False), (0, True), (59, True), (60, False)],
)
def test_is_silenced_respects_the_time_window(offset_min: int, silenced: bool) -> None:
    s = _silence(0, 60, tenant="acme")
    hit = is_silenced(LABELS, [s], T0 + timedelta(minutes=offset_min))
    assert (hit is s) if silenced else hit is None


def test_is_silenced_returns_the_matching_silence() -> None:
    other = _silence(0, 60, tenant="globex")
    mine = _silence(0, 60, severity="page")
    assert is_silenced(LABELS, [other, mine], T0) is mine


def test_active_silences_reads_the_store(store: SqliteStore) -> None:
    rows = [
        _silence(-60, -1, tenant="acme"),
        _silence(-5, 30, tenant="acme"),
        _silence(10, 30, tenant="acme"),
    ]
    with store.session() as s:
        s.add_all(rows)
        s.commit()
    with store.session() as s:
        found = active_silences(s, T0)
    assert [r.id for r in found] == [rows[1].id]
    assert found[0].starts_at.tzinfo is not None
