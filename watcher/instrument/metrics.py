"""The Prometheus metrics the hooks emit for the application, one set per registry.

This module owns the metric names, label names and histogram buckets (bucket boundaries from
the GenAI semantic-convention advice), how one finished ``CallRecord`` is counted, and the rule
that a registry gets its metrics once however often the hooks are configured. It does not decide
when to observe (``hooks``) nor serve the metrics (the application's own ``/metrics`` or
``prometheus_client.start_http_server``).
Exemplars are rendered only by the OpenMetrics exposition.
"""

from __future__ import annotations

import threading
import weakref
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from .record import CallRecord

TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)

CALL_LABELS: Final = ("provider", "model", "operation", "tenant", "feature")
SPEND_LABELS: Final = ("provider", "model", "tenant", "feature")

TOKEN_TYPES: Final = ("input", "output", "cache_read", "reasoning")


class LLMMetrics:
    """The application-side LLM metrics registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "llm_requests", "Model calls, by outcome (ok, error, refused).",
            (*CALL_LABELS, "outcome"), registry=registry,
        )
        self.tokens = Counter(
            "llm_tokens", "Tokens used, by type (input, output, cache_read, reasoning).",
            (*SPEND_LABELS, "type"), registry=registry,
        )
        self.cost = Counter(
            "llm_cost_usd", "Spend in USD (0 for models without a known price).",
            SPEND_LABELS, registry=registry,
        )
        self.refusals = Counter(
            "llm_refusals", "Calls the model refused or the provider filtered, by reason.",
            (*SPEND_LABELS, "reason"), registry=registry,
        )
        self.ttft = Histogram(
            "llm_time_to_first_token_seconds", "Time from request to the first content token.",
            CALL_LABELS, registry=registry, buckets=TTFT_BUCKETS,
        )
        self.duration = Histogram(
            "llm_request_duration_seconds", "Time from request to the end of the response.",
            CALL_LABELS, registry=registry, buckets=DURATION_BUCKETS,
        )

    def observe(self, rec: CallRecord, *, exemplar: bool) -> None:
        """Count and time one finished call; with ``exemplar`` every sample links to its trace."""
        ex = {"trace_id": rec.trace_id, "span_id": rec.span_id} if exemplar else None
        call = (rec.provider, rec.model, rec.operation, rec.tenant, rec.feature)
        spend = (rec.provider, rec.model, rec.tenant, rec.feature)
        self.requests.labels(*call, rec.outcome).inc(1, exemplar=ex)
        for kind, n in (("input", rec.input_tokens), ("output", rec.output_tokens),
                        ("cache_read", rec.cached_tokens), ("reasoning", rec.reasoning_tokens)):
            if n > 0:
                self.tokens.labels(*spend, kind).inc(n, exemplar=ex)
        cost = rec.cost_usd
        if cost > 0:
            self.cost.labels(*spend).inc(cost, exemplar=ex)
        if rec.outcome == "refused":
            reason = "content_filter" if rec.finish_reason == "content_filter" else "refusal"
            self.refusals.labels(*spend, reason).inc(1, exemplar=ex)
        if rec.ttft_s is not None and rec.ttft_s >= 0:
            self.ttft.labels(*call).observe(rec.ttft_s, exemplar=ex)
        if rec.duration_s is not None and rec.duration_s >= 0:
            self.duration.labels(*call).observe(rec.duration_s, exemplar=ex)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, LLMMetrics] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def metrics_for(registry: CollectorRegistry) -> LLMMetrics:
    """Return the metrics of ``registry``, registering them on first use only."""
    with _LOCK:
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _BY_REGISTRY[registry] = LLMMetrics(registry)
        return metrics
