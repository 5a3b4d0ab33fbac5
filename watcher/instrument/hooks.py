"""The generic hooks an application calls around its model calls, and the process-wide hook state.

This module owns ``configure``/``reset`` (writer, tracer, registry, clock, labels, capture and
redaction, refusal phrases, online evaluator) and ``llm_call`` (one span, the Prometheus
observations with trace exemplars, one ``calls`` row and, when capture is on, one redacted
``payloads`` row per call). A call can end later than its ``with`` block (``detach``/``finish``):
the vendor wrappers end a streamed call when the stream ends. Whatever goes wrong in here is
logged and counted, never raised into the application; the application's own exceptions pass
through unchanged. It does not own the vendor wrappers, ``record_score`` (``scores``), the
detectors of redaction (``redact``) or the evaluation worker (``evaluation``), nor the metric
definitions (``metrics``), prices (``pricing``) or the batching (``writer``). It imports nothing
from the engine, notify, rules, sources or detectors.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from opentelemetry import trace
from opentelemetry.trace import Tracer, TracerProvider

from .deferred import Deferred, for_tracer
from .finisher import FINISHER, FinisherStats, register_at_exit
from .labels import DEFAULT_LABEL_LIMIT, DEFAULT_LABELS
from .pricing import load_pricing, warm
from .record import CallRecord
from .redact import DEFAULT_REDACTOR, Redactor
from .refusal import RefusalClassifier
from .writer import StoreWriter, WriterStats

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client import CollectorRegistry

    from .metrics import LLMMetrics
    from .otelmetrics import GenAIMeters

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

TRACER_NAME: Final = "watcher.instrument"

# Table names, not tables: the writer resolves them, so the ORM is imported only with a store.
_CALLS: Final = "calls"
_SCORES: Final = "scores"
_PAYLOADS: Final = "payloads"
_LIMITS: Final[dict[str, dict[str, int]]] = {
    "calls": {
        "trace_id": 64,
        "span_id": 32,
        "provider": 64,
        "model": 128,
        "operation": 32,
        "tenant": 128,
        "feature": 128,
        "user_id": 128,
        "prompt_version": 64,
        "conversation_id": 128,
        "finish_reason": 32,
        "outcome": 16,
        "error_type": 128,
    },
    "scores": {
        "trace_id": 64,
        "name": 128,
        "label": 128,
        "source": 16,
        "evaluator": 128,
        "tenant": 128,
        "feature": 128,
        "model": 128,
        "eval_run": 128,
    },
    "payloads": {"trace_id": 64},
}
"""The string columns' lengths of ``store.tables`` (a test checks they agree)."""
MAX_PAYLOAD_CHARS: Final = 32_000
GLOBAL_REGISTRY: Final = "global"
"""The registry setting meaning prometheus_client's global ``REGISTRY``, imported on first use."""


class CallObserver(Protocol):
    """Something told about every finished call (the online evaluator); must not block."""

    def offer(self, rec: CallRecord) -> None:
        """Take note of one finished call."""


