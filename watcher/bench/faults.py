"""``watcher bench faults``: the fault campaign of issue 16 against real ``watcher run`` processes.

This module owns three scripted, repeatable runs and what they report; it does not own any
delivery, clustering or shutdown logic (it only starts daemons, breaks things and counts).

* ``single``: one daemon on SQLite, killed with SIGKILL ``--kills`` times at random moments (each
  time restarted at once), while a loopback webhook receiver answers 200, then 500 for
  ``--error-s``, then closes connections without answering for ``--close-s``, then 200 again; a
  quiet period follows until every alert is resolved and the outbox is empty (at most ``--quiet``).
* ``replicas``: three replicas on a fresh PostgreSQL database (``--pg``, the server's admin URL),
  each with its own ``cluster.state_dir`` (a stable replica id); ``--kills`` times the holder of a
  random group's lease is SIGKILLed and restarted ``--down-s`` later. Ticks are read from
  ``cluster_evaluations`` (done claims) and ``eval_runs``, latency from the outbox's ``created_at``
  (the tick that queued the message) to the receiver's answer.
* ``shutdown``: ``--pages`` alerts queued at once to a receiver that answers after ``--delay-s``;
  SIGTERM as soon as the first page arrives; the stop time is compared with ``stop_timeout``
  (default 20 s), then a second start with a fast receiver must deliver the rest: nothing lost.

Alerts come and go by themselves: a thread writes calls for "hot" tenants (each hot 2.5 s out of
every 6 s, staggered) and the rules fire on a 2 s sum above a threshold. From what the receiver
accepted (HTTP 200), per dedup key: **lost** (a row marked sent whose id never arrived, or rows left
pending/dead), **resolve before firing** (the key's first accepted message is a resolve),
**unresolved** (a key that fired and never got a resolve, after the quiet period), **repeats** (the
same ``notification_id`` accepted twice: allowed, at-least-once). Wall time is read here only: the
bench is a measuring harness that runs beside the daemons, as a test would.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CLOSE = 0
"""A receiver mode that drops the connection without answering (a crashing proxy)."""


@dataclass
class Hit:
    """One POST the receiver got: when it arrived and was answered (wall s), the status, the body."""

    arrived: float
    answered: float
    status: int
    body: Any


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore a connection reset by a sender that was just killed."""


class Hook:
    """A loopback webhook receiver whose answer (200, 500 or CLOSE) and delay can be changed live."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, delay = owner.status, owner.delay_s
                if delay:
                    threading.Event().wait(delay)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = None
                if status == CLOSE:
                    self.close_connection = True
                    owner._note(Hit(arrived, time.time(), CLOSE, body))
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                self.wfile.flush()
                owner._note(Hit(arrived, time.time(), status, body))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    def _note(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.status == 200 and isinstance(h.body, dict)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Daemon:
    """One ``python -m watcher run --config CONFIG`` process; its output goes to a log file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        root = Path(__file__).resolve().parents[2]  # run the same watcher as this bench
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--config", str(config)],
            cwd=config.parent,
            env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.wait(30)

    def term(self, timeout: float) -> tuple[int, float]:
        """Send SIGTERM; return the exit code and the seconds until the process was gone."""
        t0 = time.monotonic()
        self.p.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        return code, time.monotonic() - t0

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()
        finally:
            self._out.close()

    def running(self) -> bool:
        return self.p.poll() is None


