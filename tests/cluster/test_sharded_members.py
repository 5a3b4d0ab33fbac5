"""Replicas sharing one group's series by shard, in-process on the real PostgreSQL.

``ClusterMember`` objects over real daemons share one database; the test calls their cycles and
evaluations at fixed ticks and reads what was queued in the outbox, so nothing depends on timing.
Must show: every series is evaluated by exactly one shard, each alert pages once through a
takeover (restored from the store, detectors resumed from the shard's checkpoint), and a group of
alerts split across replicas (``group_by``) is paged as one group: one dedup key, no resolve of the
group while an alert of it still fires on another replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from watcher.cluster.assign import owner_of, shard_of, shard_units
from watcher.cluster.member import ClusterMember
from watcher.cluster.sharedgroups import StoreGroupPeers
from watcher.config import Settings
from watcher.core import Labels
from watcher.daemon import Daemon
from watcher.notify.receivers.base import RecordingReceiver
from watcher.selfmetrics import SelfMetrics
from watcher.store.tables import Call

SHARDS = 8
TENANTS = [f"t{i:02d}" for i in range(40)]
RULES = """\
groups:
  - name: spend
    interval: 10s
    rules:
      - alert: Spend
        source: calls
        query: {agg: sum, field: cost_usd, window: 1m, by: [tenant]}
        detector: {kind: threshold, above: 5}
