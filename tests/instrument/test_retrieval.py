"""retrieval(): the conventions' retrieval span and the ``retrieval.*`` scores rules query."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from watcher import instrument
from watcher.instrument import StoreWriter, attribution, llm_call, retrieval
from watcher.instrument import attributes as attr
from watcher.instrument.hooks import stats
from watcher.instrument.retrieval import describe, document, signals
from watcher.store.tables import Score

pytestmark = pytest.mark.usefixtures("hooks")

ReadScores = Callable[[], list[Score]]


class SearchDown(Exception):
    """The application's vector store failed."""


@dataclass
class Hit:
    """A LangChain-like result: no ``id``, the id in its metadata, a score attribute."""

    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


def test_span_follows_the_retrieval_conventions_under_the_request(exporter: InMemorySpanExporter) -> None:
    with instrument.span("rag.query"), retrieval("faq-index", k=3, query="reset my password") as r:
        r.record([("doc-7", 0.91), {"id": "doc-2", "score": 0.75}, Hit(0.5, {"id": "doc-9"})])
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    span, parent = by_name["retrieval"], by_name["rag.query"]
    assert span.kind is SpanKind.INTERNAL
    assert span.parent is not None and span.parent.span_id == parent.context.span_id
    a = dict(span.attributes or {})
    assert a[attr.GEN_AI_OPERATION_NAME] == "retrieval"
    assert a[attr.GEN_AI_DATA_SOURCE_ID] == "faq-index"
    assert a[attr.GEN_AI_RETRIEVAL_TOP_K] == 3
    assert a[attr.WATCHER_RETRIEVAL_RETURNED] == 3
    assert json.loads(str(a[attr.GEN_AI_RETRIEVAL_DOCUMENTS])) == [
        {"id": "doc-7", "score": 0.91},
        {"id": "doc-2", "score": 0.75},
        {"id": "doc-9", "score": 0.5},
    ]
    assert attr.GEN_AI_RETRIEVAL_QUERY_TEXT not in a  # content capture is off


def test_signals_are_scores_of_the_trace_attributed_to_the_feature(
    exporter: InMemorySpanExporter, scores: ReadScores
) -> None:
    with attribution(tenant="acme", feature="support-rag"), retrieval("faq-index", k=2) as r:
        r.add("doc-1", 0.62)
        r.add("doc-3", 0.80)  # the best score counts, whatever the order
    with retrieval("faq-index", k=2, tenant="globex", feature="search"):
        pass  # nothing found
    trace_ids = [f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()]
    rows = scores()
    got = [(s.trace_id, s.name, s.value, s.label, s.source, s.evaluator, s.tenant, s.feature) for s in rows]
    assert got == [
        (trace_ids[0], "retrieval.top_score", 0.80, None, "retrieval", "faq-index", "acme", "support-rag"),
        (trace_ids[0], "retrieval.empty", 0.0, "found", "retrieval", "faq-index", "acme", "support-rag"),
        (trace_ids[1], "retrieval.empty", 1.0, "empty", "retrieval", "faq-index", "globex", "search"),
    ]
    assert rows[0].comment == "k=2 returned=2: doc-1 0.62, doc-3 0.8"
    assert rows[2].comment == "k=2 returned=0"


def test_a_failed_search_marks_the_span_and_records_no_signal(
    exporter: InMemorySpanExporter, scores: ReadScores
) -> None:
    with pytest.raises(SearchDown), retrieval("faq-index", k=5):
        raise SearchDown("connection refused")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})[attr.ERROR_TYPE] == "SearchDown"
    assert scores() == []
    assert stats().errors == 0


def test_query_is_captured_redacted_only_with_content_capture(
    writer: StoreWriter, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument.configure(writer=writer, tracer_provider=provider, capture_content=True)
    with retrieval("faq-index", query="my card is 4111 1111 1111 1111") as r:
        r.add("doc-1", 0.9)
    (span,) = exporter.get_finished_spans()
    text = str(dict(span.attributes or {})[attr.GEN_AI_RETRIEVAL_QUERY_TEXT])
    assert text.startswith("my card is ") and "4111" not in text


def test_documents_without_scores_give_only_the_empty_signal(scores: ReadScores) -> None:
    with retrieval("keyword") as r:
        r.record(["not-a-pair", ("doc-1", None), ("doc-2", "nan")])
    assert [(s.name, s.value) for s in scores()] == [("retrieval.empty", 0.0)]


def test_bad_input_is_counted_never_raised(scores: ReadScores) -> None:
    with retrieval("faq-index", k="five") as r:  # type: ignore[arg-type]
        r.add("doc-1", 0.4)
    assert stats().errors == 1
    assert [s.name for s in scores()] == ["retrieval.top_score", "retrieval.empty"]


def test_without_a_tracer_the_signals_join_the_enclosing_call(
    scores: ReadScores, writer: StoreWriter
) -> None:
    instrument.configure(writer=writer, tracer_provider=None, metrics=False)
    with llm_call(provider="openai", model="gpt-4o") as call, retrieval("faq-index") as r:
        r.add("doc-1", 0.3)
    assert {s.trace_id for s in scores()} == {call.trace_id}


@pytest.mark.parametrize(
    ("docs", "want"),
    [
        ([], [("retrieval.empty", 1.0, "empty")]),
        ([("a", None)], [("retrieval.empty", 0.0, "found")]),
        (
            [("a", 0.2), ("b", 0.9), ("c", None)],
            [("retrieval.top_score", 0.9, None), ("retrieval.empty", 0.0, "found")],
        ),
        ([("a", -3.5)], [("retrieval.top_score", -3.5, None), ("retrieval.empty", 0.0, "found")]),
    ],
)
def test_signals_table(
    docs: list[tuple[str, float | None]], want: list[tuple[str, float, str | None]]
) -> None:
    assert signals(docs) == want


def test_document_shapes_and_the_summary_is_bounded() -> None:
    assert document(("x", 1)) == ("x", 1.0)
    assert document({"id": 7, "score": "0.5"}) == ("7", 0.5)
    assert document(Hit(0.25)) == ("", 0.25)
    assert document(("x", True)) == ("x", None)
    long = describe([(f"doc-{i:04d}", 0.5) for i in range(200)], 200)
    assert len(long) == 500 and long.startswith("k=200 returned=200: doc-0000 0.5") and long.endswith("…")