_ATTR_TYPES: Final = (str, bool, int, float)
_ids = random.Random()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _State:
    writer: StoreWriter | None = None
    owns_writer: bool = False
    tracer: Tracer = field(default_factory=lambda: trace.get_tracer(TRACER_NAME))
    registry: CollectorRegistry | str | None = GLOBAL_REGISTRY
    clock: Clock = _utcnow
    timer: Callable[[], float] = time.perf_counter
    capture_calls: bool = True
    emit_gen_ai_system: bool = False
    capture_content: bool = False
    redactor: Redactor | None = DEFAULT_REDACTOR
    refusal: RefusalClassifier | None = field(default_factory=RefusalClassifier)
    observer: CallObserver | None = None
    evaluation_events: bool = False
    labels: tuple[str, ...] = DEFAULT_LABELS
    label_limit: int = DEFAULT_LABEL_LIMIT
    _metrics: LLMMetrics | None = None
    otel_metrics: bool = True
    meter_provider: Any = None
    """None: OpenTelemetry's global meter provider (a no-op until the application sets one)."""
    _meters: GenAIMeters | None = None
    _deferred: Deferred | bool = True
    """Deferred spans for the tracer, or whether to look again (True) or not (False)."""

    def metrics(self) -> LLMMetrics | None:
        """Return the metrics of the configured registry (created on first use), or None if off."""
        if self._metrics is None and self.registry is not None:
            # prometheus_client loads here, with the first metric, not with `import watcher.instrument`
            from .metrics import metrics_for

            registry = self.registry
            if isinstance(registry, str):
                from prometheus_client import REGISTRY

                registry = REGISTRY
            self._metrics = metrics_for(registry, self.labels, self.label_limit)
        return self._metrics

    def meters(self) -> GenAIMeters | None:
        """Return the OpenTelemetry GenAI histograms (created on first use), or None if off."""
        if self._meters is None and self.otel_metrics:
            from .otelmetrics import GenAIMeters

            self._meters = GenAIMeters(self.meter_provider)
        return self._meters

    def deferred(self) -> Deferred | None:
        """Return the deferred spans of the tracer, or None: start spans on the caller's thread.

        None too while the tracer's ``start_span`` is replaced on the instance (respect it).
        """
        d = self._deferred
        if d is True:
            d = self._deferred = for_tracer(self.tracer, TRACER_NAME)
        if d is True or d is False or not d.ok:
            return None
        if "start_span" in _own_attributes(d.tracer) or "start_span" in _own_attributes(self.tracer):
            return None
        return d

    def scrub(self, text: str | None) -> str | None:
        """Return ``text`` cut to ``MAX_PAYLOAD_CHARS`` and redacted (unless redaction is off)."""
        if text is None:
            return None
        text = str(text)[:MAX_PAYLOAD_CHARS]
        return self.redactor.redact(text) if self.redactor is not None else text


def _own_attributes(obj: object) -> Any:
    """Return the instance's own attributes (none for an object with slots only)."""
    return getattr(obj, "__dict__", ())


@dataclass(frozen=True, slots=True)
class HookStats:
    """The hooks' own failure count, the finisher's and the writer's counters (None without a store)."""

    errors: int
    writer: WriterStats | None
    finisher: FinisherStats | None = None


_state = _State()
_errors = 0
_errors_lock = threading.Lock()
_current: ContextVar[CallRecord | None] = ContextVar("watcher_current_call", default=None)