class Spender(threading.Thread):
    """Writes calls for the hot tenants of each group (``feature`` = group) every 0.25 s."""

    def __init__(self, url: str, groups: list[str], tenants: int) -> None:
        super().__init__(daemon=True)
        from ..store.db import open_store

        self.store = open_store(url)
        self.groups = groups
        self.tenants = tenants
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.errors = 0

    def run(self) -> None:
        from ..store.tables import Call

        n = 0
        while not self.stop.wait(0.25):
            t = time.monotonic() - self.t0
            now = datetime.now(UTC)
            rows = []
            for gi, g in enumerate(self.groups):
                for i in range(self.tenants):
                    if (t + i + gi * 0.5) % 6.0 < 2.5:
                        n += 1
                        rows.append(Call(trace_id=f"{n:032x}", ts=now, tenant=f"t{i}", feature=g, cost_usd=9))
            try:
                with self.store.session() as s:
                    s.add_all(rows)
                    s.commit()
            except Exception:  # a locked SQLite file now and then: skip this beat
                self.errors += 1
        self.store.close()


def _rules(groups: list[str]) -> str:
    text = "groups:\n"
    for g in groups:
        text += (
            f"  - name: {g}\n    interval: 1s\n    rules:\n      - alert: Spend_{g}\n        source: calls\n"
            "        query: {agg: sum, field: cost_usd, window: 2s, by: [tenant], "
            f"where: {{feature: {g}}}}}\n"
            "        detector: {kind: threshold, above: 5}\n        no_data: ok\n"
        )
    return text


def _config(tmp: Path, url: str, hook: str, groups: list[str], extra: str = "") -> Path:
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(_rules(groups))
    cfg = tmp / "watcher.yaml"
    cfg.write_text(
        f"store: {{url: '{url}'}}\n"
        f"rules: ['{rules}']\n"
        "server: {enabled: false}\n"
        "log_level: info\n"
        f"receivers: {{hook: {{type: webhook, url: '{hook}', timeout_s: 2}}}}\n"
        "route: {receivers: [hook]}\n" + extra
    )
    return cfg


def _scalar(engine: Any, sql: str) -> Any:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def _settled(engine: Any) -> bool:
    pending = _scalar(engine, "SELECT count(*) FROM outbox WHERE status = 'pending'")
    firing = _scalar(engine, "SELECT count(*) FROM alerts WHERE state <> 0")
    return bool(pending == 0 and firing == 0)


def _outbox(engine: Any) -> list[tuple[str, str, datetime]]:
    """Return (status, notification_id, created_at) of every outbox row."""
    from sqlmodel import Session, select

    from ..core import utc
    from ..notify.deadletter import stored_notification_id
    from ..store.tables import OutboxRow

    with Session(engine) as s:
        rows = s.exec(select(OutboxRow)).all()
        return [(r.status, stored_notification_id(r.message or {}), utc(r.created_at)) for r in rows]


def analyse(accepted: list[Hit], outbox: list[tuple[str, str, datetime]]) -> dict[str, Any]:
    """Count episodes, lost, resolve-before-firing, unresolved and repeats from what was accepted."""
    by_key: dict[str, list[str]] = {}
    for h in sorted(accepted, key=lambda h: h.answered):
        by_key.setdefault(str(h.body["dedup_key"]), []).append(str(h.body["status"]))
    ids = Counter(str(h.body["notification_id"]) for h in accepted)
    sent = {nid for status, nid, _ in outbox if status == "sent"}
    return {
        "episodes": len(by_key),
        "accepted": len(accepted),
        "queued": len(outbox),
        "repeats": sum(n - 1 for n in ids.values()),
        "lost": len(sent - set(ids)),
        "left_in_outbox": sum(1 for status, _, _ in outbox if status != "sent"),
        "resolve_before_firing": sum(1 for seq in by_key.values() if seq[0] != "firing"),
        "unresolved": sum(1 for seq in by_key.values() if "resolved" not in seq),
    }


