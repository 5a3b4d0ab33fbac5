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


def run_ingest_bench(total: int = 50_000, batch: int = 1000, db: str | None = None) -> dict[str, float]:
    """POST ``total`` scores in batches through the real app (TestClient) into SQLite; count the rows.

    Returns the rate and the counts; raises AssertionError if a row is missing.
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
        store = open_store(f"sqlite:///{db or Path(tmp) / 'bench.db'}")
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
                rows = int(conn.execute(sa.select(sa.func.count()).select_from(SCORES)).scalar_one())
        finally:
            store.close()
    assert rows == total, f"lost rows: {total - rows}"
    return {"scores": total, "rows": rows, "batch": batch, "seconds": elapsed, "per_second": total / elapsed}
