"""A replica's coordination cycle and fenced evaluation, in-process on the real PostgreSQL.

Replicas are ``ClusterMember`` objects over real daemons sharing one database; their cycles are
called by the test, and expiry is simulated with SQL, so nothing depends on timing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from watcher.cluster import leases
from watcher.cluster.assign import assign
from watcher.cluster.member import REPLICA_ID_FILE, ClusterMember, persisted_replica_id
from watcher.config import Settings
from watcher.daemon import Daemon
from watcher.errors import ConfigError, LeaseLostError
from watcher.notify.receivers.base import RecordingReceiver
from watcher.selfmetrics import SelfMetrics

GROUPS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
RULES = """\
groups:
{groups}
"""
GROUP = """\
  - name: {name}
    interval: 1s
    rules:
      - alert: Spend_{name}
        source: calls
        query: {{agg: sum, field: cost_usd, window: 1m, by: [tenant]}}
        detector: {{kind: threshold, above: {above}}}
"""


def _rules(dir_: Path, above: float = 5.0) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    text = RULES.format(groups="".join(GROUP.format(name=g, above=above) for g in GROUPS))
    (dir_ / "rules.yaml").write_text(text)
    return dir_


@pytest.fixture
def make_member(pg_url: str, tmp_path: Path) -> Iterator[Any]:
    daemons: list[Daemon] = []

    def make(
        rid: str | None, above: float = 5.0, text: str | None = None, cluster: dict[str, Any] | None = None
    ) -> ClusterMember:
        rules = _rules(tmp_path / f"rules-{rid}-{above}", above)
        if text is not None:
            (rules / "rules.yaml").write_text(text)
        settings = Settings(
            store={"url": pg_url},
            rules=[rules],
            server={"enabled": False},
            cluster={"replica_id": rid, "lease_ttl": "30s", **(cluster or {})},
        )
        d = Daemon(
            settings,
            receivers={"console": RecordingReceiver("console")},
            metrics=SelfMetrics(CollectorRegistry()),
        )
        daemons.append(d)
        m = ClusterMember(d)
        d.notifier.outbox.share(m.replica_id, m.claim_for, m.valid)
        d.cluster = m
        return m

    try:
        yield make
    finally:
        for d in daemons:
            d.close()


def _expire_replica(m: ClusterMember) -> None:
    with m.store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cluster_replicas SET heartbeat_at = clock_timestamp() - interval '1 hour' "
                "WHERE replica_id = :r"
            ),
            {"r": m.replica_id},
        )
        conn.execute(
            sa.text(
                "UPDATE cluster_leases SET expires_at = clock_timestamp() - interval '1 second' "
                "WHERE owner = :r"
            ),
            {"r": m.replica_id},
        )


def test_groups_split_by_rendezvous_and_move_when_a_replica_dies(make_member: Any) -> None:
    a, b, c = make_member("a"), make_member("b"), make_member("c")
    for m in (a, b, c, a, b, c):  # the first cycles see the others join; the second settle
        m.cycle()
    for m in (a, b, c):
        m.cycle()
    want = assign(GROUPS, ["a", "b", "c"])
    for m in (a, b, c):
        assert sorted(m.held()) == sorted(g for g, o in want.items() if o == m.replica_id)
    assert a.status()["replicas_live"] == 3
    b_epochs = b.held()
    _expire_replica(b)  # b stops heartbeating; its leases run out
    a.cycle()
    c.cycle()
    want2 = assign(GROUPS, ["a", "c"])
    assert sorted([*a.held(), *c.held()]) == sorted(GROUPS)
    assert sorted(c.held()) == sorted(g for g, o in want2.items() if o == "c")
    moved = {g for g, o in want.items() if o == "b"}
    assert moved == set(b_epochs)
    survivors = {**a.held(), **c.held()}
    assert all(survivors[g] == b_epochs[g] + 1 for g in moved)  # changed hands: a new fencing token


def test_a_replica_with_other_rules_takes_no_groups_and_says_so(make_member: Any) -> None:
    a, b = make_member("a"), make_member("b")
    odd = make_member("odd", above=9.0)
    for m in (a, b, odd, a, b, odd, a, b, odd):
        m.cycle()
    assert odd.held() == {}
    assert odd.status()["rules_hash_mismatch"] is True
    assert odd.metrics.rules_hash_mismatch._value.get() == 1
    assert sorted([*a.held(), *b.held()]) == sorted(GROUPS)
    assert a.status()["rules_hash_mismatch"] is False


def test_a_tick_is_evaluated_once_and_a_lost_lease_writes_nothing(make_member: Any) -> None:
    a = make_member("a")
    a.cycle()
    assert sorted(a.held()) == sorted(GROUPS)
    tick = datetime(2026, 11, 27, 0, 0, 5, tzinfo=UTC).timestamp()
    a.evaluate("alpha", 1, tick)
    a.evaluate("alpha", 1, tick)  # the same tick again: the claim refuses it
    with a.store.engine.connect() as conn:
        n = conn.execute(
            sa.text("SELECT count(*) FROM cluster_evaluations WHERE group_name = 'alpha'")
        ).scalar()
        evals = conn.execute(sa.text("SELECT evaluations FROM eval_runs WHERE group_name = 'alpha'")).scalar()
    assert (n, evals) == (1, 1)
    # another replica takes alpha over; a's next evaluation (stale epoch) neither claims nor writes
    _expire_replica(a)
    b = make_member("b")
    b.cycle()
    assert b.held()["alpha"] == 2
    a.evaluate("alpha", 1, tick + 1)
    with a.store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT replica_id FROM cluster_evaluations WHERE group_name = 'alpha'")
        ).all()
    assert [r.replica_id for r in rows] == ["a"]


ROLLING = """\
groups:
  - name: quality
    interval: 1s
    rules:
      - alert: CallBurst
        source: calls
        query: {agg: count, window: 10s, by: [tenant]}
        detector: {kind: rolling, window: 1m, min_points: 5, direction: up}
