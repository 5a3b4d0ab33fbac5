"""The vertical slice end to end: demo traffic through the hooks → SQLite → shipped rules → alerts
with trace links; then ``watcher run --once`` on that database delivers to a real HTTP receiver."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.httpreceiver import HTTPReceiver
from watcher.cli.demo import run_demo

END = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # fixed, so the test is deterministic


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    out = io.StringIO()
    assert run_demo(db=db, days=4, seed=7, out=out, end=END) == 0
    return db, out.getvalue()


def test_demo_catches_both_incidents_and_nothing_else(demo: tuple[Path, str]) -> None:
    db, text = demo
    assert "summary: 2/2 incidents detected" in text, text
    assert "0 alerts outside them" in text, text
    firing = re.findall(r"\[FIRING\] (\w+)", text)
    assert set(firing) == {"SpendAnomaly", "GroundednessDrop"}, text
    assert "[RESOLVED] GroundednessDrop" in text
    # each incident says which label values drove it, and the canary's release marker is cited
    assert "why: mean groundedness -" in text and "from prompt_version=rag-v8" in text, text
    assert "why: sum cost_usd +" in text and "feature=agent" in text, text
    assert re.search(r"started \d+ min after prompt version rag-v8 canary \(2026-11-20 08:00 UTC\)", text), (
        text
    )
    # every alert carries trace deep links, and they point at calls that exist
    links = re.findall(r"http://localhost:16686/trace/([0-9a-f]{32})", text)
    assert links, text
    with sqlite3.connect(db) as con:
        known = {r[0] for r in con.execute("select trace_id from calls")}
    assert set(links) <= known


def test_run_once_on_demo_db_delivers_to_json_receiver(demo: tuple[Path, str], tmp_path: Path) -> None:
    db, _ = demo
    with HTTPReceiver() as rx:
        cfg = tmp_path / "watcher.yaml"
        cfg.write_text(
            f"store: {{url: 'sqlite:///{db}'}}\n"
            f"rules: ['{Path(__file__).resolve().parents[2] / 'rules'}']\n"
            f"receivers:\n  hook: {{type: apprise, urls: ['json://127.0.0.1:{rx.port}/alerts']}}\n"
            "route: {receivers: [hook]}\n"
            "server: {enabled: false}\n"
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.run(
            [sys.executable, "-m", "watcher", "run", "--once", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        rx.wait_for(1, timeout=10)
    bodies = [body for _, _, body in rx.requests]
    spend = [b for b in bodies if "SpendAnomaly" in b["title"]]
    assert len(spend) == 1, bodies
    assert "globex" in spend[0]["title"] and spend[0]["type"] in ("failure", "warning", "info")
    ids = re.findall(r"/trace/([0-9a-f]{32})", spend[0]["message"])
    assert ids, spend[0]["message"]
    with sqlite3.connect(db) as con:
        rows = con.execute(
            f"select tenant, feature from calls where trace_id in ({','.join('?' * len(ids))})", ids
        ).fetchall()
    assert len(rows) == len(ids)
    assert all(r == ("globex", "agent") for r in rows)  # the runaway loop's own calls
