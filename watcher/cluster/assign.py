"""Which replica should evaluate which shard of which rule group: rendezvous hashing over replicas.

This module owns the pure decisions of the cluster, with no database and no clock: the hash of a
rule set, the majority rule-set hash among live replicas, the shards of a group and the shard of
a series, and the owner of each shard by highest random weight (rendezvous) hashing. It does not
own leases or heartbeats (``leases``, ``member``).

**Shards.** With ``cluster.shards: N`` (N > 1) a group is split into N shards named
``group#k/N``; a series belongs to shard ``k = fingerprint(labels) mod N`` where ``labels`` are
the alert's labels (the series' labels with the rule's laid over), so an alert and the series it is
about always sit in the same shard, whatever the replicas. The shards, not the groups, are the
units that are leased, claimed per tick and fenced; they are placed on replicas by rendezvous
hashing, so the N fixed shards per group act as virtual nodes: a replica that joins takes about
1/n of every group's shards and one that leaves hands its shards to the survivors, and no series
changes shard. With N = 1 the unit is the group itself (its name unchanged).

Rendezvous hashing gives each (group, replica) pair a pseudo-random weight and gives the group to
the replica with the highest weight, so a replica that joins takes about 1/n of the groups from
the others and a replica that leaves hands its groups to the survivors, spread evenly, while
every other group stays where it is.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..core import Labels


def rules_hash(groups: Iterable[object]) -> str:
    """Return a short, order-independent hash of rule groups (pydantic models or JSON-able data)."""
    docs = []
    for g in groups:
        dump = getattr(g, "model_dump", None)
        docs.append(json.dumps(dump(mode="json") if dump else g, sort_keys=True, default=str))
    return hashlib.sha256("\n".join(sorted(docs)).encode()).hexdigest()[:16]


def weight(group: str, replica: str) -> int:
    """Return the rendezvous weight of ``replica`` for ``group`` (64 bits of SHA-256)."""
    digest = hashlib.sha256(f"{group}\x00{replica}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner_of(group: str, replicas: Sequence[str]) -> str | None:
    """Return the replica that should own ``group`` (None when there is no replica)."""
    if not replicas:
        return None
    return max(replicas, key=lambda r: (weight(group, r), r))


def assign(groups: Iterable[str], replicas: Sequence[str]) -> dict[str, str | None]:
    """Return the owner of every group."""
    return {g: owner_of(g, replicas) for g in groups}


SHARD_SEP = "#"


def shard_units(group: str, shards: int) -> list[str]:
    """Return the units ``group`` is leased as: itself when ``shards`` is 1, else ``group#k/N``."""
    if shards <= 1:
        return [group]
    return [f"{group}{SHARD_SEP}{k}/{shards}" for k in range(shards)]


@dataclass(frozen=True, slots=True)
class Unit:
    """A leased unit: a group, or one shard of it."""

    name: str
    group: str
    shard: int
    shards: int


def parse_unit(name: str) -> Unit:
    """Return the group and shard a unit name stands for (a plain group name is shard 0 of 1)."""
    group, sep, tail = name.rpartition(SHARD_SEP)
    if sep and "/" in tail:
        k, _, n = tail.partition("/")
        if k.isdigit() and n.isdigit() and 0 <= int(k) < int(n):
            return Unit(name, group, int(k), int(n))
    return Unit(name, name, 0, 1)


def shard_of(labels: Labels, shards: int) -> int:
    """Return the shard of a series whose alert labels are ``labels`` (stable across processes)."""
    if shards <= 1:
        return 0
    return int(labels.fingerprint[:16], 16) % shards


def owns(unit: Unit) -> Callable[[Labels], bool]:
    """Return the predicate "alert labels belong to ``unit``"."""
    k, n = unit.shard, unit.shards
    return lambda labels: shard_of(labels, n) == k


@dataclass(frozen=True, slots=True)
class Peer:
    """A live replica as the registry shows it."""

    replica_id: str
    rules_hash: str
    started_at: datetime


def majority_hash(peers: Sequence[Peer]) -> str | None:
    """Return the rule-set hash most live replicas run; a tie goes to the longest-running replica's.

    The tie rule keeps a lone new replica with different rules (a half-finished deploy, a stale
    checkout) from taking groups away from the one that was already running.
    """
    if not peers:
        return None
    counts = Counter(p.rules_hash for p in peers)
    best = max(counts.values())
    tied = {h for h, n in counts.items() if n == best}
    oldest = min((p for p in peers if p.rules_hash in tied), key=lambda p: (p.started_at, p.replica_id))
    return oldest.rules_hash


def eligible(peers: Sequence[Peer]) -> list[str]:
    """Return the ids of the live replicas that run the majority rule set (the ones given groups)."""
    h = majority_hash(peers)
    return sorted(p.replica_id for p in peers if p.rules_hash == h)
