"""Fixtures for the hooks: the stub server, an instrumented client of it, a fresh SQLite store,
a tracer provider with an in-memory exporter and a registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Metric
from sqlmodel import Session, SQLModel, create_engine, select

from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.instrument import StoreWriter, instrument_openai
from watcher.instrument.finisher import FINISHER
from watcher.store.tables import Call, Score

FIRST_CHUNK_DELAY_S = 0.15
"""How long the stub holds the first content chunk back: the TTFT the tests expect."""


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    """Return the OpenAI/Anthropic-compatible stub server on a free loopback port (one per module)."""
    with StubServer(first_chunk_delay_s=FIRST_CHUNK_DELAY_S) as server:
        yield server


@pytest.fixture
def client(stub: StubServer) -> Iterator[Any]:
    """Return an instrumented ``openai.OpenAI`` client of the stub (warmed up before instrumenting)."""
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
        # The first request of a client pays its lazy set-up (~100 ms): not part of any TTFT.
        c.chat.completions.create(model="warm-up", messages=[{"role": "user", "content": "hi"}])
        yield instrument_openai(c)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """Return an engine on a fresh SQLite file with every table created."""
    eng = create_engine(f"sqlite:///{tmp_path}/t.db")
    SQLModel.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def writer(engine: sa.Engine) -> Iterator[StoreWriter]:
    """Return a writer on ``engine`` with a short flush interval; closed afterwards."""
    w = StoreWriter(engine, flush_interval_s=0.01)
    yield w
    w.close()


class FlushingExporter(InMemorySpanExporter):
    """An in-memory exporter whose reads first wait for the calls the hooks are finishing."""

    def get_finished_spans(self) -> tuple[ReadableSpan, ...]:  # type: ignore[override]
        """Return the finished spans once the hooks' background finishing has caught up."""
        assert FINISHER.flush(timeout=10)
        return super().get_finished_spans()


class FlushingRegistry(CollectorRegistry):
    """A registry whose collection first waits for the calls the hooks are finishing."""

    def collect(self) -> Iterator[Metric]:
        """Yield the metrics once the hooks' background finishing has caught up."""
        assert FINISHER.flush(timeout=10)
        yield from super().collect()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Return an in-memory span exporter that waits for the finisher before it is read."""
    return FlushingExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """Return a fresh SDK tracer provider (not the global one) exporting to ``exporter``."""
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


@pytest.fixture
def registry() -> CollectorRegistry:
    """Return a fresh Prometheus registry that waits for the finisher before it is collected."""
    return FlushingRegistry()


@pytest.fixture
def hooks(writer: StoreWriter, provider: TracerProvider, registry: CollectorRegistry) -> Iterator[None]:
    """Configure the hooks with the writer, provider and registry above; reset afterwards."""
    instrument.configure(writer=writer, tracer_provider=provider, registry=registry)
    yield
    instrument.reset()


@pytest.fixture
def calls(engine: sa.Engine, writer: StoreWriter) -> Callable[[], list[Call]]:
    """Return a function that flushes the writer and reads every ``calls`` row."""

    def read() -> list[Call]:
        assert FINISHER.flush(timeout=10) and writer.flush(timeout=10)
        with Session(engine) as s:
            return list(s.exec(select(Call).order_by(Call.id)))  # type: ignore[arg-type]

    return read


@pytest.fixture
def scores(engine: sa.Engine, writer: StoreWriter) -> Callable[[], list[Score]]:
    """Return a function that flushes the writer and reads every ``scores`` row."""

    def read() -> list[Score]:
        assert FINISHER.flush(timeout=10) and writer.flush(timeout=10)
        with Session(engine) as s:
            return list(s.exec(select(Score).order_by(Score.id)))  # type: ignore[arg-type]

    return read
