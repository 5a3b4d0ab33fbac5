"""The LLM metrics: the cardinality guard, and the fast path that matches prometheus_client's own."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from watcher import instrument
from watcher.instrument import llm_call
from watcher.instrument import metrics as metrics_module
from watcher.instrument.metrics import LLMMetrics
from watcher.instrument.record import CallRecord
from watcher.instrument.writer import StoreWriter
from watcher.store.tables import Call


def test_label_values_beyond_the_limit_collapse_to_other_and_are_counted(
    writer: StoreWriter, registry: CollectorRegistry, calls: Callable[[], list[Call]]
) -> None:
    instrument.configure(writer=writer, registry=registry, label_limit=2)
    try:
        for tenant in ("a", "b", "c", "d", "a", "d"):
            with llm_call(provider="openai", model="gpt-4o", tenant=tenant, feature="chat") as rec:
                rec.input_tokens = 1
    finally:
        instrument.reset()

    def requests(tenant: str) -> float | None:
        labels = {
            "provider": "openai",
            "model": "gpt-4o",
            "operation": "chat",
            "tenant": tenant,
            "feature": "chat",
            "outcome": "ok",
        }
        return registry.get_sample_value("llm_requests_total", labels)

    assert (requests("a"), requests("b"), requests("other")) == (2, 1, 3)
    assert requests("c") is None and requests("d") is None
    assert registry.get_sample_value("llm_label_overflow_total", {"label": "tenant"}) == 3
    assert registry.get_sample_value("llm_label_overflow_total", {"label": "feature"}) is None
    # The calls table keeps the real values: per-tenant attribution does not depend on labels.
    assert [r.tenant for r in calls()] == ["a", "b", "c", "d", "a", "d"]


def test_user_ids_never_become_labels(registry: CollectorRegistry) -> None:
    instrument.configure(registry=registry)
    try:
        with llm_call(provider="openai", model="gpt-4o", user_id="u-123456") as rec:
            rec.input_tokens = 1
    finally:
        instrument.reset()
    assert "u-123456" not in generate_latest(registry).decode()


def _records() -> list[CallRecord]:
    out = []
    # Durations on, just below and just above bucket bounds, past the last bound, and zero.
    for i, duration in enumerate((0.0, 0.01, 0.0100001, 0.64, 81.92, 100.0, 1e-9)):
        rec = CallRecord(
            provider="openai",
            model="gpt-4o",
            operation="chat",
            tenant=f"t{i % 2}",
            feature="f",
            user_id=None,
            prompt_version=None,
            trace_id=f"{i + 1:032x}",
            span_id=f"{i + 1:016x}",
            ts=instrument.hooks._utcnow(),
            timer=time.perf_counter,
        )
        rec.input_tokens, rec.output_tokens, rec.cached_tokens, rec.reasoning_tokens = 10 + i, 5, i % 3, i % 2
        rec.duration_s, rec.ttft_s = duration, duration / 2
        rec.finish_reason = "content_filter" if i == 3 else "stop"
        rec.stop()
        out.append(rec)
    return out


def _exposition(registry: CollectorRegistry) -> str:
    # Creation and exemplar timestamps differ between the two runs; all else must be identical.
    text = generate_latest(registry).decode()
    lines = [ln for ln in text.splitlines() if "_created{" not in ln]
    return "\n".join(re.sub(r"(# \{[^}]*\} \S+) \S+$", r"\1 T", ln) for ln in lines)


def test_fast_path_matches_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_registry, slow_registry = CollectorRegistry(), CollectorRegistry()
    fast = LLMMetrics(fast_registry)
    for rec in _records():
        fast.observe(rec, exemplar=True)
    assert all(is_fast for series in fast._children.values() for _, is_fast in series.values())
    monkeypatch.setattr(metrics_module, "MutexValue", type("NotTheValueClass", (), {}))
    slow = LLMMetrics(slow_registry)
    for rec in _records():
        slow.observe(rec, exemplar=True)
    assert not any(is_fast for series in slow._children.values() for _, is_fast in series.values())
    assert _exposition(fast_registry) == _exposition(slow_registry)
    lines = _exposition(fast_registry).splitlines()
    inf = [
        ln
        for ln in lines
        if ln.startswith("llm_request_duration_seconds_bucket") and 'le="+Inf"' in ln and 'tenant="t1"' in ln
    ]
    assert inf == [
        'llm_request_duration_seconds_bucket{feature="f",le="+Inf",model="gpt-4o",operation="chat",'
        'provider="openai",tenant="t1"} 3.0 # {span_id="0000000000000006",trace_id="'
        '00000000000000000000000000000006"} 100.0 T'
    ]
