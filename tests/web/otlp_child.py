"""Run a third-party OpenAI instrumentation in a child process (its patches are process-wide).

``python -m tests.web.otlp_child MODULE BASE_URL ENDPOINT TOKEN`` instruments the real ``openai``
client with ``MODULE``'s ``OpenAIInstrumentor``, exports over OTLP/HTTP to ``ENDPOINT``, makes the
three calls of ``test_otlp_instrumentations`` and prints the exported spans' IDs and names as JSON.
With ``ENDPOINT`` ``-`` it runs watcher's hooks beside the instrumentation instead (one client,
sync and async streams) and prints the chunk counts, the span names and the hooks' token counts.
Not a test module: the tests start it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile
import warnings
from typing import Any

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic.warnings import PydanticDeprecatedSince20

MESSAGES = [{"role": "user", "content": "What is the answer?"}]
STREAM: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


def three_calls(client: Any) -> None:
    """A plain call, a stream with usage, and a call the stub fails with HTTP 500."""
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **STREAM):
        pass
    try:
        client.chat.completions.create(model="gpt-4o-error", messages=MESSAGES)
    except openai.InternalServerError:
        return
    raise AssertionError("the stub's error model did not fail")


def beside_hooks(base_url: str, provider: TracerProvider) -> dict[str, Any]:
    """Run watcher's hooks and the instrumentation on one client; return what each saw."""
    from watcher import instrument
    from watcher.store.db import open_store

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/both.db")
        instrument.configure(store, tracer_provider=provider, metrics=False, otel_metrics=False)

        async def async_stream() -> int:
            async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as ac:
                instrument.instrument_openai(ac)
                stream = await ac.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **STREAM)
                return len([chunk async for chunk in stream])

        try:
            with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as c:
                instrument.instrument_openai(c)
                sync = len(list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **STREAM)))
            chunks = [sync, asyncio.run(async_stream())]
            instrument.flush()
            with store.engine.connect() as conn:
                tokens = [
                    list(r) for r in conn.exec_driver_sql("select input_tokens, output_tokens from calls")
                ]
        finally:
            instrument.reset()
            store.close()
    return {"chunks": chunks, "tokens": tokens}


def main(module_name: str, base_url: str, endpoint: str, token: str) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    if endpoint != "-":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=endpoint,
            headers={"Authorization": f"Bearer {token}"},
            compression=Compression.Gzip,
            timeout=10,
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = importlib.import_module(module_name).OpenAIInstrumentor()
    with warnings.catch_warnings():  # OpenLLMetry's wrappers declare a pydantic v1-style `class Config`
        warnings.simplefilter("ignore", PydanticDeprecatedSince20)
        instrumentor.instrument(tracer_provider=provider)
    result: dict[str, Any] = {}
    if endpoint == "-":
        result = beside_hooks(base_url, provider)
    else:
        with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as c:
            three_calls(c)
    provider.shutdown()
    spans = memory.get_finished_spans()
    result["ids"] = [[f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}"] for s in spans]
    result["names"] = sorted(s.name for s in spans)
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:5])