def _wait(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return True
        except Exception:  # the schema may not exist yet
            pass
        time.sleep(0.2)
    return False


# --- (a) one daemon, kill -9, a failing receiver ---------------------------------------------------


def run_single(
    seed: int, kills: int, error_s: float, close_s: float, quiet_s: float, tenants: int, keep: bool
) -> dict[str, Any]:
    """Run campaign (a) and return its report."""
    import sqlalchemy as sa

    from ..store.db import open_store

    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="watcher-faults-"))
    url = f"sqlite:///{tmp}/w.db"
    open_store(url).close()
    hook = Hook()
    groups = ["spend"]
    cfg = _config(
        tmp,
        url,
        hook.url,
        groups,
        "notify: {flush_interval: 1s, retry_initial: 1s, retry_max: 15s}\n",
    )
    warm, tail = 10.0, 20.0
    chaos = warm + error_s + close_s + tail
    phases = [(0.0, 200), (warm, 500), (warm + error_s, CLOSE), (warm + error_s + close_s, 200)]
    at = sorted(rng.uniform(3.0, chaos - 2.0) for _ in range(kills))
    engine = sa.create_engine(url)
    procs = [Daemon(cfg, tmp / "daemon-0.log")]
    spender = Spender(url, groups, tenants)
    spender.start()
    t0 = time.monotonic()
    try:
        while (t := time.monotonic() - t0) < chaos:
            while phases and phases[0][0] <= t:
                hook.status = phases.pop(0)[1]
            if at and at[0] <= t:
                at.pop(0)
                procs[-1].kill()
                procs.append(Daemon(cfg, tmp / f"daemon-{len(procs)}.log"))
            time.sleep(0.05)
        spender.stop.set()
        spender.join(10)
        hook.status = 200
        q0 = time.monotonic()
        settled = _wait(lambda: _settled(engine), quiet_s)
        quiet_used = time.monotonic() - q0
        code, _ = procs[-1].term(30)
        report = analyse(hook.accepted(), _outbox(engine))
    finally:
        spender.stop.set()
        for p in procs:
            if p.running():
                p.kill()
        engine.dispose()
        hook.close()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "run": "single",
        "seed": seed,
        "kills": len(procs) - 1,
        "chaos_s": chaos,
        "receiver": f"200 {warm:g}s, 500 {error_s:g}s, close {close_s:g}s, 200 {tail:g}s",
        "settled": settled,
        "quiet_s": round(quiet_used, 1),
        "exit_code": code,
        "refused_or_dropped": len(hook.hits) - report["accepted"],
        **report,
        "logs": str(tmp) if keep else None,
    }


# --- (b) three replicas on PostgreSQL, SIGKILL of lease holders -------------------------------------


