"""``watcher bench hooks``: the latency the hooks add to a model call, against the OTel peer.

This module owns the benchmark: the real ``openai`` client answered by the stub's exact JSON,
chat calls (non-streamed, or streamed and read to the end with ``stream``) in interleaved rounds
of three arms, each on the same client. By default
the answer comes from an in-process transport (``httpx2.MockTransport``), so that microseconds are
not lost in loopback HTTP noise; ``--http`` sends every call over loopback to the stub server,
run in a process of its own.
The arms: ``baseline`` (no instrumentation), ``watcher`` (span + metrics with exemplars + cost +
a ``calls`` row through the writer into SQLite) and ``otel`` (``opentelemetry-instrumentation-
openai-v2``, spans only, when installed). It reports per-call latency percentiles and the added
p50/p99 per arm. It needs the ``openai`` package (a test/bench extra), imported only here.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from ..instrument import hooks

MESSAGES: Any = [{"role": "user", "content": "What is the answer?"}]


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _time_calls(fn: Callable[[], Any], n: int) -> tuple[list[float], list[float]]:
    """Call ``fn`` ``n`` times; return each call's wall time and the calling thread's CPU time."""
    wall, cpu = [], []
    perf, thread = time.perf_counter, time.thread_time
    for _ in range(n):
        c0 = thread()
        t0 = perf()
        fn()
        t1 = perf()
        cpu.append(thread() - c0)
        wall.append(t1 - t0)
    return wall, cpu


def _sse_events(model: str, usage: bool) -> bytes:
    """Return the stub's streamed chat answer as one SSE body (a usage chunk only when asked)."""
    from .stub import WORDS

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
        data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
        return "data: " + json.dumps({**data, "choices": choices, **extra}) + "\n\n"

    parts = [chunk({"role": "assistant", "content": ""})]
    parts += [chunk({"content": w}) for w in WORDS]
    parts.append(chunk({}, "stop"))
    if usage:
        parts.append(chunk({}, usage={"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}))
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def _mock_client(openai: Any, model: str) -> Any:
    """Return an OpenAI client whose transport answers in-process with the stub's JSON body."""

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
        asked = json.loads(request.content or b"{}")
        if asked.get("stream"):
            usage = bool((asked.get("stream_options") or {}).get("include_usage"))
            events = _sse_events(model, usage)
            return httpx2.Response(200, content=events, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return openai.OpenAI(
        base_url="http://stub.invalid/v1",
        api_key="sk-bench",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )


@contextlib.contextmanager
def _stub_process() -> Iterator[str]:
    """Run the stub server in a process of its own (as a model server is); yield its base URL.

    In this process its threads would compete for the GIL with the hooks' background thread
    while the caller waits for the socket, which a real deployment does not do.
    """
    proc = subprocess.Popen([sys.executable, "-m", "watcher.bench.stub"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        if not base_url.startswith("http://"):
            raise RuntimeError(f"the stub server did not start (exit code {proc.poll()})")
        yield base_url
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class _Arm:
    wall: list[float] = field(default_factory=list)  # every call, pooled over rounds
    round_wall_p50: list[float] = field(default_factory=list)
    round_cpu_p50: list[float] = field(default_factory=list)
    round_process_cpu: list[float] = field(default_factory=list)  # per call, all threads


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("openai", "opentelemetry-sdk", "opentelemetry-instrumentation-openai-v2"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def run_hooks_bench(
    calls: int = 3000,
    rounds: int = 10,
    model: str = "gpt-4o-mini",
    http: bool = False,
    stream: bool = False,
    caller_span: bool = False,
) -> dict[str, Any]:
    """Time ``calls`` wrapped calls per arm in ``rounds`` interleaved rounds; return µs statistics.

    ``stream`` makes every call a streamed one, read to its end (the watcher arm asks for the
    usage chunk and hides it: that extra chunk is part of its cost). ``caller_span`` adds the arm
    ``w-caller``: the watcher arm with its SDK span started on the caller's thread, as before
    deferred spans (the tracer's ``start_span`` replaced on the instance by itself, which the
    hooks respect), to compare the two in the same run.

    Per round and arm: the p50 of the calls' wall time, the p50 of the calling thread's CPU
    time, and the process CPU time per call (all threads, so the writer's inserts and the span
    processor's work are charged to the arm that caused them: the watcher arm's time includes
    closing its writer, which writes its rows). The arms' order rotates from round to round.
    Reported: the median over rounds, and the added cost as the median over rounds of the
    arm's value minus the baseline's in the same round (p99: pooled calls).
    """
    import openai

    from ..instrument.wrap_openai import instrument_openai, uninstrument_openai
    from ..store.db import open_store

    peer: Any = None
    with contextlib.suppress(ImportError):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        peer = OpenAIInstrumentor

    per_round = max(1, calls // rounds)
    arms = {"baseline": _Arm(), "watcher": _Arm()}
    if caller_span:
        arms["w-caller"] = _Arm()
    if peer is not None:
        arms["otel"] = _Arm()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    rows = 0
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        if http:
            base_url = stack.enter_context(_stub_process())
            client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        else:
            client = _mock_client(openai, model)
        stack.enter_context(client)
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")

        def call() -> Any:
            if stream:
                chunks = client.chat.completions.create(
                    model=model, messages=MESSAGES, temperature=0.2, stream=True
                )
                return sum(1 for _ in chunks)
            return client.chat.completions.create(model=model, messages=MESSAGES, temperature=0.2)

        def run_arm(name: str) -> None:
            nonlocal rows
            arm = arms[name]
            p0 = time.process_time()
            if name == "baseline":
                wall, cpu = _time_calls(call, per_round)
            elif name in ("watcher", "w-caller"):
                hooks.configure(store, tracer_provider=provider, registry=CollectorRegistry())
                if name == "w-caller":
                    tracer: Any = hooks._state.tracer
                    tracer.start_span = tracer.start_span  # on the instance: spans start on the caller
                instrument_openai(client)
                wall, cpu = _time_calls(call, per_round)
                uninstrument_openai(client)
                hooks.flush()  # the calls' background finishing is charged to this arm's process CPU
                stats = hooks.stats().writer
                hooks.reset()  # closes the writer: the rows are written
                if name == "w-caller":
                    del tracer.start_span
                rows += stats.submitted if stats else 0
            else:
                inst = peer()
                inst.instrument(tracer_provider=provider)
                wall, cpu = _time_calls(call, per_round)
                inst.uninstrument()
            provider.force_flush()
            arm.round_process_cpu.append((time.process_time() - p0) / per_round)
            arm.wall += wall
            arm.round_wall_p50.append(statistics.median(wall))
            arm.round_cpu_p50.append(statistics.median(cpu))

        for _ in range(50):  # warm-up: connections, lazy imports
            call()
        names = list(arms)
        try:
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    run_arm(name)
            with store.engine.connect() as conn:
                written = conn.exec_driver_sql("select count(*) from calls").scalar_one()
        finally:
            store.close()
            provider.shutdown()
    base = arms["baseline"]
    result: dict[str, Any] = {
        "calls_per_arm": len(base.wall),
        "rounds": rounds,
        "rows_written": written,
        "rows_submitted": rows,
        "transport": "loopback HTTP to the stub server process" if http else "in-process mock transport",
        "streamed": stream,
        "versions": _versions(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "arms": {},
    }
    med = statistics.median
    for name, arm in arms.items():
        result["arms"][name] = {
            "p50_us": med(arm.round_wall_p50) * 1e6,
            "p99_us": _pct(arm.wall, 0.99) * 1e6,
            "cpu_p50_us": med(arm.round_cpu_p50) * 1e6,
            "process_cpu_us": med(arm.round_process_cpu) * 1e6,
            "added_p50_us": med(a - b for a, b in zip(arm.round_wall_p50, base.round_wall_p50, strict=True))
            * 1e6,
            "added_p99_us": (_pct(arm.wall, 0.99) - _pct(base.wall, 0.99)) * 1e6,
            "added_cpu_p50_us": med(a - b for a, b in zip(arm.round_cpu_p50, base.round_cpu_p50, strict=True))
            * 1e6,
            "added_process_cpu_us": med(
                a - b for a, b in zip(arm.round_process_cpu, base.round_process_cpu, strict=True)
            )
            * 1e6,
        }
    return result
