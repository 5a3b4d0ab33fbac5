"""Delivery through the outbox: real Apprise ``json://`` sends to a loopback server, on a virtual clock."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlmodel import select

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore, firing, make_settings
from tests.notify.test_golden_bodies import OLD_ROWS
from watcher.config import ReceiverSettings, RouteSettings, Settings
from watcher.core import Notification, alert_from_dict
from watcher.errors import NotifyError
from watcher.notify.outbox import backoff, from_message, to_message
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers.apprise import AppriseReceiver
from watcher.notify.receivers.base import RecordingReceiver
from watcher.notify.templates import render_notification
from watcher.store.tables import OutboxRow

S = timedelta(seconds=1)
SECRET = "SeCrEt123"


def _apprise_settings(url: str, **notify: object) -> Settings:
    return make_settings(
        receivers={"hook": ReceiverSettings(type="apprise", urls=[SecretStr(url)], timeout_s=3)},
        route=RouteSettings(receivers=["hook"]),
        notify=notify,
    )


def _rows(store: SqliteStore) -> list[OutboxRow]:
    with store.session() as s:
        return list(s.exec(select(OutboxRow).order_by(OutboxRow.id)).all())  # type: ignore[arg-type]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port


def test_500_then_200_is_delivered_exactly_once_after_backoff(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([500, 200])
    settings = _apprise_settings(f"json://127.0.0.1:{http_receiver.port}/hook")
    notifier = Notifier(store, settings, rng=random.Random(7))
    assert notifier.submit([(firing(), [])], T0) == 1

    first = notifier.flush(T0)
    assert (first.sent, first.failed, first.dead, first.pending) == (0, 1, 0, 1)
    (row,) = _rows(store)
    assert row.status == "pending" and row.attempts == 1 and row.last_reason == "server_error"
    assert "error=500" in (row.last_error or "")
    wait = row.next_attempt_at - T0
    assert 4 * S <= wait <= 6 * S  # retry_initial 5s ± 20 %

    early = notifier.flush(T0 + 3 * S)
    assert (early.sent, early.failed) == (0, 0)
    assert len(http_receiver.requests) == 1

    second = notifier.flush(T0 + 6 * S + S)
    assert (second.sent, second.failed, second.dead, second.pending) == (1, 0, 0, 0)
    assert http_receiver.served_statuses == [500, 200]
    path, headers, body = http_receiver.requests[1]
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    assert body["title"] == '[FIRING] SpendAnomaly {tenant="acme"}'
    assert "http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736" in body["message"]
    assert "http://watcher.test/rules/llm-cost/SpendAnomaly" in body["message"]
    (row,) = _rows(store)
    assert row.status == "sent" and row.sent_at == T0 + 7 * S and row.attempts == 2

    assert notifier.flush(T0 + H_LATER).sent == 0
    assert len(http_receiver.requests) == 2


H_LATER = timedelta(hours=1)


@pytest.mark.parametrize(
    ("status", "outcome", "reason"),
    [
        (400, "dead", "client_error"),
        (404, "dead", "client_error"),
        (429, "pending", "rate_limited"),
        (503, "pending", "server_error"),
    ],
)
def test_http_status_classification(
    store: SqliteStore, http_receiver: HTTPReceiver, status: int, outcome: str, reason: str
) -> None:
    http_receiver.set_statuses([status])
    notifier = Notifier(store, _apprise_settings(f"json://127.0.0.1:{http_receiver.port}/"))
    notifier.submit([(firing(), [])], T0)
    notifier.flush(T0)
    (row,) = _rows(store)
    assert (row.status, row.last_reason, row.attempts) == (outcome, reason, 1)
    assert len(http_receiver.requests) == 1


def test_unreachable_is_retried(store: SqliteStore, closed_port: int) -> None:
    notifier = Notifier(store, _apprise_settings(f"json://127.0.0.1:{closed_port}/"))
    notifier.submit([(firing(), [])], T0)
    result = notifier.flush(T0)
    assert (result.failed, result.pending) == (1, 1)
    (row,) = _rows(store)
    assert row.status == "pending" and row.last_reason == "connection"


def test_dead_letter_after_max_age(store: SqliteStore, http_receiver: HTTPReceiver) -> None:
    http_receiver.set_statuses([500])
    settings = _apprise_settings(f"json://127.0.0.1:{http_receiver.port}/", max_age=timedelta(hours=1))
    notifier = Notifier(store, settings, rng=random.Random(1))
    notifier.submit([(firing(), [])], T0)
    assert notifier.flush(T0).failed == 1
    assert notifier.flush(T0 + 30 * S).failed == 1
    result = notifier.flush(T0 + timedelta(hours=2))
    assert (result.dead, result.pending) == (1, 0)
    (row,) = _rows(store)
    assert row.status == "dead" and row.last_reason == "expired" and row.attempts == 2
    assert len(http_receiver.requests) == 2  # expired rows are not sent again


def test_receiver_no_longer_configured_is_dead(store: SqliteStore) -> None:
    Notifier(store, make_settings(), {"console": RecordingReceiver()}).submit([(firing(), [])], T0)
    other = make_settings(
        receivers={"new": ReceiverSettings(type="console")}, route=RouteSettings(receivers=["new"])
    )
    result = Notifier(store, other, {"new": RecordingReceiver("new")}).flush(T0)
    assert result.dead == 1
    assert _rows(store)[0].last_reason == "no_receiver"


def test_restart_delivers_what_the_old_notifier_enqueued(store: SqliteStore) -> None:
    settings = make_settings()
    before = RecordingReceiver("console")
    Notifier(store, settings, {"console": before}).submit([(firing(), [])], T0)
    del before  # the process dies before flushing

    after = RecordingReceiver("console")
    result = Notifier(store, settings, {"console": after}).flush(T0 + S)
    assert (result.sent, result.pending) == (1, 0)
    (sent,) = after.sent
    original = render_notification(
        firing(),
        kind=sent.kind,
        receiver="console",
        settings=settings,
        rule_url="http://watcher.test/rules/llm-cost/SpendAnomaly",
    )
    assert (sent.title, sent.body, sent.links, sent.dedup_key, sent.kind) == (
        original.title,
        original.body,
        original.links,
        original.dedup_key,
        original.kind,
    )
    assert replace(sent, notification_id="") == original  # every typed field survives the outbox
    assert len(sent.notification_id) == 32
    assert sent.alert.fingerprint == original.alert.fingerprint


def test_message_round_trip_rebuilds_the_alert() -> None:
    n = render_notification(
        firing(), kind=_kind("firing"), receiver="r", settings=make_settings(), rule_url="u"
    )
    back = from_message(to_message(n))
    assert isinstance(back, Notification)
    a, b = n.alert, back.alert
    assert (b.rule, b.group, b.labels, b.state, b.active_at, b.fired_at, b.last_eval) == (
        a.rule,
        a.group,
        a.labels,
        a.state,
        a.active_at,
        a.fired_at,
        a.last_eval,
    )
    assert (b.value, b.expected, b.lower, b.upper, b.score) == (
        a.value,
        a.expected,
        a.lower,
        a.upper,
        a.score,
    )
    assert b.traces == a.traces and dict(b.annotations) == dict(a.annotations)


def test_message_round_trip_keeps_every_alert_field() -> None:
    """The outbox stores the whole alert (``core.alert_to_dict``): nothing is rebuilt from the payload."""
    a = replace(firing(), keep_firing_since=datetime(2026, 3, 1, 12, 7, tzinfo=UTC), surprise=6.5)
    n = render_notification(a, kind=_kind("firing"), receiver="r", settings=make_settings(), rule_url="u")
    assert from_message(to_message(n)).alert == n.alert


def test_message_of_an_older_row_still_rebuilds_the_alert_from_its_payload() -> None:
    """Rows queued by earlier versions (a payload dict, the alert whole or in part) are still sent."""
    old = dict(OLD_ROWS["single"][0])  # as the previous version stored it (tests/notify/golden.py)
    assert "payload" in old and "listed" not in old
    n = from_message(old)
    assert n.alert == alert_from_dict(old["alert"])
    assert n.notification_id == old["payload"]["notification_id"]
    assert n.rule_url == old["payload"]["rule_url"] and n.group is None
    assert [t.url for t in n.lead.traces] == [t["url"] for t in old["payload"]["traces"]]
    older = {**old, "alert": {k: old["alert"][k] for k in ("fired_at", "last_eval")}}  # before that
    b = from_message(older).alert
    assert (b.rule, b.group, b.labels, b.fired_at, b.last_eval, b.value, b.active_at) == (
        n.alert.rule,
        n.alert.group,
        n.alert.labels,
        n.alert.fired_at,
        n.alert.last_eval,
        n.alert.value,
        n.alert.active_at,
    )
    group = from_message(OLD_ROWS["group"][0])
    assert group.group is not None and len(group.listed) == 2
    members = OLD_ROWS["group"][0]["payload"]["alerts"]
    assert [i.rule_url for i in group.listed] == [a["rule_url"] for a in members]


def test_a_group_round_trips_typed() -> None:
    """A group's members, rule pages, trace links, group key and notification ID survive the outbox."""
    rows = OLD_ROWS["group"]
    n = replace(from_message(rows[1]), notification_id="abc")
    assert from_message(to_message(n)) == n
    assert {"listed", "group", "notification_id"} <= set(to_message(n))


