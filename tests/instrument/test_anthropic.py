"""The Anthropic-style wrapper on a client shaped like the SDK's (sync and async, streaming or not)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace as NS
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher.instrument import attributes as attr
from watcher.instrument.wrap_anthropic import instrument_anthropic
from watcher.store.tables import Call

pytestmark = pytest.mark.usefixtures("hooks")
MODEL = "claude-sonnet-4"
USAGE = NS(input_tokens=100, output_tokens=1, cache_read_input_tokens=900, cache_creation_input_tokens=0)


def message(stop: str = "end_turn") -> NS:
    return NS(
        id="msg_1",
        type="message",
        model=f"{MODEL}-20250514",
        stop_reason=stop,
        content=[NS(type="text", text="Hello there.")],
        usage=NS(
            input_tokens=100, output_tokens=20, cache_read_input_tokens=900, cache_creation_input_tokens=0
        ),
    )


def events(stop: str = "end_turn") -> list[NS]:
    return [
        NS(type="message_start", message=NS(id="msg_1", model=f"{MODEL}-20250514", usage=USAGE)),
        NS(type="content_block_start", index=0, content_block=NS(type="text", text="")),
        NS(type="content_block_delta", index=0, delta=NS(type="text_delta", text="Hello")),
        NS(type="content_block_delta", index=0, delta=NS(type="text_delta", text=" there.")),
        NS(type="content_block_stop", index=0),
        NS(type="message_delta", delta=NS(stop_reason=stop), usage=NS(output_tokens=20)),
        NS(type="message_stop"),
    ]


class Messages:
    def __init__(self, stop: str) -> None:
        self.stop = stop

    def create(self, **kwargs: Any) -> Any:
        return iter(events(self.stop)) if kwargs.get("stream") else message(self.stop)


class AsyncMessages(Messages):
    async def create(self, **kwargs: Any) -> Any:  # type: ignore[override]
        if not kwargs.get("stream"):
            return message(self.stop)

        async def gen() -> AsyncIterator[NS]:
            for e in events(self.stop):
                yield e

        return gen()


def check(row: Call, stop: str = "end_turn") -> None:
    assert (row.input_tokens, row.cached_tokens, row.output_tokens) == (1000, 900, 20)
    assert row.cost_usd == pytest.approx((100 * 3.0 + 900 * 0.30 + 20 * 15.0) / 1e6)
    assert row.finish_reason == stop and row.provider == "anthropic" and not row.tokens_estimated


@pytest.mark.parametrize("stream", [False, True])
def test_sync(stream: bool, calls: Callable[[], list[Call]], exporter: InMemorySpanExporter) -> None:
    client = instrument_anthropic(NS(messages=Messages("end_turn")))
    result = client.messages.create(
        model=MODEL,
        max_tokens=256,
        temperature=0.5,
        stream=stream,
        messages=[{"role": "user", "content": "hi"}],
    )
    if stream:
        assert [e.type for e in result][-1] == "message_stop"
    (row,) = calls()
    check(row)
    if stream:
        assert row.ttft_s is not None
    (span,) = exporter.get_finished_spans()
    a = dict(span.attributes or {})
    assert a[attr.GEN_AI_PROVIDER_NAME] == "anthropic" and a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 256
    assert a[attr.GEN_AI_RESPONSE_ID] == "msg_1" and a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 900


@pytest.mark.parametrize("stream", [False, True])
def test_async_and_refusal(stream: bool, calls: Callable[[], list[Call]]) -> None:
    client = instrument_anthropic(NS(messages=AsyncMessages("refusal")))

    async def main() -> None:
        result = await client.messages.create(
            model=MODEL, max_tokens=16, stream=stream, messages=[{"role": "user", "content": "hi"}]
        )
        if stream:
            async for _ in result:
                pass

    asyncio.run(main())
    (row,) = calls()
    check(row, "refusal")
    assert row.outcome == "refused"


def test_sync_stream_iterator_protocol() -> None:
    client = instrument_anthropic(NS(messages=Messages("end_turn")))
    stream = client.messages.create(model=MODEL, max_tokens=1, stream=True, messages=[])
    it: Iterator[Any] = iter(stream)
    assert next(it).type == "message_start"
