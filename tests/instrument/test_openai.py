"""The real ``openai`` package against the local stub: spans, exemplars, rows, TTFT, refusals, errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from tests.instrument.conftest import FIRST_CHUNK_DELAY_S
from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.instrument import StoreWriter
from watcher.instrument import attributes as attr
from watcher.instrument.exposition import start_metrics_server
from watcher.instrument.wrap_openai import instrument_openai, uninstrument_openai
from watcher.store.tables import Call

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.usefixtures("hooks")
ReadCalls = Callable[[], list[Call]]
DELAY = FIRST_CHUNK_DELAY_S
MODEL = "gpt-4o-mini"
COST = (8 * 0.15 + 4 * 0.075 + 6 * 0.60) / 1e6  # 12 input of which 4 cached, 6 output
MESSAGES = [{"role": "user", "content": "What is the answer? Mail me at jane@example.com"}]


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def first_text_after(
    start: float, items: Iterator[Any], has_text: Callable[[Any], bool]
) -> tuple[float, list[Any]]:
    """Consume ``items``; return when the first content arrived (seconds after ``start``) and all items."""
    seen: list[Any] = []
    first = None
    for item in items:
        if first is None and has_text(item):
            first = time.perf_counter() - start
        seen.append(item)
    assert first is not None
    return first, seen


def check_span_and_row(
    span: ReadableSpan, row: Call, *, streamed: bool, observed_ttft: float | None = None
) -> None:
    a = dict(span.attributes or {})
    assert span.name == f"chat {MODEL}"
    assert a[attr.GEN_AI_OPERATION_NAME] == "chat"
    assert a[attr.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[attr.GEN_AI_REQUEST_MODEL] == MODEL
    assert a[attr.GEN_AI_RESPONSE_MODEL] == f"{MODEL}-2025-01-01"
    assert a[attr.GEN_AI_REQUEST_TEMPERATURE] == 0.3 and a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 12 and a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 6
    assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 4
    assert a[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert str(a[attr.GEN_AI_RESPONSE_ID]).startswith(("chatcmpl-", "resp_"))
    assert attr.GEN_AI_INPUT_MESSAGES not in a  # content capture is off by default
    assert row.trace_id == f"{span.context.trace_id:032x}" and row.span_id == f"{span.context.span_id:016x}"
    assert (row.input_tokens, row.output_tokens, row.cached_tokens, row.reasoning_tokens) == (12, 6, 4, 2)
    assert row.cost_usd == pytest.approx(COST) and row.cost_known and not row.tokens_estimated
    assert row.outcome == "ok" and row.finish_reason == "stop"
    if streamed:
        # The stub holds the first content chunk back by DELAY: TTFT is at least that (not when
        # create() returned), and no later than the application saw the first content (not when the
        # stream ended). On an idle machine it is DELAY + ~5 ms.
        assert row.ttft_s is not None and row.ttft_s >= DELAY
        if observed_ttft is not None:
            # the hook stamps the chunk in the wrapper, just before the application gets it: never
            # later than the application saw it (scheduling can only add to the application's own time)
            assert row.ttft_s <= observed_ttft + 0.005, (row.ttft_s, observed_ttft)
        assert row.duration_s is not None and row.duration_s >= row.ttft_s
    else:
        assert row.ttft_s is None


def test_chat_non_streaming(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.3, max_tokens=64)
    assert resp.choices[0].message.content == "The answer is forty-two."
    check_span_and_row(only_span(exporter), calls()[0], streamed=False)


def test_chat_streaming_ttft_usage_and_exemplars(
    client: Any, exporter: InMemorySpanExporter, calls: ReadCalls, registry: CollectorRegistry
) -> None:
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        temperature=0.3,
        max_tokens=64,
        stream=True,
        stream_options={"include_usage": True},
    )
    ttft, chunks = first_text_after(start, stream, lambda c: bool(c.choices and c.choices[0].delta.content))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is forty-two."
    span = only_span(exporter)
    (row,) = calls()
    check_span_and_row(span, row, streamed=True, observed_ttft=ttft)
    server = start_metrics_server(0, registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        body = httpx.get(url, headers={"Accept": "application/openmetrics-text"}).text
    finally:
        server.shutdown()
        server.server_close()
    ex = f'trace_id="{row.trace_id}"'
    for metric in (
        "llm_requests_total",
        "llm_tokens_total",
        "llm_cost_usd_total",
        "llm_time_to_first_token_seconds_bucket",
        "llm_request_duration_seconds_bucket",
    ):
        assert any(ln.startswith(metric) and ex in ln for ln in body.splitlines()), metric


def test_stream_usage_is_asked_for_and_its_chunk_kept_from_the_application(
    client: Any, stub: StubServer, calls: ReadCalls
) -> None:
    seen = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert stub.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as plain:
        expected = list(plain.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "stream_options" not in stub.requests[-1]["body"]
    # The application gets the chunks it asked for: none without choices, none with usage.
    assert [c.choices[0].delta.content for c in seen] == [c.choices[0].delta.content for c in expected]
    assert all(c.choices and c.usage is None for c in seen)
    (row,) = calls()
    assert (row.input_tokens, row.output_tokens, row.cached_tokens, row.tokens_estimated) == (12, 6, 4, False)


def test_stream_usage_the_caller_asked_for_reaches_it(client: Any, calls: ReadCalls) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert not calls()[0].tokens_estimated


def test_without_include_usage_the_request_is_left_alone_and_tokens_estimated(
    stub: StubServer, calls: ReadCalls
) -> None:
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
        instrument_openai(c, include_usage=False)
        for _ in c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            pass
    assert "stream_options" not in stub.requests[-1]["body"]
    (row,) = calls()
    assert row.tokens_estimated and row.output_tokens == 6 and row.input_tokens > 0  # 24 chars / 4


def test_raw_views_are_not_asked_for_usage(client: Any, stub: StubServer, calls: ReadCalls) -> None:
    """The raw views hand the HTTP body to the application: an added chunk could not be hidden."""
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as response:
        lines = [ln for ln in response.iter_lines() if ln.startswith("data: {")]
    assert "stream_options" not in stub.requests[-1]["body"]
    assert all('"usage"' not in ln for ln in lines)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, stream=True)
    assert "stream_options" not in stub.requests[-1]["body"]
    for _ in raw.parse():
        pass
    assert [r.tokens_estimated for r in calls()][-1] is True


def test_async_client_streaming_and_not(
    stub: StubServer, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    async def main() -> str:
        async with openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
            await c.chat.completions.create(model="warm-up", messages=MESSAGES)
            instrument_openai(c)
            await c.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.3, max_tokens=64)
            stream = await c.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                temperature=0.3,
                max_tokens=64,
                stream=True,
                stream_options={"include_usage": True},
            )
            return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])

    assert asyncio.run(main()) == "The answer is forty-two."
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    rows = calls()
    check_span_and_row(spans[0], rows[0], streamed=False)
    check_span_and_row(spans[1], rows[1], streamed=True)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api(client: Any, stream: bool, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    start = time.perf_counter()
    result = client.responses.create(
        model=MODEL, input="What is the answer?", temperature=0.3, max_output_tokens=64, stream=stream
    )
    ttft = None
    if stream:
        ttft, events = first_text_after(start, result, lambda e: e.type == "response.output_text.delta")
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    else:
        text = result.output_text
    assert text == "The answer is forty-two."
    check_span_and_row(only_span(exporter), calls()[0], streamed=stream, observed_ttft=ttft)


@pytest.mark.parametrize(
    ("model", "stream", "finish"),
    [
        ("gpt-4o-refuse", False, "stop"),
        ("gpt-4o-refuse", True, "stop"),
        ("gpt-4o-filter", False, "content_filter"),
        ("gpt-4o-filter", True, "content_filter"),
    ],
)
def test_refusals_from_provider_signals(
    client: Any, model: str, stream: bool, finish: str, calls: ReadCalls, registry: CollectorRegistry
) -> None:
    result = client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
    if stream:
        list(result)
    (row,) = calls()
    assert (row.outcome, row.finish_reason) == ("refused", finish)
    reason = "content_filter" if finish == "content_filter" else "refusal"
    assert (
        registry.get_sample_value(
            "llm_refusals_total",
            {"provider": "openai", "model": model, "tenant": "", "feature": "", "reason": reason},
        )
        == 1
    )


def test_responses_refusal_and_incomplete(client: Any, calls: ReadCalls) -> None:
    client.responses.create(model="gpt-4o-refuse", input="x")
    list(client.responses.create(model="gpt-4o-filter", input="x", stream=True))
    refused, filtered = calls()
    assert refused.outcome == "refused"
    assert (filtered.outcome, filtered.finish_reason) == ("refused", "content_filter")


def test_http_error_is_recorded_and_reraised(
    client: Any, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-error", messages=MESSAGES)
    span = only_span(exporter)
    assert span.attributes is not None and span.attributes[attr.ERROR_TYPE] == "InternalServerError"
    (row,) = calls()
    assert (row.outcome, row.error_type) == ("error", "InternalServerError")


def test_stream_closed_early_ends_the_call_once(
    client: Any, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    assert len(exporter.get_finished_spans()) == 1
    (row,) = calls()
    assert row.outcome == "ok" and row.ttft_s is not None


def test_wrapped_call_is_a_child_of_the_application_span(
    client: Any, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("rag.query") as parent:
        with tracer.start_as_current_span("retrieval"):
            pass
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with tracer.start_as_current_span("after-create") as sibling:  # the stream left the context
            pass
        list(stream)
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    chat = by_name[f"chat {MODEL}"]
    pid = parent.get_span_context().span_id
    assert chat.parent is not None and chat.parent.span_id == pid
    assert by_name["retrieval"].parent is not None and by_name["retrieval"].parent.span_id == pid
    assert sibling.parent is not None and sibling.parent.span_id == pid


def test_attribution_and_capture_with_redaction(
    stub: StubServer,
    writer: StoreWriter,
    engine: sa.Engine,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    registry: CollectorRegistry,
    calls: ReadCalls,
) -> None:
    instrument.configure(writer=writer, tracer_provider=provider, registry=registry, capture_content=True)
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
        instrument_openai(c)
        with instrument.attribution(tenant="acme", feature="support", user_id="u-1"):
            list(c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    (row,) = calls()
    assert (row.tenant, row.feature, row.user_id) == ("acme", "support", "u-1")
    with engine.connect() as conn:
        prompt, response = conn.execute(sa.text("select prompt, response from payloads")).one()
    assert "jane@example.com" not in prompt and "[EMAIL]" in prompt
    assert response == "The answer is forty-two."
    a = dict(only_span(exporter).attributes or {})
    assert "[EMAIL]" in str(a[attr.GEN_AI_INPUT_MESSAGES]) and "jane@" not in str(
        a[attr.GEN_AI_INPUT_MESSAGES]
    )


def test_payloads_are_not_written_by_default(client: Any, engine: sa.Engine, calls: ReadCalls) -> None:
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert len(calls()) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from payloads")).scalar_one() == 0


def test_instrumenting_twice_and_uninstrumenting(client: Any, exporter: InMemorySpanExporter) -> None:
    instrument_openai(client)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert len(exporter.get_finished_spans()) == 1  # not wrapped twice
    uninstrument_openai(client)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert len(exporter.get_finished_spans()) == 1


def test_unknown_model_costs_zero_and_is_counted(
    client: Any, calls: ReadCalls, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    client.chat.completions.create(model="my-local-llama", messages=MESSAGES)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    unknown, known = calls()
    assert (unknown.cost_usd, unknown.cost_known) == (0.0, False) and known.cost_known
    assert registry.get_sample_value("llm_cost_unknown_model_total", {"model": "my-local-llama"}) == 1
    flags = [dict(s.attributes or {}).get(attr.WATCHER_COST_KNOWN) for s in exporter.get_finished_spans()]
    assert flags == [False, None]  # the span flags an unpriced model only
