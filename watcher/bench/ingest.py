"""``watcher bench ingest``: scores POSTed in batches through the real app into SQLite.

This module owns the measurement (rows per second through ``web.app`` and ``web.ingest``, every
row counted back). It does not own the ingest API (``web.ingest``) nor its command line
(``cli.bench``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa

from ..web.ingest import SCORES


def run_ingest_bench(
    total: int = 50_000,
    batch: int = 1000,
    db: str | None = None,
    *,
    url: str | None = None,
    partition: str | None = None,
) -> dict[str, float]:
    """POST ``total`` scores in batches through the real app (TestClient) into the store; count the rows.

    The store is a SQLite file (``db``, else a temporary one) or ``url`` (PostgreSQL: the rows
    added are counted, so the database need not be empty). ``partition`` (``day``, ``week``,
    ``month``; PostgreSQL) partitions ``calls`` and ``scores`` by time first
    (``store.partitions``). Returns the rate and the counts; raises AssertionError if a row is
    missing.
    """
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from ..config import ServerSettings
    from ..selfmetrics import SelfMetrics
    from ..store.db import open_store
    from ..web.app import build_app

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(url or f"sqlite:///{db or Path(tmp) / 'bench.db'}")
        if partition is not None:
            from ..store.partitions import TABLES, convert

            for table in TABLES:
                convert(store, table, partition, datetime.now(UTC))  # type: ignore[arg-type]
        with store.engine.connect() as conn:
            before = int(conn.execute(sa.select(sa.func.count()).select_from(SCORES)).scalar_one())
        settings = SimpleNamespace(
            server=ServerSettings(
                port=0,  # not listened on: the TestClient calls the app in-process
                ingest_token=SecretStr("bench"),
                max_batch=max(batch, 1),
                max_body_bytes=64 * 1024 * 1024,
            )
        )
        daemon = SimpleNamespace(
            store=store,
            settings=settings,
            metrics=SelfMetrics(),
            rules=None,
            last_reload_error=None,
            clock=lambda: datetime.now(UTC),  # a command: the wall clock is its to read
        )
        headers = {"Authorization": "Bearer bench"}
        bodies = [
            [
                {
                    "trace_id": f"{i + j:032x}",
                    "name": "groundedness",
                    "value": (i + j) % 100 / 100,
                    "tenant": "t",
                    "feature": "f",
                }
                for j in range(min(batch, total - i))
            ]
            for i in range(0, total, batch)
        ]
        try:
            with TestClient(build_app(daemon)) as client:
                start = time.perf_counter()
                for body in bodies:
                    r = client.post("/api/v1/scores", json=body, headers=headers)
                    assert r.status_code == 200, r.text
                elapsed = time.perf_counter() - start
            with store.engine.connect() as conn:
                rows = int(conn.execute(sa.select(sa.func.count()).select_from(SCORES)).scalar_one()) - before
        finally:
            store.close()
    assert rows == total, f"lost rows: {total - rows}"
    return {"scores": total, "rows": rows, "batch": batch, "seconds": elapsed, "per_second": total / elapsed}


def run_retention_bench(
    url: str, rows: int, days: int, partition: str | None, now: datetime
) -> dict[str, float]:
    """Time the retention job's daily work: one day of ``scores`` rows expiring.

    ``scores`` gets ``rows`` rows spread evenly over the ``days`` days before the UTC midnight of
    ``now``; the purge at that midnight with a TTL of ``days - 1`` days expires exactly the oldest
    day (``store.retention.purge``; with ``partition``, the filled tables are converted first, as
    ``watcher db partition`` does, and that day's partition is dropped instead of its rows
    deleted). Returns the rows deleted and the purge's wall seconds; raises AssertionError when
    the rows left are not exactly the newer days'.
    """
    from datetime import timedelta

    from ..config import RetentionSettings
    from ..store.db import open_store
    from ..store.partitions import floor_to
    from ..store.retention import purge

    now = floor_to(now, "day")
    store = open_store(url)
    try:
        span = days * 86_400
        chunk = 20_000
        with store.engine.begin() as conn:
            for lo in range(0, rows, chunk):
                batch = [
                    {
                        "trace_id": f"{i:032x}",
                        "ts": now - timedelta(seconds=span * (i + 0.5) / rows),
                        "name": "groundedness",
                        "value": i % 100 / 100,
                        "source": "judge",
                        "tenant": "t",
                        "feature": "f",
                        "model": "m",
                    }
                    for i in range(lo, min(rows, lo + chunk))
                ]
                conn.execute(sa.insert(SCORES), batch)
        if partition is not None:  # as `watcher db partition` converts a store that holds rows
            from ..store.partitions import TABLES, convert

            for table in TABLES:
                convert(store, table, partition, now)  # type: ignore[arg-type]
        keep = RetentionSettings(scores=timedelta(days=days - 1), calls=timedelta(days=days - 1))
        start = time.perf_counter()
        if partition is not None:  # the retention job's upkeep first (``Daemon.enforce_retention``)
            from ..store.partitions import ensure

            for table in TABLES:
                ensure(store, table, partition, now, keep=timedelta(days=days))  # type: ignore[arg-type]
        deleted = purge(store, keep, now)
        elapsed = time.perf_counter() - start
        with store.engine.connect() as conn:
            left = int(conn.execute(sa.select(sa.func.count()).select_from(SCORES)).scalar_one())
    finally:
        store.close()
    expected_left = sum(1 for i in range(rows) if span * (i + 0.5) / rows < (days - 1) * 86_400)
    assert left == expected_left, f"{left} rows left, expected {expected_left}"
    return {"rows": rows, "deleted": deleted.get("scores", 0), "seconds": elapsed}
