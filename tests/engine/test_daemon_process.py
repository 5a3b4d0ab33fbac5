"""The daemon as a real process: signals drive reload and shutdown."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from tests.procs import Proc

RULE = """\
groups:
  - name: cost
    interval: 1s
    rules:
      - alert: Spend
        source: calls
        query: {{agg: sum, field: cost_usd, window: 5m, by: [tenant]}}
        detector: {{kind: threshold, above: {above}}}
"""


def _wait_evaluations(db: Path, n: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with sqlite3.connect(db) as con:
                row = con.execute("select sum(evaluations) from eval_runs").fetchone()
            if row and row[0] and row[0] >= n:
                return
        except sqlite3.OperationalError:
            pass  # the daemon has not created the schema yet
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} evaluations recorded in {db}")


def test_sighup_reload_and_sigterm(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cost.yaml").write_text(RULE.format(above=5))
    (tmp_path / "watcher.yaml").write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\nrules: ['{rules}']\nserver: {{enabled: false}}\n"
    )
    proc = Proc(["run"], tmp_path)
    try:
        proc.wait_for("watcher running")
        _wait_evaluations(tmp_path / "w.db", 1)
        # a broken rule file: the old rules keep running and the reason is logged
        (rules / "cost.yaml").write_text(RULE.format(above=5).replace("1s", "one second"))
        proc.p.send_signal(signal.SIGHUP)
        line = proc.wait_for("rule reload failed")
        assert "keeping the previous rules" in line
        proc.wait_for('cost.yaml:3:15: group "cost": interval: bad duration')
        # a good change is picked up
        (rules / "cost.yaml").write_text(RULE.format(above=7))
        proc.p.send_signal(signal.SIGHUP)
        proc.wait_for("rules reloaded: 1 groups, 1 rules")
        t0 = time.monotonic()
        proc.p.send_signal(signal.SIGTERM)
        assert proc.p.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 10
        proc.wait_for("stopping")
    finally:
        proc.close()
