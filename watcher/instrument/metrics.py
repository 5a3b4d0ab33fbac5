"""The Prometheus metrics the hooks emit for the application, one set per registry.

This module owns the metric names, label names and histogram buckets (bucket boundaries from
the GenAI semantic-convention advice), how one finished ``CallRecord`` and one score are
counted, the cardinality guard on label values, and the rule that a registry gets its metrics
once however often the hooks are configured. It does not decide when to observe (``hooks``)
nor serve the metrics (``exposition``). Exemplars are rendered only by the OpenMetrics
exposition.

Label names beyond provider/model/operation are configurable (default ``tenant``, ``feature``);
high-cardinality identities (user_id) are never labels. Each guarded label keeps at most
``label_limit`` distinct values: later new values become ``other`` and are counted in
``llm_label_overflow_total{label}``.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.samples import Exemplar
from prometheus_client.values import MutexValue

from .labels import DEFAULT_LABEL_LIMIT, DEFAULT_LABELS
from .otelmetrics import DURATION_BUCKETS  # the conventions' advised buckets, on both faces
from .record import CallRecord

TTFT_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
SCORE_BUCKETS: Final = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

OTHER: Final = "other"
_RESERVED: Final = frozenset(
    {"provider", "model", "operation", "outcome", "type", "reason", "name", "source"}
)

TOKEN_TYPES: Final = ("input", "output", "cache_read", "reasoning")


class LabelGuard:
    """Cap the distinct values of each guarded label; later new values collapse to ``other``."""

    def __init__(self, limit: int, overflow: Counter) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._overflow = overflow
        self._lock = threading.Lock()

    def value(self, label: str, value: str) -> str:
        """Return ``value`` if it is known or there is room for it, else ``other`` (counted)."""
        seen = self._seen.get(label)
        if seen is not None and value in seen:  # the hot path: no lock
            return value
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if value in seen:
                return value
            if len(seen) < self.limit:
                seen.add(value)
                return value
        self._overflow.labels(label).inc()
        return OTHER


class LLMMetrics:
    """The application-side LLM metrics registered in one registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        labels: Sequence[str] = DEFAULT_LABELS,
        label_limit: int = DEFAULT_LABEL_LIMIT,
    ) -> None:
        bad = sorted(set(labels) & _RESERVED)
        if bad or len(set(labels)) != len(labels) or not all(str(n).isidentifier() for n in labels):
            raise ValueError(f"bad metric label names {list(labels)!r} (reserved or duplicate: {bad})")
        self.labels = tuple(labels)
        call = ("provider", "model", "operation", *self.labels)
        spend = ("provider", "model", *self.labels)
        r = registry
        self.requests = Counter(
            "llm_requests", "Model calls, by outcome (ok, error, refused).", (*call, "outcome"), registry=r
        )
        self.tokens = Counter(
            "llm_tokens",
            "Tokens used, by type (input, output, cache_read, reasoning).",
            (*spend, "type"),
            registry=r,
        )
        self.cost = Counter(
            "llm_cost_usd", "Spend in USD (0 for models without a known price).", spend, registry=r
        )
        self.refusals = Counter(
            "llm_refusals",
            "Calls refused by the model or filtered, by reason.",
            (*spend, "reason"),
            registry=r,
        )
        self.ttft = Histogram(
            "llm_time_to_first_token_seconds",
            "Time from request to first content.",
            call,
            registry=r,
            buckets=TTFT_BUCKETS,
        )
        self.duration = Histogram(
            "llm_request_duration_seconds",
            "Time from request to end of response.",
            call,
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        self.eval_score = Histogram(
            "llm_eval_score",
            "Quality scores (judge, heuristic, human, feedback).",
            ("name", "source", *self.labels),
            registry=r,
            buckets=SCORE_BUCKETS,
        )
        self.cost_unknown = Counter(
            "llm_cost_unknown_model", "Calls whose model has no price (cost 0).", ("model",), registry=r
        )
        self.label_overflow = Counter(
            "llm_label_overflow", "Label values collapsed to 'other' by the guard.", ("label",), registry=r
        )
        self.guard = LabelGuard(label_limit, self.label_overflow)
        # Children by call series, then by (metric, label suffix). Bounded by the guard: at most
        # the series the registry holds anyway.
        self._children: dict[tuple[str, ...], dict[Any, tuple[Any, bool]]] = {}

    def _extra(self, rec_labels: Mapping[str, str]) -> tuple[str, ...]:
        g = self.guard.value
        return tuple(g(name, rec_labels.get(name, "")) for name in self.labels)

    def _child(self, metric: Any, values: tuple[str, ...]) -> tuple[Any, bool]:
        """Return the labelled child of ``metric`` and whether the fast path applies.

        ``labels()`` validates and locks on every call, and ``inc``/``observe`` re-validate the
        exemplar each time; for ours (two hex ids, 63 characters) both are known to pass, so a
        child whose values are plain in-process ``MutexValue`` objects is updated directly. Any
        other value class (multiprocess mode, a future prometheus_client) takes the public API.
        """
        child: Any = metric.labels(*values)
        if isinstance(metric, Histogram):
            fast = (
                type(getattr(child, "_sum", None)) is MutexValue
                and isinstance(getattr(child, "_buckets", None), list)
                and len(child._buckets) == len(getattr(child, "_upper_bounds", ()))
                and all(type(b) is MutexValue for b in child._buckets)
            )
        else:
            fast = type(getattr(child, "_value", None)) is MutexValue
        return child, fast

    def _entry(
        self, series: dict[Any, tuple[Any, bool]], call: tuple[str, ...], name: str, suffix: str
    ) -> tuple[Any, bool]:
        """Return the cached child of metric ``name`` for one call series and one label ``suffix``."""
        entry = series.get((name, suffix))
        if entry is None:
            spend = call[:2] + call[3:]  # no operation label on spend metrics
            metric, values = {
                "requests": (self.requests, (*call, suffix)),
                "tokens": (self.tokens, (*spend, suffix)),
                "cost": (self.cost, spend),
                "refusals": (self.refusals, (*spend, suffix)),
                "cost_unknown": (self.cost_unknown, (call[1],)),
                "ttft": (self.ttft, call),
                "duration": (self.duration, call),
            }[name]
            entry = series[(name, suffix)] = self._child(metric, values)
        return entry

    def _inc(self, entry: tuple[Any, bool], n: float, ex: dict[str, str] | None, now: float) -> None:
        child, fast = entry
        if fast:
            value = child._value
            value.inc(n)
            if ex is not None:
                value.set_exemplar(Exemplar(ex, n, now))
        else:
            child.inc(n, exemplar=ex)

    def _observe(self, entry: tuple[Any, bool], amount: float, ex: dict[str, str] | None, now: float) -> None:
        child, fast = entry
        if fast:  # the bucket Histogram.observe would pick: the first bound >= amount (+Inf last)
            child._sum.inc(amount)
            bucket = child._buckets[bisect_left(child._upper_bounds, amount)]
            bucket.inc(1)
            if ex is not None:
                bucket.set_exemplar(Exemplar(ex, amount, now))
        else:
            child.observe(amount, exemplar=ex)

    def observe(self, rec: CallRecord, *, exemplar: bool) -> None:
        """Count and time one finished call; with ``exemplar`` every sample links to its trace."""
        ex = {"trace_id": rec.trace_id, "span_id": rec.span_id} if exemplar else None
        now = time.time()
        g = self.guard.value
        model = g("model", rec.model)
        extra = tuple(
            g(
                name,
                rec.tenant
                if name == "tenant"
                else rec.feature
                if name == "feature"
                else str(rec.labels.get(name, "")),
            )
            for name in self.labels
        )
        call = (rec.provider, model, rec.operation, *extra)
        series = self._children.get(call)
        if series is None:
            series = self._children[call] = {}
        entry, inc = self._entry, self._inc
        inc(entry(series, call, "requests", rec.outcome), 1, ex, now)
        for kind, n in (
            ("input", rec.input_tokens),
            ("output", rec.output_tokens),
            ("cache_read", rec.cached_tokens),
            ("reasoning", rec.reasoning_tokens),
        ):
            if n > 0:
                inc(entry(series, call, "tokens", kind), n, ex, now)
        cost = rec.cost_usd
        if cost > 0:
            inc(entry(series, call, "cost", ""), cost, ex, now)
        elif not rec.cost_known:
            inc(entry(series, call, "cost_unknown", ""), 1, None, now)
        if rec.outcome == "refused":
            reason = "content_filter" if rec.finish_reason == "content_filter" else "refusal"
            inc(entry(series, call, "refusals", reason), 1, ex, now)
        if rec.ttft_s is not None and rec.ttft_s >= 0:
            self._observe(entry(series, call, "ttft", ""), rec.ttft_s, ex, now)
        if rec.duration_s is not None and rec.duration_s >= 0:
            self._observe(entry(series, call, "duration", ""), rec.duration_s, ex, now)

    def observe_score(
        self, name: str, source: str, value: float, labels: Mapping[str, str], trace_id: str | None = None
    ) -> None:
        """Observe one quality score; the exemplar links it to the trace it is about."""
        ex = {"trace_id": trace_id} if trace_id else None
        self.eval_score.labels(self.guard.value("name", name), source, *self._extra(labels)).observe(
            value, exemplar=ex
        )


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, LLMMetrics] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def metrics_for(
    registry: CollectorRegistry,
    labels: Sequence[str] = DEFAULT_LABELS,
    label_limit: int = DEFAULT_LABEL_LIMIT,
) -> LLMMetrics:
    """Return the metrics of ``registry``, registering them on first use only.

    Raises ValueError when the registry already has them with other label names.
    """
    with _LOCK:
        metrics = _BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _BY_REGISTRY[registry] = LLMMetrics(registry, labels, label_limit)
        elif metrics.labels != tuple(labels):
            raise ValueError(
                f"this registry already has the LLM metrics with labels {list(metrics.labels)}, "
                f"not {list(labels)}; use a fresh registry to change label names"
            )
        metrics.guard.limit = label_limit
        return metrics
