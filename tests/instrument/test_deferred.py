"""Deferred spans: the call's span context on the caller, its SDK span started on the finisher's thread.

The span must be the one the SDK would have started on the caller (ids, parent, attributes,
events, times, status), the spans other instrumentations start inside the call must be its
children, and nothing that goes wrong may reach the application.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceState
from opentelemetry.util.types import Attributes

from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.instrument import StoreWriter, instrument_openai, llm_call, record_score
from watcher.instrument import hooks as hook_state
from watcher.instrument.deferred import PendingSpan
from watcher.store.tables import Call

from .conftest import FlushingExporter

ReadCalls = Any


class AppError(Exception):
    """The application's own exception."""


def by_name(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def configure(provider: TracerProvider, writer: StoreWriter, **kwargs: Any) -> None:
    instrument.configure(writer=writer, tracer_provider=provider, metrics=False, **kwargs)


@pytest.fixture(autouse=True)
def _reset(provider: TracerProvider, writer: StoreWriter) -> Iterator[None]:
    """Reset the hooks before the provider and the writer are shut down."""
    yield
    instrument.reset()


def test_the_sdk_tracer_gets_deferred_spans(provider: TracerProvider, writer: StoreWriter) -> None:
    configure(provider, writer)
    assert hook_state._state.deferred() is not None
    with llm_call(provider="openai", model="gpt-4o"):
        assert isinstance(trace.get_current_span(), PendingSpan)
    instrument.configure(writer=writer, tracer_provider=trace.NoOpTracerProvider(), metrics=False)
    assert hook_state._state.deferred() is None  # any other tracer starts its spans as before


def test_a_span_started_inside_the_call_is_its_child_and_both_are_exported(
    provider: TracerProvider, writer: StoreWriter, exporter: InMemorySpanExporter, calls: ReadCalls
) -> None:
    configure(provider, writer)
    app = provider.get_tracer("app")
    with (
        app.start_as_current_span("request") as request,
        llm_call(provider="openai", model="gpt-4o") as rec,
        app.start_as_current_span("tool lookup") as tool,
        llm_call(provider="openai", model="text-embedding-3-small", operation="embeddings") as inner,
    ):
        assert tool.is_recording()
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {
        "request",
        "chat gpt-4o",
        "tool lookup",
        "embeddings text-embedding-3-small",
    }
    chat, tool_span = by_name(spans, "chat gpt-4o"), by_name(spans, "tool lookup")
    embeddings = by_name(spans, "embeddings text-embedding-3-small")
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert chat.parent is not None and chat.parent.span_id == request.get_span_context().span_id
    assert tool_span.parent is not None and tool_span.parent.span_id == chat.context.span_id
    assert embeddings.parent is not None and embeddings.parent.span_id == tool_span.context.span_id
    assert (rec.trace_id, rec.span_id) == (f"{trace_id:032x}", f"{chat.context.span_id:016x}")
    assert inner.span_id == f"{embeddings.context.span_id:016x}"
    assert {(r.trace_id, r.span_id) for r in calls()} == {(a.trace_id, a.span_id) for a in (rec, inner)}


def test_an_http_span_made_inside_a_wrapped_call_is_its_child(
    stub: StubServer, provider: TracerProvider, writer: StoreWriter, exporter: InMemorySpanExporter
) -> None:
    """An HTTP client instrumentation (here the client's request hook) starts its span inside the call."""
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx2")  # the openai client's HTTP library
    configure(provider, writer)
    http_tracer = provider.get_tracer("http")

    def on_request(request: Any) -> None:
        http_tracer.start_span(f"{request.method} {request.url.path}", kind=SpanKind.CLIENT).end()

    with httpx.Client(event_hooks={"request": [on_request]}) as http:
        client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0, http_client=http)
        instrument_openai(client)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    spans = exporter.get_finished_spans()
    chats = [s for s in spans if s.name == "chat gpt-4o-mini"]
    posts = [s for s in spans if s.name.startswith("POST ")]
    assert len(chats) == 2 and len(posts) == 2
    for chat, post in zip(chats, sorted(posts, key=lambda s: s.start_time or 0), strict=True):
        assert post.parent is not None and post.parent.span_id == chat.context.span_id
        assert post.context.trace_id == chat.context.trace_id
        assert (
            chat.start_time is not None and post.start_time is not None and chat.start_time <= post.start_time
        )


def _call_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    exporter.clear()
    return span


def _failing_call(provider: TracerProvider) -> tuple[int, int]:
    """Make one call that fails, under an application span; return the call's time window."""
    with provider.get_tracer("app").start_as_current_span("request"):
        before = time.time_ns()
        with (
            pytest.raises(AppError),
            llm_call(provider="openai", model="gpt-4o", tenant="acme", temperature=0.3),
        ):
            raise AppError("bad gateway")
        after = time.time_ns()
    return before, after


