"""The RAG example (examples/rag.py) and ``span``: one trace, nested spans, row and scores on it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
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
SERVE_ARGS = ("--metrics-port", "0", "--serve", "--count", "3", "--interval", "0")


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
    # 5 of the question's 7 words ("question?" keeps its mark) are in the best passage.
    assert got["retrieval.top_score"].value == pytest.approx(5 / 7)
    assert got["retrieval.top_score"].evaluator == "passages"
    assert (got["retrieval.empty"].value, got["retrieval.top_score"].feature) == (0.0, "rag")


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
    assert rag.main(["--metrics-port", "0"]) == 0
    out = capsys.readouterr().out
    assert "answer: The answer is forty-two." in out
    assert "  rag.query\n    retrieval\n    chat gpt-4o-mini\n" in out
    assert "score:  groundedness = 1.00 (heuristic)" in out and "score:  feedback = 1.00" in out
    # it serves its metrics, with the call's trace ID as the exemplar (OpenMetrics)
    trace_id = re.search(r"^trace:  ([0-9a-f]{32})$", out, re.M)
    assert trace_id is not None and re.search(r"^metrics: http://127\.0\.0\.1:\d+/metrics$", out, re.M)
    exemplars = [line for line in out.splitlines() if line.startswith("exemplar: ")]
    assert exemplars and all(f'trace_id="{trace_id.group(1)}"' in line for line in exemplars)
    assert any(line.startswith("exemplar: llm_requests_total{") for line in exemplars)


def test_example_runs_as_a_script_and_keeps_serving(tmp_path: Path) -> None:
    """``python examples/rag.py --serve``, as the README says, against the local stub model server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONPATH"] = str(EXAMPLE.parents[1])
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *SERVE_ARGS, "--db", str(tmp_path / "rag.db")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "answer: The answer is forty-two." in proc.stdout and "exemplar: " in proc.stdout
    assert "answered 3: trace " in proc.stdout
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'rag.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from calls")).scalar_one() == 3
    engine.dispose()
