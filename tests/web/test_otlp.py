"""The OTLP/HTTP receiver: the real exporter into a real daemon server, the encodings, and every refusal."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import SecretStr

from watcher.config import ServerSettings
from watcher.instrument.pricing import cost_usd
from watcher.selfmetrics import SelfMetrics
from watcher.store.db import Store, open_store
from watcher.web.app import ServerThread, build_app

TOKEN = "otlp-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
T0 = int((NOW - timedelta(minutes=5)).timestamp() * 1e9)
PB = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    yield s
    s.close()


def make_daemon(store: Any, clock: Any = lambda: NOW, **server: Any) -> SimpleNamespace:
    settings = SimpleNamespace(
        server=ServerSettings(**{"ingest_token": SecretStr(TOKEN), "max_body_bytes": 65536, **server}),
        retention=SimpleNamespace(calls=timedelta(days=90), scores=timedelta(days=180)),
    )
    return SimpleNamespace(
        store=store, settings=settings, metrics=SelfMetrics(), rules=None, last_reload_error=None, clock=clock
    )


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(build_app(make_daemon(store)), raise_server_exceptions=False) as c:
        yield c


def rows(store: Store, table: str, order: str = "id") -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(f"select * from {table} order by {order}"))]


def spans_of(*specs: dict[str, Any]) -> list[ReadableSpan]:
    """Return finished SDK spans built from ``specs`` (name, attributes, offset_s, duration_s, events…)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for spec in specs:
        start = T0 + int(spec.get("offset_s", 0) * 1e9)
        span = tracer.start_span(
            spec.get("name", "chat gpt-4o-mini"),
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes=spec.get("attributes", {}),
        )
        for name, attrs, after_s in spec.get("events", []):
            span.add_event(name, attrs, timestamp=start + int(after_s * 1e9))
        if spec.get("error"):
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end(end_time=start + int(spec.get("duration_s", 1.0) * 1e9))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def protobuf(*specs: dict[str, Any]) -> bytes:
    return encode_spans(spans_of(*specs)).SerializeToString()


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 100,
    "gen_ai.usage.cache_read.input_tokens": 400,
    "gen_ai.usage.reasoning.output_tokens": 20,
    "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.response.time_to_first_chunk": 0.25,
}


