"""A retrieval-augmented answer, instrumented with ``watcher.instrument``: one trace per question.

The trace is a ``rag.query`` span with two children: ``retrieval`` (a toy keyword retriever over
three passages, its documents and relevance scores recorded by ``instrument.retrieval``) and
``chat gpt-4o-mini`` (the wrapped OpenAI call, streamed). The call's
``calls`` row carries the same trace_id; the online evaluator scores it in the background
(groundedness against the retrieved passages, refusal) and the user's thumbs-up is recorded as
feedback, all rows in SQLite.

The LLM metrics (``llm_requests_total``, ``llm_cost_usd_total``, the TTFT histogram …) are served
on ``http://127.0.0.1:8000/metrics`` (``--metrics-port``); in the OpenMetrics format, which
Prometheus asks for, each series carries the trace ID of a recent call as an exemplar. ``--serve``
keeps answering (every ``--interval`` seconds) and serving until Ctrl-C: point Prometheus at it.

Install the example's extra first (``pip install -e '.[examples]'``: the ``openai`` client). Run
it against the local stub (no network, no key): ``python examples/rag.py``; or against a real
OpenAI-compatible endpoint: ``OPENAI_BASE_URL=... OPENAI_API_KEY=... python examples/rag.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from watcher import instrument

PASSAGES = (
    "The answer to the ultimate question is forty-two, according to Deep Thought.",
    "Deep Thought computed the answer over seven and a half million years.",
    "The Eiffel Tower is in Paris and was finished in 1889.",
)


@dataclass(frozen=True)
class Answer:
    """What one question produced: the text, its trace and the passages it was grounded on."""

    text: str
    trace_id: str
    passages: tuple[str, ...]


def retrieve(question: str, k: int = 2) -> list[tuple[str, float]]:
    """Return the ``k`` passages sharing most words with ``question``, each with its share of the
    question's words (a stand-in for a vector store and its relevance scores)."""
    words = set(question.lower().split())
    scored = [(p, len(words & set(p.lower().split())) / max(len(words), 1)) for p in PASSAGES]
    return sorted(scored, key=lambda ps: -ps[1])[:k]


def answer(client: Any, question: str, *, tenant: str = "acme", model: str = "gpt-4o-mini") -> Answer:
    """Answer ``question`` from retrieved passages; the whole request is one trace."""
    with (
        instrument.span("rag.query", tenant=tenant) as root,
        instrument.attribution(tenant=tenant, feature="rag"),
    ):
        # The retrieval span carries the documents and their scores; its retrieval.* scores feed
        # the shipped pack's RetrievalRelevanceDrop and EmptyRetrievalsHigh rules.
        with instrument.retrieval("passages", k=2, query=question) as found:
            hits = retrieve(question)
            found.record((f"passage-{PASSAGES.index(p)}", score) for p, score in hits)
        passages = [p for p, _ in hits]
        context = "\n".join(passages)
        # `context` reaches the online evaluator's groundedness heuristic; tenant/feature the metrics.
        with instrument.attribution(context=passages):
            stream = client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": f"Answer from this context only:\n{context}"},
                    {"role": "user", "content": question},
                ],
                temperature=0.2,
                stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        trace_id = f"{root.get_span_context().trace_id:032x}"
    return Answer(text, trace_id, tuple(passages))


QUESTIONS = (
    "What is the answer to the ultimate question?",
    "How long did Deep Thought compute?",
    "Where is the Eiffel Tower?",
)
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def exemplar_lines(metrics_url: str, trace_id: str) -> list[str]:
    """Return the exposition lines whose exemplar is ``trace_id`` (asked for as OpenMetrics)."""
    request = urllib.request.Request(metrics_url, headers={"Accept": OPENMETRICS})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    return [line for line in body.splitlines() if f'trace_id="{trace_id}"' in line]


