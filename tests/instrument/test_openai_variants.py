"""The real ``openai`` client's other call shapes against the stub: ``stream()`` helpers, ``parse``,
``with_raw_response`` and ``with_streaming_response`` (sync and async), and hooks that break."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.instrument.test_openai import (
    DELAY,
    MESSAGES,
    MODEL,
    check_span_and_row,
    first_text_after,
    only_span,
)
from watcher.bench.stub import StubServer
from watcher.instrument import hooks
from watcher.instrument.metrics import LLMMetrics
from watcher.instrument.wrap_openai import instrument_openai, uninstrument_openai
from watcher.instrument.writer import StoreWriter
from watcher.store.tables import Call

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.usefixtures("hooks")
ReadCalls = Callable[[], list[Call]]
PARAMS: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "temperature": 0.3, "max_tokens": 64}
USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}
TEXT = "The answer is forty-two."


def has_text(chunk: Any) -> bool:
    return bool(chunk.choices and chunk.choices[0].delta.content)


def is_text_event(event: Any) -> bool:
    return getattr(event, "type", None) == "content.delta" and bool(event.delta)


def test_stream_helper_records_ttft_usage_and_span(
    client: Any, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    start = time.perf_counter()
    with client.chat.completions.stream(**PARAMS, **USAGE) as stream:
        ttft, events = first_text_after(start, iter(stream), is_text_event)
        final = stream.get_final_completion()
    assert "".join(e.delta for e in events if is_text_event(e)) == TEXT
    assert final.choices[0].message.content == TEXT
    check_span_and_row(only_span(exporter), calls()[0], streamed=True, observed_ttft=ttft)


def test_stream_helper_without_usage_gets_exact_tokens_and_no_usage(client: Any, calls: ReadCalls) -> None:
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == TEXT and final.usage is None  # as the caller asked
    (row,) = calls()
    assert not row.tokens_estimated and (row.input_tokens, row.output_tokens) == (12, 6)
    assert row.ttft_s is not None


def test_async_stream_helper(stub: StubServer, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    async def main() -> tuple[float, str]:
        async with openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
            await c.chat.completions.create(model="warm-up", messages=MESSAGES)
            instrument_openai(c)
            start = time.perf_counter()
            first, parts = None, []
            async with c.chat.completions.stream(**PARAMS, **USAGE) as stream:
                async for event in stream:
                    if is_text_event(event):
                        first = first or time.perf_counter() - start
                        parts.append(event.delta)
            assert first is not None
            return first, "".join(parts)

    ttft, text = asyncio.run(main())
    assert text == TEXT
    check_span_and_row(only_span(exporter), calls()[0], streamed=True, observed_ttft=ttft)


def test_parse_is_recorded(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    parsed = client.chat.completions.parse(**PARAMS)
    assert parsed.choices[0].message.content == TEXT
    check_span_and_row(only_span(exporter), calls()[0], streamed=False)


def test_with_raw_response(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    raw = client.chat.completions.with_raw_response.create(**PARAMS)
    assert raw.headers["content-type"].startswith("application/json")
    completion = raw.parse()
    assert completion.choices[0].message.content == TEXT
    assert raw.parse() is completion  # the SDK's cache: our reading did not parse it twice
    check_span_and_row(only_span(exporter), calls()[0], streamed=False)


def test_with_raw_response_streamed(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    start = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(**PARAMS, **USAGE, stream=True)
    assert raw.http_response.status_code == 200
    assert exporter.get_finished_spans() == ()  # the call runs until the stream ends
    ttft, _ = first_text_after(start, raw.parse(), has_text)
    check_span_and_row(only_span(exporter), calls()[0], streamed=True, observed_ttft=ttft)


def test_with_raw_response_streamed_parsed_at_once(client: Any, calls: ReadCalls) -> None:
    # The raw response object is dropped as soon as parse() returns: the stream still ends the call.
    stream = client.chat.completions.with_raw_response.create(**PARAMS, **USAGE, stream=True).parse()
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
    (row,) = calls()
    assert row.output_tokens == 6 and not row.tokens_estimated and row.ttft_s is not None


@pytest.mark.parametrize("stream", [False, True])
def test_with_streaming_response(
    client: Any, stream: bool, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    start = time.perf_counter()
    extra = {**USAGE, "stream": True} if stream else {}
    with client.chat.completions.with_streaming_response.create(**PARAMS, **extra) as response:
        assert response.http_response.status_code == 200 and not response.http_response.is_closed
        result = response.parse()
        if stream:
            ttft, _ = first_text_after(start, result, has_text)
        else:
            assert result.choices[0].message.content == TEXT
    observed = ttft if stream else None
    check_span_and_row(only_span(exporter), calls()[0], streamed=stream, observed_ttft=observed)


def test_with_streaming_response_read_raw_ends_at_close(client: Any, calls: ReadCalls) -> None:
    with client.chat.completions.with_streaming_response.create(**PARAMS, stream=True) as response:
        lines = [ln for ln in response.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    (row,) = calls()  # ended when the context manager closed the response, with what was known
    assert row.outcome == "ok" and row.duration_s is not None and row.duration_s >= DELAY


def test_async_raw_and_streaming_response(
    stub: StubServer, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
            await c.chat.completions.create(model="warm-up", messages=MESSAGES)
            instrument_openai(c)
            raw = await c.chat.completions.with_raw_response.create(**PARAMS)
            assert raw.parse().choices[0].message.content == TEXT
            raw_stream = await c.chat.completions.with_raw_response.create(**PARAMS, **USAGE, stream=True)
            assert [ch async for ch in raw_stream.parse()]
            async with c.chat.completions.with_streaming_response.create(**PARAMS) as response:
                assert (await response.parse()).choices[0].message.content == TEXT
            async with c.chat.completions.with_streaming_response.create(
                **PARAMS, **USAGE, stream=True
            ) as response:
                assert [ch async for ch in await response.parse()]

    asyncio.run(main())
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    rows = calls()
    assert len(spans) == len(rows) == 4
    for span, row, streamed in zip(spans, rows, (False, True, False, True), strict=True):
        check_span_and_row(span, row, streamed=streamed)


def test_responses_stream_helper(client: Any, exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    with client.responses.stream(
        model=MODEL, input="What is the answer?", temperature=0.3, max_output_tokens=64
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text == TEXT
    (row,) = calls()
    assert (row.input_tokens, row.output_tokens) == (12, 6) and row.ttft_s is not None
    assert only_span(exporter).attributes["gen_ai.response.id"] == final.id


def test_uninstrument_restores_the_variants(client: Any, exporter: InMemorySpanExporter) -> None:
    uninstrument_openai(client)
    client.chat.completions.with_raw_response.create(**PARAMS).parse()
    with client.chat.completions.with_streaming_response.create(**PARAMS) as response:
        response.parse()
    with client.chat.completions.stream(**PARAMS) as stream:
        stream.get_final_completion()
    client.chat.completions.parse(**PARAMS)
    assert exporter.get_finished_spans() == ()
    instrument_openai(client)
    client.chat.completions.with_raw_response.create(**PARAMS).parse()
    assert len(exporter.get_finished_spans()) == 1


class Boom(RuntimeError):
    """A hook failure."""


def _break(monkeypatch: pytest.MonkeyPatch, part: str) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise Boom(part)

    if part == "metrics":
        monkeypatch.setattr(LLMMetrics, "observe", boom)
    elif part == "writer":
        monkeypatch.setattr(StoreWriter, "submit", boom)
    elif part == "tracer":
        monkeypatch.setattr(hooks._state.tracer, "start_span", boom)
    elif part == "clock":
        monkeypatch.setattr(hooks._state, "clock", boom)


CALL_SHAPES: dict[str, Callable[[Any], str]] = {
    "create": lambda c: c.chat.completions.create(**PARAMS).choices[0].message.content,
    "create stream": lambda c: "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(**PARAMS, stream=True)
        if ch.choices
    ),
    "stream helper": lambda c: _helper_text(c),
    "raw": lambda c: c.chat.completions.with_raw_response.create(**PARAMS).parse().choices[0].message.content,
}


def _helper_text(c: Any) -> str:
    with c.chat.completions.stream(**PARAMS) as stream:
        return str(stream.get_final_completion().choices[0].message.content)


@pytest.mark.parametrize("part", ["metrics", "writer", "tracer", "clock"])
@pytest.mark.parametrize("shape", sorted(CALL_SHAPES))
def test_a_broken_hook_never_breaks_the_call(
    client: Any, part: str, shape: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _break(monkeypatch, part)
    before = hooks.stats().errors
    assert CALL_SHAPES[shape](client) == TEXT  # the application's call returns as if unwrapped
    hooks.flush(timeout=5)  # the rest of the call is finished in the background
    assert hooks.stats().errors > before  # the failure was counted (and logged), not raised
