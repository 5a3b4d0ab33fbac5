"""The hooks' embeddings and legacy-completion spans over OTLP give the rows the hooks write themselves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.instrument.finisher import FINISHER
from watcher.store.db import open_store
from watcher.web.app import build_app

from .test_otlp import AUTH, PB, make_daemon, rows

openai = pytest.importorskip("openai")

COLUMNS = (
    "trace_id", "span_id", "provider", "model", "operation", "input_tokens", "output_tokens",
    "finish_reason", "outcome", "cost_known", "tokens_estimated",
)  # fmt: skip


def test_embeddings_and_text_completion_rows_match(tmp_path: Path) -> None:
    hooks_store = open_store(f"sqlite:///{tmp_path}/hooks.db")
    otlp_store = open_store(f"sqlite:///{tmp_path}/otlp.db")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    writer = instrument.StoreWriter(hooks_store, flush_interval_s=0.01)
    instrument.configure(writer=writer, tracer_provider=provider, metrics=False)
    try:
        with StubServer() as stub, openai.OpenAI(base_url=stub.base_url, api_key="k", max_retries=0) as c:
            instrument.instrument_openai(c)
            c.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
            c.completions.create(model="gpt-3.5-turbo-instruct", prompt="x")
            for _ in c.completions.create(model="gpt-3.5-turbo-instruct", prompt="x", stream=True):
                pass
        assert FINISHER.flush(10) and writer.flush(10)
        spans = exporter.get_finished_spans()
        ended = datetime.fromtimestamp(max(s.end_time or 0 for s in spans) / 1e9, UTC)
        with TestClient(build_app(make_daemon(otlp_store, clock=lambda: ended))) as client:
            r = client.post(
                "/v1/traces", content=encode_spans(spans).SerializeToString(), headers={**AUTH, **PB}
            )
            assert r.status_code == 200, r.text
        mine = [{k: row[k] for k in COLUMNS} for row in rows(hooks_store, "calls", "span_id")]
        theirs = [{k: row[k] for k in COLUMNS} for row in rows(otlp_store, "calls", "span_id")]
        assert sorted(r["operation"] for r in mine) == ["embeddings", "text_completion", "text_completion"]
        assert theirs == mine
    finally:
        instrument.reset()
        writer.close()
        provider.shutdown()
        hooks_store.close()
        otlp_store.close()
