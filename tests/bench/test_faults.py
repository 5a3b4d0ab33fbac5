"""The fault campaign's accounting (``watcher bench faults``): lost, out of order, unresolved."""

from __future__ import annotations

from datetime import UTC, datetime

from watcher.bench.faults import Hit, analyse

T = datetime(2026, 11, 27, tzinfo=UTC)


def _hit(at: float, key: str, status: str, nid: str) -> Hit:
    return Hit(at, at, 200, {"dedup_key": key, "status": status, "notification_id": nid})


def test_in_order_episodes_with_a_repeat_count_nothing_wrong() -> None:
    hits = [
        _hit(1, "k1", "firing", "a"),
        _hit(2, "k1", "resolved", "b"),
        _hit(3, "k1", "resolved", "b"),  # a kill between the answer and marking the row sent
        _hit(4, "k2", "firing", "c"),
        _hit(5, "k2", "resolved", "d"),
    ]
    outbox = [("sent", n, T) for n in "abcd"]
    r = analyse(hits, outbox)
    assert (r["episodes"], r["accepted"], r["repeats"]) == (2, 5, 1)
    assert r["lost"] == r["left_in_outbox"] == r["resolve_before_firing"] == r["unresolved"] == 0


def test_a_resolve_first_a_missing_resolve_and_a_lost_row_are_each_counted() -> None:
    hits = [
        _hit(2, "k1", "resolved", "b"),  # accepted before its firing
        _hit(3, "k1", "firing", "a"),
        _hit(4, "k2", "firing", "c"),  # never resolved
    ]
    outbox = [("sent", "a", T), ("sent", "b", T), ("sent", "c", T), ("sent", "d", T), ("pending", "e", T)]
    r = analyse(hits, outbox)
    assert r["resolve_before_firing"] == 1
    assert r["unresolved"] == 1
    assert r["lost"] == 1  # d was marked sent but never arrived
    assert r["left_in_outbox"] == 1
