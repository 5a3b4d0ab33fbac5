"""Per-alert order and concurrent delivery in the outbox, against real loopback HTTP receivers.

One alert's messages to one receiver go out in the order they were queued, across retries,
restarts and replicas (PostgreSQL claims); messages of different alerts or receivers go out
concurrently, so a receiver that hangs does not hold the others back.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore, firing, make_settings, resolved
from watcher.config import ReceiverSettings, RouteSettings, Settings
from watcher.notify.outbox import FlushResult
from watcher.notify.pipeline import Notifier
from watcher.store.db import open_store

S = timedelta(seconds=1)


def _settings(*receivers: tuple[str, HTTPReceiver], **notify: Any) -> Settings:
    # a held request must not time out however slow the machine is: the tests wait on events
    return make_settings(
        receivers={
            name: ReceiverSettings(type="webhook", url=SecretStr(f"{r.url}/{name}"), timeout_s=60)
            for name, r in receivers
        },
        route=RouteSettings(receivers=[name for name, _ in receivers]),
        notify=notify,
    )


def _statuses(receiver: HTTPReceiver) -> list[tuple[str, int]]:
    return [
        (body["status"], code)
        for (_, _, body), code in zip(receiver.requests, receiver.served_statuses, strict=True)
    ]


def test_a_resolve_waits_for_its_firing_across_retries_and_a_restart(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([500, 200])
    settings = _settings(("hook", http_receiver))
    alert = firing()
    notifier = Notifier(store, settings, rng=random.Random(1))
    notifier.submit([(alert, [])], T0)
    assert notifier.flush(T0).failed == 1  # the firing backs off 4-6 s
    notifier.submit([(resolved(alert, T0 + S), [])], T0 + S)
    # the resolve is due, its firing is not: nothing goes
    assert notifier.flush(T0 + 2 * S) == FlushResult(0, 0, 0, 2)
    assert len(http_receiver.requests) == 1

    restarted = Notifier(store, settings)
    assert restarted.flush(T0 + 7 * S) == FlushResult(2, 0, 0, 0)  # firing, then at once its resolve
    assert _statuses(http_receiver) == [("firing", 500), ("firing", 200), ("resolved", 200)]
    keys = {body["dedup_key"] for _, _, body in http_receiver.requests}
    assert len(keys) == 1


def test_a_dead_lettered_firing_no_longer_holds_its_resolve(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([400, 200])  # a client error: the firing is dead at once
    notifier = Notifier(store, _settings(("hook", http_receiver)))
    alert = firing()
    notifier.submit([(alert, [])], T0)
    notifier.submit([(resolved(alert, T0 + S), [])], T0 + S)
    assert notifier.flush(T0 + S) == FlushResult(1, 0, 1, 0)
    assert _statuses(http_receiver) == [("firing", 400), ("resolved", 200)]


def test_other_alerts_are_not_held_by_one_alert_backing_off(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([500, 200])
    notifier = Notifier(store, _settings(("hook", http_receiver), delivery_workers=1))
    a, b = firing(labels={"tenant": "a"}), firing(labels={"tenant": "b"})
    notifier.submit([(a, [])], T0)
    notifier.submit([(b, [])], T0)
    assert notifier.flush(T0) == FlushResult(1, 1, 0, 1)  # a failed, b went
    tenants = [body["labels"]["tenant"] for _, _, body in http_receiver.requests]
    assert tenants == ["a", "b"]


def test_a_hanging_receiver_does_not_hold_the_others(store: SqliteStore) -> None:
    with HTTPReceiver() as slow, HTTPReceiver() as fast:
        notifier = Notifier(
            store, _settings(("slow", slow), ("fast", fast), delivery_workers=6, delivery_per_receiver=3)
        )
        notifier.submit([(firing(labels={"tenant": f"t{i}"}), []) for i in range(8)], T0)
        slow.hold()
        result: list[FlushResult] = []
        flush = threading.Thread(target=lambda: result.append(notifier.flush(T0)))
        flush.start()
        try:
            fast.wait_for(8, timeout=30)  # all of them while the slow receiver answers none
            assert len(slow.wait_for(3, timeout=30)) == 3  # it holds at most its share of the workers
            # a page queued meanwhile does not wait for the slow receiver's backlog either
            notifier.submit([(firing(labels={"tenant": "late"}), [])], T0)
            assert fast.wait_for(9, timeout=30)[-1][2]["labels"] == {"tenant": "late"}
        finally:
            slow.release()
        flush.join(30)
        assert result == [FlushResult(18, 0, 0, 0)]
        assert len(slow.requests) == 9


def test_replicas_keep_one_alerts_order(pg_url: str) -> None:
    """Replica B never claims a resolve while replica A is still sending its firing."""
    store = open_store(pg_url)
    try:
        with HTTPReceiver() as hook:
            settings = _settings(("hook", hook))
            a, b = Notifier(store, settings), Notifier(store, settings)
            a.outbox.share("a", timedelta(seconds=60), lambda: True)
            b.outbox.share("b", timedelta(seconds=60), lambda: True)
            alert = firing()
            a.submit([(alert, [])], T0)
            a.submit([(resolved(alert, T0 + S), [])], T0 + S)
            hook.hold()
            done: list[FlushResult] = []
            sender = threading.Thread(target=lambda: done.append(a.flush(T0 + S)))
            sender.start()
            try:
                hook.wait_for(1, timeout=30)  # A is sending the firing (claimed, pending)
                assert b.flush(T0 + S).sent == 0  # the resolve is not B's to send before it
            finally:
                hook.release()
            sender.join(30)
            assert done == [FlushResult(2, 0, 0, 0)]
            assert _statuses(hook) == [("firing", 200), ("resolved", 200)]
            a.close()
            b.close()
    finally:
        store.close()


@pytest.mark.parametrize("workers", [1, 8])
def test_many_alerts_each_in_order(tmp_path: Path, workers: int) -> None:
    """Firing, resolve and a second episode of 40 alerts: every alert's messages arrive in order."""
    store = SqliteStore(tmp_path / "o.db")
    with HTTPReceiver() as hook:
        notifier = Notifier(store, _settings(("hook", hook), delivery_workers=workers))
        alerts = [firing(labels={"tenant": f"t{i}"}) for i in range(40)]
        notifier.submit([(x, []) for x in alerts], T0)
        notifier.submit([(resolved(x, T0 + S), []) for x in alerts], T0 + S)
        again = [firing(labels={"tenant": f"t{i}"}, active_at=T0 + 2 * S) for i in range(40)]
        notifier.submit([(x, []) for x in again], T0 + 2 * S)
        assert notifier.flush(T0 + 2 * S).sent == 120
        notifier.close()
        seen: dict[str, list[str]] = {}
        for _, _, body in hook.requests:
            seen.setdefault(body["labels"]["tenant"], []).append(body["status"])
        assert all(v == ["firing", "resolved", "firing"] for v in seen.values()) and len(seen) == 40
    store.engine.dispose()