def _kind(name: str):  # type: ignore[no-untyped-def]
    from watcher.core import NotificationKind

    return NotificationKind(name)


def test_unexpected_receiver_exception_is_retried_without_its_message(store: SqliteStore) -> None:
    class Broken:
        name = "console"

        def send(self, n: Notification) -> None:
            raise RuntimeError(f"boom {SECRET}")

    notifier = Notifier(store, make_settings(), {"console": Broken()})
    notifier.submit([(firing(), [])], T0)
    assert notifier.flush(T0).failed == 1
    (row,) = _rows(store)
    assert row.last_reason == "unknown" and SECRET not in (row.last_error or "")


def test_non_retryable_receiver_error_is_dead(store: SqliteStore) -> None:
    rec = RecordingReceiver("console", [NotifyError("bad", retryable=False, reason="client_error")])
    notifier = Notifier(store, make_settings(), {"console": rec})
    notifier.submit([(firing(), [])], T0)
    assert notifier.flush(T0).dead == 1


def test_deadline_stops_the_flush(store: SqliteStore) -> None:
    rec = RecordingReceiver("console")
    notifier = Notifier(store, make_settings(), {"console": rec})
    notifier.submit([(firing(), []), (firing(labels={"tenant": "b"}), [])], T0)
    assert notifier.flush(T0, deadline_s=0).pending == 2
    assert notifier.flush(T0).sent == 2
    assert notifier.pending_count() == 0


