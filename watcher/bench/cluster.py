"""``watcher bench cluster``: replicas sharing rule groups' series by shard, on a controlled clock.

This module owns one simulation: ``--replicas`` real ``ClusterMember`` objects over real daemons in
one process, sharing a PostgreSQL database of their own (leases, tick claims, the fence, alert
state, the outbox and detector checkpoints are all the real ones), evaluating ``--groups`` rule
groups of ``--series`` series in total split into ``--shards`` shards per group. The series come
from a synthetic source (standing in for Prometheus: every replica fetches the whole group once
per tick and keeps its shards), so what is measured is the cluster and the engine, not a backend.
It does not own the cluster (``watcher.cluster``) nor the daemon.

It reports, per replica: units and series held, the CPU seconds of its cold start (the first
evaluation: detectors warmed from ``--warm`` points) and of a steady tick (one new point per
series); the balance (max/mean of series per replica, and what whole-group assignment would give);
then one replica is killed (its heartbeat and leases expired in the database) and the survivors'
first evaluation of the shards they took over is timed: with the shards' detector checkpoints, and
again (a second replica killed) with the checkpoints deleted, i.e. the cold start a takeover paid
before. Replicas run one after another in this process, so each replica's CPU time is its own; the
database server's CPU is not counted.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

EPOCH = datetime(2026, 1, 5, tzinfo=UTC)
"""First instant of the synthetic data (fixed: no measurement depends on the day it runs)."""
STEP_S = 60.0
DB_NAME = "watcher_bench_cluster"


class SyntheticSource:
    """Series ``{group, tenant}`` with deterministic values at every step (a stand-in for Prometheus).

    A value depends only on the series and the time, so every replica, before or after a takeover,
    sees the same data. A fraction ``anomalous`` of each group's series jumps fivefold from ``jump``.
    """

    name = "prometheus"
    default = None

    def __init__(self, per_group: dict[str, int], *, anomalous: float, jump: float) -> None:
        from ..core import Labels

        self.labels = {
            g: [Labels({"group": g, "tenant": f"t{i:06d}"}) for i in range(n)] for g, n in per_group.items()
        }
        self.base = {g: 1.0 + (np.arange(n) % 97) / 10.0 for g, n in per_group.items()}
        self.anomalous = anomalous
        self.jump = jump
        self.fetches = 0

    def fetch(self, rule: Any, start: datetime, end: datetime, step: timedelta) -> list[Any]:
        """Return every series of the rule's group on the step grid in ``(start, end]``."""
        from ..core import Series
        from ..sources.base import step_grid

        self.fetches += 1
        group = rule.labels["bench_group"]
        grid = step_grid(start, end, step)
        base = self.base[group]
        n = len(base)
        idx = np.arange(n, dtype=np.float64)[:, None]
        noise = np.sin(idx * 12.9898 + grid[None, :] * 0.0078233) * 43758.5453
        noise = noise - np.floor(noise)  # a deterministic pseudo-random value in [0, 1)
        values = base[:, None] * (1.0 + 0.1 * (noise - 0.5))
        hot = int(n * self.anomalous)
        if hot:
            values[:hot, grid >= self.jump] *= 5.0
        labels = self.labels[group]
        return [Series(labels[i], grid, values[i]) for i in range(n)]


