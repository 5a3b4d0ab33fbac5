"""The background writer: batching, drop-and-count when full, failures counted and never raised."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlmodel import create_engine

from watcher.instrument import StoreWriter
from watcher.store.tables import Call

CALLS = cast(sa.Table, Call.__table__)  # type: ignore[attr-defined]


def row(**over: Any) -> dict[str, Any]:
    """Return a complete ``calls`` row with ``over`` laid on top."""
    base: dict[str, Any] = {
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
        "provider": "openai",
        "model": "gpt-4o",
        "operation": "chat",
        "tenant": "acme",
        "feature": "chat",
        "user_id": None,
        "prompt_version": None,
        "input_tokens": 1,
        "output_tokens": 2,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "tokens_estimated": False,
        "cost_usd": 0.0,
        "cost_known": True,
        "ttft_s": None,
        "duration_s": None,
        "finish_reason": "stop",
        "outcome": "ok",
        "error_type": None,
    }
    base.update(over)
    return base


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(CALLS)).scalar_one())


def test_rows_are_written_in_batches(engine: sa.Engine) -> None:
    batches: list[int] = []
    sa.event.listen(
        engine,
        "before_cursor_execute",
        lambda conn, cur, stmt, params, ctx, many: batches.append(len(params) if many else 1),
    )
    w = StoreWriter(engine, batch_size=100, flush_interval_s=0.05)
    try:
        for i in range(1_000):
            assert w.submit(CALLS, row(trace_id=f"{i:032x}"))
        assert w.flush(timeout=10)
    finally:
        w.close()
    assert count(engine) == 1_000
    assert w.stats().written == 1_000 and w.dropped == 0 and w.errors == 0
    assert max(batches) == 100 and len(batches) < 1_000


def test_timestamps_read_back_utc(engine: sa.Engine, writer: StoreWriter) -> None:
    writer.submit(CALLS, row(ts=datetime(2026, 3, 1, 12, 30, tzinfo=UTC)))
    assert writer.flush(timeout=5)
    with engine.connect() as conn:
        ts = conn.execute(sa.select(CALLS.c.ts)).scalar_one()
    assert ts == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def test_accepts_a_store_like_object(engine: sa.Engine) -> None:
    w = StoreWriter(SimpleNamespace(engine=engine), flush_interval_s=0.01)
    try:
        w.submit(CALLS, row())
        assert w.flush(timeout=5)
    finally:
        w.close()
    assert count(engine) == 1


def test_rejects_what_is_not_an_engine() -> None:
    with pytest.raises(TypeError, match="Engine"):
        StoreWriter("sqlite:///x.db")


def test_full_queue_drops_and_counts_without_blocking(engine: sa.Engine) -> None:
    entered, release = threading.Event(), threading.Event()

    def block(*_: Any) -> None:
        entered.set()
        release.wait(10)

    sa.event.listen(engine, "before_cursor_execute", block)
    w = StoreWriter(engine, batch_size=1, flush_interval_s=0, max_queue=3)
    try:
        assert w.submit(CALLS, row())
        assert entered.wait(5)  # the thread holds one row and is stuck inside the insert
        accepted = [w.submit(CALLS, row()) for _ in range(5)]
        assert accepted == [True, True, True, False, False]
        assert w.dropped == 2
        release.set()
        assert w.flush(timeout=10)
    finally:
        release.set()
        w.close()
    assert count(engine) == 4
    assert w.stats().written == 4


def test_store_failure_is_counted_never_raised(tmp_path: Path) -> None:
    broken = create_engine(f"sqlite:///{tmp_path}/empty.db")  # no tables: every insert fails
    w = StoreWriter(broken, flush_interval_s=0.01)
    try:
        assert w.submit(CALLS, row())
        assert w.flush(timeout=5)
        assert w.errors == 1
        assert w.stats().lost == 1 and w.stats().written == 0
        assert w.submit(CALLS, row())  # still accepting after a failure
        assert w.flush(timeout=5)
        assert w.errors == 2
    finally:
        w.close()
        broken.dispose()


def test_close_writes_what_is_queued_and_refuses_more(engine: sa.Engine) -> None:
    w = StoreWriter(engine, flush_interval_s=10)
    for _ in range(10):
        w.submit(CALLS, row())
    assert w.close(timeout=5)
    assert w.close(timeout=5)  # idempotent
    assert count(engine) == 10
    assert not w.submit(CALLS, row())
    assert w.dropped == 1 and w.closed


def test_rows_given_as_functions_are_built_on_the_writer_thread(engine: sa.Engine, caplog: Any) -> None:
    threads: list[str] = []

    def build() -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return row()

    def broken() -> dict[str, Any]:
        raise ValueError("bad record")

    w = StoreWriter(engine, flush_interval_s=0.01)
    try:
        assert w.submit(CALLS, build) and w.submit(CALLS, broken) and w.submit(CALLS, row())
        assert w.flush(timeout=5)
    finally:
        w.close()
    assert threads == ["watcher-store-writer"]
    assert count(engine) == 2
    st = w.stats()
    assert (st.written, st.lost, st.errors, st.pending) == (2, 1, 1, 0)
