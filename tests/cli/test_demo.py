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
    out, progress = io.StringIO(), io.StringIO()
    assert run_demo(db=db, days=4, seed=7, out=out, end=END, progress=progress) == 0
    lines = progress.getvalue().splitlines()
    assert lines[0].startswith("watcher demo: phase 1/3: generating 4 days of LLM traffic")
    assert [line.split(":")[1].strip() for line in lines if " day " in line] == [
        f"day {d}/4" for d in range(1, 5)
    ]
    assert sum(" replayed " in line for line in lines) == 4  # every 12 of the 48 replayed hours
    assert lines[-1] == "watcher demo: phase 3/3: matching the alerts with the injected incidents"
    assert (
        out.getvalue()
        .rstrip()
        .endswith(
            "watcher demo --serve (runs the demo again, then serves it at http://localhost:9464/ "
            "or, if that port is taken, on a free one it prints, until Ctrl-C)"
        )
    )
    return db, out.getvalue()


def test_demo_catches_both_incidents_and_nothing_else(demo: tuple[Path, str]) -> None:
    db, text = demo
    assert "summary: 2/2 incidents detected" in text, text
    assert "0 alerts outside them" in text, text
    firing = re.findall(r"\[FIRING\] (\w+)", text)
    # GroundednessDrift (the distribution test) sees the groundedness incident too, later
    assert set(firing) == {"SpendAnomaly", "GroundednessDrop", "GroundednessDrift"}, text
    assert re.search(r"GroundednessDrift \d+m after onset", text), text
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


def test_demo_serve_serves_its_status_page_with_links_to_itself(tmp_path: Path) -> None:
    """``watcher demo --serve``: progress on stderr, then the page on a free port until Ctrl-C."""
    import signal
    import urllib.request

    root = Path(__file__).resolve().parents[2]
    args = ["demo", "--db", str(tmp_path / "d.db"), "--end", END.isoformat(), "--serve", "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving the demo's status page at "):
                break
        text = "".join(lines)
        m = re.search(r"serving the demo's status page at (http://127\.0\.0\.1:(\d+))/", text)
        assert m is not None, text
        url, port = m.group(1), m.group(2)
        assert "summary: 2/2 incidents detected" in text
        assert "localhost:9464" not in text and ":9464/" not in text  # nothing runs there
        assert f"{url}/rules/" in text  # the alerts' links point at the served page
        with urllib.request.urlopen(f"{url}/", timeout=30) as resp:
            page = resp.read().decode()
        assert resp.status == 200
        assert "SpendAnomaly" in page
        with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=30) as resp:
            alerts = resp.read().decode()
        assert "SpendAnomaly" in alerts and port != "9464"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped serving" in out
    for phase in ("phase 1/3: generating 4 days", "day 4/4:", "phase 2/3: replaying", "phase 3/3"):
        assert phase in err, err
    assert "Traceback" not in err