"""
T = datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC)


@pytest.fixture
def make_member(pg_url: str, tmp_path: Path) -> Iterator[Any]:
    daemons: list[Daemon] = []

    def make(rid: str, *, group_by: list[str] | None = None, text: str = RULES) -> ClusterMember:
        rules = tmp_path / f"rules-{rid}"
        rules.mkdir(exist_ok=True)
        (rules / "rules.yaml").write_text(text)
        settings = Settings(
            store={"url": pg_url},
            rules=[rules],
            server={"enabled": False},
            receivers={"console": {"type": "console", "group_by": group_by}},
            cluster={"replica_id": rid, "lease_ttl": "30s", "shards": SHARDS},
        )
        d = Daemon(
            settings,
            receivers={"console": RecordingReceiver("console")},
            metrics=SelfMetrics(CollectorRegistry()),
        )
        daemons.append(d)
        m = ClusterMember(d)
        d.notifier.outbox.share(m.replica_id, m.claim_for, m.valid)
        d.notifier.peers = StoreGroupPeers()  # as ClusterMember.start sets it
        d.cluster = m
        return m

    try:
        yield make
    finally:
        for d in daemons:
            d.close()


def _calls(m: ClusterMember, at: datetime, cost: dict[str, float]) -> None:
    with m.daemon.store.session() as s:
        for i, (tenant, usd) in enumerate(cost.items()):
            s.add(
                Call(
                    trace_id=f"{int(at.timestamp()):x}{i:08x}".rjust(32, "0"),
                    ts=at,
                    tenant=tenant,
                    cost_usd=usd,
                )
            )
        s.commit()


def _settle(*members: ClusterMember) -> None:
    for _ in range(2):
        for m in members:
            m.cycle()


def _evaluate(m: ClusterMember, at: datetime) -> None:
    for unit, epoch in sorted(m.held().items()):
        assert m.evaluate(unit, epoch, at.timestamp())


def _queued(m: ClusterMember) -> list[dict[str, Any]]:
    with m.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT kind, dedup_key, message FROM outbox ORDER BY id")).all()
    return [{"kind": r.kind, "dedup_key": r.dedup_key, "message": r.message} for r in rows]


def _tenants(msg: dict[str, Any], kind: str) -> set[str]:
    return {x["alert"]["labels"]["tenant"] for x in msg["message"]["listed"] if x["kind"] == kind}


def test_each_series_is_evaluated_by_one_shard_and_pages_once_through_a_takeover(make_member: Any) -> None:
    a, b = make_member("a"), make_member("b")
    _settle(a, b)
    units = shard_units("spend", SHARDS)
    assert sorted([*a.held(), *b.held()]) == units
    assert sorted(b.held()) == [u for u in units if owner_of(u, ["a", "b"]) == "b"]
    _calls(a, T - timedelta(seconds=5), {t: 10.0 for t in TENANTS})
    for m in (a, b):
        _evaluate(m, T)
    _settle(a, b)  # the heartbeat reports series per unit
    with a.store.engine.connect() as conn:
        per_unit = dict(conn.execute(sa.text("SELECT group_name, series FROM cluster_leases")).all())
    expected = {
        u: sum(1 for t in TENANTS if shard_of(Labels({"tenant": t}), SHARDS) == k)
        for k, u in enumerate(units)
    }
    assert per_unit == expected
    assert sum(per_unit.values()) == len(TENANTS)
    fired = _queued(a)
    assert sorted(m["message"]["alert"]["labels"]["tenant"] for m in fired) == TENANTS  # each once

    # b dies: a takes its shards over, restores their firing alerts and does not page them again
    with a.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cluster_replicas SET heartbeat_at = clock_timestamp() - interval '1 hour' WHERE "
                "replica_id = 'b'"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE cluster_leases SET expires_at = clock_timestamp() - interval '1s' WHERE owner = 'b'"
            )
        )
    a.cycle()
    assert sorted(a.held()) == units
    _evaluate(a, T + timedelta(seconds=10))
    assert len(_queued(a)) == len(TENANTS)  # nothing re-paged
    _calls(a, T + timedelta(seconds=75), {t: 0.5 for t in TENANTS})
    _evaluate(a, T + timedelta(seconds=80))  # the window no longer holds the spike: all resolve
    kinds = [m["kind"] for m in _queued(a)]
    assert kinds.count("firing") == len(TENANTS) and kinds.count("resolved") == len(TENANTS)


def test_a_group_split_across_replicas_pages_as_one_group_and_resolves_once(make_member: Any) -> None:
    a, b = make_member("a", group_by=["alertname"]), make_member("b", group_by=["alertname"])
    _settle(a, b)

    def owner(tenant: str) -> str | None:
        return owner_of(
            shard_units("spend", SHARDS)[shard_of(Labels({"tenant": tenant}), SHARDS)], ["a", "b"]
        )

    on_a = next(t for t in TENANTS if owner(t) == "a")
    on_b = next(t for t in TENANTS if owner(t) == "b")
    _calls(a, T - timedelta(seconds=5), {on_a: 10.0, on_b: 10.0})
    _evaluate(a, T)
    _evaluate(b, T)
    first, second = _queued(a)
    assert (first["kind"], _tenants(first, "firing")) == ("firing", {on_a})
    # b's alert joins the group a opened: the same dedup key (one incident), listing both
    assert (second["kind"], _tenants(second, "firing")) == ("firing", {on_a, on_b})
    assert second["dedup_key"] == first["dedup_key"]

    # a's alert resolves while b's still fires: a must not resolve the group
    _calls(a, T + timedelta(seconds=65), {on_a: 0.5, on_b: 10.0})
    _evaluate(a, T + timedelta(seconds=70))
    _evaluate(b, T + timedelta(seconds=70))
    third = _queued(a)[2:]
    assert [m["kind"] for m in third] == ["firing"], third
    assert _tenants(third[0], "firing") == {on_b} and _tenants(third[0], "resolved") == {on_a}

    # b's resolves too: now the group resolves, once, under the same key
    _calls(a, T + timedelta(seconds=135), {on_b: 0.5})
    _evaluate(a, T + timedelta(seconds=140))
    _evaluate(b, T + timedelta(seconds=140))
    _evaluate(a, T + timedelta(seconds=150))
    msgs = _queued(a)
    assert [m["kind"] for m in msgs] == ["firing", "firing", "firing", "resolved"], msgs
    assert {m["dedup_key"] for m in msgs} == {first["dedup_key"]}
    assert _tenants(msgs[-1], "resolved") == {on_b}


ROLLING = """\
groups:
  - name: spend
    interval: 10s
    rules:
      - alert: CallBurst
        source: calls
        query: {agg: count, window: 10s, by: [tenant]}
        detector: {kind: rolling, window: 5m, min_points: 5, direction: up}