"""


def test_a_moved_group_rebuilds_its_detectors_from_history_and_is_not_blind(make_member: Any) -> None:
    from watcher.store.tables import Call

    a = make_member("a", text=ROLLING)
    now = datetime.now(UTC).replace(microsecond=0)
    with a.daemon.store.session() as s:
        for i in range(180):  # three minutes of steady traffic, one call a second
            s.add(Call(trace_id=f"{i:032x}", ts=now - timedelta(seconds=i), tenant="acme", cost_usd=0.1))
        s.commit()
    a.cycle()
    a.evaluate("quality", a.held()["quality"], now.timestamp())
    _expire_replica(a)
    b = make_member("b", text=ROLLING)
    b.cycle()
    epoch = b.held()["quality"]
    b.evaluate("quality", epoch, now.timestamp() + 1)
    verdicts = b.daemon.evaluators["quality"].verdicts()["CallBurst"]
    (verdict,) = verdicts.values()
    assert verdict.ready, verdict  # the first evaluation on the new replica has a baseline already
    assert verdict.expected == pytest.approx(10, abs=1)


def test_cluster_status_lists_replicas_leases_and_outbox(
    make_member: Any, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from watcher.cli import main

    a, b = make_member("a"), make_member("b")
    for m in (a, b, a, b, a, b):
        m.cycle()
    cfg = tmp_path / "status.yaml"
    cfg.write_text(f"store: {{url: '{pg_url}'}}\ncluster: {{lease_ttl: 30s}}\n")
    assert main(["cluster", "status", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(r["replica_id"] for r in doc["replicas"]) == ["a", "b"]
    assert all(r["live"] and not r["rules_hash_mismatch"] for r in doc["replicas"])
    assert sorted(lz["group"] for lz in doc["leases"]) == sorted(GROUPS)
    owners = {lz["group"]: lz["owner"] for lz in doc["leases"]}
    assert owners == assign(GROUPS, ["a", "b"])
    assert sum(doc["groups_per_replica"].values()) == len(GROUPS)
    assert doc["outbox_pending"] == 0
    assert main(["cluster", "status", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "replicas" in table and "leases" in table and "outbox: 0 pending" in table


def test_readyz_and_metrics_report_the_replica(make_member: Any) -> None:
    from fastapi.testclient import TestClient

    from watcher.web.app import build_app

    a = make_member("a")
    odd = make_member("odd", above=9.0)
    for m in (a, odd, a, odd):
        m.cycle()
    with TestClient(build_app(odd.daemon)) as client:
        body = client.get("/readyz").json()
        metrics = client.get("/metrics").text
    assert body["ready"] is True  # a mismatched replica stays ready, so a rolling deploy can proceed
    assert body["cluster"]["replica_id"] == "odd"
    assert body["cluster"]["rules_hash_mismatch"] is True
    assert body["cluster"]["groups_held"] == []
    assert "watcher_cluster_rules_hash_mismatch 1.0" in metrics
    assert "watcher_cluster_replicas 2.0" in metrics
    with TestClient(build_app(a.daemon)) as client:
        body = client.get("/readyz").json()
        metrics = client.get("/metrics").text
    assert body["cluster"]["groups_held"] == sorted(GROUPS)
    assert f"watcher_cluster_leases_held {float(len(GROUPS))}" in metrics


def test_no_database_password_in_status_readyz_or_heartbeat_errors(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass
    import json

    from fastapi.testclient import TestClient

    from tests.cluster.procs import TcpProxy
    from watcher.cli import main
    from watcher.web.app import build_app

    secret = "s3cret-Pa55word"
    proxy = TcpProxy(("127.0.0.1", 5432))
    host_port = pg_url.split("://", 1)[1].split("/", 1)[0]
    url = pg_url.replace(host_port, f"{getpass.getuser()}:{secret}@127.0.0.1:{proxy.port}")  # trust auth
    settings = Settings(
        store={"url": url},
        rules=[_rules(tmp_path / "rules")],
        server={"enabled": False},
        cluster={"replica_id": "a", "lease_ttl": "30s"},
    )
    d = Daemon(
        settings,
        receivers={"console": RecordingReceiver("console")},
        metrics=SelfMetrics(CollectorRegistry()),
    )
    try:
        m = ClusterMember(d)
        d.cluster = m
        m.cycle()
        assert sorted(m.held()) == sorted(GROUPS)
        cfg = tmp_path / "status.yaml"
        cfg.write_text(f"store: {{url: '{url}'}}\n")
        assert main(["cluster", "status", "--config", str(cfg), "--json"]) == 0
        out = capsys.readouterr().out
        assert secret not in out and json.loads(out)["leases"]
        proxy.cut()
        m.cycle()  # cannot reach the database now
        with TestClient(build_app(d)) as client:
            body = client.get("/readyz").text
        assert "cluster heartbeat failed" in m.status()["last_error"]
        assert secret not in body and secret not in json.dumps(m.status())
    finally:
        d.close()


def test_stored_alerts_of_dropped_groups_are_pruned_by_the_majority_not_by_a_stale_starter(
    make_member: Any,
) -> None:
    from dataclasses import replace

    from tests.notify.factory import firing
    from watcher.engine.state import AlertStore

    a = make_member("a")
    a.cycle()
    store = AlertStore(a.daemon.store)
    store.save(
        [replace(firing(rule="Spend_alpha"), group="alpha"), replace(firing(rule="Old"), group="zulu")], []
    )
    only_alpha = GROUP.format(name="alpha", above=5.0)
    stale = make_member("stale", text=RULES.format(groups=only_alpha))  # knows one group only
    assert sorted(x.group for x in store.load()) == ["alpha", "zulu"]  # its start-up deleted nothing
    stale.cycle()
    assert stale.held() == {} and stale.status()["rules_hash_mismatch"]
    for _ in range(10):  # pruning runs every tenth cycle of the first majority replica
        a.cycle()
    assert [x.group for x in store.load()] == ["alpha"]


def _synchronous(m: ClusterMember, at: float) -> list[tuple[str, float, str]]:
    """Run ``m``'s jobs inline at the virtual time ``at``; return (group, now, replica) evaluated."""
    seen: list[tuple[str, float, str]] = []
    d = m.daemon
    evaluate = d.evaluate_group

    def spy(name: str, now: datetime | None = None, **kw: Any) -> Any:
        assert now is not None
        seen.append((name, now.timestamp(), m.replica_id))
        return evaluate(name, now, **kw)

    d.evaluate_group = spy
    d.dispatch = lambda job, fn: (fn(), True)[1]
    m._now = lambda: at
    return seen


