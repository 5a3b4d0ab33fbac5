"""Embeddings and legacy completions through the real ``openai`` client against the local stub."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from watcher.bench.stub import EMBEDDING_DIMENSIONS, StubServer
from watcher.instrument import attributes as attr
from watcher.instrument.wrap_openai import instrument_openai, uninstrument_openai
from watcher.store.tables import Call

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.usefixtures("hooks")
ReadCalls = Callable[[], list[Call]]
EMBED = "text-embedding-3-small"
LEGACY = "gpt-3.5-turbo-instruct"


@pytest.mark.parametrize("encoding", [None, "float"])
def test_embeddings_span_and_row(
    client: Any,
    exporter: InMemorySpanExporter,
    calls: ReadCalls,
    registry: CollectorRegistry,
    encoding: str | None,
) -> None:
    kwargs = {"encoding_format": encoding} if encoding else {}
    resp = client.embeddings.create(model=EMBED, input=["first text", "second text"], dimensions=8, **kwargs)
    assert [len(d.embedding) for d in resp.data] == [EMBEDDING_DIMENSIONS] * 2  # the SDK decoded it
    (span,) = exporter.get_finished_spans()
    a = dict(span.attributes or {})
    assert span.name == f"embeddings {EMBED}"
    assert a[attr.GEN_AI_OPERATION_NAME] == "embeddings"
    assert a[attr.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 8
    if encoding:
        assert a[attr.GEN_AI_REQUEST_ENCODING_FORMATS] == (encoding,)
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 24 and a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 0
    assert a[attr.GEN_AI_RESPONSE_MODEL] == EMBED + "-2025-01-01"
    assert attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in a
    (row,) = calls()
    assert (row.operation, row.model, row.input_tokens, row.output_tokens, row.outcome) == (
        "embeddings",
        EMBED,
        24,
        0,
        "ok",
    )
    assert row.cost_known and row.cost_usd > 0 and not row.tokens_estimated
    labels = {"provider": "openai", "model": EMBED, "operation": "embeddings", "tenant": "", "feature": ""}
    assert registry.get_sample_value("llm_requests_total", {**labels, "outcome": "ok"}) == 1


def test_legacy_completion_plain_and_streamed(
    client: Any, stub: StubServer, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    done = client.completions.create(model=LEGACY, prompt="Say the answer", max_tokens=16)
    assert done.choices[0].text == "The answer is forty-two."
    chunks = list(client.completions.create(model=LEGACY, prompt="Say the answer", stream=True))
    assert stub.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].text for c in chunks) == "The answer is forty-two."
    assert all(c.choices for c in chunks)  # the usage chunk the hooks asked for is not the app's
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    for span in spans:
        a = dict(span.attributes or {})
        assert span.name == f"text_completion {LEGACY}"
        assert a[attr.GEN_AI_OPERATION_NAME] == "text_completion"
        assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert dict(spans[0].attributes or {})[attr.GEN_AI_REQUEST_MAX_TOKENS] == 16
    assert attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in dict(spans[1].attributes or {})
    plain, streamed = calls()
    for row in (plain, streamed):
        assert (row.operation, row.input_tokens, row.output_tokens, row.tokens_estimated) == (
            "text_completion",
            12,
            6,
            False,
        )
    assert plain.ttft_s is None and streamed.ttft_s is not None and streamed.ttft_s > 0.1


def test_filtered_completion_is_refused_and_errors_pass_through(client: Any, calls: ReadCalls) -> None:
    client.completions.create(model="filter-me", prompt="x")
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="error-model", input="x")
    filtered, failed = calls()
    assert (filtered.operation, filtered.outcome, filtered.finish_reason) == (
        "text_completion",
        "refused",
        "content_filter",
    )
    assert (failed.operation, failed.outcome, failed.error_type) == (
        "embeddings",
        "error",
        "InternalServerError",
    )


def test_async_client_embeddings_and_completions(stub: StubServer, calls: ReadCalls) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
            instrument_openai(c)
            await c.embeddings.create(model=EMBED, input="one text")
            stream = await c.completions.create(model=LEGACY, prompt="x", stream=True)
            assert all([ch.choices async for ch in stream])
            uninstrument_openai(c)
            await c.embeddings.create(model=EMBED, input="not recorded")

    asyncio.run(main())
    assert [(r.operation, r.input_tokens, r.output_tokens) for r in calls()] == [
        ("embeddings", 12, 0),
        ("text_completion", 12, 6),
    ]