def test_oldest_first(store: SqliteStore) -> None:
    rec = RecordingReceiver("console")
    notifier = Notifier(store, make_settings(), {"console": rec})
    for i, tenant in enumerate(["a", "b", "c"]):
        notifier.submit([(firing(labels={"tenant": tenant}), [])], T0 + i * S)
    notifier.flush(T0 + 10 * S)
    assert [n.alert.labels["tenant"] for n in rec.sent] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("attempts", "lo", "hi"),
    [(1, 4, 6), (2, 8, 12), (3, 16, 24), (7, 240, 360), (20, 240, 360)],
)
def test_backoff_is_capped_exponential_with_jitter(attempts: int, lo: float, hi: float) -> None:
    rng = random.Random(3)
    for _ in range(50):
        wait = backoff(attempts, 5 * S, timedelta(minutes=5), rng).total_seconds()
        assert lo <= wait <= hi


def test_no_secret_in_errors_outbox_or_logs(
    store: SqliteStore, closed_port: int, http_receiver: HTTPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http_receiver.set_statuses([500])
    urls = [
        f"json://user:{SECRET}@127.0.0.1:{closed_port}/",
        f"json://127.0.0.1:{http_receiver.port}/hooks/{SECRET}",
    ]
    for url in urls:
        receiver = AppriseReceiver("hook", [url], timeout_s=2)
        with pytest.raises(NotifyError) as info:
            receiver.send(
                render_notification(
                    firing(), kind=_kind("firing"), receiver="hook", settings=make_settings(), rule_url="u"
                )
            )
        assert info.value.retryable and info.value.receiver == "hook"
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)

    settings = make_settings(
        receivers={"hook": ReceiverSettings(type="apprise", urls=[SecretStr(u) for u in urls], timeout_s=2)},
        route=RouteSettings(receivers=["hook"]),
    )
    notifier = Notifier(store, settings)
    notifier.submit([(firing(), [])], T0)
    assert notifier.flush(T0).failed == 1
    (row,) = _rows(store)
    assert row.last_error and SECRET not in row.last_error
    assert SECRET not in repr(settings)
    assert caplog.records, "expected apprise/urllib3 debug records"
    assert SECRET not in caplog.text
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert len(http_receiver.requests) == 2  # it did reach the server, with the secret path
    assert http_receiver.requests[0][0] == f"/hooks/{SECRET}"


def test_a_stop_budget_that_holds_no_send_leaves_the_rows_queued_and_says_so(store: SqliteStore) -> None:
    import time

    n = Notifier(store, make_settings(), {"console": RecordingReceiver()})
    n.submit([(firing(), [])], T0)
    assert n.outbox.can_start()  # no stop under way
    n.outbox.stop_by(time.monotonic() + 5)  # a send may take the receiver's timeout (10 s)
    assert not n.outbox.can_start()  # the drain stops waiting at once
    result = n.flush(T0)
    assert (result.sent, result.pending) == (0, 1)  # stays queued for the next start
    n.outbox.stop_by(time.monotonic() + 60)
    assert n.outbox.can_start()
    assert n.flush(T0).sent == 1


@pytest.mark.parametrize("kind", ["webhook", "pagerduty", "alertmanager"])
def test_the_stop_budget_uses_each_http_receivers_own_timeout(store: SqliteStore, kind: str) -> None:
    import time

    extra: dict[str, object] = {"routing_key": SecretStr("k" * 32)} if kind == "pagerduty" else {}
    settings = make_settings(
        receivers={
            "r": ReceiverSettings(type=kind, url=SecretStr("http://127.0.0.1:9/x"), timeout_s=2, **extra)
        },
        route=RouteSettings(receivers=["r"]),
    )
    n = Notifier(store, settings)
    n.outbox.stop_by(time.monotonic() + 5)  # 2 s + slack fit in 5 s (not the 10 s default)
    assert n.outbox.can_start()