def configure(
    store: Any = None,
    *,
    writer: StoreWriter | None = None,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
    capture_calls: bool = True,
    metrics: bool = True,
    emit_gen_ai_system: bool = False,
    capture_content: bool = False,
    redact: bool | Redactor = True,
    labels: Sequence[str] = DEFAULT_LABELS,
    label_limit: int = DEFAULT_LABEL_LIMIT,
    refusal_phrases: Sequence[str] | None = None,
    pricing: str | Path | None = None,
    observer: CallObserver | None = None,
    evaluation_events: bool = False,
    meter_provider: Any = None,
    otel_metrics: bool = True,
    warm_prices: bool = True,
) -> None:
    """Set the process-wide hook state; a previous configuration's own writer is closed.

    ``store`` (a ``Store`` or an ``Engine``) gets a writer of its own unless ``writer`` is given
    (then the caller closes it). Without ``tracer_provider`` the global one is used (even if it is
    set later). ``registry`` defaults to the global ``REGISTRY``; ``metrics=False`` emits none.
    ``clock`` returns UTC-aware "now" for row timestamps and durations (simulated time in the demo).
    ``capture_content`` (off by default) writes prompt and response to the ``payloads`` table and
    the span, redacted by ``redact`` (True: every built-in kind; a ``Redactor``; False: not at all).
    ``labels`` are the metric labels beyond provider/model/operation, each capped at
    ``label_limit`` values. ``refusal_phrases`` replaces the built-in refusal phrases (empty: off).
    ``pricing`` is a YAML file merged over the shipped prices. ``observer`` (the online
    evaluator) is offered every finished call. ``evaluation_events`` adds a
    ``gen_ai.evaluation.result`` span event per ``record_score`` on the current span.
    ``otel_metrics`` records the conventions' ``gen_ai.client.token.usage`` and
    ``gen_ai.client.operation.duration`` histograms on ``meter_provider`` (default: the global one).
    ``warm_prices`` loads the maintained price table on a background thread now, so that the first
    call is not the one that waits for it.
    """
    global _state
    if writer is None and store is not None:
        writer, owns = StoreWriter(store), True
    else:
        owns = False
    tracer = (tracer_provider or trace).get_tracer(TRACER_NAME)
    if pricing is not None:
        load_pricing(pricing)
    if warm_prices:
        warm()
    redactor = redact if isinstance(redact, Redactor) else (DEFAULT_REDACTOR if redact else None)
    new = _State(
        writer=writer,
        owns_writer=owns,
        tracer=tracer,
        registry=(registry or GLOBAL_REGISTRY) if metrics else None,
        clock=clock or _utcnow,
        timer=time.perf_counter if clock is None else (lambda: clock().timestamp()),
        capture_calls=capture_calls,
        otel_metrics=otel_metrics,
        meter_provider=meter_provider,
        emit_gen_ai_system=emit_gen_ai_system,
        capture_content=capture_content,
        redactor=redactor,
        refusal=RefusalClassifier(refusal_phrases),
        observer=observer,
        evaluation_events=evaluation_events,
        labels=tuple(labels),
        label_limit=label_limit,
    )
    new.metrics()  # register now, so a clash with existing metrics surfaces at configuration time
    FINISHER.flush()  # the calls in flight finish with the configuration they started under
    register_at_exit()  # after the new writer's: the last calls reach it before it closes
    old, _state = _state, new
    if old.owns_writer and old.writer is not None and old.writer is not writer:
        old.writer.close()


def reset() -> None:
    """Return to the unconfigured state (global tracer and registry, no store) and zero the counters."""
    global _state, _errors
    FINISHER.flush()
    old, _state = _state, _State()
    with _errors_lock:
        _errors = 0
    if old.owns_writer and old.writer is not None:
        old.writer.close()


def stats() -> HookStats:
    """Return the hooks' own failure count, the finisher's and the writer's counters."""
    writer = _state.writer
    return HookStats(
        errors=_errors, writer=None if writer is None else writer.stats(), finisher=FINISHER.stats()
    )


def flush(timeout: float | None = 10.0) -> bool:
    """Finish the calls made so far and write their rows; return False on timeout.

    A model call's span end, metrics, rows and evaluation happen on a background thread after
    the application has its response. Call this where the process may stop without exiting
    normally (a serverless handler's end) or before reading what the hooks produced (tests);
    a normal interpreter exit flushes by itself.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    if not FINISHER.flush(timeout):
        return False
    writer = _state.writer
    if writer is None:
        return True
    return writer.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))


def current_call() -> CallRecord | None:
    """Return the record of the innermost ``llm_call`` active in this context (decorator use)."""
    return _current.get()


def _note_error(what: str, exc: BaseException | None = None) -> None:
    """Count a failure of the hooks' own bookkeeping and log it (the first few, then every 1000th)."""
    global _errors
    with _errors_lock:
        _errors += 1
        n = _errors
    if n <= 5 or n % 1000 == 0:
        detail = "" if exc is None else f" ({type(exc).__name__}: {exc})"
        log.warning("watcher hooks: %s failed%s; %d hook failures so far", what, detail, n)


def _new_trace_id() -> str:
    return f"{_ids.getrandbits(128) or 1:032x}"


def _new_span_id() -> str:
    return f"{_ids.getrandbits(64) or 1:016x}"


def _clip(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Cut strings to their column lengths: one over-long value must not fail a whole batch."""
    for name, limit in _LIMITS[table].items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > limit:
            row[name] = value[:limit]
    return row