def test_real_exporter_to_a_real_daemon_server(store: Store) -> None:
    """The SDK's OTLP/HTTP exporter (protobuf, gzip, bearer) into the daemon's HTTP server on loopback."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    server = ServerThread(build_app(make_daemon(store)), port=0).start()
    try:
        exporter = OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{server.port}/v1/traces",
            headers=AUTH,
            compression=Compression.Gzip,
            timeout=10,
        )
        spans = spans_of(
            {
                "attributes": CHAT,
                "events": [
                    (
                        "gen_ai.evaluation.result",
                        {
                            "gen_ai.evaluation.name": "groundedness",
                            "gen_ai.evaluation.score.value": 0.75,
                            "gen_ai.evaluation.score.label": "grounded",
                            "gen_ai.evaluation.explanation": "cites 2 of 3",
                        },
                        2.0,
                    )
                ],
                "duration_s": 1.5,
            },
            {"name": "GET /search", "attributes": {"http.request.method": "GET"}},
        )
        from opentelemetry.sdk.trace.export import SpanExportResult

        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # a retry: the call is not stored twice
        bad = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/traces", timeout=5)
        assert bad.export(spans) is SpanExportResult.FAILURE  # no token: 401, not retried
        exporter.shutdown()
        bad.shutdown()
    finally:
        server.stop()
    chat = spans[0]
    [call] = rows(store, "calls")
    assert (
        call["trace_id"] == f"{chat.context.trace_id:032x}"
        and call["span_id"] == f"{chat.context.span_id:016x}"
    )
    assert (call["provider"], call["model"], call["operation"]) == ("openai", "gpt-4o-mini", "chat")
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"], call["reasoning_tokens"]) == (
        1000,
        100,
        400,
        20,
    )
    assert call["ttft_s"] == pytest.approx(0.25) and call["duration_s"] == pytest.approx(1.5)
    assert call["finish_reason"] == "stop" and call["outcome"] == "ok" and call["error_type"] is None
    # gpt-4o-mini: 600 fresh x 0.15 + 400 cached x 0.075 + 100 x 0.60 per 1M
    assert call["cost_known"] and call["cost_usd"] == pytest.approx(
        (600 * 0.15 + 400 * 0.075 + 100 * 0.6) / 1e6
    )
    [score] = rows(store, "scores")
    assert (score["trace_id"], score["name"], score["value"], score["label"]) == (
        call["trace_id"],
        "groundedness",
        0.75,
        "grounded",
    )
    assert (
        score["model"] == "gpt-4o-mini" and score["source"] == "judge" and score["comment"] == "cites 2 of 3"
    )


def test_json_encoding_with_hex_ids_and_gzip(client: TestClient, store: Store) -> None:
    trace, span = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "watcher.tenant", "value": {"stringValue": "acme"}},
                        {"key": "watcher.feature", "value": {"stringValue": "resource-feature"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "x"},
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": span,
                                "name": "chat claude",
                                "kind": 3,
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": str(T0 + 2_000_000_000),
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                    {"key": "gen_ai.provider.name", "value": {"stringValue": "anthropic"}},
                                    {
                                        "key": "gen_ai.request.model",
                                        "value": {"stringValue": "claude-sonnet-4"},
                                    },
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "2000"}},
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 50}},
                                    {
                                        "key": "gen_ai.response.finish_reasons",
                                        "value": {
                                            "arrayValue": {"values": [{"stringValue": "content_filter"}]}
                                        },
                                    },
                                    {"key": "watcher.feature", "value": {"stringValue": "span-feature"}},
                                    {"key": "user.id", "value": {"stringValue": "u-42"}},
                                ],
                                "status": {"code": 0},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    r = client.post(
        "/v1/traces",
        content=gzip.compress(json.dumps(body).encode()),
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {}
    [call] = rows(store, "calls")
    assert (call["trace_id"], call["span_id"]) == (trace, span)
    assert (call["tenant"], call["feature"], call["user_id"]) == ("acme", "span-feature", "u-42")
    assert (call["input_tokens"], call["output_tokens"], call["outcome"]) == (2000, 50, "refused")
    assert call["duration_s"] == pytest.approx(2.0)


OPENLLMETRY_OLD = {  # OpenLLMetry before the current conventions
    "llm.request.type": "chat",
    "gen_ai.system": "OpenAI",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.prompt_tokens": 300,
    "gen_ai.usage.completion_tokens": 30,
    "gen_ai.completion.0.finish_reason": "length",
    "traceloop.association.properties.feature": "search",
}
OPENINFERENCE = {
    "openinference.span.kind": "LLM",
    "llm.system": "openai",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini", "stream": True}),
    "llm.token_count.prompt": 12,
    "llm.token_count.completion": 6,
    "llm.token_count.prompt_details.cache_read": 4,
    "llm.token_count.completion_details.reasoning": 2,
    "llm.finish_reason": "stop",
    "metadata": json.dumps({"tenant": "t1", "feature": "faq"}),
}


@pytest.mark.parametrize(
    ("attributes", "events", "expected"),
    [
        (
            OPENLLMETRY_OLD,
            [],
            {
                "provider": "openai",
                "model": "gpt-4o",
                "input_tokens": 300,
                "output_tokens": 30,
                "finish_reason": "length",
                "feature": "search",
                "operation": "chat",
                "ttft_s": None,
            },
        ),
        (
            OPENINFERENCE,
            [("First Token Stream Event", {}, 0.4)],
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_tokens": 12,
                "output_tokens": 6,
                "cached_tokens": 4,
                "reasoning_tokens": 2,
                "tenant": "t1",
                "feature": "faq",
                "ttft_s": 0.4,
            },
        ),
        (
            {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 8,
            },
            [],
            {"operation": "embeddings", "input_tokens": 8, "output_tokens": 0},
        ),
        (
            {**CHAT, "gen_ai.request.model": "no-such-model", "gen_ai.response.model": "no-such-model"},
            [],
            {"cost_known": False, "cost_usd": 0.0},
        ),
        (
            {**CHAT, "watcher.cost_usd": 0.5, "watcher.tenant": "hooks"},
            [],
            {"cost_known": True, "cost_usd": 0.5, "tenant": "hooks"},
        ),
        (
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-20250514",
                "gen_ai.usage.input_tokens": 10_000,
                "gen_ai.usage.cache_read.input_tokens": 2_000,
                "gen_ai.usage.cache_creation.input_tokens": 5_000,
                "gen_ai.usage.output_tokens": 100,
                "gen_ai.conversation.id": "conv-1",
            },
            [],
            {
                "cache_creation_tokens": 5_000,
                "cached_tokens": 2_000,
                "conversation_id": "conv-1",
                # 3k fresh, 2k read from the cache, 5k written to it, 100 out: each at its rate
                "cost_usd": pytest.approx(cost_usd("claude-sonnet-4-20250514", 10_000, 100, 2_000, 5_000)[0]),
            },
        ),
        (
            {**OPENINFERENCE, "session.id": "s-9", "llm.token_count.prompt_details.cache_write": 3},
            [],
            {"conversation_id": "s-9", "cache_creation_tokens": 3},
        ),
    ],
    ids=[
        "openllmetry-old-names",
        "openinference",
        "embeddings",
        "unknown-model",
        "hooks-cost",
        "cache-writes",
        "openinference-session",
    ],
)
def test_attribute_dialects(
    client: TestClient, store: Store, attributes: dict[str, Any], events: list[Any], expected: dict[str, Any]
) -> None:
    r = client.post(
        "/v1/traces", content=protobuf({"attributes": attributes, "events": events}), headers={**AUTH, **PB}
    )
    assert r.status_code == 200, r.text
    [call] = rows(store, "calls")
    got = {k: call[k] for k in expected}
    if expected.get("ttft_s") is not None:
        got["ttft_s"] = round(got["ttft_s"], 6)
    assert got == expected


def test_errors_and_non_model_spans(client: TestClient, store: Store) -> None:
    body = protobuf(
        {"attributes": {**CHAT, "error.type": "RateLimitError"}, "error": True},
        {"attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 99}},
        {"attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}},
        {"attributes": {"openinference.span.kind": "CHAIN"}},
        {"attributes": {"db.system": "postgresql"}},
    )
    r = client.post("/v1/traces", content=body, headers={**AUTH, **PB})
    assert r.status_code == 200
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert not reply.HasField("partial_success")
    [call] = rows(store, "calls")  # agents, tools, chains and databases are not model calls
    assert (call["outcome"], call["error_type"]) == ("error", "RateLimitError")
    metrics = client.get("/metrics").text
    assert 'watcher_otlp_spans_total{result="ignored"} 4.0' in metrics
    assert 'watcher_otlp_spans_total{result="call"} 1.0' in metrics


def test_partial_success_names_refused_spans(client: TestClient, store: Store) -> None:
    future = (NOW + timedelta(days=1) - datetime.fromtimestamp(T0 / 1e9, UTC)).total_seconds()
    body = protobuf(
        {"attributes": CHAT},
        {"attributes": CHAT, "offset_s": future},
        {"attributes": CHAT, "offset_s": -400 * 86400},
        {"attributes": CHAT, "events": [("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "x"}, 0.1)]},
    )
    r = client.post("/v1/traces", content=body, headers={**AUTH, **PB})
    assert r.status_code == 200
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert reply.partial_success.rejected_spans == 3
    message = reply.partial_success.error_message
    assert "ahead of the server clock" in message and "older than the retention of calls" in message
    assert "gen_ai.evaluation.score.value must be a finite number" in message
    assert len(rows(store, "calls")) == 2 and rows(store, "scores") == []


@pytest.mark.parametrize(
    ("headers", "body", "status", "needle"),
    [
        ({"Content-Type": "text/plain"}, b"x", 415, "is not OTLP"),
        ({}, b"x", 415, "is not OTLP"),
        (PB, b"\xff\xff\xff\xff", 400, "not an OTLP ExportTraceServiceRequest"),
        ({"Content-Type": "application/json"}, b"{not json", 400, "not JSON"),
        ({"Content-Type": "application/json"}, b"[1, 2]", 400, "expected an object"),
        ({"Content-Type": "application/json"}, b'{"resourceSpans": 3}', 400, "expected an array"),
        (
            {"Content-Type": "application/json"},
            json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}).encode(),
            400,
            "is not hex",
        ),
        (
            {"Content-Type": "application/json"},
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}
            ).encode(),
            400,
            "not OTLP/JSON",
        ),
        ({**PB, "Content-Encoding": "gzip"}, b"not gzip", 400, "not valid gzip"),
        ({**PB, "Content-Encoding": "gzip"}, gzip.compress(b"x" * 100)[:-8], 400, "truncated"),
        ({**PB, "Content-Encoding": "br"}, b"x", 415, "send gzip or none"),
        ({**PB, "Content-Encoding": "gzip"}, gzip.compress(b"\0" * (65536 * 21)), 413, "decompressed body"),
        (PB, b"\0" * 70_000, 413, "server.max_body_bytes"),
    ],
    ids=[
        "text",
        "no-type",
        "bad-proto",
        "bad-json",
        "json-array",
        "json-shape",
        "bad-hex",
        "bad-int",
        "bad-gzip",
        "cut-gzip",
        "brotli",
        "gzip-bomb",
        "too-large",
    ],
)
def test_bad_requests_are_4xx_with_a_reason(
    client: TestClient, store: Store, headers: dict[str, str], body: bytes, status: int, needle: str
) -> None:
    r = client.post("/v1/traces", content=body, headers={**AUTH, **headers})
    assert r.status_code == status, r.text
    assert needle in r.content.decode(errors="replace")
    assert rows(store, "calls") == []


def test_protobuf_errors_are_rpc_status(client: TestClient) -> None:
    from google.rpc.status_pb2 import Status as RpcStatus

    r = client.post("/v1/traces", content=b"\xff\xff", headers={**AUTH, **PB})
    status = RpcStatus.FromString(r.content)
    assert r.status_code == 400 and status.code == 3 and "ExportTraceServiceRequest" in status.message


def test_auth(store: Store) -> None:
    body = protobuf({"attributes": CHAT})
    with TestClient(build_app(make_daemon(store))) as c:
        assert c.post("/v1/traces", content=body, headers=PB).status_code == 401
        assert (
            c.post("/v1/traces", content=body, headers={**PB, "Authorization": "Bearer nope"}).status_code
            == 401
        )
    with TestClient(build_app(make_daemon(store, ingest_token=None))) as c:
        r = c.post("/v1/traces", content=body, headers={**PB, **AUTH})
        assert r.status_code == 403 and "server.ingest_token" in r.text
    assert rows(store, "calls") == []


def test_store_down_is_503_and_retryable(store: Store, tmp_path: Path) -> None:
    broken = open_store(f"sqlite:///{tmp_path}/gone.db")
    with broken.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE calls")
    try:
        with TestClient(build_app(make_daemon(broken)), raise_server_exceptions=False) as c:
            r = c.post("/v1/traces", content=protobuf({"attributes": CHAT}), headers={**AUTH, **PB})
        assert r.status_code == 503 and "retry" in r.text
    finally:
        broken.close()


def test_hostile_values_are_clipped_or_refused_never_5xx(client: TestClient, store: Store) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()

    def span(i: int, start: int, end: int, **attrs: Any) -> Any:
        s = scope.spans.add(trace_id=bytes([i + 1]) * 16, span_id=bytes([i + 1]) * 8, name="x" * 10_000)
        s.start_time_unix_nano, s.end_time_unix_nano = start, end
        for key, value in attrs.items():
            kv = s.attributes.add(key=key)
            if isinstance(value, bool):
                kv.value.bool_value = value
            elif isinstance(value, int):
                kv.value.int_value = value
            elif isinstance(value, float):
                kv.value.double_value = value
            else:
                kv.value.string_value = value
        return s

    base = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m\x00" + "x" * 500}
    span(0, T0, T0 - 1, **base, **{"gen_ai.usage.input_tokens": 2**63 - 1, "gen_ai.usage.output_tokens": -5})
    span(
        1,
        T0,
        T0 + 1,
        **base,
        **{"gen_ai.response.time_to_first_chunk": float("nan"), "watcher.cost_usd": 1e300},
    )
    span(2, 2**63 - 1, 2**63 - 1, **base)  # the year 2262: refused as too far ahead
    nested = span(3, T0, T0 + 1, **base).attributes.add(key="deep").value
    for _ in range(20):  # deeper than protobuf's decoding limit is a 400 (not OTLP any more)
        nested = nested.kvlist_value.values.add(key="k").value
    evaluation = span(4, T0, T0 + 1).events.add(name="gen_ai.evaluation.result", time_unix_nano=T0)
    for key, value in (("gen_ai.evaluation.name", "q"), ("gen_ai.evaluation.score.value", float("inf"))):
        kv = evaluation.attributes.add(key=key)
        if isinstance(value, str):
            kv.value.string_value = value
        else:
            kv.value.double_value = value
    r = client.post("/v1/traces", content=request.SerializeToString(), headers={**AUTH, **PB})
    assert r.status_code == 200, r.text
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert reply.partial_success.rejected_spans == 2  # the far-future span, the infinite score
    got = {row["span_id"]: row for row in rows(store, "calls")}
    assert len(got) == 3
    first = got["01" * 8]
    assert first["model"] == ("m" + "x" * 500)[:128] and first["input_tokens"] == 2**31 - 1
    assert first["output_tokens"] == 0 and first["duration_s"] is None  # end before start
    second = got["02" * 8]
    assert second["ttft_s"] is None  # NaN dropped
    assert (second["cost_usd"], second["cost_known"]) == (0.0, False)  # 1e300 refused; model unknown
    assert rows(store, "scores") == []