def _claims(m: ClusterMember, group: str) -> list[tuple[float, str]]:
    with m.store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT tick, replica_id FROM cluster_evaluations WHERE group_name = :g ORDER BY tick"),
            {"g": group},
        ).all()
    return [(r.tick.timestamp(), r.replica_id) for r in rows]


T0 = datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC).timestamp()


def test_a_new_owner_evaluates_the_missed_ticks_in_order_each_at_its_own_time_and_bounded(
    make_member: Any,
) -> None:
    a = make_member("a")
    a.cycle()
    _synchronous(a, T0 + 0.4)
    a.tick()
    assert _claims(a, "alpha") == [(T0, "a")]
    _expire_replica(a)  # a dies right after T0
    b = make_member("b")
    b.cycle()
    seen = _synchronous(b, T0 + 5.3)
    b.tick()
    # b evaluates T0+1 .. T0+5, in order, each with its own now: no tick missed across the takeover
    assert [t for g, t, _ in seen if g == "alpha"] == [T0 + k for k in range(1, 6)]
    assert _claims(b, "alpha") == [(T0, "a"), *((T0 + k, "b") for k in range(1, 6))]
    assert b.metrics.catch_up_ticks._value.get() == 4 * len(GROUPS)
    b.tick()  # the same tick again: nothing more
    assert len([s for s in seen if s[0] == "alpha"]) == 5
    # a group left unevaluated for long resumes with at most catch_up (default 2 × lease_ttl = 60 s)
    _expire_replica(b)
    c = make_member("c")
    c.cycle()
    seen_c = _synchronous(c, T0 + 1005.0)
    c.tick()
    ticks = [t for g, t, _ in seen_c if g == "alpha"]
    assert ticks == [T0 + 1005 - k for k in range(60, -1, -1)]