def main(argv: Sequence[str] | None = None) -> int:
    """Answer a question, print its span tree, rows and exemplars; with ``--serve``, keep going."""
    import openai
    import sqlalchemy as sa

    from watcher.bench.stub import StubServer
    from watcher.store.db import open_store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTIONS[0])
    parser.add_argument("--db", help="SQLite file (default: a temporary one)")
    parser.add_argument("--metrics-port", type=int, default=8000, help="serve /metrics here (0: a free port)")
    parser.add_argument("--metrics-addr", default="127.0.0.1", help="address to serve /metrics on")
    parser.add_argument("--serve", action="store_true", help="keep answering and serving until Ctrl-C")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between questions (--serve)")
    parser.add_argument("--count", type=int, default=0, help="with --serve: stop after this many (0: never)")
    args = parser.parse_args(argv)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    with contextlib.ExitStack() as stack:
        db = args.db or str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "rag.db")
        store = open_store(f"sqlite:///{db}")
        stack.callback(store.close)
        evaluator = instrument.OnlineEvaluator(sampler=instrument.Sampler(rate=1.0)).start()
        stack.callback(evaluator.close)
        instrument.configure(store, tracer_provider=provider, registry=registry, observer=evaluator)
        stack.callback(instrument.reset)
        server = instrument.start_metrics_server(args.metrics_port, addr=args.metrics_addr, registry=registry)
        stack.callback(server.server_close)  # runs after shutdown (last in, first out)
        stack.callback(server.shutdown)
        metrics_url = f"http://{args.metrics_addr}:{server.server_port}/metrics"
        print(f"metrics: {metrics_url}", flush=True)
        if os.environ.get("OPENAI_BASE_URL"):
            client = openai.OpenAI()
        else:
            stub = stack.enter_context(StubServer(first_chunk_delay_s=0.05))
            client = openai.OpenAI(base_url=stub.base_url, api_key="sk-stub", max_retries=0)
        instrument.instrument_openai(stack.enter_context(client))

        result = answer(client, args.question)
        instrument.record_feedback(result.trace_id, True, tenant="acme", feature="rag")
        instrument.flush(10)  # the call is finished (and offered to the evaluator) in the background
        evaluator.flush(10)
        print(f"answer: {result.text}\ntrace:  {result.trace_id}")
        spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
        for s in sorted(spans.values(), key=lambda s: s.start_time or 0):
            depth, parent = 0, s.parent
            while parent is not None and parent.span_id in spans:
                depth, parent = depth + 1, spans[parent.span_id].parent
            print(f"  {'  ' * depth}{s.name}")
        store_flushed = instrument.flush(10)
        with store.engine.connect() as conn:
            call = conn.execute(
                sa.text(
                    "select model, input_tokens, output_tokens, cost_usd, ttft_s from calls"
                    " where trace_id = :t"
                ),
                {"t": result.trace_id},
            ).one_or_none()
            scores = conn.execute(
                sa.text("select name, value, source from scores where trace_id = :t order by name"),
                {"t": result.trace_id},
            ).all()
        if call is not None:
            print(
                f"call:   {call.model} {call.input_tokens}+{call.output_tokens} tokens, "
                f"${call.cost_usd:.6f}, TTFT {call.ttft_s:.3f} s"
            )
        elif not store_flushed:
            print("call:   not yet written (the writer is behind)")
        for name, value, source in scores:
            print(f"score:  {name} = {value:.2f} ({source})")
        for line in exemplar_lines(metrics_url, result.trace_id)[:3]:
            print(f"exemplar: {line}")
        if not args.serve:
            return 0
        print(f"serving {metrics_url} (Ctrl-C stops)", flush=True)
        asked = 1
        try:
            while not args.count or asked < args.count:
                time.sleep(args.interval)
                result = answer(client, QUESTIONS[asked % len(QUESTIONS)])
                asked += 1
                print(f"answered {asked}: trace {result.trace_id}", flush=True)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
