"""A benchmark of ``watcher backtest``: the shipped pack over 30 days of 1-minute data for 50 series.

This module owns generating the benchmark store (50 tenants, features and models, each with two
calls and one groundedness score per minute, plus one runaway-spend hour) straight into SQLite,
and timing one backtest of the shipped rules over it. It does not own the backtest (``backtest``).
``watcher bench`` is owned elsewhere; run this as::

    .venv/bin/python -m watcher.rules.benchmark --db /tmp/bench.db --days 30 --series 50 [--jobs N]
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from ..config import shipped_rules_dir
from ..sources.sql import SqlSource
from ..store.db import open_store
from .backtest import load_groups, print_report, run_backtest

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


def main(argv: list[str] | None = None) -> int:
    """Generate the store if needed, run one timed backtest of the shipped pack, print the timing."""
    p = argparse.ArgumentParser(prog="python -m watcher.rules.benchmark")
    p.add_argument("--db", default="bench-backtest.db")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--series", type=int, default=50)
    p.add_argument("--regenerate", action="store_true")
    p.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: one per CPU; 1: in this process)"
    )
    args = p.parse_args(argv)
    db = Path(args.db)
    if args.regenerate or not db.exists():
        t0 = time.perf_counter()
        calls, scores = generate(db, args.days, args.series)
        print(f"generated {calls:,} calls and {scores:,} scores in {time.perf_counter() - t0:.1f}s")
    store = open_store(f"sqlite:///{db}")
    try:
        sql = SqlSource(store)
        groups = load_groups([shipped_rules_dir()])
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        report = run_backtest(
            groups, {"calls": sql, "scores": sql}, END - timedelta(days=args.days), END, jobs=args.jobs
        )
        took = time.perf_counter() - t0
        # The workers' CPU (start-up included) is counted once they have exited, before the return.
        cpu, workers_cpu = time.process_time() - c0, _children_cpu() - k0
    finally:
        store.close()
    print_report(report, sys.stdout)
    series = sum(1 for _ in report.result.verdicts) or "n/a"
    res = report.result
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in res.cpu.items())
    print(
        f"\nbacktest of {len(res.rules)} rules over {args.days} days: {took:.1f}s wall, "
        f"{cpu + workers_cpu:.1f}s CPU (this process {cpu:.1f}s, workers {workers_cpu:.1f}s; {phases}); "
        f"{res.ticks} group ticks, {res.evaluations} evaluated; "
        f"series per rule: {args.series}; verdict series: {series}; jobs: {args.jobs or 'default'}"
    )
    own, workers = (resource.getrusage(who).ru_maxrss / 1024 for who in _RUSAGE)
    print(f"peak RSS: this process {own:.0f} MiB, largest worker {workers:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
