"""SIGTERM with a queue of pages and a receiver that hangs: the daemon stops within ``stop_timeout``.

Without the budget, 30 pages to a receiver that times out after 2 s on two workers would take
30 s; the daemon must stop within its 4 s budget (plus start-up slack) and leave what it could not
send in the outbox, for the next start.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.httpreceiver import HTTPReceiver
from tests.procs import Proc
from watcher.store.db import open_store
from watcher.store.tables import Call

RULE = """\
groups:
  - name: cost
    interval: 1s
    rules:
      - alert: Spend
        source: calls
        query: {agg: sum, field: cost_usd, window: 5m, by: [tenant]}
        detector: {kind: threshold, above: 5}
"""


def test_sigterm_keeps_the_stop_budget_and_leaves_the_rest_queued(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    store = open_store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    with store.session() as s:
        s.add_all(
            Call(trace_id=f"{i:032x}", ts=now - timedelta(seconds=30), tenant=f"t{i}", cost_usd=9)
            for i in range(30)
        )
        s.commit()
    store.close()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "cost.yaml").write_text(RULE)
    with HTTPReceiver() as hook:
        hook.hold()
        (tmp_path / "watcher.yaml").write_text(
            f"store: {{url: 'sqlite:///{db}'}}\n"
            f"rules: ['{tmp_path / 'rules'}']\n"
            "server: {enabled: false}\n"
            f"receivers: {{hook: {{type: webhook, url: '{hook.url}/hook', timeout_s: 2}}}}\n"
            "route: {receivers: [hook]}\n"
            "notify: {flush_interval: 1s, delivery_workers: 2, delivery_per_receiver: 2}\n"
            "stop_timeout: 4s\n"
        )
        proc = Proc(["run"], tmp_path)
        try:
            hook.wait_for(2, timeout=60)  # two sends hang in the receiver
            t0 = time.monotonic()
            proc.p.send_signal(signal.SIGTERM)
            assert proc.p.wait(timeout=30) == 0
            took = time.monotonic() - t0
            proc.wait_for("stopping (within 4s)")
        finally:
            hook.release()
            proc.close()
    assert took < 4 + 3, f"stop took {took:.1f}s for a 4s budget:\n{proc.output()}"
    with sqlite3.connect(db) as con:
        (pending,) = con.execute("select count(*) from outbox where status = 'pending'").fetchone()
    assert 20 <= pending <= 30  # the pages it could not send wait for the next start
    assert "left in the outbox" in proc.output()