def test_the_deferred_span_is_the_span_started_on_the_caller(
    provider: TracerProvider,
    writer: StoreWriter,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(provider, writer)
    before, after = _failing_call(provider)
    deferred = _call_span(exporter)
    tracer = hook_state._state.tracer
    # start_span replaced on the instance (by itself): the hooks take the ordinary path
    monkeypatch.setattr(tracer, "start_span", tracer.start_span)
    assert hook_state._state.deferred() is None
    _failing_call(provider)
    ordinary = _call_span(exporter)

    def content(s: ReadableSpan) -> tuple[Any, ...]:
        return (
            s.name,
            s.kind,
            dict(s.attributes or {}),
            [
                (e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
                for e in s.events
            ],
            (s.status.status_code, s.status.description),
            s.instrumentation_scope,
            s.resource,
            s.context.trace_flags,
            s.context.trace_state,
            s.context.is_remote,
            s.parent is not None and s.parent.is_valid,
            len(s.links),
        )

    assert content(deferred) == content(ordinary)
    assert deferred.status.status_code is StatusCode.ERROR
    assert deferred.start_time is not None and deferred.end_time is not None
    assert before <= deferred.start_time <= deferred.end_time <= after


def test_what_the_application_does_to_the_current_span_is_kept(
    provider: TracerProvider, writer: StoreWriter, exporter: InMemorySpanExporter
) -> None:
    configure(provider, writer, evaluation_events=True)
    other = trace.SpanContext(0xABC, 0xDEF, is_remote=True)
    with llm_call(provider="openai", model="gpt-4o") as rec:
        current = trace.get_current_span()
        assert current.is_recording()
        current.set_attribute("app.step", "answer")
        current.set_attributes({"app.tries": 2, "app.tags": ["a", "b"]})
        current.add_event("cache miss", {"key": "q1"})
        current.add_event("stamped", timestamp=1_700_000_000_000_000_000)
        current.add_link(other, {"why": "retry of"})
        try:
            raise AppError("handled inside")
        except AppError as exc:
            current.record_exception(exc, {"app.handled": True})
        assert record_score(rec.trace_id, "groundedness", 0.8, source="heuristic")
    assert instrument.flush(timeout=5)
    (span,) = exporter.get_finished_spans()
    a = dict(span.attributes or {})
    assert (a["app.step"], a["app.tries"], a["app.tags"]) == ("answer", 2, ("a", "b"))
    assert a["watcher.outcome"] == "ok"  # the call's own attributes come after the application's
    names = [e.name for e in span.events]
    assert names == ["cache miss", "stamped", "exception", "gen_ai.evaluation.result"]
    assert span.start_time is not None and span.end_time is not None
    assert all(span.start_time <= e.timestamp <= span.end_time for e in span.events if e.name != "stamped")
    assert span.events[1].timestamp == 1_700_000_000_000_000_000
    exc_attrs = dict(span.events[2].attributes or {})
    assert exc_attrs["exception.message"] == "handled inside" and exc_attrs["app.handled"] is True
    assert "test_what_the_application_does_to_the_current_span_is_kept" in str(
        exc_attrs["exception.stacktrace"]
    )
    assert (
        span.links
        and span.links[0].context == other
        and dict(span.links[0].attributes or {}) == {"why": "retry of"}
    )
    assert not current.is_recording()  # kept after the call: it is the ended SDK span now
    current.set_attribute("late", 1)  # after the end: ignored by the SDK, as it would have been
    assert "late" not in dict(exporter.get_finished_spans()[0].attributes or {})


def test_a_dropping_sampler_exports_nothing_and_the_row_keeps_its_trace(
    writer: StoreWriter, calls: ReadCalls
) -> None:
    exporter = FlushingExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure(provider, writer)
    with llm_call(provider="openai", model="gpt-4o") as rec:
        inner = provider.get_tracer("app").start_span("inside")
        assert not trace.get_current_span().is_recording() and not inner.is_recording()
        assert inner.get_span_context().trace_id == int(rec.trace_id, 16)
    assert exporter.get_finished_spans() == ()
    ((row_trace, row_span),) = [(r.trace_id, r.span_id) for r in calls()]
    assert (row_trace, row_span) == (rec.trace_id, rec.span_id) and int(row_span, 16) != 0
    provider.shutdown()


class Tagging(Sampler):
    """Sample every other trace (``Sequential`` draws even ids), add an attribute and a trace state."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (trace_id >> 64) % 4:
            return SamplingResult(Decision.DROP)
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE,
            {**(attributes or {}), "sampler.rule": "even"},
            TraceState([("w", "1")]),
        )

    def get_description(self) -> str:
        return "Tagging"


class Sequential(IdGenerator):
    """Ids counted up from a known start."""

    def __init__(self) -> None:
        self._ids = itertools.count(0x1000)

    def generate_span_id(self) -> int:
        return next(self._ids)

    def generate_trace_id(self) -> int:
        return next(self._ids) << 64


def test_the_providers_sampler_and_id_generator_decide(writer: StoreWriter, calls: ReadCalls) -> None:
    exporter = FlushingExporter()
    provider = TracerProvider(sampler=Tagging(), id_generator=Sequential())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure(provider, writer)
    recs = []
    for _ in range(20):
        with llm_call(provider="openai", model="gpt-4o") as rec:
            recs.append(rec)
    spans = exporter.get_finished_spans()
    kept = [r for r in recs if (int(r.trace_id, 16) >> 64) % 4 == 0]
    assert 0 < len(kept) < len(recs)
    assert [(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in spans] == [
        (r.trace_id, r.span_id) for r in kept
    ]
    for s in spans:
        assert dict(s.attributes or {})["sampler.rule"] == "even"
        assert s.context.trace_state == TraceState([("w", "1")]) and s.context.trace_flags.sampled
        assert s.context.span_id < 0x1100 and s.context.trace_id >> 64 < 0x1100  # the generator's ids
    assert len(calls()) == 20
    provider.shutdown()


def test_a_ratio_sampler_keeps_the_same_traces_as_it_would_on_the_caller(writer: StoreWriter) -> None:
    exporter = FlushingExporter()
    sampler = TraceIdRatioBased(0.5)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure(provider, writer)
    recs = []
    for _ in range(100):
        with llm_call(provider="openai", model="gpt-4o") as rec:
            recs.append(rec)
    kept = {
        r.span_id
        for r in recs
        if sampler.should_sample(None, int(r.trace_id, 16), "chat gpt-4o").decision.is_sampled()
    }
    assert {f"{s.context.span_id:016x}" for s in exporter.get_finished_spans()} == kept
    provider.shutdown()


class Raising(Sampler):
    def should_sample(self, *_: Any, **__: Any) -> SamplingResult:
        raise RuntimeError("sampler down")

    def get_description(self) -> str:
        return "Raising"


class RaisingOnStart(SpanProcessor):
    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        raise RuntimeError("processor down")


@pytest.mark.parametrize("part", ["sampler", "processor"])
def test_a_broken_sampler_or_processor_never_reaches_the_application(
    part: str, writer: StoreWriter, calls: ReadCalls
) -> None:
    provider = TracerProvider(sampler=Raising()) if part == "sampler" else TracerProvider()
    if part == "processor":
        provider.add_span_processor(RaisingOnStart())
    configure(provider, writer)
    before = hook_state.stats().errors
    with llm_call(provider="openai", model="gpt-4o") as rec:
        rec.output_tokens = 3
        current = trace.get_current_span()
        current.set_attribute("app.step", "answer")
    with pytest.raises(AppError), llm_call(provider="openai", model="gpt-4o"):
        raise AppError("the application's own")
    assert instrument.flush(timeout=5)
    assert hook_state.stats().errors == before + 2
    rows: list[Call] = calls()
    assert [r.outcome for r in rows] == ["ok", "error"] and rows[0].output_tokens == 3
    assert not current.is_recording()  # no span: what the application did to it went nowhere
    provider.shutdown()


GLOBAL_PROVIDER = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from watcher import instrument
from watcher.instrument.deferred import PendingSpan

instrument.configure(metrics=False)  # before the global provider is set: the hooks hold a proxy tracer
with instrument.llm_call(provider="openai", model="early"):
    early = type(trace.get_current_span()).__name__
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with instrument.llm_call(provider="openai", model="gpt-4o"):
    deferred = isinstance(trace.get_current_span(), PendingSpan)
    trace.get_tracer("app").start_span("inside").end()
instrument.flush()
spans = {s.name: s for s in exporter.get_finished_spans()}
chat, inside = spans["chat gpt-4o"], spans["inside"]
print(json.dumps({"early": early, "deferred": deferred, "names": sorted(spans),
                  "linked": inside.parent.span_id == chat.context.span_id}))
"""


def test_the_global_provider_set_after_configure_gets_deferred_spans() -> None:
    """The hooks' proxy tracer is looked through once the application sets its global provider."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "early": "NonRecordingSpan",  # no provider yet: a no-op span, as before
        "deferred": True,
        "names": ["chat gpt-4o", "inside"],
        "linked": True,
    }
