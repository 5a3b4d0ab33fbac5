"""The pipeline on a virtual clock: routing, muting, dedup against the log, the transactional outbox."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import create_engine, select

from tests.notify.factory import T0, SqliteStore, firing, make_settings, resolved
from watcher.config import ReceiverSettings, RouteRule, RouteSettings
from watcher.core import Alert, AlertState, Labels, NotificationKind
from watcher.errors import StoreError
from watcher.notify.outbox import from_message
from watcher.notify.pipeline import Notifier, route_receivers
from watcher.notify.receivers.base import RecordingReceiver
from watcher.store.tables import NotificationLogRow, OutboxRow, SilenceRow

H = timedelta(hours=1)
M = timedelta(minutes=1)


def _notifier(store: SqliteStore, **settings_kw: object) -> tuple[Notifier, RecordingReceiver]:
    rec = RecordingReceiver("console")
    return Notifier(store, make_settings(**settings_kw), {"console": rec}), rec


def _outbox(store: SqliteStore) -> list[OutboxRow]:
    with store.session() as s:
        return list(s.exec(select(OutboxRow).order_by(OutboxRow.id)).all())  # type: ignore[arg-type]


EPISODE_2 = T0 + 6 * H
A = firing()
STEPS: list[tuple[str, Alert, timedelta, int, str | None]] = [
    # (what happens, the alert, time since T0, enqueued, kind of the new outbox row)
    ("first firing", A, 0 * M, 1, "firing"),
    ("same tick again", A, 0 * M, 0, None),
    ("before repeat_interval", A, 3 * H + 59 * M, 0, None),
    ("repeat_interval elapsed", A, 4 * H, 1, "firing"),
    ("no resend right after", A, 4 * H + M, 0, None),
    ("resolved", resolved(A, T0 + 5 * H), 5 * H, 1, "resolved"),
    ("resolved only once", resolved(A, T0 + 5 * H), 5 * H + M, 0, None),
    ("new episode fires", firing(active_at=EPISODE_2), 6 * H, 1, "firing"),
    ("old episode's resolve is stale", resolved(A, T0 + 5 * H), 6 * H + M, 0, None),
    ("new episode resolves", resolved(firing(active_at=EPISODE_2), EPISODE_2 + H), 7 * H, 1, "resolved"),
]


def test_dedup_table_on_a_virtual_clock(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    total = 0
    for what, alert, at, expected, kind in STEPS:
        n = notifier.submit([(alert, [])], T0 + at)
        assert n == expected, what
        total += n
        rows = _outbox(store)
        assert len(rows) == total, what
        if kind:
            assert rows[-1].kind == kind, what
            assert rows[-1].next_attempt_at == T0 + at, what
    with store.session() as s:
        log = s.get(NotificationLogRow, ("console", A.fingerprint))
    assert log is not None and log.kind == "resolved" and log.episode_start == EPISODE_2 and log.count == 2


def test_new_episode_while_still_logged_as_firing(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    assert notifier.submit([(firing(), [])], T0) == 1
    # the resolve was never seen (e.g. the process was down) and a new episode started: the first
    # episode is closed under its own key before the new one fires (issue 16: none left open)
    assert notifier.submit([(firing(active_at=T0 + H), [])], T0 + H) == 2
    rows = _outbox(store)
    assert [r.kind for r in rows] == ["firing", "resolved", "firing"]
    assert rows[0].dedup_key == rows[1].dedup_key != rows[2].dedup_key


@pytest.mark.parametrize(
    "alert",
    [
        replace(firing(), state=AlertState.PENDING, fired_at=None),
        replace(firing(), state=AlertState.INACTIVE, fired_at=None),
    ],
    ids=["pending", "inactive-never-fired"],
)
def test_pending_and_inactive_are_never_sent(store: SqliteStore, alert: Alert) -> None:
    notifier, _ = _notifier(store)
    assert notifier.submit([(alert, [])], T0) == 0
    assert notifier.pending_count() == 0


def test_resolved_without_a_firing_log_is_not_sent(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    assert notifier.submit([(resolved(firing(), T0 + H), [])], T0 + H) == 0


def test_send_resolved_false(store: SqliteStore) -> None:
    notifier, _ = _notifier(
        store, receivers={"console": ReceiverSettings(type="console", send_resolved=False)}
    )
    assert notifier.submit([(firing(), [])], T0) == 1
    assert notifier.submit([(resolved(firing(), T0 + H), [])], T0 + H) == 0


def _silence(store: SqliteStore, start: datetime, end: datetime, **matchers: str) -> None:
    with store.session() as s:
        s.add(
            SilenceRow(
                id=str(uuid.uuid4()),
                matchers=[{"name": k, "value": v, "op": "="} for k, v in matchers.items()],
                starts_at=start,
                ends_at=end,
                created_at=start,
            )
        )
        s.commit()


def test_silenced_alert_is_not_sent_until_the_silence_ends(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    _silence(store, T0, T0 + H, alertname="SpendAnomaly", tenant="acme")
    other = firing(labels={"tenant": "globex"})
    assert notifier.submit([(firing(), []), (other, [])], T0 + 10 * M) == 1
    assert [r.fingerprint for r in _outbox(store)] == [other.fingerprint]
    assert notifier.submit([(firing(), [])], T0 + H) == 1  # silence over: first notification


def test_silence_on_alertname_only(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    _silence(store, T0, T0 + H, alertname="OtherRule")
    assert notifier.submit([(firing(), [])], T0) == 1


def test_outbox_row_and_log_written_together(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    notifier.submit([(firing(), [])], T0)
    (row,) = _outbox(store)
    with store.session() as s:
        log = s.get(NotificationLogRow, ("console", row.fingerprint))
    assert log is not None and log.dedup_key == row.dedup_key and log.notified_at == T0
    assert row.status == "pending" and row.attempts == 0
    m = row.message
    assert {"title", "body", "links", "alert", "listed", "kind", "dedup_key", "receiver"} <= set(m)
    assert "payload" not in m  # the typed notification is stored, its JSON document built at delivery
    n = from_message(m)
    assert n.kind == "firing" and m["title"].startswith("[FIRING] SpendAnomaly")
    assert n.rule_url == "http://watcher.test/rules/llm-cost/SpendAnomaly"
    assert n.notification_id == m["notification_id"] and len(n.notification_id) == 32


def test_custom_rule_url(store: SqliteStore) -> None:
    notifier = Notifier(
        store,
        make_settings(),
        {"console": RecordingReceiver("console")},
        rule_url=lambda g, r: f"x://{g}/{r}",
    )
    notifier.submit([(firing(), [])], T0)
    assert from_message(_outbox(store)[0].message).rule_url == "x://llm-cost/SpendAnomaly"


ROUTE = RouteSettings(
    receivers=["default"],
    routes=[
        RouteRule(match={"severity": "page"}, receivers=["pager"], **{"continue": True}),
        RouteRule(match_re={"tenant": "acme|globex"}, receivers=["slack"]),
        RouteRule(match={"team": "quality"}, receivers=["quality"]),
        RouteRule(match={"alertname": "GroundednessDrop"}, receivers=["ml"]),
    ],
)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"severity": "page", "tenant": "acme"}, ["pager", "slack"]),  # continue, then stop
        ({"severity": "page", "tenant": "initech"}, ["pager"]),
        ({"tenant": "globex", "team": "quality"}, ["slack"]),  # first match stops the walk
        ({"tenant": "acmex"}, ["default"]),  # anchored regex
        ({"team": "quality"}, ["quality"]),
        ({"alertname": "GroundednessDrop"}, ["ml"]),
        ({}, ["default"]),
    ],
)
def test_routing_table(labels: dict[str, str], expected: list[str]) -> None:
    assert route_receivers(ROUTE, labels) == expected


def test_rule_receivers_override_routing(store: SqliteStore) -> None:
    names = ["default", "pager", "slack"]
    settings = make_settings(
        receivers={n: ReceiverSettings(type="console") for n in names},
        route=RouteSettings(
            receivers=["default"], routes=[RouteRule(match={"severity": "page"}, receivers=["pager"])]
        ),
    )
    notifier = Notifier(store, settings, {n: RecordingReceiver(n) for n in names})
    paged = firing(labels={"tenant": "acme", "severity": "page"})
    plain = firing(labels={"tenant": "acme"})
    own: Sequence[str] = ["slack", "slack"]
    assert notifier.submit([(paged, []), (plain, []), (firing(labels={"tenant": "x"}), own)], T0) == 3
    assert [r.receiver for r in _outbox(store)] == ["pager", "default", "slack"]


def test_unknown_rule_receiver_is_skipped(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    assert notifier.submit([(firing(), ["nope"])], T0) == 0


def test_dedup_is_per_receiver(store: SqliteStore) -> None:
    settings = make_settings(
        receivers={"console": ReceiverSettings(type="console"), "other": ReceiverSettings(type="console")}
    )
    notifier = Notifier(
        store, settings, {"console": RecordingReceiver(), "other": RecordingReceiver("other")}
    )
    assert notifier.submit([(firing(), ["console"])], T0) == 1
    assert notifier.submit([(firing(), ["console", "other"])], T0 + M) == 1
    assert [r.receiver for r in _outbox(store)] == ["console", "other"]


def test_labels_with_alertname_fingerprint_is_the_key(store: SqliteStore) -> None:
    notifier, _ = _notifier(store)
    a = firing()
    b = replace(a, rule="OtherRule", labels=Labels({"tenant": "acme"}))
    assert notifier.submit([(a, []), (b, [])], T0) == 2
    kinds = {r.kind for r in _outbox(store)}
    assert kinds == {str(NotificationKind.FIRING)}


def test_database_failures_become_store_errors(tmp_path: Path) -> None:
    empty = SqliteStore.__new__(SqliteStore)
    empty.engine = create_engine(f"sqlite:///{tmp_path}/empty.db")  # no tables
    notifier = Notifier(empty, make_settings(), {"console": RecordingReceiver()})
    with pytest.raises(StoreError, match=r"outbox count failed: .*no such table"):
        notifier.pending_count()
    with pytest.raises(StoreError, match="notify submit failed"):
        notifier.submit([(firing(), [])], T0)
    empty.engine.dispose()


@pytest.mark.parametrize("n", [5, 60])
def test_a_tick_of_firing_alerts_reads_the_log_in_a_few_queries(store: SqliteStore, n: int) -> None:
    """Dedup finds every logged alert among rows loaded at once, not one query per firing alert."""
    import sqlalchemy as sa

    notifier, _ = _notifier(store)
    alerts = [(firing(labels={"tenant": f"t{i}"}), []) for i in range(n)]
    assert notifier.submit(alerts, T0) == n  # first notifications: every one is logged
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if "notification_log" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        assert notifier.submit(alerts, T0 + M) == 0  # all deduplicated against the log
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    assert len(statements) == 1