@dataclass
class ReplicaResult:
    """One replica's share and times."""

    replica: str
    units: int = 0
    series: int = 0
    cold_cpu_s: float = 0.0
    tick_cpu_s: list[float] = field(default_factory=list)

    @property
    def tick_cpu_median_s(self) -> float:
        ticks = sorted(self.tick_cpu_s)
        return ticks[len(ticks) // 2] if ticks else math.nan


def balance_over_ids(per_unit: dict[str, int], replicas: int, id_sets: int = 200) -> dict[str, float]:
    """Return the median and 90th percentile of max/mean series per replica over ``id_sets`` id sets.

    Replica ids are the hash input of the assignment, so the balance of one run depends on them;
    this gives its distribution over fixed, made-up id sets (``s{k}-r{i}``: reproducible).
    """
    from ..cluster.assign import assign

    total = sum(per_unit.values())
    found = []
    for k in range(id_sets):
        ids = [f"s{k}-r{i}" for i in range(replicas)]
        load = dict.fromkeys(ids, 0)
        for unit, owner in assign(per_unit, ids).items():
            assert owner is not None
            load[owner] += per_unit[unit]
        found.append(max(load.values()) / (total / replicas))
    found.sort()
    return {"median": round(found[len(found) // 2], 3), "p90": round(found[int(len(found) * 0.9)], 3)}


def _rules(groups: list[str]) -> str:
    text = "groups:\n"
    for g in groups:
        text += (
            f"  - name: {g}\n    interval: 1m\n    rules:\n"
            f"      - alert: Cost_{g}\n        expr: 'bench_cost{{group=\"{g}\"}}'\n"
            f"        labels: {{bench_group: {g}}}\n"
            "        detector: {kind: ewma, halflife: 30m, min_points: 30, sensitivity: 4, direction: up}\n"
            "        for: 2m\n"
        )
    return text


def _fresh_database(base_url: str, name: str) -> str:
    import psycopg

    admin = base_url.replace("postgresql+psycopg://", "postgresql://")
    url = base_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url


def _drop_database(base_url: str, name: str) -> None:
    import psycopg

    admin = base_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _kill(member: Any) -> dict[str, int]:
    """Expire ``member``'s heartbeat and leases in the database (SIGKILL as the others see it)."""
    import sqlalchemy as sa

    held = member.held()
    with member.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cluster_replicas SET heartbeat_at = clock_timestamp() - interval '1 day' "
                "WHERE replica_id = :r"
            ),
            {"r": member.replica_id},
        )
        conn.execute(
            sa.text("UPDATE cluster_leases SET expires_at = clock_timestamp() WHERE owner = :r"),
            {"r": member.replica_id},
        )
    member._stop.set()  # a dead replica evaluates nothing more
    return dict(held)


def _evaluate(member: Any, at: datetime, only: set[str] | None = None) -> tuple[float, float]:
    """Evaluate ``member``'s held units at ``at``; return (CPU s, wall s).

    A heartbeat cycle first renews the leases (the replicas here have no heartbeat thread, and one
    replica's evaluation on a loaded machine can outlast a lease).
    """
    member.cycle()
    c0, w0 = time.process_time(), time.perf_counter()
    for unit, epoch in sorted(member.held().items()):
        if only is None or unit in only:
            member.evaluate(unit, epoch, at.timestamp())
    return time.process_time() - c0, time.perf_counter() - w0


def run(
    *,
    pg_url: str,
    series: int = 100_000,
    replicas: int = 4,
    groups: int = 4,
    shards: int = 16,
    warm: int = 120,
    ticks: int = 3,
    anomalous: float = 0.001,
    log: Callable[[str], None] = lambda _: None,
    db_name: str = DB_NAME,
) -> dict[str, Any]:
    """Run the simulation; return its results as plain data."""
    from prometheus_client import CollectorRegistry

    from ..cluster.assign import assign, shard_units
    from ..cluster.member import ClusterMember
    from ..cluster.sharedgroups import StoreGroupPeers
    from ..cluster.status import collect
    from ..config import Settings
    from ..daemon import Daemon
    from ..notify.receivers.base import RecordingReceiver
    from ..selfmetrics import SelfMetrics

    names = [f"g{i}" for i in range(groups)]
    per_group = {g: series // groups + (1 if i < series % groups else 0) for i, g in enumerate(names)}
    start = EPOCH + timedelta(seconds=STEP_S * warm)
    source = SyntheticSource(per_group, anomalous=anomalous, jump=(start + timedelta(minutes=1)).timestamp())
    url = _fresh_database(pg_url, db_name)
    tmp = Path(tempfile.mkdtemp(prefix="watcher-bench-cluster-"))
    (tmp / "rules.yaml").write_text(_rules(names))
    ids = [f"r{i + 1}" for i in range(replicas)]
    members: list[Any] = []
    daemons: list[Any] = []
    try:
        for rid in ids:
            settings = Settings(
                store={"url": url},
                rules=[tmp],
                server={"enabled": False},
                cluster={"replica_id": rid, "lease_ttl": "1h", "shards": shards},
                checkpoint_interval="10m",
            )
            d = Daemon(
                settings,
                receivers={"console": RecordingReceiver("console")},
                metrics=SelfMetrics(CollectorRegistry()),
            )
            d.sources["prometheus"] = source
            m = ClusterMember(d)
            d.notifier.outbox.share(m.replica_id, m.claim_for, m.valid)
            d.notifier.peers = StoreGroupPeers()
            daemons.append(d)
            members.append(m)
        for _ in range(2):
            for m in members:
                m.cycle()
        results = {m.replica_id: ReplicaResult(m.replica_id, units=len(m.held())) for m in members}
        log(f"{len(members)} replicas hold {sum(r.units for r in results.values())} units")
        at = start
        for m in members:
            cpu, _ = _evaluate(m, at)
            results[m.replica_id].cold_cpu_s = cpu
            log(f"{m.replica_id}: cold start {cpu:.1f} s CPU")
        for k in range(ticks):
            at = start + timedelta(seconds=STEP_S * (k + 1))
            for m in members:
                cpu, _ = _evaluate(m, at)
                results[m.replica_id].tick_cpu_s.append(cpu)
            log(f"tick {k + 1}: " + ", ".join(f"{r}: {v.tick_cpu_s[-1]:.2f} s" for r, v in results.items()))
        for m in members:
            m.cycle()
        doc = collect(daemons[0].store, timedelta(hours=1))
        for r in doc["replicas"]:
            results[r["replica_id"]].series = r["series"]
        counts = [r.series for r in results.values()]
        mean = sum(counts) / len(counts)
        whole = assign(names, ids)  # what assignment by whole group would give
        whole_balance = max(sum(per_group[g] for g, o in whole.items() if o == rid) for rid in ids) / (
            series / replicas
        )

        from ..cluster.assign import shard_of
        from ..core import Labels

        per_unit: Counter[str] = Counter()
        for g in names:
            units = shard_units(g, shards)
            for labels in source.labels[g]:
                per_unit[units[shard_of(labels.merge(Labels({"bench_group": g})), shards)]] += 1
        sharded_dist = balance_over_ids(dict(per_unit), replicas)
        whole_dist = balance_over_ids(per_group, replicas)

        takeovers = []
        alive = list(members)
        for label, keep_checkpoints in (("from checkpoints", True), ("cold (checkpoints deleted)", False)):
            victim = alive.pop()
            lost = _kill(victim)
            if not keep_checkpoints:
                import sqlalchemy as sa

                with victim.store.engine.begin() as conn:
                    conn.execute(
                        sa.text("DELETE FROM detector_state WHERE group_name = ANY(:u)"), {"u": list(lost)}
                    )
            for m in alive:
                m.cycle()
            at = at + timedelta(seconds=STEP_S)
            cpu = wall = 0.0
            for m in alive:
                c, w = _evaluate(m, at, only=set(lost))
                cpu += c
                wall = max(wall, w)
            lost_series = sum(lz["series"] or 0 for lz in doc["leases"] if lz["group"] in lost)
            takeovers.append(
                {
                    "killed": victim.replica_id,
                    "how": label,
                    "units": len(lost),
                    "series": lost_series,
                    "cpu_s": round(cpu, 3),
                    "slowest_survivor_s": round(wall, 3),
                }
            )
            log(f"takeover of {victim.replica_id} {label}: {cpu:.2f} s CPU over the survivors")
            for m in alive:  # the survivors carry on at the same tick grid
                _evaluate(m, at + timedelta(seconds=STEP_S))
            at = at + timedelta(seconds=STEP_S)
        return {
            "series": series,
            "replicas": replicas,
            "groups": groups,
            "shards_per_group": shards,
            "units": len(names) * len(shard_units(names[0], shards)),
            "warm_points": warm,
            "per_replica": [
                {
                    "replica": r.replica,
                    "units": r.units,
                    "series": r.series,
                    "cold_cpu_s": round(r.cold_cpu_s, 3),
                    "tick_cpu_s": round(r.tick_cpu_median_s, 3),
                }
                for r in results.values()
            ],
            "balance_max_over_mean": round(max(counts) / mean, 3) if mean else None,
            "whole_group_balance_max_over_mean": round(whole_balance, 3),
            "balance_over_200_id_sets": sharded_dist,
            "whole_group_balance_over_200_id_sets": whole_dist,
            "backend_fetches": source.fetches,
            "takeovers": takeovers,
            "peak_rss_mb_all_replicas": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        for d in daemons:
            d.close()
        _drop_database(pg_url, db_name)


def table(doc: dict[str, Any]) -> str:
    """Return the results as Markdown tables."""
    lines = [
        f"{doc['series']:,} series, {doc['groups']} groups × {doc['shards_per_group']} shards, "
        f"{doc['replicas']} replicas; balance max/mean {doc['balance_max_over_mean']} "
        f"(whole groups: {doc['whole_group_balance_max_over_mean']}); over 200 replica-id sets, "
        f"median/p90 {doc['balance_over_200_id_sets']['median']}/{doc['balance_over_200_id_sets']['p90']} "
        f"(whole groups: {doc['whole_group_balance_over_200_id_sets']['median']}/"
        f"{doc['whole_group_balance_over_200_id_sets']['p90']})",
        "",
        "| replica | units | series | cold start CPU | steady tick CPU |",
        "|---|---|---|---|---|",
    ]
    for r in doc["per_replica"]:
        lines.append(
            f"| {r['replica']} | {r['units']} | {r['series']:,} | {r['cold_cpu_s']:.2f} s "
            f"| {r['tick_cpu_s']:.2f} s |"
        )
    lines += [
        "",
        "| takeover | units | series | CPU (survivors) | slowest survivor |",
        "|---|---|---|---|---|",
    ]
    for t in doc["takeovers"]:
        lines.append(
            f"| {t['killed']} {t['how']} | {t['units']} | {t['series']:,} | {t['cpu_s']:.2f} s | "
            f"{t['slowest_survivor_s']:.2f} s |"
        )
    return "\n".join(lines)