def test_a_new_owner_too_busy_to_start_at_once_still_reaches_back_from_when_it_took_the_group(
    make_member: Any,
) -> None:
    a = make_member("a")
    a.cycle()
    _synchronous(a, T0 + 0.4)
    a.tick()
    _expire_replica(a)  # a dies right after T0
    b = make_member("b", cluster={"catch_up": "3s"})
    b._now = lambda: T0 + 3.5
    b.cycle()  # b takes the groups at T0+3.5: the window reaches back to T0+0.5
    seen = _synchronous(b, T0 + 12.3)  # but b's first tick comes only 9 s later (a loaded machine)
    b.tick()
    assert [t for g, t, _ in seen if g == "alpha"] == [T0 + k for k in range(1, 13)]


def test_give_back_loses_no_tick(make_member: Any) -> None:
    a = make_member("a")
    a.cycle()
    _synchronous(a, T0 + 0.2)
    a.tick()
    b = make_member("b")
    b.cycle()  # b joins; a still holds every group
    _synchronous(a, T0 + 1.2)
    a.tick()
    a.cycle()  # a sees b and gives b's groups back
    moved = sorted(g for g, o in assign(GROUPS, ["a", "b"]).items() if o == "b")
    assert moved and not set(moved) & set(a.held())
    _synchronous(a, T0 + 2.2)
    a.tick()  # a evaluates only its own groups now
    b.cycle()  # a heartbeat later, b takes its groups
    assert sorted(b.held()) == moved
    _synchronous(b, T0 + 3.2)
    b.tick()
    for g in moved:  # b starts right after a's last evaluation (T0+1): T0+2 is not lost
        assert _claims(b, g) == [(T0, "a"), (T0 + 1, "a"), (T0 + 2, "b"), (T0 + 3, "b")], g


