"""Series shards: the hash of a series' labels, balance, minimal movement (pure, on a fixed label set).

Every number here is deterministic (SHA-256 of fixed labels and replica ids), so the bounds pin the
behaviour rather than sample it: a change of the hash or of the assignment shows up as a failure.
"""

from __future__ import annotations

from collections import Counter

import pytest

from watcher.cluster.assign import Unit, owner_of, owns, parse_unit, shard_of, shard_units
from watcher.core import Labels

GROUPS = [f"g{i}" for i in range(4)]
SERIES = [
    (g, Labels({"tenant": f"t{i % 500}", "model": f"m{i // 500}"})) for g in GROUPS for i in range(5000)
]
REPLICAS = ["r1", "r2", "r3", "r4"]


def _owners(shards: int, replicas: list[str]) -> list[str | None]:
    units = {g: shard_units(g, shards) for g in GROUPS}
    placed = {u: owner_of(u, replicas) for g in GROUPS for u in units[g]}
    return [placed[units[g][shard_of(labels, shards)]] for g, labels in SERIES]


def _balance(owners: list[str | None], n: int) -> float:
    return max(Counter(owners).values()) / (len(owners) / n)


def test_units_are_the_group_itself_without_sharding_and_parse_back() -> None:
    assert shard_units("cost", 1) == ["cost"]
    assert parse_unit("cost") == Unit("cost", "cost", 0, 1)
    units = shard_units("a#b", 4)
    assert units == ["a#b#0/4", "a#b#1/4", "a#b#2/4", "a#b#3/4"]
    assert [parse_unit(u) for u in units] == [Unit(u, "a#b", k, 4) for k, u in enumerate(units)]
    assert parse_unit("odd#9/4") == Unit("odd#9/4", "odd#9/4", 0, 1)  # not a shard name: a group


def test_the_shard_of_a_series_is_its_label_hash_and_the_same_in_every_process() -> None:
    labels = Labels({"tenant": "acme", "model": "gpt"})
    assert shard_of(labels, 16) == shard_of(Labels({"model": "gpt", "tenant": "acme"}), 16)
    assert shard_of(labels, 16) == int(labels.fingerprint[:16], 16) % 16  # SHA-256: no per-process seed
    assert shard_of(labels, 1) == 0
    per_shard = Counter(shard_of(labels, 8) for _, labels in SERIES[:5000])
    assert set(per_shard) == set(range(8))
    assert max(per_shard.values()) / (5000 / 8) < 1.1  # the hash spreads series evenly over shards
    keep = owns(Unit("g#3/8", "g", 3, 8))
    assert [keep(lbl) for _, lbl in SERIES[:50]] == [shard_of(lbl, 8) == 3 for _, lbl in SERIES[:50]]


@pytest.mark.parametrize(
    ("shards", "replicas", "bound"),
    [
        (32, REPLICAS, 1.2),
        (32, ["a", "b", "c", "d"], 1.05),
        (64, REPLICAS, 1.15),
        (64, [*REPLICAS, "r5"], 1.25),
    ],
)
def test_series_are_balanced_within_a_bound(shards: int, replicas: list[str], bound: float) -> None:
    owners = _owners(shards, replicas)
    assert None not in owners
    assert _balance(owners, len(replicas)) <= bound


def test_whole_groups_are_what_sharding_fixes() -> None:
    # four equal groups on four replicas: by whole group one replica gets two (max/mean 2.0) here
    assert _balance(_owners(1, ["a", "b", "c", "d"]), 4) == 2.0
    assert _balance(_owners(32, ["a", "b", "c", "d"]), 4) < 1.05


@pytest.mark.parametrize("shards", [16, 64])
def test_a_leaving_replica_moves_only_its_own_series_spread_over_the_survivors(shards: int) -> None:
    before = _owners(shards, REPLICAS)
    after = _owners(shards, ["r1", "r2", "r4"])
    moved = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
    assert {before[i] for i in moved} == {"r3"}
    assert len(moved) == before.count("r3")
    assert set(Counter(after[i] for i in moved)) == {"r1", "r2", "r4"}


@pytest.mark.parametrize("shards", [16, 64])
def test_a_joining_replica_takes_about_its_share_and_only_moves_series_to_itself(shards: int) -> None:
    before = _owners(shards, REPLICAS)
    after = _owners(shards, [*REPLICAS, "r5"])
    moved = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
    assert {after[i] for i in moved} == {"r5"}
    share = len(moved) / len(SERIES)
    assert 0.12 <= share <= 0.28, share  # 1/5 expected


def test_no_series_changes_shard_when_replicas_change() -> None:
    # the shard depends on the labels and the shard count only; replicas only move whole shards
    names = {g: shard_units(g, 16) for g in GROUPS}
    units = {names[g][shard_of(lbl, 16)] for g, lbl in SERIES}
    assert len(units) == 4 * 16
