"""The real ``anthropic`` client against the stub's Messages API: create, stream=True, the
``messages.stream(...)`` helper (sync and async), raw responses, refusals, and a broken hook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.instrument.conftest import FIRST_CHUNK_DELAY_S
from watcher.bench.stub import StubServer
from watcher.instrument import attributes as attr
from watcher.instrument import hooks
from watcher.instrument.metrics import LLMMetrics
from watcher.instrument.wrap_anthropic import instrument_anthropic, uninstrument_anthropic
from watcher.store.tables import Call

anthropic = pytest.importorskip("anthropic")

pytestmark = pytest.mark.usefixtures("hooks")
ReadCalls = Callable[[], list[Call]]
DELAY = FIRST_CHUNK_DELAY_S
MODEL = "claude-sonnet-4"
TEXT = "The answer is forty-two."
PARAMS: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 64,
    "stop_sequences": ["END"],  # this SDK has no sampling parameters left
    "messages": [{"role": "user", "content": "What is the answer?"}],
}
COST = (8 * 3.0 + 4 * 0.30 + 6 * 15.0) / 1e6  # 8 fresh input, 4 cache reads, 6 output


@pytest.fixture
def client(stub: StubServer) -> Iterator[Any]:
    with anthropic.Anthropic(base_url=stub.root_url, api_key="sk-ant-test", max_retries=0) as c:
        c.messages.create(**{**PARAMS, "model": "warm-up"})  # lazy set-up, not in any TTFT
        yield instrument_anthropic(c)


def check(span: ReadableSpan, row: Call, *, streamed: bool, observed_ttft: float | None = None) -> None:
    a = dict(span.attributes or {})
    assert span.name == f"chat {MODEL}"
    assert a[attr.GEN_AI_PROVIDER_NAME] == "anthropic" and a[attr.GEN_AI_REQUEST_MODEL] == MODEL
    assert a[attr.GEN_AI_RESPONSE_MODEL] == f"{MODEL}-20250514"
    assert a[attr.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END",) and a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 12 and a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 6
    assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 4
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert str(a[attr.GEN_AI_RESPONSE_ID]).startswith("msg_")
    assert row.trace_id == f"{span.context.trace_id:032x}"
    assert (row.input_tokens, row.cached_tokens, row.output_tokens) == (12, 4, 6)
    assert row.cost_usd == pytest.approx(COST) and row.cost_known and not row.tokens_estimated
    assert row.outcome == "ok" and row.finish_reason == "end_turn"
    if streamed:
        assert row.ttft_s is not None and row.ttft_s >= DELAY
        if observed_ttft is not None:
            # the hook stamps the chunk in the wrapper, just before the application gets it: never
            # later than the application saw it (scheduling can only add to the application's own time)
            assert row.ttft_s <= observed_ttft + 0.005, (row.ttft_s, observed_ttft)
        assert row.duration_s is not None and row.duration_s >= row.ttft_s
    else:
        assert row.ttft_s is None


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_create(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    assert client.messages.create(**PARAMS).content[0].text == TEXT
    check(only(exporter), calls()[0], streamed=False)


def test_create_streamed(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    start, first, parts = time.perf_counter(), None, []
    for event in client.messages.create(**PARAMS, stream=True):
        if event.type == "content_block_delta":
            first = first or time.perf_counter() - start
            parts.append(event.delta.text)
    assert "".join(parts) == TEXT
    check(only(exporter), calls()[0], streamed=True, observed_ttft=first)


def test_stream_helper_text_stream(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    manager = client.messages.stream(**PARAMS)
    assert exporter.get_finished_spans() == () and calls() == []  # no request before `with`
    start, first, parts = time.perf_counter(), None, []
    with manager as stream:
        for text in stream.text_stream:
            first = first or time.perf_counter() - start
            parts.append(text)
        assert stream.get_final_message().stop_reason == "end_turn"
    assert "".join(parts) == TEXT
    check(only(exporter), calls()[0], streamed=True, observed_ttft=first)


def test_stream_helper_final_message_only(
    client: Any, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    with client.messages.stream(**PARAMS) as stream:
        assert stream.get_final_message().content[0].text == TEXT
    check(only(exporter), calls()[0], streamed=True)


def test_stream_helper_left_early_ends_the_call_once(
    client: Any, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    with client.messages.stream(**PARAMS) as stream:
        next(iter(stream))  # message_start only
    (row,) = calls()
    assert len(exporter.get_finished_spans()) == 1
    assert row.outcome == "ok" and row.input_tokens == 12 and row.ttft_s is None


def test_async_stream_helper_and_create(
    stub: StubServer, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    async def main() -> float:
        async with anthropic.AsyncAnthropic(base_url=stub.root_url, api_key="k", max_retries=0) as c:
            await c.messages.create(**{**PARAMS, "model": "warm-up"})
            instrument_anthropic(c)
            assert (await c.messages.create(**PARAMS)).content[0].text == TEXT
            start, first, parts = time.perf_counter(), None, []
            async with c.messages.stream(**PARAMS) as stream:
                async for text in stream.text_stream:
                    first = first or time.perf_counter() - start
                    parts.append(text)
            assert "".join(parts) == TEXT and first is not None
            return first

    ttft = asyncio.run(main())
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    rows = calls()
    check(spans[0], rows[0], streamed=False)
    check(spans[1], rows[1], streamed=True, observed_ttft=ttft)


def test_raw_response(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    raw = client.messages.with_raw_response.create(**PARAMS)
    assert raw.http_response.status_code == 200 and raw.parse().content[0].text == TEXT
    check(only(exporter), calls()[0], streamed=False)


@pytest.mark.parametrize("helper", [False, True])
def test_refusal(client: Any, helper: bool, calls: ReadCalls) -> None:
    params = {**PARAMS, "model": "claude-refuse"}
    if helper:
        with client.messages.stream(**params) as stream:
            stream.until_done()
    else:
        client.messages.create(**params)
    (row,) = calls()
    assert row.outcome == "refused" and row.finish_reason == "refusal"


def test_uninstrument(client: Any, exporter: InMemorySpanExporter) -> None:
    uninstrument_anthropic(client)
    client.messages.create(**PARAMS)
    with client.messages.stream(**PARAMS) as stream:
        stream.until_done()
    client.messages.with_raw_response.create(**PARAMS).parse()
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("part", ["metrics", "tracer"])
def test_a_broken_hook_never_breaks_the_stream_helper(
    client: Any, part: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError(part)

    if part == "metrics":
        monkeypatch.setattr(LLMMetrics, "observe", boom)
    else:
        monkeypatch.setattr(hooks._state.tracer, "start_span", boom)
    before = hooks.stats().errors
    with client.messages.stream(**PARAMS) as stream:
        assert "".join(stream.text_stream) == TEXT
    assert client.messages.create(**PARAMS).content[0].text == TEXT
    hooks.flush(timeout=5)  # the rest of the call is finished in the background
    assert hooks.stats().errors > before
