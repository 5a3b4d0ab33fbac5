"""A benchmark of ``watcher backtest``: the shipped pack over 30 days of 1-minute data for 50 series.

This module owns generating the benchmark store (50 tenants, features and models, each with two
calls and one groundedness score per minute, plus one runaway-spend hour) straight into SQLite,
and timing one backtest of the shipped rules over it. It does not own the backtest (``backtest.report``).
Its command line is ``cli.bench``; run it as::

    watcher bench backtest --db /tmp/bench.db --days 30 --series 50 [--jobs N]
"""

from __future__ import annotations

import resource
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from ..store.db import open_store

END = datetime(2026, 3, 2, tzinfo=UTC)
CALLS_PER_MINUTE = 2


def _stamps(start: datetime, minutes: int, offset_s: float) -> np.ndarray:
    base = np.datetime64(start.replace(tzinfo=None), "us") + np.timedelta64(int(offset_s * 1e6), "us")
    return base + np.arange(minutes) * np.timedelta64(60, "s")


def generate(db: Path, days: int, series: int, seed: int = 1) -> tuple[int, int]:
    """Write the benchmark store to ``db``; return (calls, scores) written."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    open_store(f"sqlite:///{db}").close()  # the schema
    rng = np.random.default_rng(seed)
    start = END - timedelta(days=days)
    minutes = days * 1440
    spike = (days - 10) * 1440 + 14 * 60  # tenant-07 spends ten times more for one hour
    con = sqlite3.connect(db)
    n_calls = n_scores = 0
    cols = (
        "trace_id, span_id, ts, provider, model, operation, tenant, feature, input_tokens, output_tokens, "
        "cached_tokens, reasoning_tokens, tokens_estimated, cost_usd, cost_known, ttft_s, duration_s, "
        "finish_reason, outcome"
    )
    for i in range(series):
        tenant, feature, model = f"tenant-{i:02d}", f"feature-{i:02d}", f"model-{i:02d}"
        for k in range(CALLS_PER_MINUTE):
            ts = _stamps(start, minutes, 7 + 30 * k).astype(str)
            cost = rng.lognormal(np.log(0.004 * (1 + i % 5)), 0.3, minutes)
            if i == 7:
                cost[spike : spike + 60] *= 10
            ttft = rng.lognormal(np.log(0.4), 0.25, minutes)
            refused = rng.random(minutes) < 0.02
            rows = [
                (
                    f"{i:02d}{k}{m:07d}",
                    None,
                    str(t).replace("T", " "),
                    "openai",
                    model,
                    "chat",
                    tenant,
                    feature,
                    1000,
                    200,
                    0,
                    0,
                    0,
                    float(c),
                    1,
                    float(f),
                    float(f) + 2,
                    "stop",
                    "refused" if r else "ok",
                )
                for m, (t, c, f, r) in enumerate(zip(ts, cost, ttft, refused, strict=True))
            ]
            con.executemany(f"INSERT INTO calls ({cols}) VALUES ({', '.join('?' * 19)})", rows)
            n_calls += len(rows)
        ts = _stamps(start, minutes, 9).astype(str)
        values = rng.beta(17, 3, minutes)
        con.executemany(
            "INSERT INTO scores (trace_id, ts, name, value, source, tenant, feature, model) "
            "VALUES (?, ?, 'groundedness', ?, 'judge', ?, ?, ?)",
            [
                (f"{i:02d}s{m:07d}", str(t).replace("T", " "), float(v), tenant, feature, model)
                for m, (t, v) in enumerate(zip(ts, values, strict=True))
            ],
        )
        n_scores += minutes
        con.commit()
    con.close()
    return n_calls, n_scores


_RUSAGE = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)


def _children_cpu() -> float:
    """Return the user + system CPU seconds of this process's exited children (the workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
