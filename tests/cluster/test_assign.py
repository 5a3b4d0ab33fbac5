"""Rendezvous assignment, rule-set hashes and the majority rule: pure functions, table-driven."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from watcher.cluster.assign import Peer, assign, eligible, majority_hash, owner_of, rules_hash

GROUPS = [f"group-{i}" for i in range(300)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_every_group_has_exactly_one_owner_and_the_load_is_even() -> None:
    replicas = ["a", "b", "c"]
    owners = assign(GROUPS, replicas)
    assert set(owners) == set(GROUPS)
    load = Counter(owners.values())
    assert set(load) == set(replicas)
    assert all(70 <= n <= 130 for n in load.values()), load  # 100 each on average


def test_owner_does_not_depend_on_the_order_replicas_are_listed() -> None:
    assert assign(GROUPS, ["a", "b", "c"]) == assign(GROUPS, ["c", "a", "b"])


def test_a_dead_replica_only_moves_its_own_groups_spread_over_the_survivors() -> None:
    before = assign(GROUPS, ["a", "b", "c"])
    after = assign(GROUPS, ["a", "c"])
    moved = {g for g in GROUPS if before[g] != after[g]}
    assert moved == {g for g in GROUPS if before[g] == "b"}
    assert set(Counter(after[g] for g in moved)) == {"a", "c"}


def test_a_joining_replica_takes_about_a_third_and_takes_only() -> None:
    before = assign(GROUPS, ["a", "b"])
    after = assign(GROUPS, ["a", "b", "c"])
    moved = [g for g in GROUPS if before[g] != after[g]]
    assert all(after[g] == "c" for g in moved)
    assert 70 <= len(moved) <= 130


def test_no_replica_means_no_owner() -> None:
    assert owner_of("g", []) is None


def test_rules_hash_ignores_order_and_sees_any_change() -> None:
    a = {"name": "cost", "interval": "1m"}
    b = {"name": "quality", "interval": "5m"}
    assert rules_hash([a, b]) == rules_hash([b, a])
    assert rules_hash([a, b]) != rules_hash([a, {**b, "interval": "1m"}])
    assert len(rules_hash([a])) == 16


def _peer(rid: str, h: str, started_s: int) -> Peer:
    return Peer(rid, h, T0 + timedelta(seconds=started_s))


@pytest.mark.parametrize(
    ("peers", "majority", "eligible_ids"),
    [
        ([], None, []),
        ([_peer("a", "H1", 0)], "H1", ["a"]),
        ([_peer("a", "H1", 0), _peer("b", "H1", 5), _peer("c", "H2", 1)], "H1", ["a", "b"]),
        # a tie goes to the rules of the replica that has run longest: a lone new deploy waits
        ([_peer("old", "H1", 0), _peer("new", "H2", 9)], "H1", ["old"]),
        ([_peer("new", "H2", 9), _peer("old", "H1", 0)], "H1", ["old"]),
        # once most replicas run the new rules, they take over
        ([_peer("old", "H1", 0), _peer("n1", "H2", 9), _peer("n2", "H2", 10)], "H2", ["n1", "n2"]),
    ],
)
def test_majority_hash_and_who_is_eligible(
    peers: list[Peer], majority: str | None, eligible_ids: list[str]
) -> None:
    assert majority_hash(peers) == majority
    assert eligible(peers) == eligible_ids