def _done(m: ClusterMember, group: str) -> list[tuple[float, str, bool]]:
    with m.store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT tick, replica_id, done FROM cluster_evaluations WHERE group_name = :g ORDER BY tick"
            ),
            {"g": group},
        ).all()
    return [(r.tick.timestamp(), r.replica_id, bool(r.done)) for r in rows]


def test_a_lost_lease_leaves_its_claim_not_done_and_the_next_epoch_evaluates_the_tick(
    make_member: Any,
) -> None:
    a = make_member("a")
    a.cycle()

    def lose(session: Any) -> None:
        raise LeaseLostError("gone")

    a._fence = lambda name, epoch, done=None: lose  # type: ignore[method-assign]
    assert a.evaluate("alpha", 1, T0) is False
    assert _done(a, "alpha") == [(T0, "a", False)]  # claimed, not evaluated: does not count
    _expire_replica(a)
    b = make_member("b")
    b.cycle()
    seen = _synchronous(b, T0 + 0.5)
    b.tick()
    assert [t for g, t, _ in seen if g == "alpha"] == [T0]
    assert _done(b, "alpha") == [(T0, "b", True)]


def test_race_new_owner_reads_the_last_tick_before_the_old_owner_discards_its_evaluation(
    make_member: Any,
) -> None:
    """The old owner claims T0+1, loses its lease mid-evaluation, and the new owner reads the group's
    last tick before the old owner's evaluation is discarded: T0+1 is evaluated once, by the new owner."""
    a = make_member("a")
    a.cycle()
    _synchronous(a, T0 + 0.2)
    a.tick()
    b = make_member("b")
    b.cycle()
    b_seen = _synchronous(b, T0 + 2.3)
    d = a.daemon
    evaluate = d.evaluate_group
    interleaved: list[str] = []

    def takeover_mid_evaluation(name: str, now: datetime | None = None, **kw: Any) -> Any:
        if name == "alpha" and not interleaved:  # a has claimed alpha at T0+1; a dies here
            interleaved.append("takeover")
            _expire_replica(a)
            b.cycle()  # b takes every group and reads where a stopped: a's claim is still there
            assert b.held()["alpha"] == 2
        return evaluate(name, now, **kw)

    _synchronous(a, T0 + 1.2)
    d.evaluate_group = takeover_mid_evaluation
    a.tick()  # a's evaluation of alpha at T0+1 reaches the fence after the takeover: discarded
    assert interleaved == ["takeover"]
    assert (T0 + 1, "a", False) in _done(a, "alpha")
    b.tick()
    assert [t for g, t, _ in b_seen if g == "alpha"] == [T0 + 1, T0 + 2]  # T0+1 not skipped
    assert _done(b, "alpha") == [(T0, "a", True), (T0 + 1, "b", True), (T0 + 2, "b", True)]
    with a.store.engine.connect() as conn:
        evals = conn.execute(sa.text("SELECT evaluations FROM eval_runs WHERE group_name = 'alpha'")).scalar()
    assert evals == 3  # T0 by a, T0+1 and T0+2 by b: a's discarded evaluation wrote nothing


def test_race_old_owner_completes_just_before_the_takeover_no_tick_is_evaluated_twice(
    make_member: Any,
) -> None:
    a = make_member("a")
    a.cycle()
    _synchronous(a, T0 + 0.2)
    a.tick()
    _synchronous(a, T0 + 1.2)
    a.tick()  # done at T0+1, then a dies
    _expire_replica(a)
    b = make_member("b")
    b.cycle()
    seen = _synchronous(b, T0 + 2.4)
    b.tick()
    assert [t for g, t, _ in seen if g == "alpha"] == [T0 + 2]
    assert _done(b, "alpha") == [(T0, "a", True), (T0 + 1, "a", True), (T0 + 2, "b", True)]
    assert b.metrics.tick_conflicts._value.get() == 0


