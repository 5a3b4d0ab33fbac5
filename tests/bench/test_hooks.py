"""``watcher bench hooks`` and ``watcher bench ingest`` run end to end (small sizes, nothing timed)."""

from __future__ import annotations

import json

import pytest

from watcher.bench.hooks import run_hooks_bench
from watcher.bench.ingest import run_ingest_bench
from watcher.cli import main

pytest.importorskip("openai")


def test_hooks_bench_writes_every_row_and_reports_each_arm() -> None:
    result = run_hooks_bench(calls=40, rounds=4)
    assert result["calls_per_arm"] == 40 and result["rows_written"] == result["rows_submitted"] == 40
    arms = result["arms"]
    assert {"baseline", "watcher"} <= set(arms)
    for arm in arms.values():
        assert arm["p50_us"] > 0 and arm["cpu_p50_us"] > 0 and arm["process_cpu_us"] > 0
    assert arms["baseline"]["added_p50_us"] == 0


def test_hooks_bench_caller_span_arm_runs_and_writes_its_rows() -> None:
    result = run_hooks_bench(calls=20, rounds=2, caller_span=True)
    assert set(result["arms"]) >= {"baseline", "watcher", "w-caller"}
    assert result["rows_written"] == result["rows_submitted"] == 40  # both watcher arms write rows


def test_hooks_bench_streams_read_every_chunk_and_write_every_row() -> None:
    result = run_hooks_bench(calls=20, rounds=2, stream=True)
    assert result["streamed"] and result["rows_written"] == result["rows_submitted"] == 20
    assert {"openai", "opentelemetry-sdk"} <= set(result["versions"])


def test_hooks_bench_over_http_talks_to_a_stub_server_process() -> None:
    result = run_hooks_bench(calls=20, rounds=2, http=True)
    assert result["transport"] == "loopback HTTP to the stub server process"
    assert result["rows_written"] == result["rows_submitted"] == 20


def test_bench_commands_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "hooks", "--calls", "20", "--rounds", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_written"] == 20
    assert main(["bench", "ingest", "--total", "300", "--batch", "100"]) == 0
    assert "300 of 300 scores committed" in capsys.readouterr().out


def test_ingest_bench_counts_the_rows() -> None:
    result = run_ingest_bench(total=250, batch=100)
    assert result["rows"] == result["scores"] == 250


@pytest.mark.parametrize("partition", [None, "day"])
def test_ingest_and_retention_bench_on_postgresql(pg_url: str, partition: str | None) -> None:
    from datetime import UTC, datetime

    from watcher.bench.ingest import run_retention_bench
    from watcher.store import partitions as parts
    from watcher.store.db import open_store

    got = run_ingest_bench(total=200, batch=50, url=pg_url, partition=partition)
    assert got["rows"] == 200  # the rows added, counted back
    store = open_store(pg_url)
    try:
        assert parts.partitioned_tables(store) == ([] if partition is None else ["calls", "scores"])
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM scores")
    finally:
        store.close()
    # 400 rows over the 4 days before midnight: the oldest day's 100 expire (the 300 left are checked)
    ret = run_retention_bench(pg_url, 400, 4, partition, datetime(2026, 12, 7, 12, tzinfo=UTC))
    assert ret["deleted"] == 100
    if partition is not None:  # the oldest day went as a partition, not as rows of one
        store = open_store(pg_url)
        try:
            names = [p.name for p in parts.partitions(store, "scores")]
        finally:
            store.close()
        assert names[0] == "scores_p20261204" and "scores_p20261203" not in names
