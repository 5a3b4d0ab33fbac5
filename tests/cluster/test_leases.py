"""Leases, tick claims, the fence and outbox claims on the real PostgreSQL (in-process, no sleeps).

Expiry is simulated by moving ``expires_at`` / ``heartbeat_at`` / ``claimed_until`` into the past
with SQL, so nothing here depends on timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from tests.notify.factory import T0, firing, make_settings
from watcher.cluster import leases
from watcher.errors import LeaseLostError
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers.base import RecordingReceiver
from watcher.store.db import Store, open_store

TTL = timedelta(seconds=30)
TICK = datetime(2026, 11, 27, 0, 0, 10, tzinfo=UTC)


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    s = open_store(pg_url)
    try:
        yield s
    finally:
        s.close()


def _me(rid: str) -> leases.Me:
    return leases.Me(rid, "host", 1, "test", datetime.now(UTC))


def _acquire(store: Store, group: str, owner: str) -> int | None:
    with store.engine.begin() as conn:
        return leases.acquire(conn, group, owner, TTL)


def _expire(store: Store, group: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cluster_leases SET expires_at = clock_timestamp() - interval '1 second' "
                "WHERE group_name = :g"
            ),
            {"g": group},
        )


def _claim(store: Store, group: str, owner: str, epoch: int, tick: datetime = TICK) -> bool:
    with store.engine.begin() as conn:
        return leases.claim_tick(conn, group, tick, owner, epoch)


def test_acquire_renew_and_takeover_after_expiry_bump_the_epoch(store: Store) -> None:
    assert _acquire(store, "cost", "a") == 1
    assert _acquire(store, "cost", "a") == 1  # renewal keeps the epoch
    assert _acquire(store, "cost", "b") is None  # held and valid: b cannot take it
    _expire(store, "cost")
    assert _acquire(store, "cost", "b") == 2  # changed hands: a new fencing token
    _expire(store, "cost")
    assert _acquire(store, "cost", "a") == 3  # a comes back after expiry: its memory is stale
    with store.engine.begin() as conn:  # a restarted before its lease ran out: fresh memory, new token
        assert leases.acquire(conn, "cost", "a", TTL, fresh=True) == 4
        assert leases.acquire(conn, "cost", "b", TTL, fresh=True) is None


def test_released_lease_is_free_at_once(store: Store) -> None:
    assert _acquire(store, "cost", "a") == 1
    with store.engine.begin() as conn:
        assert leases.release(conn, ["cost", "other"], "b") == []  # not b's to release
        assert leases.release(conn, ["cost"], "a") == ["cost"]
    assert _acquire(store, "cost", "b") == 2


def test_each_tick_is_claimed_once_and_only_under_a_valid_lease(store: Store) -> None:
    assert _acquire(store, "cost", "a") == 1
    assert _claim(store, "cost", "a", 1)
    assert not _claim(store, "cost", "a", 1)  # the same tick again
    assert not _claim(store, "cost", "b", 1, TICK + timedelta(seconds=1))  # b holds no lease
    assert not _claim(store, "cost", "a", 0, TICK + timedelta(seconds=1))  # stale epoch
    assert _claim(store, "cost", "a", 1, TICK + timedelta(seconds=1))
    _expire(store, "cost")
    assert not _claim(store, "cost", "a", 1, TICK + timedelta(seconds=2))  # expired
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT replica_id, epoch FROM cluster_evaluations ORDER BY tick")).all()
    assert [tuple(r) for r in rows] == [("a", 1), ("a", 1)]


def test_fence_refuses_a_lost_lease_and_holds_off_a_takeover_until_commit(store: Store) -> None:
    assert _acquire(store, "cost", "a") == 1
    with Session(store.engine) as s, pytest.raises(LeaseLostError, match="epoch 7"):
        leases.check_fence(s, "cost", "a", 7)
    _expire(store, "cost")
    assert _acquire(store, "cost", "a") == 2
    with Session(store.engine) as writer:
        leases.check_fence(writer, "cost", "a", 2)  # holds the lease row FOR SHARE until commit
        _expire_via_other = store.engine.connect()
        try:
            with _expire_via_other.begin():
                _expire_via_other.exec_driver_sql("SET LOCAL lock_timeout = '300ms'")
                with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                    _expire_via_other.execute(
                        sa.text("UPDATE cluster_leases SET owner = 'b' WHERE group_name = 'cost'")
                    )
        finally:
            _expire_via_other.close()
        writer.commit()
    _expire(store, "cost")
    assert _acquire(store, "cost", "b") == 3
    with Session(store.engine) as s, pytest.raises(LeaseLostError):
        leases.check_fence(s, "cost", "a", 2)


def test_heartbeat_lists_only_replicas_heard_within_the_ttl(store: Store) -> None:
    with store.engine.begin() as conn:
        leases.heartbeat(conn, _me("a"), "H1", TTL)
        peers = leases.heartbeat(conn, _me("b"), "H2", TTL)
    assert sorted((p.replica_id, p.rules_hash) for p in peers) == [("a", "H1"), ("b", "H2")]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cluster_replicas SET heartbeat_at = clock_timestamp() - interval '31 "
                "seconds' WHERE replica_id = 'a'"
            )
        )
        peers = leases.heartbeat(conn, _me("b"), "H2", TTL)
    assert [p.replica_id for p in peers] == ["b"]


def test_fenced_submit_enqueues_nothing_without_the_lease(store: Store) -> None:
    rec = RecordingReceiver("console")
    notifier = Notifier(store, make_settings(), {"console": rec})
    assert _acquire(store, "llm-cost", "a") == 1

    def fence_a(epoch: int):  # type: ignore[no-untyped-def]
        return lambda s: leases.check_fence(s, "llm-cost", "a", epoch)

    with pytest.raises(LeaseLostError):
        notifier.submit([(firing(), [])], T0, fence=fence_a(5))
    assert notifier.pending_count() == 0
    assert notifier.submit([(firing(), [])], T0, fence=fence_a(1)) == 1
    assert notifier.pending_count() == 1


# --- outbox claims ------------------------------------------------------------------------------


def _notifier(store: Store, owner: str, rec: RecordingReceiver, may_send: list[bool]) -> Notifier:
    n = Notifier(store, make_settings(), {"console": rec})
    n.outbox.share(owner, timedelta(seconds=60), lambda: may_send[0])
    return n


def test_claimed_rows_are_skipped_by_other_senders_until_the_claim_runs_out(store: Store) -> None:
    rec_a, rec_b = RecordingReceiver("console"), RecordingReceiver("console")
    a = _notifier(store, "a", rec_a, [True])
    b = _notifier(store, "b", rec_b, [True])
    for tenant in ("t1", "t2", "t3"):
        a.submit([(firing(labels={"tenant": tenant}), [])], T0)
    claimed = a.outbox.due(T0)  # a claims and "dies" before sending
    assert len(claimed) == 3
    assert b.flush(T0).sent == 0  # b skips rows a holds
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE outbox SET claimed_until = clock_timestamp() - interval '1 second'"))
    result = b.flush(T0)
    assert (result.sent, result.pending) == (3, 0)
    assert sorted(n.alert.labels["tenant"] for n in rec_b.sent) == ["t1", "t2", "t3"]
    assert rec_a.sent == []


def test_concurrent_claims_split_the_rows(store: Store) -> None:
    rec = RecordingReceiver("console")
    a = _notifier(store, "a", rec, [True])
    b = _notifier(store, "b", rec, [True])
    for i in range(6):
        a.submit([(firing(labels={"tenant": f"t{i}"}), [])], T0)
    with Session(store.engine) as locker:  # a's claim transaction still open: b must skip, not wait
        locker.connection().execute(sa.text("SELECT id FROM outbox ORDER BY id LIMIT 2 FOR UPDATE"))
        got_b = b.outbox.due(T0)
        locker.rollback()
    assert len(got_b) == 4
    got_a = a.outbox.due(T0)
    assert len(got_a) == 2
    assert {r.id for r in got_a}.isdisjoint({r.id for r in got_b})


def test_a_sender_whose_lease_ran_out_sends_nothing(store: Store) -> None:
    rec = RecordingReceiver("console")
    may = [False]
    a = _notifier(store, "a", rec, may)
    a.submit([(firing(), [])], T0)
    assert a.flush(T0).sent == 0
    assert rec.sent == []
    may[0] = True
    assert a.flush(T0).sent == 1


def test_failed_delivery_releases_the_claim_for_the_retry(store: Store) -> None:
    from watcher.errors import NotifyError

    rec = RecordingReceiver("console", failures=[NotifyError("boom", retryable=True, reason="server_error")])
    a = _notifier(store, "a", rec, [True])
    a.submit([(firing(), [])], T0)
    assert a.flush(T0).failed == 1
    with store.engine.connect() as conn:
        claimed_by, claimed_until = conn.execute(
            sa.text("SELECT claimed_by, claimed_until FROM outbox")
        ).one()
    assert (claimed_by, claimed_until) == ("a", None)
    assert a.flush(T0 + timedelta(minutes=10)).sent == 1


def test_fenced_alert_store_writes_nothing_once_the_lease_is_lost(store: Store) -> None:
    from watcher.cluster.member import FencedAlertStore
    from watcher.engine.state import AlertStore

    assert _acquire(store, "llm-cost", "a") == 1
    alerts = FencedAlertStore(store, lambda s: leases.check_fence(s, "llm-cost", "a", 1))
    alerts.save([firing(labels={"tenant": "one"})], [])
    _expire(store, "llm-cost")
    assert _acquire(store, "llm-cost", "b") == 2
    with pytest.raises(LeaseLostError):
        alerts.save([firing(labels={"tenant": "two"})], [])
    assert [a.labels["tenant"] for a in AlertStore(store).load()] == ["one"]


def _mark(store: Store, group: str, owner: str, epoch: int, tick: datetime = TICK) -> None:
    with Session(store.engine) as s:
        leases.check_fence(s, group, owner, epoch)
        leases.mark_done(s, group, tick, owner, epoch)
        s.commit()


def test_only_done_claims_count_and_a_claim_not_done_passes_to_the_next_epoch_only(store: Store) -> None:
    later = TICK + timedelta(seconds=1)
    assert _acquire(store, "cost", "a") == 1
    assert _claim(store, "cost", "a", 1)
    _mark(store, "cost", "a", 1)
    assert _claim(store, "cost", "a", 1, later)  # claimed, then a is killed: never done
    with store.engine.connect() as conn:
        assert leases.last_ticks(conn, ["cost", "none"]) == {"cost": TICK.timestamp()}
    assert not _claim(store, "cost", "a", 1, later)  # the same epoch does not re-claim
    _expire(store, "cost")  # one lease TTL later
    assert _acquire(store, "cost", "b") == 2
    assert not _claim(store, "cost", "b", 2)  # done: evaluated, never again
    assert _claim(store, "cost", "b", 2, later)  # abandoned by epoch 1: b takes it over
    with Session(store.engine) as s, pytest.raises(LeaseLostError, match="taken over"):
        leases.mark_done(s, "cost", later, "a", 1)  # a's late completion cannot mark b's claim
    _mark(store, "cost", "b", 2, later)
    with store.engine.connect() as conn:
        assert leases.last_ticks(conn, ["cost"]) == {"cost": later.timestamp()}
        rows = conn.execute(
            sa.text("SELECT replica_id, epoch, done FROM cluster_evaluations ORDER BY tick")
        ).all()
    assert [tuple(r) for r in rows] == [("a", 1, True), ("b", 2, True)]
