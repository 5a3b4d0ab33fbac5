"""llm_call, record_score and record_feedback: spans, metrics with exemplars, rows, and never raising."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from sqlmodel import create_engine

from watcher import instrument
from watcher.instrument import StoreWriter, llm_call, record_feedback, record_score
from watcher.instrument import attributes as attr
from watcher.instrument.hooks import current_call, stats
from watcher.store.tables import Call, Score

pytestmark = pytest.mark.usefixtures("hooks")

ReadCalls = Callable[[], list[Call]]
ReadScores = Callable[[], list[Score]]


class AppError(Exception):
    """The application's own exception."""


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_span_carries_the_gen_ai_attributes(exporter: InMemorySpanExporter) -> None:
    with llm_call(
        provider="openai",
        model="gpt-4o",
        tenant="acme",
        feature="chat",
        temperature=0.2,
        max_tokens=256,
        top_p=0.9,
        stop=["\n\n"],
        tools=[{"x": 1}],
    ) as rec:
        rec.response_model = "gpt-4o-2024-08-06"
        rec.input_tokens, rec.output_tokens, rec.cached_tokens = 120, 30, 100
        rec.finish_reason = "stop"
        rec.response_id = "chatcmpl-1"
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    a = dict(span.attributes or {})
    assert a[attr.GEN_AI_OPERATION_NAME] == "chat"
    assert a[attr.GEN_AI_PROVIDER_NAME] == "openai"
    assert attr.GEN_AI_SYSTEM not in a
    assert a[attr.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.max_tokens"] == 256
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.stop_sequences"] == ("\n\n",)
    assert "gen_ai.request.tools" not in a  # not a primitive: left out
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 120
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
    assert a[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[attr.GEN_AI_RESPONSE_ID] == "chatcmpl-1"
    assert a[attr.WATCHER_TENANT] == "acme" and a[attr.WATCHER_OUTCOME] == "ok"


def test_row_has_the_span_ids_and_the_call(exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    with llm_call(
        provider="anthropic",
        model="claude-sonnet-4",
        operation="chat",
        tenant="acme",
        feature="support",
        user_id="u-7",
        prompt_version="v3",
    ) as rec:
        rec.input_tokens, rec.output_tokens, rec.reasoning_tokens = 1_000_000, 100_000, 10
        rec.ttft_s = 0.25
        rec.finish_reason = "end_turn"
    (span,) = exporter.get_finished_spans()
    (row,) = calls()
    assert row.trace_id == f"{span.context.trace_id:032x}" == rec.trace_id
    assert row.span_id == f"{span.context.span_id:016x}" == rec.span_id
    assert (row.provider, row.model) == ("anthropic", "claude-sonnet-4")
    assert (row.tenant, row.feature) == ("acme", "support")
    assert (row.user_id, row.prompt_version, row.reasoning_tokens) == ("u-7", "v3", 10)
    assert row.cost_usd == pytest.approx(3.0 + 1.5) and row.cost_known
    assert row.ttft_s == 0.25 and row.duration_s is not None and row.duration_s >= 0
    assert row.outcome == "ok" and row.error_type is None and row.finish_reason == "end_turn"
    assert row.ts.tzinfo is not None


def test_metrics_carry_the_trace_as_exemplar(registry: CollectorRegistry) -> None:
    with llm_call(provider="openai", model="gpt-4o", tenant="acme", feature="chat") as rec:
        rec.input_tokens, rec.output_tokens = 10, 5
        rec.first_token()
        rec.finish_reason = "stop"
    labels = {"provider": "openai", "model": "gpt-4o", "tenant": "acme", "feature": "chat"}
    assert sample(registry, "llm_requests_total", **labels, operation="chat", outcome="ok") == 1
    assert sample(registry, "llm_tokens_total", **labels, type="input") == 10
    assert sample(registry, "llm_tokens_total", **labels, type="output") == 5
    assert sample(registry, "llm_cost_usd_total", **labels) == pytest.approx((10 * 2.5 + 5 * 10) / 1e6)
    assert sample(registry, "llm_time_to_first_token_seconds_count", **labels, operation="chat") == 1
    assert sample(registry, "llm_request_duration_seconds_count", **labels, operation="chat") == 1
    text = generate_latest(registry).decode()
    exemplar = f'# {{span_id="{rec.span_id}",trace_id="{rec.trace_id}"}}'
    for metric in (
        "llm_requests_total",
        "llm_tokens_total",
        "llm_cost_usd_total",
        "llm_time_to_first_token_seconds_bucket",
        "llm_request_duration_seconds_bucket",
    ):
        lines = [ln for ln in text.splitlines() if ln.startswith(metric) and exemplar in ln]
        assert lines, f"no exemplar on {metric}"


def test_application_exception_is_reraised_unchanged(
    exporter: InMemorySpanExporter, calls: ReadCalls, registry: CollectorRegistry
) -> None:
    err = AppError("upstream said no")
    with pytest.raises(AppError) as caught, llm_call(provider="openai", model="gpt-4o") as rec:
        rec.input_tokens = 5
        raise err
    assert caught.value is err
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes[attr.ERROR_TYPE] == "AppError"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    (row,) = calls()
    assert (row.outcome, row.error_type, row.input_tokens) == ("error", "AppError", 5)
    assert (
        sample(
            registry,
            "llm_requests_total",
            provider="openai",
            model="gpt-4o",
            operation="chat",
            tenant="",
            feature="",
            outcome="error",
        )
        == 1
    )


@pytest.mark.parametrize(
    ("refused", "finish_reason", "reason"),
    [
        (True, "stop", "refusal"),
        (False, "content_filter", "content_filter"),
    ],
)
def test_refusals(
    refused: bool, finish_reason: str, reason: str, calls: ReadCalls, registry: CollectorRegistry
) -> None:
    with llm_call(provider="openai", model="gpt-4o", tenant="t", feature="f") as rec:
        rec.refused, rec.finish_reason = refused, finish_reason
    assert calls()[0].outcome == "refused"
    assert (
        sample(
            registry,
            "llm_refusals_total",
            provider="openai",
            model="gpt-4o",
            tenant="t",
            feature="f",
            reason=reason,
        )
        == 1
    )


def test_cost_set_by_the_caller_wins_and_unknown_models_cost_nothing(calls: ReadCalls) -> None:
    with llm_call(provider="openai", model="gpt-4o") as rec:
        rec.input_tokens = 1000
        rec.cost_usd = 0.5
    with llm_call(provider="local", model="my-llama") as rec2:
        rec2.input_tokens = 1000
    assert not rec2.cost_known and rec2.cost_usd == 0
    first, second = calls()
    assert (first.cost_usd, first.cost_known) == (0.5, True)
    assert (second.cost_usd, second.cost_known) == (0.0, False)


def test_simulated_clock_gives_ts_duration_and_ttft(
    writer: StoreWriter, calls: ReadCalls, provider: TracerProvider
) -> None:
    t0 = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    now = [t0]
    instrument.configure(writer=writer, tracer_provider=provider, clock=lambda: now[0], metrics=False)
    with llm_call(provider="openai", model="gpt-4o") as rec:
        now[0] = t0 + timedelta(seconds=1.5)
        rec.first_token()
        now[0] = t0 + timedelta(seconds=4)
    with llm_call(provider="openai", model="gpt-4o") as rec2:
        rec2.duration_s = 9.0
    first, second = calls()
    assert first.ts == t0 and first.ttft_s == pytest.approx(1.5) and first.duration_s == pytest.approx(4)
    assert second.ts == t0 + timedelta(seconds=4) and second.duration_s == 9.0


def test_without_a_tracer_the_row_still_has_a_trace(
    writer: StoreWriter, calls: ReadCalls, registry: CollectorRegistry
) -> None:
    instrument.configure(writer=writer, tracer_provider=trace.NoOpTracerProvider(), registry=registry)
    with (
        llm_call(provider="openai", model="gpt-4o") as a,
        llm_call(provider="openai", model="gpt-4o", operation="embeddings") as inner,
    ):
        pass
    with llm_call(provider="openai", model="gpt-4o") as b:
        pass
    for rec in (a, inner, b):
        assert len(rec.trace_id) == 32 and int(rec.trace_id, 16) != 0
        assert len(rec.span_id) == 16 and int(rec.span_id, 16) != 0
    assert inner.trace_id == a.trace_id != b.trace_id  # nested calls stay in one trace
    assert len({a.span_id, inner.span_id, b.span_id}) == 3
    assert {(r.trace_id, r.span_id) for r in calls()} == {(r.trace_id, r.span_id) for r in (a, inner, b)}
    # The rows exist, so the ids resolve: the metrics link to them.
    assert f'trace_id="{b.trace_id}"' in generate_latest(registry).decode()


def test_nested_calls_share_one_trace(exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
    with (
        provider.get_tracer("app").start_as_current_span("request") as parent,
        llm_call(provider="openai", model="gpt-4o", operation="embeddings") as rec,
    ):
        pass
    assert rec.trace_id == f"{parent.get_span_context().trace_id:032x}"
    child = next(s for s in exporter.get_finished_spans() if s.name == "embeddings gpt-4o")
    assert child.parent is not None and child.parent.span_id == parent.get_span_context().span_id


def test_decorator_usage(exporter: InMemorySpanExporter, calls: ReadCalls) -> None:
    @llm_call(provider="openai", model="gpt-4o-mini", feature="summarise")
    def summarise(text: str) -> str:
        rec = current_call()
        assert rec is not None
        rec.input_tokens, rec.output_tokens = len(text), 1
        return text[:1]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(summarise, ["abc", "de", "fghi", "j"] * 2)) == ["a", "d", "f", "j"] * 2
    spans = exporter.get_finished_spans()
    assert len(spans) == 8 and len({s.context.span_id for s in spans}) == 8
    assert sorted(r.input_tokens for r in calls()) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert current_call() is None


def test_bad_values_from_the_application_do_not_raise(calls: ReadCalls) -> None:
    with llm_call(provider="openai", model="gpt-4o") as rec:
        rec.input_tokens = "many"  # type: ignore[assignment]
        rec.ttft_s = "soon"  # type: ignore[assignment]
        rec.cost_usd = float("nan")
    (row,) = calls()
    assert (row.input_tokens, row.ttft_s, row.cost_usd) == (0, None, 0.0)


class BrokenWriter(StoreWriter):
    def submit(self, table: sa.Table, row: Any) -> bool:
        raise RuntimeError("disk on fire")


def test_hook_failures_are_counted_never_raised(engine: sa.Engine, provider: TracerProvider) -> None:
    broken = BrokenWriter(engine)
    try:
        instrument.configure(writer=broken, tracer_provider=provider, metrics=False)
        with llm_call(provider="openai", model="gpt-4o") as rec:
            rec.output_tokens = 1
        instrument.flush(timeout=5)  # the row is queued in the background, where the writer fails
        assert stats().errors == 1
    finally:
        broken.close()


def test_store_failure_does_not_reach_the_caller(tmp_path: Path, provider: TracerProvider) -> None:
    empty = create_engine(f"sqlite:///{tmp_path}/no-tables.db")
    w = StoreWriter(empty, flush_interval_s=0.01)
    try:
        instrument.configure(writer=w, tracer_provider=provider, metrics=False)
        with llm_call(provider="openai", model="gpt-4o"):
            pass
        assert record_score("f" * 32, "groundedness", 0.5)
        assert instrument.flush(timeout=5)
        s = stats()
        assert s.writer is not None and s.writer.errors >= 1 and s.writer.lost == 2
    finally:
        w.close()
        empty.dispose()


def test_configure_with_a_store_owns_its_writer(engine: sa.Engine, provider: TracerProvider) -> None:
    instrument.configure(engine, tracer_provider=provider, metrics=False)
    with llm_call(provider="openai", model="gpt-4o"):
        pass
    assert instrument.flush(timeout=5)
    owned = stats().writer
    assert owned is not None and owned.submitted == 1
    instrument.reset()  # closes the writer it made, which writes what is queued
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from calls")).scalar_one() == 1


def test_metrics_are_created_once_per_registry(writer: StoreWriter, registry: CollectorRegistry) -> None:
    instrument.configure(writer=writer, registry=registry)
    instrument.configure(writer=writer, registry=registry)  # no "Duplicated timeseries"
    with llm_call(provider="p", model="m"):
        pass
    assert (
        sample(
            registry,
            "llm_requests_total",
            provider="p",
            model="m",
            operation="chat",
            tenant="",
            feature="",
            outcome="ok",
        )
        == 1
    )


def test_record_score_and_feedback_rows(scores: ReadScores) -> None:
    ts = datetime(2026, 5, 1, tzinfo=UTC)
    assert record_score(
        "a" * 32,
        "groundedness",
        0.82,
        label="grounded",
        evaluator="judge-v1",
        tenant="acme",
        feature="rag",
        model="gpt-4o",
        comment="ok",
        ts=ts,
    )
    assert record_feedback("a" * 32, False, comment="wrong answer", tenant="acme", feature="rag")
    assert record_feedback("b" * 32, True)
    judge, down, up = scores()
    assert (judge.name, judge.value, judge.label, judge.source, judge.evaluator) == (
        "groundedness",
        0.82,
        "grounded",
        "judge",
        "judge-v1",
    )
    assert (judge.tenant, judge.feature, judge.model, judge.comment, judge.ts) == (
        "acme",
        "rag",
        "gpt-4o",
        "ok",
        ts,
    )
    assert (down.name, down.value, down.source, down.label, down.comment) == (
        "feedback",
        0.0,
        "feedback",
        "negative",
        "wrong answer",
    )
    assert (up.trace_id, up.value, up.label) == ("b" * 32, 1.0, "positive")


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        (lambda **kw: record_score("", "x", 1.0, **kw), {}),
        (lambda **kw: record_score("a" * 32, "", 1.0, **kw), {}),
        (lambda **kw: record_score("a" * 32, "x", float("inf"), **kw), {}),
        (lambda **kw: record_score("a" * 32, "x", "high", **kw), {}),  # type: ignore[arg-type]
        (lambda **kw: record_score("a" * 32, "x", 1.0, **kw), {"source": "oracle"}),
        (lambda **kw: record_feedback("a" * 32, "yes", **kw), {}),  # type: ignore[arg-type]
        (lambda **kw: record_feedback("a" * 32, True, **kw), {"colour": "blue"}),
    ],
)
def test_bad_score_input_is_counted_not_raised(
    call: Callable[..., bool], kwargs: dict[str, Any], scores: ReadScores
) -> None:
    assert call(**kwargs) is False
    assert stats().errors == 1
    assert scores() == []


@pytest.fixture
def _no_store(hooks: None, provider: TracerProvider) -> Iterator[None]:
    instrument.configure(tracer_provider=provider, metrics=False)
    yield


@pytest.mark.usefixtures("_no_store")
def test_without_a_store_nothing_is_written_and_nothing_fails(exporter: InMemorySpanExporter) -> None:
    with llm_call(provider="openai", model="gpt-4o"):
        pass
    assert record_score("a" * 32, "x", 1.0) is False
    assert len(exporter.get_finished_spans()) == 1 and stats().errors == 0
