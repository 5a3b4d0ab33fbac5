"""Exemplars from a wrapped call reach a real Prometheus (Debian package, tests/prom.py harness).

The real ``openai`` client calls the stub through the hooks; ``start_metrics_server`` serves the
registry; Prometheus (exemplar storage on) scrapes it in OpenMetrics and its
``/api/v1/query_exemplars`` must return the span's trace_id and span_id on every LLM metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from tests.prom import poll
from watcher.bench.stub import StubServer
from watcher.instrument.exposition import start_metrics_server
from watcher.instrument.wrap_openai import instrument_openai
from watcher.store.tables import Call

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hooks")]
METRICS = (
    "llm_requests_total",
    "llm_tokens_total",
    "llm_cost_usd_total",
    "llm_time_to_first_token_seconds_bucket",
    "llm_request_duration_seconds_bucket",
)


def test_exemplars_reach_prometheus_with_the_spans_ids(
    prometheus_factory: Callable[..., Any],
    registry: CollectorRegistry,
    exporter: InMemorySpanExporter,
    calls: Callable[[], list[Call]],
) -> None:
    server = start_metrics_server(0, registry=registry)
    try:
        with (
            StubServer(first_chunk_delay_s=0.05) as stub,
            openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as client,
        ):
            instrument_openai(client)
            sent = time.time()
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "What is the answer?"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        (span,) = exporter.get_finished_spans()
        (row,) = calls()
        trace_id, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
        assert (row.trace_id, row.span_id) == (trace_id, span_id)
        prom = prometheus_factory(targets=[f"127.0.0.1:{server.server_port}"])

        def exemplars() -> dict[str, list[dict[str, str]]] | None:
            found: dict[str, list[dict[str, str]]] = {}
            for metric in METRICS:
                body = httpx.get(
                    f"{prom.url}/api/v1/query_exemplars",
                    params={"query": metric, "start": sent - 60, "end": time.time() + 60},
                ).json()
                found[metric] = [e["labels"] for g in body.get("data") or () for e in g["exemplars"]]
            return found if all(found.values()) else None

        found = poll(exemplars, timeout=30, what="Prometheus to store the hooks' exemplars", interval=0.5)
    finally:
        server.shutdown()
        server.server_close()
    for metric, labels in found.items():
        assert labels and all(lb == {"trace_id": trace_id, "span_id": span_id} for lb in labels), metric