"""


def test_a_taken_over_shard_resumes_its_detectors_from_its_checkpoint(
    make_member: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_member("a", text=ROLLING)
    start = T - timedelta(minutes=6)
    with a.daemon.store.session() as s:
        for i in range(380):  # six minutes and more of one call a second for each of four tenants
            for k in range(4):
                at = start + timedelta(seconds=i)
                s.add(Call(trace_id=f"{k}{i:031x}", ts=at, tenant=f"t{k:02d}", cost_usd=0.1))
        s.commit()
    a.cycle()
    assert sorted(a.held()) == shard_units("spend", SHARDS)
    _evaluate(a, T)  # every shard checkpoints its detectors at its first evaluation
    with a.store.engine.connect() as conn:
        keys = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT group_name FROM detector_state")).all()}
    holding = {
        shard_units("spend", SHARDS)[shard_of(Labels({"tenant": f"t{k:02d}"}), SHARDS)] for k in range(4)
    }
    assert keys == holding  # one checkpoint per shard with series, under the shard's name
    with a.store.engine.begin() as conn:  # a dies
        conn.execute(
            sa.text("UPDATE cluster_replicas SET heartbeat_at = clock_timestamp() - interval '1 hour'")
        )
        conn.execute(sa.text("UPDATE cluster_leases SET expires_at = clock_timestamp() - interval '1s'"))
    b = make_member("b", text=ROLLING)
    b.cycle()
    caplog.set_level("INFO", logger="watcher.engine.group")
    _evaluate(b, T + timedelta(seconds=10))
    resumed = [r for r in caplog.records if "from a detector checkpoint" in r.getMessage()]
    assert len(resumed) == len(holding)
    verdicts = [v for _, ev, _ in b._built.values() for v in ev.verdicts()["CallBurst"].values()]
    assert len(verdicts) == 4 and all(v.ready for v in verdicts)  # not blind after the takeover


def test_cluster_status_shows_units_series_per_replica_tick_and_lag(
    make_member: Any, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from watcher.cli import main

    a, b = make_member("a"), make_member("b")
    _settle(a, b)
    _calls(a, T - timedelta(seconds=5), {t: 1.0 for t in TENANTS})
    for m in (a, b):
        _evaluate(m, T)
    _settle(a, b)
    cfg = tmp_path / "status.yaml"
    cfg.write_text(f"store: {{url: '{pg_url}'}}\ncluster: {{lease_ttl: 30s}}\n")
    assert main(["cluster", "status", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    units = shard_units("spend", SHARDS)
    assert sorted(lz["group"] for lz in doc["leases"]) == units
    assert {(lz["rule_group"], lz["shards"]) for lz in doc["leases"]} == {("spend", SHARDS)}
    assert sorted(lz["shard"] for lz in doc["leases"]) == list(range(SHARDS))
    mine = {m.replica_id: [u for u in units if owner_of(u, ["a", "b"]) == m.replica_id] for m in (a, b)}
    per_unit = {lz["group"]: lz["series"] for lz in doc["leases"]}
    assert doc["series_per_replica"] == {r: sum(per_unit[u] for u in us) for r, us in mine.items()}
    assert doc["series_total"] == len(TENANTS)
    assert doc["series_balance"] == round(max(doc["series_per_replica"].values()) / (len(TENANTS) / 2), 3)
    for r in doc["replicas"]:
        assert r["units"] == len(mine[r["replica_id"]]) and r["tick_s"] > 0
        assert r["last_tick_age_s"] is not None and r["last_tick_age_s"] > 0  # T is in the past: lag
    assert all(lz["lag_s"] is not None and lz["tick_s"] is not None for lz in doc["leases"])
    assert main(["cluster", "status", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "series per replica" in table and "spend#0/8" in table
