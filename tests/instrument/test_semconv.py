"""The current GenAI conventions on the hooks' spans, and the OpenTelemetry client metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.instrument.conftest import FIRST_CHUNK_DELAY_S
from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.instrument import StoreWriter
from watcher.instrument import attributes as attr
from watcher.instrument.otelmetrics import DURATION_BUCKETS, TOKEN_BUCKETS
from watcher.instrument.pricing import price_of
from watcher.store.tables import Call

openai = pytest.importorskip("openai")
MESSAGES = [{"role": "user", "content": "What is the answer?"}]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def hooked(
    writer: StoreWriter, provider: Any, registry: Any, reader: InMemoryMetricReader
) -> Iterator[MeterProvider]:
    meters = MeterProvider(metric_readers=[reader])
    instrument.configure(writer=writer, tracer_provider=provider, registry=registry, meter_provider=meters)
    yield meters
    instrument.reset()
    meters.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    instrument.flush()
    data = reader.get_metrics_data()
    found: list[HistogramDataPoint] = []
    if data is None:  # nothing recorded at all
        return found
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    found.extend(p for p in metric.data.data_points if isinstance(p, HistogramDataPoint))
    return found


def test_streamed_call_carries_the_current_conventions(
    hooked: MeterProvider,
    stub: StubServer,
    exporter: InMemorySpanExporter,
    calls: Callable[[], list[Call]],
    reader: InMemoryMetricReader,
) -> None:
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as client:
        instrument.instrument_openai(client)
        with instrument.attribution(conversation_id="conv-7", feature="faq"):
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            for _ in stream:
                pass
    [span] = exporter.get_finished_spans()
    a = dict(span.attributes or {})
    [row] = calls()
    assert a[attr.GEN_AI_REQUEST_STREAM] is True
    assert a[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == pytest.approx(row.ttft_s)
    assert row.ttft_s is not None and row.ttft_s >= FIRST_CHUNK_DELAY_S
    assert attr.WATCHER_TTFT_S not in a  # the deprecated name is no longer emitted
    assert (a[attr.SERVER_ADDRESS], a[attr.SERVER_PORT]) == ("127.0.0.1", stub.server_address[1])
    assert a[attr.GEN_AI_CONVERSATION_ID] == "conv-7" and row.conversation_id == "conv-7"
    usage = {p.attributes[attr.GEN_AI_TOKEN_TYPE]: p for p in points(reader, "gen_ai.client.token.usage")}
    assert (usage["input"].sum, usage["output"].sum) == (12, 6)
    assert usage["input"].attributes[attr.SERVER_PORT] == stub.server_address[1]
    assert tuple(usage["input"].explicit_bounds) == TOKEN_BUCKETS
    [duration] = points(reader, "gen_ai.client.operation.duration")
    assert duration.count == 1 and tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert duration.sum == pytest.approx(row.duration_s)
    assert duration.attributes[attr.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    [ttfc] = points(reader, "gen_ai.client.operation.time_to_first_chunk")
    assert ttfc.sum == pytest.approx(row.ttft_s)


def test_failed_call_has_error_type_on_the_duration(
    hooked: MeterProvider, stub: StubServer, reader: InMemoryMetricReader
) -> None:
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as client:
        instrument.instrument_openai(client)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-error", messages=MESSAGES)
    [duration] = points(reader, "gen_ai.client.operation.duration")
    assert duration.attributes[attr.ERROR_TYPE] == "InternalServerError"
    assert points(reader, "gen_ai.client.token.usage") == []  # nothing was used


def test_cache_writes_are_recorded_and_priced(
    hooked: MeterProvider, exporter: InMemorySpanExporter, calls: Callable[[], list[Call]]
) -> None:
    model = "claude-sonnet-4-20250514"
    with instrument.llm_call(
        provider="anthropic", model=model, server_address="api.anthropic.com", server_port=443
    ) as rec:
        rec.input_tokens, rec.cached_tokens, rec.cache_creation_tokens, rec.output_tokens = (
            10_000,
            2_000,
            5_000,
            100,
        )
    [span] = exporter.get_finished_spans()
    a = dict(span.attributes or {})
    assert a[attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 5_000
    assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 2_000
    assert a[attr.SERVER_ADDRESS] == "api.anthropic.com"
    [row] = calls()
    price = price_of(model, "anthropic")
    assert price is not None
    expected = (
        3_000 * price.input + 2_000 * price.cached_input + 5_000 * price.cache_write + 100 * price.output
    )
    assert row.cache_creation_tokens == 5_000 and row.cost_usd == pytest.approx(expected / 1e6)


def test_otel_metrics_can_be_turned_off(
    writer: StoreWriter, stub: StubServer, reader: InMemoryMetricReader
) -> None:
    meters = MeterProvider(metric_readers=[reader])
    instrument.configure(writer=writer, meter_provider=meters, otel_metrics=False, metrics=False)
    try:
        with instrument.llm_call(provider="openai", model="gpt-4o-mini") as rec:
            rec.input_tokens = 5
        assert points(reader, "gen_ai.client.token.usage") == []
    finally:
        instrument.reset()
        meters.shutdown()


TOOL_MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Mail jane@example.com the weather in Paris"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"city": "Paris", "cc": "jane@example.com"}',
                },
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 14 C; ask bob@example.org"},
]


def test_captured_messages_keep_roles_and_tool_calls_redacted(
    writer: StoreWriter, provider: Any, stub: StubServer, exporter: InMemorySpanExporter
) -> None:
    import json

    instrument.configure(writer=writer, tracer_provider=provider, capture_content=True, metrics=False)
    try:
        with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as client:
            instrument.instrument_openai(client)
            client.chat.completions.create(model="gpt-4o-mini", messages=TOOL_MESSAGES)
    finally:
        instrument.reset()
    [span] = exporter.get_finished_spans()
    a = dict(span.attributes or {})
    sent = json.loads(str(a[attr.GEN_AI_INPUT_MESSAGES]))
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[0]["parts"] == [{"type": "text", "content": "You answer briefly."}]
    [call] = sent[2]["parts"]
    assert (call["type"], call["id"], call["name"]) == ("tool_call", "call_1", "get_weather")
    assert '"city": "Paris"' in call["arguments"]
    [answer] = sent[3]["parts"]
    assert (answer["type"], answer["id"]) == ("tool_call_response", "call_1")
    text = json.dumps(sent)
    assert "jane@example.com" not in text and "bob@example.org" not in text and "[EMAIL]" in text
    got = json.loads(str(a[attr.GEN_AI_OUTPUT_MESSAGES]))
    assert got == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "The answer is forty-two."}],
            "finish_reason": "stop",
        }
    ]


def test_output_tool_calls_and_anthropic_blocks() -> None:
    from watcher.instrument.messages import anthropic_input, anthropic_output, openai_output, redacted_json

    response = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c9", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}],
                },
            }
        ]
    }
    [out] = openai_output(response) or []
    assert out["finish_reason"] == "tool_calls"
    assert out["parts"] == [{"type": "tool_call", "id": "c9", "name": "lookup", "arguments": '{"q": "x"}'}]
    request = {
        "system": "Be brief.",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"data": "AAAA"}}],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]},
        ],
    }
    messages = anthropic_input(request) or []
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[1]["parts"][1] == {"type": "image"}  # the kind, not the data
    assert messages[2]["parts"][0]["arguments"] == {"a": 1}
    assert '"arguments": "{\\"a\\": 1}"' in redacted_json(messages, lambda t: t)
    reply = {"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn"}
    assert anthropic_output(reply) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "ok"}], "finish_reason": "end_turn"}
    ]
