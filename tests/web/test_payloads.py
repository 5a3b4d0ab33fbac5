"""Payload access (issue 18, finding 9): served only with scope payload_read, every read audited.

Who, when (the daemon's clock for the API, now for the CLI) and which trace land in
``payload_access``; ``watcher payloads audit`` lists them; an older store gets the table by a
migration; payloads expire on their own short retention, apart from calls and scores.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.web.test_page import NOW, TRACE
from tests.web.test_tokens import PAYLOAD_TOKEN, make
from watcher.cli import main
from watcher.config import RetentionSettings
from watcher.store import db
from watcher.store.db import open_store, schema_version
from watcher.store.retention import policies
from watcher.store.tables import SCHEMA_VERSION, Call, Payload, PayloadAccessRow
from watcher.web.app import build_app
from watcher.web.payloads import audit_log, read_payloads


def test_api_reads_are_audited_with_who_when_and_trace(tmp_path: Path) -> None:
    daemon = make(tmp_path, payload_tokens={"alice": PAYLOAD_TOKEN, "bot": "b" * 20})
    try:
        with daemon.store.session() as s:
            s.add(Payload(trace_id=TRACE, ts=NOW - timedelta(minutes=1), prompt="p1", response="r1"))
            s.add(Payload(trace_id=TRACE, ts=NOW, prompt="p2", response="r2"))
            s.commit()
        with TestClient(build_app(daemon)) as c:
            r = c.get(f"/api/v1/payloads/{TRACE}", headers={"Authorization": f"Bearer {PAYLOAD_TOKEN}"})
            assert r.status_code == 200
            assert [p["prompt"] for p in r.json()["data"]["payloads"]] == ["p2", "p1"]  # newest first
            missing = c.get("/api/v1/payloads/abc123", headers={"Authorization": f"Bearer {'b' * 20}"})
            assert missing.status_code == 404
            refused = c.get(f"/api/v1/payloads/{TRACE}")  # no token: not served, nothing audited
            assert refused.status_code == 401
        log = audit_log(daemon.store)
        assert [(e.who, e.via, e.trace_id, e.rows, e.ts) for e in log] == [
            ("payload:bot", "api", "abc123", 0, NOW),
            ("payload:alice", "api", TRACE, 2, NOW),
        ]
        assert log[0].client == "testclient"
    finally:
        daemon.close()


def test_cli_show_and_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    store = open_store(url)
    with store.session() as s:
        s.add(Payload(trace_id=TRACE, ts=datetime.now(UTC), prompt="hello [EMAIL]", response="hi"))
        s.commit()
    store.close()
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(f"store: {{url: '{url}'}}\nrules: []\n")
    before = datetime.now(UTC)
    assert main(["payloads", "show", TRACE, "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "prompt:   hello [EMAIL]" in out and "response: hi" in out
    assert main(["payloads", "show", "nothing-here", "-c", str(cfg)]) == 1
    assert main(["payloads", "show", "bad id!", "-c", str(cfg)]) == 2
    capsys.readouterr()
    assert main(["payloads", "audit", "-c", str(cfg), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    who = f"cli:{getpass.getuser()}"
    assert [(e["who"], e["via"], e["trace_id"], e["rows"]) for e in entries] == [
        (who, "cli", "nothing-here", 0),
        (who, "cli", TRACE, 1),
    ]
    when = datetime.fromisoformat(entries[1]["ts"])
    assert before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert main(["payloads", "audit", "-c", str(cfg), "--trace", TRACE]) == 0
    text = capsys.readouterr().out
    assert who in text and TRACE in text and "nothing-here" not in text
    assert main(["payloads", "audit", "-c", str(cfg), "--since", "nonsense"]) == 2


def test_a_version_2_store_gets_the_audit_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    store = open_store(url)
    with store.engine.begin() as conn:  # make it look like a store written by the previous release
        conn.exec_driver_sql("DROP TABLE payload_access")
        conn.exec_driver_sql("UPDATE schema_version SET version = 2")
    store.close()
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            assert schema_version(conn) == SCHEMA_VERSION
            assert sa.inspect(conn).has_table("payload_access")
        read_payloads(store, TRACE, who="cli:test", via="cli", now=NOW)
        assert len(audit_log(store)) == 1
    finally:
        store.close()
    assert db.MIGRATIONS[4].__name__ == "_v4_payload_access"


def test_payload_retention_is_short_and_separate() -> None:
    settings = RetentionSettings()
    assert settings.payloads == timedelta(days=7) and settings.calls == timedelta(days=90)
    assert settings.payload_access == timedelta(days=400)
    by_name = {p.name: p for p in policies(settings)}
    assert by_name["payloads"].table.name == Payload.__tablename__
    assert by_name["calls"].table.name == Call.__tablename__
    assert by_name["payload_access"].table.name == PayloadAccessRow.__tablename__
    shorter = RetentionSettings.model_validate({"payloads": "1d"})
    assert {p.name: p.ttl for p in policies(shorter)}["calls"] == timedelta(days=90)
