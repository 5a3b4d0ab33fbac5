"""Spans of the real OpenAI instrumentations (official, OpenLLMetry, OpenInference) become the hooks' rows.

Each instrumentation drives the real ``openai`` client against the local stub and exports with the
real OTLP/HTTP exporter into a real daemon HTTP server; the ``calls`` rows are compared with the rows
watcher's own hooks write for the same three calls (plain, streamed, failed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.web.test_otlp import AUTH, TOKEN, make_daemon, rows
from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.store.db import Store, open_store
from watcher.web.app import ServerThread, build_app

openai = pytest.importorskip("openai")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
DELAY = 0.2
MESSAGES = [{"role": "user", "content": "What is the answer?"}]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(first_chunk_delay_s=DELAY) as server:
        yield server


@pytest.fixture
def daemon_store(tmp_path: Path) -> Iterator[tuple[Store, int]]:
    """A daemon HTTP server on loopback on the wall clock (the instrumentations stamp spans with it)."""
    store = open_store(f"sqlite:///{tmp_path}/daemon.db")
    server = ServerThread(build_app(make_daemon(store, clock=lambda: datetime.now(UTC))), port=0).start()
    yield store, server.port
    server.stop()
    store.close()


def three_calls(client: Any) -> None:
    """A plain call, a stream with usage, and a call the stub fails with HTTP 500."""
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    for _ in stream:
        pass
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-error", messages=MESSAGES)


@pytest.fixture(scope="module")
def hooks_rows(stub: StubServer, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Return the rows watcher's own hooks write for the three calls."""
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('hooks')}/hooks.db")
    provider = TracerProvider()
    try:
        instrument.configure(store, tracer_provider=provider, metrics=False)
        with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
            three_calls(instrument.instrument_openai(c))
        instrument.flush()
        return rows(store, "calls")
    finally:
        instrument.reset()
        provider.shutdown()
        store.close()


INSTRUMENTATIONS = {
    "official": "opentelemetry.instrumentation.openai_v2",
    "openllmetry": "opentelemetry.instrumentation.openai",
    "openinference": "openinference.instrumentation.openai",
}
# Which of the three calls' spans carry what beyond the common columns (the stub's usage: 12 input of
# which 4 cached, 6 output of which 2 reasoning): (plain, streamed); False: not recorded.
CARRIES = {
    "official": {"cached_tokens": (False, False), "reasoning_tokens": (False, False), "ttft": False},
    "openllmetry": {"cached_tokens": (True, True), "reasoning_tokens": (True, False), "ttft": True},
    "openinference": {"cached_tokens": (True, True), "reasoning_tokens": (True, True), "ttft": True},
}


def run_child(module: str, base_url: str, endpoint: str) -> dict[str, Any]:
    """Run ``tests.web.otlp_child`` (the instrumentation's patches stay in that process)."""
    pytest.importorskip(module)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "tests.web.otlp_child", module, base_url, endpoint, TOKEN],
        capture_output=True, text=True, env=env, cwd=root, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", list(INSTRUMENTATIONS))
def test_instrumentation_spans_become_the_hooks_rows(
    name: str, stub: StubServer, daemon_store: tuple[Store, int], hooks_rows: list[dict[str, Any]]
) -> None:
    store, port = daemon_store
    child = run_child(INSTRUMENTATIONS[name], stub.base_url, f"http://127.0.0.1:{port}/v1/traces")
    got = rows(store, "calls", order="ts")
    ids = {tuple(pair) for pair in child["ids"]}
    assert len(got) == len(hooks_rows) == 3
    carries = CARRIES[name]
    for i, (row, hooked) in enumerate(zip(got, hooks_rows, strict=True)):
        assert (row["trace_id"], row["span_id"]) in ids  # trace links point at the instrumentation's spans
        for column in ("provider", "model", "operation", "outcome"):
            assert row[column] == hooked[column], (name, column, row, hooked)
        if row["outcome"] == "error":
            assert row["input_tokens"] == 0 and "InternalServerError" in (row["error_type"] or "")
            continue
        assert (row["input_tokens"], row["output_tokens"]) == (
            hooked["input_tokens"],
            hooked["output_tokens"],
        )
        for column in ("cached_tokens", "reasoning_tokens"):
            assert row[column] == (hooked[column] if carries[column][i] else 0), (name, column, i)
        assert row["cost_known"] and row["cost_usd"] > 0
        assert row["duration_s"] is not None and row["duration_s"] > 0
    plain, streamed, _ = got
    assert plain["ttft_s"] is None
    if carries["ttft"]:
        # Their first-chunk events mark the first chunk of any kind (the conventions' time to first
        # chunk): the stub sends the role-only chunk at once and holds the first content back by DELAY,
        # which the hooks measure. Both are real; they differ by what counts as the first chunk.
        assert 0 < streamed["ttft_s"] < DELAY <= hooks_rows[1]["ttft_s"]
        assert streamed["ttft_s"] < streamed["duration_s"]
    else:
        assert streamed["ttft_s"] is None


def test_hooks_without_a_store_exporting_otlp_give_the_same_rows(
    stub: StubServer, daemon_store: tuple[Store, int], hooks_rows: list[dict[str, Any]]
) -> None:
    """The hooks-only install: no store in the application, its spans exported to the daemon."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    store, port = daemon_store
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", headers=AUTH, timeout=10)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        instrument.configure(tracer_provider=provider, metrics=False, otel_metrics=False)
        with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as c:
            three_calls(instrument.instrument_openai(c))
        instrument.flush()
    finally:
        instrument.reset()
        provider.shutdown()
    got = rows(store, "calls", order="ts")
    same = (
        "provider", "model", "operation", "outcome", "input_tokens", "output_tokens", "cached_tokens",
        "reasoning_tokens", "finish_reason", "tokens_estimated", "cost_known",
    )  # fmt: skip
    assert [{k: r[k] for k in same} for r in got] == [{k: r[k] for k in same} for r in hooks_rows]
    for row, hooked in zip(got, hooks_rows, strict=True):
        assert row["cost_usd"] == pytest.approx(hooked["cost_usd"])
        assert (row["ttft_s"] is None) == (hooked["ttft_s"] is None)
    assert got[1]["ttft_s"] >= DELAY  # the hooks' time to first content, carried by the span
    assert "InternalServerError" in (got[2]["error_type"] or "")


def test_hooks_beside_openllmetry_on_the_same_client(stub: StubServer) -> None:
    """Both instrumentations on one client: streams stay sync or async as the method was (a regression:
    OpenLLMetry's stream proxy has both ``__next__`` and ``__anext__``, and got the async proxy)."""
    child = run_child(INSTRUMENTATIONS["openllmetry"], stub.base_url, "-")
    assert child["chunks"][0] == child["chunks"][1] > 1
    assert child["tokens"] == [[12, 6], [12, 6]]
    assert child["names"] == ["chat gpt-4o-mini", "chat gpt-4o-mini", "openai.chat", "openai.chat"]
