"""The RAG example (examples/rag.py) and ``span``: one trace, nested spans, row and scores on it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.instrument import attributes as attr
from watcher.instrument.writer import StoreWriter
from watcher.store.tables import Call, Score

openai = pytest.importorskip("openai")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rag.py"


@pytest.fixture(scope="module")
def rag() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rag_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def evaluator(
    writer: StoreWriter, provider: TracerProvider, registry: CollectorRegistry
) -> Iterator[instrument.OnlineEvaluator]:
    ev = instrument.OnlineEvaluator(sampler=instrument.Sampler(rate=1.0)).start()
    instrument.configure(writer=writer, tracer_provider=provider, registry=registry, observer=ev)
    yield ev
    ev.close()
    instrument.reset()


def test_one_trace_with_retrieval_and_chat_under_the_query(
    rag: ModuleType,
    evaluator: instrument.OnlineEvaluator,
    exporter: InMemorySpanExporter,
    calls: Callable[[], list[Call]],
    scores: Callable[[], list[Score]],
) -> None:
    with StubServer() as stub, openai.OpenAI(base_url=stub.base_url, api_key="k", max_retries=0) as client:
        instrument.instrument_openai(client)
        result = rag.answer(client, "What is the answer to the ultimate question?")
    assert result.text == "The answer is forty-two."
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    root, retrieval, chat = by_name["rag.query"], by_name["retrieval"], by_name["chat gpt-4o-mini"]
    assert root.parent is None and root.kind is SpanKind.INTERNAL
    for child in (retrieval, chat):
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
    assert dict(retrieval.attributes or {})[attr.GEN_AI_OPERATION_NAME] == "retrieval"
    (row,) = calls()
    assert row.trace_id == result.trace_id == f"{root.context.trace_id:032x}"
    assert (row.tenant, row.feature, row.input_tokens, row.output_tokens) == ("acme", "rag", 12, 6)
    assert evaluator.flush(10)
    got = {s.name: s for s in scores() if s.trace_id == result.trace_id}
    assert got["groundedness"].value == 1.0 and got["groundedness"].source == "heuristic"
    assert got["refusal"].value == 0.0


def test_span_marks_the_applications_error_and_reraises(
    evaluator: instrument.OnlineEvaluator, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(KeyError), instrument.span("execute_tool", operation="execute_tool", tool="lookup"):
        raise KeyError("missing")
    (span,) = exporter.get_finished_spans()
    a = dict(span.attributes or {})
    assert a[attr.ERROR_TYPE] == "KeyError" and a["tool"] == "lookup"
    assert span.status.status_code is StatusCode.ERROR


def test_span_survives_a_broken_tracer(
    evaluator: instrument.OnlineEvaluator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("tracer down")

    monkeypatch.setattr(instrument.hooks._state.tracer, "start_span", boom)
    before = instrument.hooks.stats().errors
    with instrument.span("retrieval") as s:
        assert not s.is_recording()
    assert instrument.hooks.stats().errors == before + 1


def test_example_main_prints_the_tree_row_and_scores(
    rag: ModuleType, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert rag.main([]) == 0
    out = capsys.readouterr().out
    assert "answer: The answer is forty-two." in out
    assert "  rag.query\n    retrieval\n    chat gpt-4o-mini\n" in out
    assert "score:  groundedness = 1.00 (heuristic)" in out and "score:  feedback = 1.00" in out