def test_a_claim_abandoned_by_a_killed_owner_is_re_claimed_after_the_lease_ttl(make_member: Any) -> None:
    a = make_member("a")
    a.cycle()
    _synchronous(a, T0 + 0.2)
    a.tick()
    at = datetime.fromtimestamp(T0 + 1, UTC)
    with a.store.engine.begin() as conn:  # a claims T0+1 and is killed before evaluating it
        assert leases.claim_tick(conn, "alpha", at, "a", 1)
    b = make_member("b")
    b.cycle()
    assert "alpha" not in b.held()  # a's lease still runs: nothing to take yet
    with b.store.engine.begin() as conn:
        assert not leases.claim_tick(conn, "alpha", at, "b", 1)  # b holds no lease
    _expire_replica(a)  # one lease TTL later
    b.cycle()
    seen = _synchronous(b, T0 + 3.1)
    b.tick()
    assert [t for g, t, _ in seen if g == "alpha"] == [T0 + 1, T0 + 2, T0 + 3]
    assert _done(b, "alpha") == [(T0, "a", True), *((T0 + k, "b", True) for k in (1, 2, 3))]


def test_a_replica_restarted_under_its_id_before_its_lease_ran_out_re_claims_its_abandoned_tick(
    make_member: Any,
) -> None:
    a = make_member("a")
    a.cycle()
    _synchronous(a, T0 + 0.2)
    a.tick()
    at = datetime.fromtimestamp(T0 + 1, UTC)
    with a.store.engine.begin() as conn:  # a claims T0+1 and is killed before evaluating it
        assert leases.claim_tick(conn, "alpha", at, "a", 1)
    again = make_member("a")  # restarted at once with the same id: its old lease is still valid
    again.cycle()
    assert again.held()["alpha"] == 2  # a new incarnation: a new fencing token
    seen = _synchronous(again, T0 + 1.5)
    again.tick()
    assert [t for g, t, _ in seen if g == "alpha"] == [T0 + 1]
    assert _done(again, "alpha") == [(T0, "a", True), (T0 + 1, "a", True)]
    a.evaluate("alpha", 1, T0 + 2)  # the old incarnation's epoch is over: it claims nothing
    assert _done(again, "alpha") == [(T0, "a", True), (T0 + 1, "a", True)]


def test_an_evaluation_that_overruns_its_interval_skips_the_ticks_it_overran_and_counts_each_once(
    make_member: Any,
) -> None:
    import threading

    a = make_member("a")
    a.cycle()
    seen = _synchronous(a, T0 + 0.2)
    a.tick()
    running = threading.Lock()
    d = a.daemon
    d.jobs._locks["group:alpha"] = running
    # inline, but like the daemon's pool: a job whose previous run is still going is refused
    d.dispatch = lambda job, fn: False if d.busy(job) else (fn(), True)[1]
    running.acquire()  # alpha's evaluation is still running (a slow source, a loaded machine)
    for at in (T0 + 1.2, T0 + 1.7, T0 + 2.2, T0 + 2.6):
        a._now = lambda at=at: at
        a.tick()
    running.release()
    a._now = lambda: T0 + 3.2
    a.tick()
    assert [t for g, t, _ in seen if g == "alpha"] == [T0, T0 + 3]  # the present, not a backlog
    assert [t for g, t, _ in seen if g == "bravo"] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert d.metrics.missed_ticks.labels("group:alpha")._value.get() == 2  # once per tick, not per loop


def test_the_replica_id_is_persisted_once_and_kept_across_restarts(tmp_path: Path, make_member: Any) -> None:
    state = tmp_path / "state"
    first = make_member(None, cluster={"state_dir": str(state)})
    rid = first.replica_id
    assert (state / REPLICA_ID_FILE).read_text().strip() == rid
    assert rid.startswith(socket.gethostname() + "-") and str(os.getpid()) not in rid.split("-")[-1:]
    with pytest.raises(ConfigError, match="in use by another running replica"):
        persisted_replica_id(state)  # a second process in the same state_dir would share the id
    first.stop()  # the restart: the lock goes with the process
    again = make_member(None, cluster={"state_dir": str(state)})
    assert again.replica_id == rid
    again.stop()
    other, handle = persisted_replica_id(tmp_path / "elsewhere")
    handle.close()
    assert other != rid
