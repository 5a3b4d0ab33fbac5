"""Faults end to end: a real ``watcher run`` killed with SIGKILL at random moments, a receiver that
answers 500 and then drops connections, and a quiet period at the end.

Alerts come and go on their own (six tenants whose spend crosses the threshold a few seconds at a
time), so messages are queued and sent while the daemon is killed and restarted. What the loopback
receiver accepted (HTTP 200) must show:

* 0 lost: every row the outbox queued was accepted, nothing is left pending or dead;
* 0 resolve-before-firing: for every dedup key, its first accepted message is a firing;
* 0 firings left unresolved: after the quiet period, every dedup key that fired is resolved.

Repeats of the same ``notification_id`` are allowed (at-least-once: a kill between the receiver's
answer and marking the row sent) and counted. The seed is ``WATCHER_FAULT_SEED`` (default 16).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.httpreceiver import CLOSE, HTTPReceiver
from tests.procs import Proc
from watcher.notify.deadletter import stored_notification_id

RULE = """\
groups:
  - name: spend
    interval: 1s
    rules:
      - alert: Spend
        source: calls
        query: {agg: sum, field: cost_usd, window: 2s, by: [tenant]}
        detector: {kind: threshold, above: 5}
        no_data: ok
"""
TENANTS = 6
CHAOS_S = 40.0
QUIET_S = 40.0
PHASES = [(0.0, 200), (8.0, 500), (18.0, CLOSE), (26.0, 200), (30.0, 500), (34.0, 200)]
"""(seconds into the chaos, what the receiver answers from then on)."""


class Spender(threading.Thread):
    """Writes calls for the tenants that are "hot": each is hot 2.5 s out of every 6 s, staggered."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        con = sqlite3.connect(self.db, timeout=30)
        n = 0
        while not self.stop.wait(0.25):
            t = time.monotonic() - self.t0
            hot = [i for i in range(TENANTS) if (t + i) % 6.0 < 2.5]
            now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
            for i in hot:
                n += 1
                con.execute(
                    "INSERT INTO calls (trace_id, ts, provider, model, operation, tenant, feature, "
                    "input_tokens, output_tokens, cached_tokens, reasoning_tokens, tokens_estimated, "
                    "cost_usd, cost_known, outcome) "
                    "VALUES (?, ?, '', '', 'chat', ?, '', 0, 0, 0, 0, 0, 9, 1, 'ok')",
                    (f"{n:032x}", now, f"t{i}"),
                )
            con.commit()
        con.close()


def _outbox(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db, timeout=30) as con:
        rows = con.execute("SELECT status, kind, message FROM outbox").fetchall()
    import json

    return [(s, k, stored_notification_id(json.loads(m))) for s, k, m in rows]


def _settled(db: Path) -> bool:
    with sqlite3.connect(db, timeout=30) as con:
        (pending,) = con.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
        (firing,) = con.execute("SELECT count(*) FROM alerts WHERE state = 2").fetchone()
    return pending == 0 and firing == 0


def test_kill9_500s_and_closed_connections_lose_nothing_and_keep_order(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("WATCHER_FAULT_SEED", "16")))
    db = tmp_path / "w.db"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "spend.yaml").write_text(RULE)
    with HTTPReceiver() as hook:
        (tmp_path / "watcher.yaml").write_text(
            f"store: {{url: 'sqlite:///{db}'}}\n"
            f"rules: ['{tmp_path / 'rules'}']\n"
            "server: {enabled: false}\n"
            f"receivers: {{hook: {{type: webhook, url: '{hook.url}/hook', timeout_s: 2}}}}\n"
            "route: {receivers: [hook]}\n"
            "notify: {flush_interval: 1s, retry_initial: 300ms, retry_max: 2s}\n"
            "stop_timeout: 5s\n"
        )
        procs: list[Proc] = []

        def start() -> Proc:
            p = Proc(["run", "--log-level", "warning"], tmp_path, name=f"watcher#{len(procs)}")
            procs.append(p)
            return p

        proc = start()
        kills = sorted(rng.uniform(3.0, CHAOS_S - 2.0) for _ in range(6))
        spender: Spender | None = None
        try:
            end = time.monotonic() + 60
            while not db.exists() or not _has_schema(db):  # the first daemon creates the schema
                assert time.monotonic() < end, proc.output()
                time.sleep(0.1)
            spender = Spender(db)
            spender.start()
            t0 = time.monotonic()
            phases = list(PHASES)
            while time.monotonic() - t0 < CHAOS_S:
                t = time.monotonic() - t0
                while phases and phases[0][0] <= t:
                    hook.set_statuses([phases.pop(0)[1]])
                if kills and kills[0] <= t:
                    kills.pop(0)
                    proc.kill()  # SIGKILL, wherever it is
                    proc.close()
                    proc = start()
                time.sleep(0.05)
            spender.stop.set()
            spender.join(10)
            hook.set_statuses([200])
            end = time.monotonic() + QUIET_S
            while not _settled(db) and time.monotonic() < end:
                time.sleep(0.25)
            settled = _settled(db)
            proc.p.send_signal(signal.SIGTERM)
            assert proc.p.wait(30) == 0, proc.output()
        finally:
            if spender is not None:
                spender.stop.set()
            for p in procs:
                p.close()
        requests, served = hook.requests, hook.served_statuses

    report = _analyse(requests, served, _outbox(db))
    summary = ", ".join(f"{k} {v}" for k, v in report.items())
    print(f"\nfault run: {len(procs) - 1} kill -9, {summary}")
    assert settled, f"not settled after the quiet period: {summary}"
    assert report["episodes"] >= 10, summary
    assert report["lost"] == 0 and report["left_in_outbox"] == 0, summary
    assert report["resolve_before_firing"] == 0, summary
    assert report["unresolved"] == 0, summary


def _has_schema(db: Path) -> bool:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute("SELECT count(*) FROM schema_version").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return False


def _analyse(
    requests: list[tuple[str, dict[str, str], Any]], served: list[int], outbox: list[tuple[str, str, str]]
) -> dict[str, int]:
    accepted = [body for (_, _, body), code in zip(requests, served, strict=True) if code == 200]
    by_key: dict[str, list[str]] = {}
    for body in accepted:
        by_key.setdefault(body["dedup_key"], []).append(body["status"])
    ids = Counter(body["notification_id"] for body in accepted)
    queued = {nid for status, _, nid in outbox if status == "sent"}
    return {
        "episodes": len(by_key),
        "accepted": len(accepted),
        "refused_or_dropped": len(requests) - len(accepted),
        "repeats": sum(n - 1 for n in ids.values()),
        "lost": len(queued - set(ids)),
        "left_in_outbox": sum(1 for status, _, _ in outbox if status != "sent"),
        "resolve_before_firing": sum(1 for seq in by_key.values() if seq[0] != "firing"),
        "unresolved": sum(1 for seq in by_key.values() if "resolved" not in seq),
    }
