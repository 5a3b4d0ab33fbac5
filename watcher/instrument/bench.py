"""``watcher bench hooks``: the latency the hooks add to a model call, against the OTel peer.

This module owns the benchmark: the real ``openai`` client answered by the stub's exact JSON,
non-streamed chat calls in interleaved rounds of three arms, each on the same client. By default
the answer comes from an in-process transport (``httpx2.MockTransport``), so that microseconds are
not lost in loopback HTTP noise; ``--http`` sends every call to the loopback stub server instead.
The arms: ``baseline`` (no instrumentation), ``watcher`` (span + metrics with exemplars + cost +
a ``calls`` row through the writer into SQLite) and ``otel`` (``opentelemetry-instrumentation-
openai-v2``, spans only, when installed). It reports per-call latency percentiles and the added
p50/p99 per arm. It needs the ``openai`` package (a test/bench extra), imported only here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from . import hooks
from .stub import StubServer

MESSAGES: Any = [{"role": "user", "content": "What is the answer?"}]


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _mock_client(openai: Any, model: str) -> Any:
    """Return an OpenAI client whose transport answers in-process with the stub's JSON body."""
    import json

    import httpx2

    body = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model + "-2025-01-01",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "The answer is forty-two."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 6,
                "total_tokens": 18,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        }
    ).encode()

    def answer(request: Any) -> Any:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return openai.OpenAI(
        base_url="http://stub.invalid/v1",
        api_key="sk-bench",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )


def run_hooks_bench(
    calls: int = 3000, rounds: int = 10, model: str = "gpt-4o-mini", http: bool = False
) -> dict[str, Any]:
    """Time ``calls`` wrapped calls per arm in ``rounds`` interleaved rounds; return µs statistics."""
    import contextlib

    import openai

    from ..store.db import open_store
    from .wrap_openai import instrument_openai, uninstrument_openai

    peer: Any = None
    with contextlib.suppress(ImportError):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as peer

    per_round = max(1, calls // rounds)
    samples: dict[str, list[float]] = {"baseline": [], "watcher": []}
    if peer is not None:
        samples["otel"] = []
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    rows = 0
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        if http:
            stub = stack.enter_context(StubServer())
            client = openai.OpenAI(base_url=stub.base_url, api_key="sk-bench", max_retries=0)
        else:
            client = _mock_client(openai, model)
        stack.enter_context(client)
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")

        def call() -> Any:
            return client.chat.completions.create(model=model, messages=MESSAGES, temperature=0.2)

        for _ in range(50):  # warm-up: connections, lazy imports
            call()
        try:
            for _ in range(rounds):
                samples["baseline"] += _time_calls(call, per_round)
                hooks.configure(store, tracer_provider=provider, registry=CollectorRegistry())
                instrument_openai(client)
                samples["watcher"] += _time_calls(call, per_round)
                uninstrument_openai(client)
                stats = hooks.stats().writer
                hooks.reset()  # closes the writer: the rows are written
                rows += stats.submitted if stats else 0
                if peer is not None:
                    inst = peer()
                    inst.instrument(tracer_provider=provider)
                    samples["otel"] += _time_calls(call, per_round)
                    inst.uninstrument()
            with store.engine.connect() as conn:
                written = conn.exec_driver_sql("select count(*) from calls").scalar_one()
        finally:
            store.close()
            provider.shutdown()
    base50, base99 = _pct(samples["baseline"], 0.5), _pct(samples["baseline"], 0.99)
    result: dict[str, Any] = {
        "calls_per_arm": len(samples["baseline"]),
        "rows_written": written,
        "transport": "loopback HTTP stub" if http else "in-process mock transport",
        "rows_submitted": rows,
        "arms": {},
    }
    for arm, values in samples.items():
        p50, p99 = _pct(values, 0.5), _pct(values, 0.99)
        result["arms"][arm] = {
            "p50_us": p50 * 1e6,
            "p99_us": p99 * 1e6,
            "mean_us": statistics.fmean(values) * 1e6,
            "added_p50_us": (p50 - base50) * 1e6,
            "added_p99_us": (p99 - base99) * 1e6,
        }
    return result


def _main(args: argparse.Namespace) -> int:
    result = run_hooks_bench(args.calls, args.rounds, http=args.http)
    print(
        f"hooks: {result['calls_per_arm']:,} non-streamed chat calls per arm, openai client, "
        f"{result['transport']}, interleaved rounds; calls rows written: {result['rows_written']:,}"
    )
    print(f"{'arm':10} {'p50 µs':>10} {'p99 µs':>10} {'added p50 µs':>14} {'added p99 µs':>14}")
    for arm, r in result["arms"].items():
        print(
            f"{arm:10} {r['p50_us']:10.0f} {r['p99_us']:10.0f} {r['added_p50_us']:14.0f} "
            f"{r['added_p99_us']:14.0f}"
        )
    if "otel" not in result["arms"]:
        print("(opentelemetry-instrumentation-openai-v2 not installed: no peer comparison)")
    return 0


def add_hooks_bench_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher bench hooks`` on the ``bench`` command's subparsers."""
    p: argparse.ArgumentParser = bench_subparsers.add_parser(
        "hooks", help="latency added per wrapped OpenAI call (p50/p99), vs the OTel instrumentation"
    )
    p.add_argument("--calls", type=int, default=3000, help="calls per arm")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    p.add_argument("--http", action="store_true", help="call the loopback stub server (noisier)")
    p.set_defaults(func=_main)
    return p
