"""The hooks finish a call on a background thread: order, flush, drops, exit, and what stays on the caller."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from watcher import instrument
from watcher.instrument import llm_call
from watcher.instrument.finisher import Finisher
from watcher.instrument.metrics import LLMMetrics
from watcher.instrument.writer import StoreWriter
from watcher.store.tables import Call

ReadCalls = Callable[[], list[Call]]
Make = Callable[..., Finisher]


@pytest.fixture
def make() -> Iterator[Make]:
    """Return a Finisher factory; every finisher made is closed (its thread stopped) afterwards."""
    made: list[Finisher] = []

    def build(**kwargs: Any) -> Finisher:
        made.append(Finisher(**kwargs))
        return made[-1]

    yield build
    for f in made:
        assert f.close(timeout=5)
        assert f._thread is None or not f._thread.is_alive()  # no thread left polling


def test_functions_run_in_order_and_flush_waits_for_them(make: Make) -> None:
    f = make(interval_s=5.0, idle_s=5.0)  # only a flush wakes it in time
    seen: list[int] = []
    for i in range(100):
        assert f.submit(lambda i=i: seen.append(i))
    assert f.flush(timeout=5)
    assert seen == list(range(100))
    s = f.stats()
    assert (s.submitted, s.finished, s.dropped, s.pending) == (100, 100, 0, 0)


def test_a_full_queue_drops_and_counts(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    f = make(max_queue=3)
    f.submit(gate.wait)  # occupies the thread...
    assert f.flush(timeout=0.05) is False  # ...so a flush times out instead of hanging
    accepted = [f.submit(lambda: None) for _ in range(5)]
    gate.set()
    assert f.flush(timeout=5)
    assert accepted.count(False) >= 2  # the queue held at most 3 (the marker and 2 calls, or 3 calls)
    assert f.stats().dropped == accepted.count(False)
    assert "finishing queue is full" in caplog.text


def test_a_raising_function_is_counted_and_the_thread_goes_on(make: Make) -> None:
    f = make()
    seen: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    f.submit(boom)
    f.submit(lambda: seen.append("after"))
    assert f.flush(timeout=5)
    assert seen == ["after"] and f.stats().errors == 1


def test_flush_from_the_finishing_thread_returns_instead_of_deadlocking(make: Make) -> None:
    f = make()
    results: list[bool] = []
    f.submit(lambda: results.append(f.flush(timeout=5)))
    assert f.flush(timeout=5)
    assert results == [False]


def test_spans_metrics_and_rows_are_made_off_the_callers_thread(
    hooks: None,
    exporter: InMemorySpanExporter,
    registry: CollectorRegistry,
    calls: ReadCalls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: dict[str, threading.Thread] = {}
    observe, submit = LLMMetrics.observe, StoreWriter.submit

    def spy_observe(self: LLMMetrics, *args: Any, **kwargs: Any) -> None:
        threads["metrics"] = threading.current_thread()
        observe(self, *args, **kwargs)

    def spy_submit(self: StoreWriter, *args: Any, **kwargs: Any) -> bool:
        threads["row"] = threading.current_thread()
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(LLMMetrics, "observe", spy_observe)
    monkeypatch.setattr(StoreWriter, "submit", spy_submit)
    with llm_call(provider="openai", model="gpt-4o", temperature=0.1) as rec:
        rec.input_tokens, rec.output_tokens = 10, 2
    assert rec.outcome == "ok" and rec.duration_s is not None  # final for the application at once
    (span,) = exporter.get_finished_spans()  # waits for the finisher
    assert span.attributes is not None and span.attributes["gen_ai.request.temperature"] == 0.1
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(rec.duration_s, abs=0.05)
    (row,) = calls()
    assert row.trace_id == rec.trace_id
    assert threads["metrics"] is threads["row"] and threads["row"] is not threading.current_thread()


def test_calls_queued_at_exit_are_written(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    code = f"""
from watcher import instrument
from watcher.store.db import open_store
store = open_store("sqlite:///{db}")
instrument.configure(store, metrics=False)
for i in range(500):
    with instrument.llm_call(provider="openai", model="gpt-4o") as rec:
        rec.output_tokens = i
# no flush, no reset: the exit handlers finish the calls, then the writer writes them
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with sqlite3.connect(db) as con:
        row = con.execute("select count(*), sum(output_tokens) from calls").fetchone()
    assert row == (500, sum(range(500)))


def test_reconfiguring_finishes_the_calls_in_flight_with_their_own_configuration(
    writer: StoreWriter, calls: ReadCalls
) -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    instrument.configure(writer=writer, registry=first)
    try:
        with llm_call(provider="p", model="m"):
            pass
        instrument.configure(writer=writer, registry=second)  # flushes the call above first
        assert (
            first.get_sample_value(
                "llm_requests_total",
                {
                    "provider": "p",
                    "model": "m",
                    "operation": "chat",
                    "tenant": "",
                    "feature": "",
                    "outcome": "ok",
                },
            )
            == 1
        )
        assert (
            second.get_sample_value(
                "llm_requests_total",
                {
                    "provider": "p",
                    "model": "m",
                    "operation": "chat",
                    "tenant": "",
                    "feature": "",
                    "outcome": "ok",
                },
            )
            is None
        )
        assert len(calls()) == 1
    finally:
        instrument.reset()


def test_a_forked_child_finishes_its_own_calls_not_the_parents(make: Make) -> None:
    f = make(interval_s=5.0, idle_s=5.0)
    seen: list[str] = []
    f.submit(lambda: seen.append("parent"))  # queued, not yet run, at the fork
    f._after_fork()  # what os.register_at_fork runs in the child
    f.submit(lambda: seen.append("child"))
    assert f.flush(timeout=5)
    assert seen == ["child"] and f.stats().submitted == 1


def test_flush_waits_for_the_function_the_thread_is_running(make: Make) -> None:
    f = make(interval_s=0.001, idle_s=0.001)
    started, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)
        done.set()

    f.submit(slow)
    assert started.wait(5)  # popped and running: the queue is empty now
    assert f.flush(timeout=0.05) is False  # not finished, so a flush does not report it done
    release.set()
    assert f.flush(timeout=5) and done.is_set()
