"""Time partitions of ``calls``/``scores`` on the real PostgreSQL: conversion, upkeep, retention, CLI."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from watcher.cli import main
from watcher.config import RetentionSettings, Settings, StoreSettings
from watcher.daemon import Daemon
from watcher.errors import StoreError
from watcher.rules.schema import Rule
from watcher.sources.sql import SqlSource
from watcher.store import partitions as parts
from watcher.store.db import Store, open_store
from watcher.store.retention import purge
from watcher.store.tables import Call, Score

NOW = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
DAY = timedelta(days=1)


def _calls(store: Store, days: int, per_day: int = 24) -> None:
    with store.session() as s:
        for d in range(days):
            for h in range(per_day):
                ts = NOW - d * DAY - timedelta(hours=h, minutes=7)
                s.add(Call(trace_id=f"t{d}-{h}", ts=ts, tenant="acme" if h % 2 else "beta", cost_usd=0.5 + h))
                s.add(Score(trace_id=f"t{d}-{h}", ts=ts, name="groundedness", value=0.9, feature="chat"))
        s.commit()


def _where(store: Store, table: str) -> dict[str, int]:
    """Rows per partition (``tableoid``), by partition name."""
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"
        ).all()
    return {str(name): int(n) for name, n in rows}


@pytest.fixture
def pg(pg_url: str) -> Any:
    store = open_store(pg_url)
    yield store
    store.close()


def test_convert_keeps_rows_ids_and_query_results(pg: Store) -> None:
    _calls(pg, days=5)
    rule = Rule.model_validate(
        {
            "alert": "Spend",
            "source": "calls",
            "query": {"agg": "sum", "field": "cost_usd", "window": "1h", "by": ["tenant"]},
            "detector": {"kind": "threshold", "above": 1},
        }
    )
    before = SqlSource(pg).fetch(rule, NOW - 5 * DAY, NOW, timedelta(hours=1))
    with pg.engine.connect() as conn:
        ids = sorted(r[0] for r in conn.exec_driver_sql("SELECT id FROM calls").all())

    assert parts.convert(pg, "calls", "day", NOW, ahead=2) == 120
    assert parts.convert(pg, "scores", "day", NOW, ahead=2) == 120
    assert parts.convert(pg, "calls", "day", NOW) == 0  # already partitioned: nothing to do

    listed = parts.partitions(pg, "calls")
    ranged = [p for p in listed if p.lo is not None]
    assert listed[-1].name == "calls_default" and listed[-1].lo is None
    # the oldest row's day (5 days back, minus up to 24 h) to two days past today
    assert ranged[0].lo == parts.floor_to(NOW - 4 * DAY - timedelta(hours=23, minutes=7), "day")
    assert ranged[-1].hi == parts.floor_to(NOW, "day") + 3 * DAY
    assert [p.name for p in ranged][-1] == "calls_p20261209"
    with pg.engine.connect() as conn:
        assert sorted(r[0] for r in conn.exec_driver_sql("SELECT id FROM calls").all()) == ids
        assert parts.is_partitioned(conn, "calls") and parts.is_partitioned(conn, "scores")
    assert _where(pg, "calls").get("calls_default", 0) == 0

    after = SqlSource(pg).fetch(rule, NOW - 5 * DAY, NOW, timedelta(hours=1))
    assert [s.labels for s in after] == [s.labels for s in before]
    for a, b in zip(after, before, strict=True):
        assert list(a.values) == pytest.approx(list(b.values), nan_ok=True)

    # a new row gets a fresh id from the same sequence and lands in its day's partition
    with pg.session() as s:
        row = Call(trace_id="new", ts=NOW + timedelta(minutes=1), tenant="acme")
        s.add(row)
        s.commit()
        assert row.id is not None and row.id > max(ids)
    assert _where(pg, "calls")["calls_p20261207"] == 16 + 1


def test_out_of_range_rows_wait_in_the_default_partition_then_move(pg: Store) -> None:
    parts.convert(pg, "calls", "day", NOW, ahead=1)  # an empty table: converted at once
    far = NOW + 30 * DAY
    with pg.session() as s:
        s.add(Call(trace_id="future", ts=far))
        s.add(Call(trace_id="ancient", ts=NOW - 3000 * DAY))
        s.commit()
    assert _where(pg, "calls") == {"calls_default": 2}
    # the clock reaches the future row; the ancient one, older than the table's retention, stays
    made = parts.ensure(pg, "calls", "day", far, ahead=1, keep=timedelta(days=90))
    names = [p.name for p in made]
    assert names[0] == "calls_p20261209" and "calls_p20270106" in names
    assert _where(pg, "calls") == {"calls_default": 1, "calls_p20270106": 1}
    # a backfill of older rows (within the retention) waits in the default partition, then gets
    # the partitions of its days only
    with pg.session() as s:
        s.add_all([Call(trace_id=f"late{i}", ts=NOW - (20 + i % 2) * DAY) for i in range(4)])
        s.commit()
    made = parts.ensure(pg, "calls", "day", far, ahead=1, keep=timedelta(days=90))
    assert [p.name for p in made] == ["calls_p20261116", "calls_p20261117"]
    assert _where(pg, "calls") == {
        "calls_default": 1,
        "calls_p20261116": 2,
        "calls_p20261117": 2,
        "calls_p20270106": 1,
    }


def test_week_and_month_names() -> None:
    monday = parts.floor_to(NOW, "week")
    assert monday == datetime(2026, 12, 7, tzinfo=UTC) and parts.partition_name("calls", monday, "week") == (
        "calls_p2026w50"
    )
    first = parts.floor_to(NOW, "month")
    assert parts.next_start(first, "month") == datetime(2027, 1, 1, tzinfo=UTC)
    assert parts.partition_name("scores", first, "month") == "scores_p202612"


def test_retention_drops_whole_partitions_and_deletes_the_rest(pg: Store) -> None:
    _calls(pg, days=6)
    for table in parts.TABLES:
        parts.convert(pg, table, "day", NOW)
    settings = RetentionSettings(calls=timedelta(days=3), scores=timedelta(days=3))
    with pg.engine.connect() as conn:
        due = conn.execute(
            sa.select(sa.func.count()).select_from(Call.__table__).where(Call.ts < NOW - 3 * DAY)  # type: ignore[attr-defined]
        ).scalar()
    before = set(_where(pg, "calls"))
    deleted = purge(pg, settings, NOW)
    assert deleted["calls"] == due and deleted["scores"] == due
    after = set(_where(pg, "calls"))
    gone = before - after
    # every partition whose day ended before the cutoff is gone as a table, not only emptied
    assert gone and all(name < "calls_p20261204" for name in gone)
    names = {p.name for p in parts.partitions(pg, "calls")}
    assert not any(n < "calls_p20261204" and n != "calls_default" for n in names)
    with pg.engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT min(ts) FROM calls").scalar()
    assert left is not None and left.astimezone(UTC) >= NOW - 3 * DAY


def test_daemon_converts_empty_tables_and_only_warns_on_full_ones(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(pg_url)
    with store.session() as s:
        s.add(Score(trace_id="x", ts=NOW, name="groundedness", value=1.0))
        s.commit()
    settings = Settings(store=StoreSettings(url=pg_url, partition="week", partition_ahead=2), rules=[])
    daemon = Daemon(settings, store=store, clock=lambda: NOW)
    try:
        with caplog.at_level(logging.WARNING):
            made = daemon.maintain_partitions(NOW)
        assert parts.partitioned_tables(store) == ["calls"]
        assert made == ["calls_p2026w50", "calls_p2026w51", "calls_p2026w52"]
        assert "scores holds rows and is not partitioned: run `watcher db partition`" in caplog.text
        assert daemon.maintain_partitions(NOW + 7 * DAY) == ["calls_p2026w53"]
        daemon.enforce_retention(NOW + 7 * DAY)  # upkeep runs with the retention job, and never raises
    finally:
        daemon.close()


def test_cli_partition_on_postgresql(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = open_store(pg_url)
    _calls(store, days=2)
    store.close()
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(f"store: {{url: '{pg_url}'}}\n")
    assert main(["db", "partition", "-c", str(cfg)]) == 2
    assert "no interval" in capsys.readouterr().err
    assert main(["db", "partition", "-c", str(cfg), "--interval", "month", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    calls = doc["tables"]["calls"]
    assert calls["converted_rows"] == 48 and doc["tables"]["scores"]["converted_rows"] == 48
    assert [p["name"] for p in calls["partitions"]][-1] == "calls_default"
    assert main(["db", "partition", "-c", str(cfg), "--list"]) == 0
    out = capsys.readouterr().out
    assert "calls: " in out and "plus a default partition" in out


def test_sqlite_has_no_partitions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\n")
    open_store(f"sqlite:///{tmp_path}/w.db").close()
    assert main(["db", "partition", "-c", str(cfg), "--interval", "day"]) == 2
    assert "time partitions need PostgreSQL" in capsys.readouterr().err
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    try:
        with pytest.raises(StoreError, match="need PostgreSQL"):
            parts.convert(store, "calls", "day", NOW)
        assert parts.partitioned_tables(store) == []
    finally:
        store.close()
