"""``watcher db stats|vacuum|purge`` through the real command line entry point."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.cli import main
from watcher.store.db import open_store
from watcher.store.tables import Call, Payload


@pytest.fixture
def config(tmp_path: Path) -> Path:
    db = tmp_path / "w.db"
    store = open_store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    with store.session() as s:
        for age in (1, 30, 120):
            s.add(Call(trace_id=f"c{age}", ts=now - timedelta(days=age)))
            s.add(Payload(trace_id=f"p{age}", ts=now - timedelta(days=age), prompt="x" * 2000))
        s.commit()
    store.close()
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{db}'}}\nretention: {{payloads: 7d, calls: 90d}}\n")
    return cfg


def test_stats_text(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "stats", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("calls "))
    assert line.split()[1] == "3"
    assert "size w.db:" in out
    assert "past retention (deleted by the next purge): payloads 2, calls 1" in out


def test_stats_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "stats", "-c", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    tables = {t["table"]: t for t in doc["tables"]}
    assert tables["payloads"]["rows"] == 3 and tables["payloads"]["oldest"].endswith("Z")
    assert doc["size_bytes"]["w.db"] > 0 and doc["expired"]["payloads"] == 2


def test_purge_dry_run_then_vacuum(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "purge", "-c", str(config), "--dry-run"]) == 0
    assert "would delete        2 payloads" in capsys.readouterr().out
    assert main(["db", "vacuum", "-c", str(config), "--purge"]) == 0
    out = capsys.readouterr().out
    assert "purged: payloads 2, calls 1" in out and "vacuumed sqlite:///" in out
    assert main(["db", "stats", "-c", str(config), "--json"]) == 0
    rows = {t["table"]: t["rows"] for t in json.loads(capsys.readouterr().out)["tables"]}
    assert rows["payloads"] == 1 and rows["calls"] == 2


def test_unreachable_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "watcher.yaml"
    (tmp_path / "not-a-db").write_text("garbage" * 100)
    cfg.write_text(f"store: {{url: 'sqlite:///{tmp_path}/not-a-db'}}\n")
    assert main(["db", "stats", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a SQLite database" in err


def test_purge_and_vacuum_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "purge", "-c", str(config), "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["rows"]["payloads"] == 2 and dry["rows"]["calls"] == 1
    assert dry["store"].startswith("sqlite:///") and dry["at"].endswith("Z")
    assert main(["db", "purge", "-c", str(config), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["dry_run"] is False and done["rows"] == {**dry["rows"]}
    assert main(["db", "purge", "-c", str(config), "--json"]) == 0  # nothing left
    assert set(json.loads(capsys.readouterr().out)["rows"].values()) == {0}
    assert main(["db", "vacuum", "-c", str(config), "--json"]) == 0
    vac = json.loads(capsys.readouterr().out)
    assert set(vac) == {"store", "purged", "size_before", "size_after"} and vac["purged"] is None
    assert vac["size_before"] > 0 and vac["size_after"] > 0
    assert main(["db", "vacuum", "-c", str(config), "--purge", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["purged"].values()) == {0}


def test_json_on_a_broken_store_is_no_json_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "watcher.yaml"
    (tmp_path / "not-a-db").write_text("garbage" * 100)
    cfg.write_text(f"store: {{url: 'sqlite:///{tmp_path}/not-a-db'}}\n")
    for cmd in (["db", "purge"], ["db", "vacuum"]):
        assert main([*cmd, "-c", str(cfg), "--json"]) == 1
        got = capsys.readouterr()
        assert got.out == "" and "not a SQLite database" in got.err
