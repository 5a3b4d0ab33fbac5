"""Retries and dead letters on a virtual clock, and the delivery-failure receivers."""

from __future__ import annotations

import random
from datetime import timedelta

from pydantic import SecretStr
from sqlmodel import select

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore, firing, make_settings
from watcher.config import ReceiverSettings, RouteSettings
from watcher.errors import NotifyError
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers.base import RecordingReceiver
from watcher.store.tables import OutboxRow

S = timedelta(seconds=1)
M = timedelta(minutes=1)


def _rows(store: SqliteStore) -> list[OutboxRow]:
    with store.session() as s:
        return list(s.exec(select(OutboxRow).order_by(OutboxRow.id)).all())  # type: ignore[arg-type]


def _hook(url: str) -> ReceiverSettings:
    return ReceiverSettings(type="webhook", url=SecretStr(url), timeout_s=3)


def test_500_for_three_minutes_then_200_is_delivered_once(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([500])
    settings = make_settings(
        receivers={"hook": _hook(http_receiver.url)},
        route=RouteSettings(receivers=["hook"]),
        notify={"retry_initial": 5 * S, "retry_max": M},
    )
    notifier = Notifier(store, settings, rng=random.Random(5))
    notifier.submit([(firing(), [])], T0)
    t = T0
    while t <= T0 + 8 * M:
        if t >= T0 + 3 * M:
            http_receiver.set_statuses([200])
        notifier.flush(t)
        t += 5 * S
    served = http_receiver.served_statuses
    assert served.count(200) == 1 and served[-1] == 200 and set(served[:-1]) == {500}
    assert 4 <= served.count(500) <= 8  # 5s, 10s, 20s, 40s, then every ~60s until 3m
    ids = {body["notification_id"] for _, _, body in http_receiver.requests}
    assert len(ids) == 1  # every retry is the same notification
    (row,) = _rows(store)
    assert (
        row.status == "sent" and row.sent_at is not None and T0 + 3 * M <= row.sent_at <= T0 + 4 * M + 20 * S
    )


def test_400_forever_is_dead_lettered_and_reported_others_unaffected(store: SqliteStore) -> None:
    with HTTPReceiver([400]) as broken, HTTPReceiver() as fine, HTTPReceiver() as oncall:
        settings = make_settings(
            receivers={
                "pd": ReceiverSettings(
                    type="pagerduty", routing_key=SecretStr("K3yK3yK3yK3y"), url=SecretStr(broken.url)
                ),
                "hook": _hook(fine.url),
                "ops": _hook(oncall.url),
            },
            route=RouteSettings(receivers=["pd", "hook"]),
            notify={"delivery_failure_receivers": ["ops"]},
        )
        notifier = Notifier(store, settings)
        notifier.submit([(firing(), [])], T0)
        result = notifier.flush(T0)
        assert (result.sent, result.dead) == (1, 1)
        assert notifier.flush(T0 + S).sent == 1  # the notice, queued with the dead letter
        assert len(broken.requests) == 1 and len(fine.requests) == 1
        (_, _, notice) = oncall.wait_for(1)[0]
        assert notice["alertname"] == "WatcherDeliveryFailed"
        assert notice["labels"] == {"receiver": "pd", "reason": "client_error"}
        assert "error=400" in notice["annotations"]["error"] and "K3yK3yK3yK3y" not in str(notice)
        assert notice["annotations"]["original"].startswith("[FIRING] SpendAnomaly")
    dead = [r for r in _rows(store) if r.status == "dead"]
    assert [(r.receiver, r.last_reason) for r in dead] == [("pd", "client_error")]
    assert "error=400" in (dead[0].last_error or "")


def test_max_age_dead_letter_is_reported_and_a_failing_notice_does_not_loop(store: SqliteStore) -> None:
    fail = NotifyError("nope", retryable=False, reason="client_error")
    pager = RecordingReceiver("pager", [NotifyError("down", retryable=True, reason="server_error")] * 3)
    ops = RecordingReceiver("ops", [fail])
    settings = make_settings(
        receivers={"pager": ReceiverSettings(type="console"), "ops": ReceiverSettings(type="console")},
        route=RouteSettings(receivers=["pager"]),
        notify={"delivery_failure_receivers": ["ops", "pager"], "max_age": timedelta(minutes=10)},
    )
    notifier = Notifier(store, settings, {"pager": pager, "ops": ops})
    notifier.submit([(firing(), [])], T0)
    assert notifier.flush(T0).failed == 1
    assert notifier.flush(T0 + 11 * M).dead == 1  # expired
    result = notifier.flush(T0 + 11 * M + S)
    assert result.dead == 1 and result.pending == 0  # the notice to ops failed; no notice about it
    rows = _rows(store)
    assert [(r.receiver, r.status, r.last_reason) for r in rows] == [
        ("pager", "dead", "expired"),
        ("ops", "dead", "client_error"),
    ]
    assert pager.sent == [] and ops.sent == []  # the dead receiver itself is not told about itself