def _pg_database(admin_url: str) -> tuple[str, Any]:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"watcher_bench_{uuid.uuid4().hex[:8]}"
    parsed = make_url(admin_url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return parsed.set(database=name).render_as_string(hide_password=False), (admin, name)


def _drop(admin: Any, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@dataclass
class _Replica:
    state_dir: Path
    proc: Daemon | None = None
    rid: str = ""
    starts: int = 0
    kills: list[float] = field(default_factory=list)


def _tick_report(engine: Any, since: float, until: float, ttl_s: float) -> dict[str, Any]:
    """Per group: ticks expected on the 1 s grid in [since, until], done, missed, late, twice."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT group_name, tick, epoch, claimed_at, done FROM cluster_evaluations "
                "WHERE tick >= :a AND tick <= :b ORDER BY group_name, tick"
            ),
            {"a": datetime.fromtimestamp(since, UTC), "b": datetime.fromtimestamp(until, UTC)},
        ).all()
        runs = dict(conn.execute(sa.text("SELECT group_name, evaluations FROM eval_runs")).all())
        total = dict(
            conn.execute(
                sa.text("SELECT group_name, count(*) FROM cluster_evaluations WHERE done GROUP BY group_name")
            ).all()
        )
    per: dict[str, dict[str, Any]] = {}
    expected = max(0, math.floor(until) - math.ceil(since) + 1)  # grid ticks in [since, until]
    for g in sorted({r.group_name for r in rows} | set(runs)):
        mine = [r for r in rows if r.group_name == g]
        done = [r for r in mine if r.done]
        lateness = [(r.claimed_at.timestamp() - r.tick.timestamp()) for r in done]
        across = within = 0  # ticks missed in gaps across a change of epoch (takeover, give-back) or not
        for x, y in itertools.pairwise(done):
            gap = round(y.tick.timestamp() - x.tick.timestamp()) - 1
            if x.epoch != y.epoch:
                across += gap
            else:
                within += gap
        per[g] = {
            "expected": expected,
            "done": len(done),
            "missed": expected - len(done),
            "missed_across_takeover": across,
            "missed_overrun": within,
            "not_done_claims": len(mine) - len(done),
            "late_beyond_ttl": sum(1 for x in lateness if x > ttl_s + 1.0),
            "max_lateness_s": round(max(lateness, default=0.0), 2),
            "caught_up": sum(1 for x in lateness if x > 1.5),
            # eval_runs counts every completed evaluation since the start; done claims too
            "evaluated_twice": max(0, int(runs.get(g, 0)) - int(total.get(g, 0))),
        }
    return per


def _takeovers(engine: Any, killed: list[tuple[float, str, list[str]]]) -> list[float]:
    """Seconds from each kill to the next completed evaluation of each group the victim held."""
    import sqlalchemy as sa

    out = []
    with engine.connect() as conn:
        for when, victim, groups in killed:
            for g in groups:
                first = conn.execute(
                    sa.text(
                        "SELECT min(claimed_at) FROM cluster_evaluations WHERE group_name = :g AND done "
                        "AND replica_id <> :v AND claimed_at > :t"
                    ),
                    {"g": g, "v": victim, "t": datetime.fromtimestamp(when, UTC)},
                ).scalar()
                if first is not None:
                    out.append(first.timestamp() - when)
    return out


def run_replicas(
    seed: int,
    kills: int,
    admin_url: str,
    ttl_s: float,
    down_s: float,
    every_s: float,
    quiet_s: float,
    catch_up_s: float,
    n_groups: int,
    keep: bool,
) -> dict[str, Any]:
    """Run campaign (b) and return its report."""
    import sqlalchemy as sa

    from ..store.db import open_store

    rng = random.Random(seed)
    catch = f", catch_up: {catch_up_s:g}s" if catch_up_s else ""
    tmp = Path(tempfile.mkdtemp(prefix="watcher-replicas-"))
    url, (admin, dbname) = _pg_database(admin_url)
    open_store(url).close()
    hook = Hook()
    groups = [f"g{i}" for i in range(n_groups)]
    cfg = _config(
        tmp,
        url,
        hook.url,
        groups,
        "notify: {flush_interval: 1s, retry_initial: 1s, retry_max: 15s}\n"
        f"cluster: {{lease_ttl: {ttl_s:g}s, outbox_claim: {2 * ttl_s:g}s{catch}}}\n",
    )
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    replicas = [_Replica(tmp / f"r{i}") for i in range(3)]

    def start(r: _Replica) -> None:
        r.starts += 1
        r.proc = Daemon(
            cfg, tmp / f"{r.state_dir.name}-{r.starts}.log", {"WATCHER_CLUSTER__STATE_DIR": str(r.state_dir)}
        )

    def holders() -> dict[str, str]:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT group_name, owner FROM cluster_leases WHERE expires_at > clock_timestamp()")
            ).all()
        return {row.group_name: row.owner for row in rows}

    spender: Spender | None = None
    restarts: list[tuple[float, _Replica]] = []
    killed: list[tuple[float, str, list[str]]] = []  # (when, replica id, groups it held)
    try:
        for r in replicas:
            start(r)
        ok = _wait(
            lambda: all(
                r.proc is not None and b"watcher running" in r.proc.log.read_bytes() for r in replicas
            ),
            90,
        )
        time.sleep(3 * ttl_s)  # every replica heard: the groups settle on their rendezvous owners
        ok = ok and _wait(lambda: len(holders()) == len(groups), 30)
        if not ok:
            raise RuntimeError(f"replicas did not settle; logs in {tmp}")
        for r in replicas:
            r.rid = (r.state_dir / "watcher-replica-id").read_text().strip()
        since = time.time() + 1
        spender = Spender(url, groups, 3)
        spender.start()
        t0 = time.monotonic()
        done = 0
        next_kill = every_s
        chaos = every_s * (kills + 1)
        while (t := time.monotonic() - t0) < chaos:
            for when, r in list(restarts):
                if when <= t:
                    restarts.remove((when, r))
                    start(r)
            if done < kills and t >= next_kill:
                held = holders()
                if held:
                    victim_id = held[rng.choice(sorted(held))]
                    victim = next(
                        (r for r in replicas if r.rid == victim_id and r.proc and r.proc.running()), None
                    )
                    if victim is not None and victim.proc is not None:
                        victim.proc.kill()
                        victim.kills.append(time.time())
                        killed.append(
                            (time.time(), victim_id, sorted(g for g, o in held.items() if o == victim_id))
                        )
                        restarts.append((t + down_s, victim))
                        done += 1
                next_kill = t + every_s * rng.uniform(0.7, 1.3)
            time.sleep(0.05)
        for _, r in restarts:
            start(r)
        _wait(
            lambda: all(
                r.proc is not None and b"watcher running" in r.proc.log.read_bytes() for r in replicas
            ),
            90,
        )
        spender.stop.set()
        spender.join(10)
        until = time.time() - 1
        q0 = time.monotonic()
        settled = _wait(lambda: _settled(engine), quiet_s)
        quiet_used = time.monotonic() - q0
        stops = []
        for r in replicas:
            if r.proc is not None and r.proc.running():
                stops.append(r.proc.term(30))
        outbox = _outbox(engine)
        report = analyse(hook.accepted(), outbox)
        ticks = _tick_report(engine, since, until, ttl_s)
        takeovers = _takeovers(engine, killed)
    finally:
        if spender is not None:
            spender.stop.set()
        for r in replicas:
            if r.proc is not None and r.proc.running():
                r.proc.kill()
        engine.dispose()
        hook.close()
        if keep:
            admin.dispose()
            (tmp / "database.txt").write_text(url + "\n")
        else:
            _drop(admin, dbname)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    created = {nid: c for _, nid, c in outbox}
    first: dict[str, float] = {}
    for h in hook.accepted():
        nid = str(h.body["notification_id"])
        first[nid] = min(first.get(nid, h.answered), h.answered)
    latency = sorted(first[n] - created[n].timestamp() for n in first if n in created)
    return {
        "run": "replicas",
        "seed": seed,
        "replicas": 3,
        "groups": len(groups),
        "lease_ttl_s": ttl_s,
        "catch_up_s": catch_up_s or 2 * ttl_s,
        "kills": sum(len(r.kills) for r in replicas),
        "settled": settled,
        "quiet_s": round(quiet_used, 1),
        "exit_codes": [c for c, _ in stops],
        **report,
        "ticks_expected": sum(g["expected"] for g in ticks.values()),
        "ticks_missed": sum(g["missed"] for g in ticks.values()),
        "ticks_missed_across_takeover": sum(g["missed_across_takeover"] for g in ticks.values()),
        "ticks_missed_overrun": sum(g["missed_overrun"] for g in ticks.values()),
        "ticks_late_beyond_ttl": sum(g["late_beyond_ttl"] for g in ticks.values()),
        "ticks_caught_up": sum(g["caught_up"] for g in ticks.values()),
        "ticks_evaluated_twice": sum(g["evaluated_twice"] for g in ticks.values()),
        "claims_not_done": sum(g["not_done_claims"] for g in ticks.values()),
        "max_tick_lateness_s": max((g["max_lateness_s"] for g in ticks.values()), default=0.0),
        "takeover_p50_s": round(statistics.median(takeovers), 2) if takeovers else None,
        "takeover_max_s": round(max(takeovers), 2) if takeovers else None,
        "latency_p50_s": round(statistics.median(latency), 2) if latency else None,
        "latency_p90_s": round(latency[int(0.9 * (len(latency) - 1))], 2) if latency else None,
        "latency_max_s": round(latency[-1], 2) if latency else None,
        "per_group": ticks,
        "logs": str(tmp) if keep else None,
    }


# --- (c) SIGTERM with queued pages and a slow receiver ----------------------------------------------


def run_shutdown(
    pages: int, delay_s: float, stop_timeout_s: float, timeout_s: float, keep: bool
) -> dict[str, Any]:
    """Run campaign (c) and return its report."""
    import sqlalchemy as sa

    from ..store.db import open_store
    from ..store.tables import Call

    tmp = Path(tempfile.mkdtemp(prefix="watcher-stop-"))
    url = f"sqlite:///{tmp}/w.db"
    store = open_store(url)
    now = datetime.now(UTC)
    with store.session() as s:  # every tenant over the threshold at once: `pages` firing pages
        s.add_all(
            Call(
                trace_id=f"{i:032x}",
                ts=now - timedelta(seconds=1),
                tenant=f"t{i}",
                feature="spend",
                cost_usd=9,
            )
            for i in range(pages)
        )
        s.commit()
    store.close()
    hook = Hook(delay_s=delay_s)
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(_rules(["spend"]).replace("window: 2s", "window: 10m"))
    cfg = tmp / "watcher.yaml"
    stop = f"stop_timeout: {stop_timeout_s:g}s\n" if stop_timeout_s else ""
    cfg.write_text(
        f"store: {{url: '{url}'}}\nrules: ['{rules}']\nserver: {{enabled: false}}\nlog_level: info\n"
        f"receivers: {{hook: {{type: webhook, url: '{hook.url}', timeout_s: {timeout_s:g}}}}}\n"
        "route: {receivers: [hook]}\n"
        "notify: {flush_interval: 1s}\n" + stop
    )
    engine = sa.create_engine(url)
    try:
        first = Daemon(cfg, tmp / "daemon-0.log")
        if not _wait(lambda: _scalar(engine, "SELECT count(*) FROM outbox") >= pages, 90):
            raise RuntimeError(f"the pages were not queued; logs in {tmp}")
        queued_at_term = _scalar(engine, "SELECT count(*) FROM outbox WHERE status = 'pending'")
        code, stop_s = first.term(120)
        sent_first = len({str(h.body["notification_id"]) for h in hook.accepted()})
        left = _scalar(engine, "SELECT count(*) FROM outbox WHERE status = 'pending'")
        dead = _scalar(engine, "SELECT count(*) FROM outbox WHERE status = 'dead'")
        hook.delay_s = 0.0
        second = Daemon(cfg, tmp / "daemon-1.log")
        _wait(lambda: _scalar(engine, "SELECT count(*) FROM outbox WHERE status <> 'sent'") == 0, 90)
        second.term(60)
        outbox = _outbox(engine)
        report = analyse(hook.accepted(), outbox)
    finally:
        engine.dispose()
        hook.close()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "run": "shutdown",
        "pages": pages,
        "receiver_delay_s": delay_s,
        "receiver_timeout_s": timeout_s,
        "stop_timeout_s": stop_timeout_s or 20.0,
        "pending_at_sigterm": queued_at_term,
        "stop_s": round(stop_s, 2),
        "exit_code": code,
        "accepted_before_stop": sent_first,
        "left_queued": left,
        "dead": dead,
        "after_restart_lost": report["lost"] + report["left_in_outbox"] + max(0, pages - len(outbox)),
        "repeats": report["repeats"],
        "logs": str(tmp) if keep else None,
    }
