"""A receiver that keeps failing: one notice per failing episode, one recovery notice; the counters."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore, firing, make_settings
from watcher.config import ReceiverSettings, RouteSettings, Settings
from watcher.errors import NotifyError
from watcher.notify.deadletter import count_dead_letters, list_dead_letters, requeue_dead_letter
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers.base import RecordingReceiver
from watcher.selfmetrics import SelfMetrics

S = timedelta(seconds=1)
M = timedelta(minutes=1)


def _hook(url: str) -> ReceiverSettings:
    return ReceiverSettings(type="webhook", url=SecretStr(url), timeout_s=3)


def _settings(hook: HTTPReceiver, ops: HTTPReceiver, **notify: Any) -> Settings:
    return make_settings(
        receivers={"hook": _hook(hook.url), "ops": _hook(ops.url)},
        route=RouteSettings(receivers=["hook"]),
        notify={"retry_initial": 5 * S, "retry_max": M, "delivery_failure_receivers": ["ops"], **notify},
    )


def _notices(ops: HTTPReceiver) -> list[tuple[str, str, str]]:
    return [(b["alertname"], b["status"], b["dedup_key"]) for _, _, b in ops.requests]


def test_500_then_200_tells_ops_once_and_then_that_it_recovered(store: SqliteStore) -> None:
    with HTTPReceiver([500]) as hook, HTTPReceiver() as ops:
        metrics = SelfMetrics(CollectorRegistry())
        notifier = Notifier(store, _settings(hook, ops), rng=random.Random(3), metrics=metrics)
        notifier.submit([(firing(), [])], T0)
        notifier.submit([(firing("LatencyHigh"), [])], T0)  # two messages fail side by side
        t = T0
        while t <= T0 + 6 * M:
            if t >= T0 + 3 * M:
                hook.set_statuses([200])
            notifier.flush(t)
            t += 5 * S
        assert hook.served_statuses.count(200) == 2 and hook.served_statuses.count(500) >= 6
        (fire, done) = _notices(ops)
        assert fire[:2] == ("WatcherReceiverFailing", "firing")
        assert done[:2] == ("WatcherReceiverFailing", "resolved")
        assert fire[2] == done[2]  # PagerDuty & co. close what they opened
        first = ops.requests[0][2]
        assert first["labels"] == {"receiver": "hook", "reason": "server_error"}
        assert "error=500" in first["annotations"]["error"] and first["starts_at"] == "2026-11-26T14:05:00Z"
        assert ops.requests[1][2]["ends_at"] is not None

        get = metrics.registry.get_sample_value
        failed = hook.served_statuses.count(500)
        assert get("watcher_notifications_failed_total", {"receiver": "hook", "reason": "server_error"}) == (
            failed
        )
        assert get("watcher_notifications_sent_total", {"receiver": "hook"}) == 2
        assert get("watcher_notifications_enqueued_total", {"receiver": "hook"}) == 2
        assert get("watcher_notifications_enqueued_total", {"receiver": "ops"}) == 2
        assert get("watcher_receiver_consecutive_failures", {"receiver": "hook"}) == 0  # delivered again
        assert notifier.outbox.failing.status() == []
        assert get("watcher_notifications_sent_total", {"receiver": "ops"}) == 2

        # A second episode gets its own notice (a new dedup key), again only once.
        hook.set_statuses([500])
        notifier.submit([(firing("ErrorsHigh"), [])], T0 + 10 * M)
        for i in range(8):
            notifier.flush(T0 + 10 * M + i * M)
        assert [n[:2] for n in _notices(ops)][2:] == [("WatcherReceiverFailing", "firing")]
        (st,) = notifier.outbox.failing.status()
        assert (st.receiver, st.reason, st.failing, st.since) == ("hook", "server_error", True, T0 + 10 * M)
        assert st.consecutive >= 3 and "error=500" in st.error
        assert get("watcher_receiver_consecutive_failures", {"receiver": "hook"}) == st.consecutive
        assert _notices(ops)[2][2] != fire[2]


def test_failing_for_long_enough_counts_too_and_a_restart_does_not_repeat_the_notice(
    store: SqliteStore,
) -> None:
    with HTTPReceiver([503]) as hook, HTTPReceiver() as ops:
        settings = _settings(hook, ops, delivery_failure_after=100, delivery_failure_for=2 * M)
        notifier = Notifier(store, settings, rng=random.Random(1))
        notifier.submit([(firing(), [])], T0)
        for t in (T0, T0 + M, T0 + 110 * S):
            notifier.flush(t)
        assert ops.requests == []  # three failures in under 2 minutes: not yet failing
        notifier.flush(T0 + 3 * M)
        notifier.flush(T0 + 3 * M + S)  # delivers the notice
        assert [n[:2] for n in _notices(ops)] == [("WatcherReceiverFailing", "firing")]

        # A restarted process that sees the receiver still failing does not page ops again…
        again = Notifier(store, settings, rng=random.Random(1))
        for i in range(4, 12):
            again.flush(T0 + i * M)
        assert len(ops.requests) == 1
        # …and still resolves the notice it did not send itself.
        hook.set_statuses([200])
        for i in range(12, 16):
            again.flush(T0 + i * M)
        assert [n[:2] for n in _notices(ops)] == [
            ("WatcherReceiverFailing", "firing"),
            ("WatcherReceiverFailing", "resolved"),
        ]
        assert _notices(ops)[0][2] == _notices(ops)[1][2]


def test_a_failing_failure_receiver_is_not_told_about_itself(store: SqliteStore) -> None:
    down = NotifyError("down", retryable=True, reason="server_error")
    pager = RecordingReceiver("pager", [down] * 5)
    ops = RecordingReceiver("ops")
    settings = make_settings(
        receivers={"pager": ReceiverSettings(type="console"), "ops": ReceiverSettings(type="console")},
        route=RouteSettings(receivers=["pager"]),
        notify={"delivery_failure_receivers": ["ops", "pager"], "retry_initial": S, "retry_max": S},
    )
    notifier = Notifier(store, settings, {"pager": pager, "ops": ops})
    notifier.submit([(firing(), [])], T0)
    for i in range(10):
        notifier.flush(T0 + i * M)
    assert [(n.alert.rule, n.kind.value) for n in ops.sent] == [
        ("WatcherReceiverFailing", "firing"),
        ("WatcherReceiverFailing", "resolved"),
    ]
    assert [n.alert.rule for n in pager.sent] == ["SpendAnomaly"]  # never told about itself


def test_dead_letters_are_listed_counted_and_can_be_requeued(store: SqliteStore) -> None:
    with HTTPReceiver([400]) as hook, HTTPReceiver() as ops:
        metrics = SelfMetrics(CollectorRegistry())
        notifier = Notifier(store, _settings(hook, ops, delivery_failure_after=10), metrics=metrics)
        notifier.submit([(firing(), [])], T0)
        assert notifier.flush(T0).dead == 1
        (dl,) = list_dead_letters(store)
        assert (dl.receiver, dl.reason, dl.attempts, dl.is_notice) == ("hook", "client_error", 1, False)
        assert dl.title.startswith("[FIRING] SpendAnomaly") and "error=400" in dl.error
        assert len(dl.notification_id) == 32 and dl.created_at == T0
        assert list_dead_letters(store, receiver="ops") == []
        assert count_dead_letters(store) == {"hook": 1}
        assert notifier.export_dead_letters() == {"hook": 1}
        get = metrics.registry.get_sample_value
        assert get("watcher_outbox_dead", {"receiver": "hook"}) == 1
        assert get("watcher_outbox_dead", {"receiver": "ops"}) == 0
        dead = {"receiver": "hook", "reason": "client_error"}
        assert get("watcher_notifications_dead_lettered_total", dead) == 1
        assert get("watcher_notifications_failed_total", {"receiver": "hook", "reason": "client_error"}) == 1

        hook.set_statuses([200])
        assert requeue_dead_letter(store, dl.id, T0 + M) and not requeue_dead_letter(store, dl.id, T0 + M)
        assert notifier.flush(T0 + M).sent == 2  # the requeued message and the notice to ops
        assert count_dead_letters(store) == {} and notifier.export_dead_letters() == {}
        assert get("watcher_outbox_dead", {"receiver": "hook"}) == 0
        (_, _, first), (_, _, again) = hook.requests
        assert first["notification_id"] == again["notification_id"]  # the same message, redelivered
