"""Retrieval spans over OTLP: the hooks' own, the conventions' and OpenInference's become the same scores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher import instrument
from watcher.store.db import Store
from watcher.web.app import build_app

from .test_otlp import AUTH, PB, make_daemon, protobuf, rows, spans_of
from .test_otlp import store as store  # the fixture

COLUMNS = ("name", "value", "label", "source", "evaluator", "tenant", "feature", "comment")


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(build_app(make_daemon(store)), raise_server_exceptions=False) as c:
        yield c


def scores(store: Store) -> list[tuple[Any, ...]]:
    return [tuple(r[c] for c in COLUMNS) for r in rows(store, "scores")]


def post(client: TestClient, body: bytes) -> ExportTraceServiceResponse:
    r = client.post("/v1/traces", content=body, headers={**AUTH, **PB})
    assert r.status_code == 200, r.text
    return ExportTraceServiceResponse.FromString(r.content)


def test_the_hooks_retrieval_span_gives_the_rows_the_hooks_write(store: Store) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument.configure(tracer_provider=provider, metrics=False)
    try:
        with (
            instrument.attribution(tenant="acme", feature="support-rag"),
            instrument.retrieval("faq-index", k=2) as r,
        ):
            r.add("doc-4", 0.55)
            r.add("doc-1", 0.71)
        with instrument.retrieval("faq-index", k=2, feature="search"):
            pass
    finally:
        instrument.reset()
    provider.shutdown()
    spans = exporter.get_finished_spans()
    ended = datetime.fromtimestamp((spans[-1].end_time or 0) / 1e9, UTC)  # the receiver's clock: then
    with TestClient(build_app(make_daemon(store, clock=lambda: ended))) as client:
        post(client, encode_spans(spans).SerializeToString())
        metrics = client.get("/metrics").text
    found = "k=2 returned=2: doc-4 0.55, doc-1 0.71"
    assert scores(store) == [
        ("retrieval.top_score", 0.71, None, "retrieval", "faq-index", "acme", "support-rag", found),
        ("retrieval.empty", 0.0, "found", "retrieval", "faq-index", "acme", "support-rag", found),
        ("retrieval.empty", 1.0, "empty", "retrieval", "faq-index", "", "search", "k=2 returned=0"),
    ]
    assert {r["trace_id"] for r in rows(store, "scores")} == {f"{s.context.trace_id:032x}" for s in spans}
    assert 'watcher_otlp_spans_total{result="retrieval"} 2.0' in metrics


@pytest.mark.parametrize(
    ("attributes", "evaluator"),
    [
        (  # the current conventions, documents structured as a JSON string
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.data_source.id": "kb-prod",
                "gen_ai.retrieval.top_k": 3,
                "gen_ai.retrieval.documents": json.dumps(
                    [{"id": "a", "score": 0.4}, {"id": "b", "score": 0.9}]
                ),
            },
            "kb-prod",
        ),
        (  # OpenInference: flattened documents, no data source (the span's name names the retriever)
            {
                "openinference.span.kind": "RETRIEVER",
                "input.value": "what is the refund policy?",
                "retrieval.documents.0.document.id": "a",
                "retrieval.documents.0.document.score": 0.4,
                "retrieval.documents.0.document.content": "Refunds within 30 days.",
                "retrieval.documents.1.document.id": "b",
                "retrieval.documents.1.document.score": 0.9,
                "metadata": json.dumps({"tenant": "acme"}),
            },
            "VectorIndexRetriever",
        ),
    ],
)
def test_other_instrumentations_retrieval_spans(
    client: TestClient, store: Store, attributes: dict[str, Any], evaluator: str
) -> None:
    post(client, protobuf({"name": "VectorIndexRetriever", "attributes": attributes}))
    got = scores(store)
    assert [(g[0], g[1], g[2], g[4]) for g in got] == [
        ("retrieval.top_score", 0.9, None, evaluator),
        ("retrieval.empty", 0.0, "found", evaluator),
    ]


def test_failed_and_undated_retrievals(client: TestClient, store: Store) -> None:
    failed = {"name": "retrieval", "attributes": {"gen_ai.operation.name": "retrieval"}, "error": True}
    reply = post(client, protobuf(failed))
    assert not reply.HasField("partial_success")
    assert scores(store) == []  # a failed search is not an empty retrieval
    old = {"attributes": {"gen_ai.operation.name": "retrieval"}, "offset_s": -400 * 86400}
    reply = post(client, protobuf(old))
    assert reply.partial_success.rejected_spans == 1
    assert "older than the retention of scores" in reply.partial_success.error_message
    [span] = spans_of(
        {"attributes": {"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.documents": "[{"}}
    )
    post(client, encode_spans([span]).SerializeToString())
    assert [(s[0], s[1]) for s in scores(store)] == [("retrieval.empty", 1.0)]  # unreadable documents: none


def test_openllmetry_vector_store_queries(client: TestClient, store: Store) -> None:
    chroma = {  # distances: the nearest document is the most relevant one
        "name": "chroma.query",
        "attributes": {"db.system": "chroma", "traceloop.association.properties.feature": "search"},
        "events": [
            ("db.query.result", {"db.query.result.id": "a", "db.query.result.distance": 0.35}, 0.1),
            ("db.query.result", {"db.query.result.id": "b", "db.query.result.distance": 0.2}, 0.1),
        ],
    }
    pinecone = {
        "name": "pinecone.query",
        "attributes": {"db.system": "pinecone", "pinecone.query.top_k": 3},
        "events": [("db.query.result", {"db.query.result.id": "c", "db.query.result.score": 0.8}, 0.1)],
    }
    unrelated = {"name": "chroma.add", "attributes": {"db.system": "chroma"}}
    post(client, protobuf(chroma, pinecone, unrelated))
    got = [(g[0], g[1], g[4], g[6], g[7]) for g in scores(store)]
    assert got == [
        ("retrieval.top_score", -0.2, "chroma", "search", "returned=2: a -0.35, b -0.2"),
        ("retrieval.empty", 0.0, "chroma", "search", "returned=2: a -0.35, b -0.2"),
        ("retrieval.top_score", 0.8, "pinecone", "", "k=3 returned=1: c 0.8"),
        ("retrieval.empty", 0.0, "pinecone", "", "k=3 returned=1: c 0.8"),
    ]
