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
from watcher.instrument import StoreWriter
from watcher.instrument import attributes as attr
from watcher.instrument.otelmetrics import DURATION_BUCKETS, TOKEN_BUCKETS
from watcher.instrument.pricing import price_of
from watcher.instrument.stub import StubServer
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