def test_a_transition_is_decided_in_its_own_submit_even_after_a_later_flush(store: SqliteStore) -> None:
    """The outbox job may flush the groups with a later clock than an evaluation that started
    before it: the evaluation's resolve must still be queued with the transition, not a tick later."""
    notifier = Notifier(store, make_settings())
    alert = firing()
    assert notifier.submit([(alert, [])], T0) == 1
    notifier.flush(T0 + 2 * S)  # the outbox job, clock read later
    assert notifier.submit([(resolved(alert, T0 + S), [])], T0 + S) == 1


def test_a_resolve_overtaken_by_the_next_episode_is_sent_first(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    """With a group_interval, an alert can resolve and fire again before its resolve is due: the
    first episode is closed (its own dedup key) before the second one's firing."""
    notifier = Notifier(store, _settings(("hook", http_receiver), group_interval=timedelta(minutes=1)))
    alert = firing()
    assert notifier.submit([(alert, [])], T0) == 1
    assert notifier.submit([(resolved(alert, T0 + 10 * S), [])], T0 + 10 * S) == 0  # not due yet
    again = firing(active_at=T0 + 20 * S)
    assert notifier.submit([(again, [])], T0 + 20 * S) == 0
    assert notifier.flush(T0 + 70 * S).sent == 3
    sent = [(b["status"], b["dedup_key"], b["starts_at"]) for _, _, b in http_receiver.requests]
    assert [s for s, _, _ in sent] == ["firing", "resolved", "firing"]
    assert sent[0][1] == sent[1][1] != sent[2][1]
    assert sent[1][2] == sent[0][2]
