"""The generic hooks an application calls around its model calls, and the process-wide hook state.

This module owns ``configure``/``reset`` (writer, tracer, registry, clock), ``llm_call`` (one span,
the Prometheus observations with trace exemplars and one ``calls`` row per call) and
``record_score``/``record_feedback`` (``scores`` rows). Whatever goes wrong in here is logged and
counted, never raised into the application; the application's own exceptions pass through
unchanged. It does not own the vendor wrappers, redaction or online evaluation (later modules that
build on ``llm_call``), nor the metric definitions (``metrics``), prices (``pricing``) or the
batching (``writer``). It imports nothing from the engine, notify, rules, sources or detectors.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from contextlib import ContextDecorator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal, cast

import sqlalchemy as sa
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from ..store.tables import Call, Score
from . import attributes as attr
from .metrics import LLMMetrics, metrics_for
from .record import CallRecord
from .writer import StoreWriter, WriterStats

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

TRACER_NAME: Final = "watcher.instrument"
SCORE_SOURCES: Final = frozenset({"judge", "heuristic", "human", "feedback"})

_CALLS = cast(sa.Table, Call.__table__)  # type: ignore[attr-defined]
_SCORES = cast(sa.Table, Score.__table__)  # type: ignore[attr-defined]
_LIMITS: Final[dict[str, dict[str, int]]] = {
    t.name: {c.name: getattr(c.type, "length", 0) for c in t.columns if getattr(c.type, "length", None)}
    for t in (_CALLS, _SCORES)
}
_ATTR_TYPES: Final = (str, bool, int, float)
_ids = random.Random()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _State:
    writer: StoreWriter | None = None
    owns_writer: bool = False
    tracer: Tracer = field(default_factory=lambda: trace.get_tracer(TRACER_NAME))
    registry: CollectorRegistry | None = REGISTRY
    clock: Clock = _utcnow
    timer: Callable[[], float] = time.perf_counter
    capture_calls: bool = True
    emit_gen_ai_system: bool = False
    _metrics: LLMMetrics | None = None

    def metrics(self) -> LLMMetrics | None:
        """Return the metrics of the configured registry (created on first use), or None if off."""
        if self._metrics is None and self.registry is not None:
            self._metrics = metrics_for(self.registry)
        return self._metrics


@dataclass(frozen=True, slots=True)
class HookStats:
    """The hooks' own failure count and the writer's counters (None without a store)."""

    errors: int
    writer: WriterStats | None


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
) -> None:
    """Set the process-wide hook state; a previous configuration's own writer is closed.

    ``store`` (a ``Store`` or an ``Engine``) gets a writer of its own unless ``writer`` is given
    (then the caller closes it). Without ``tracer_provider`` the global one is used (even if it is
    set later). ``registry`` defaults to the global ``REGISTRY``; ``metrics=False`` emits none.
    ``clock`` returns UTC-aware "now" for row timestamps and durations (simulated time in the demo).
    """
    global _state
    if writer is None and store is not None:
        writer, owns = StoreWriter(store), True
    else:
        owns = False
    tracer = (tracer_provider or trace).get_tracer(TRACER_NAME)
    new = _State(
        writer=writer,
        owns_writer=owns,
        tracer=tracer,
        registry=(registry or REGISTRY) if metrics else None,
        clock=clock or _utcnow,
        timer=time.perf_counter if clock is None else (lambda: clock().timestamp()),
        capture_calls=capture_calls,
        emit_gen_ai_system=emit_gen_ai_system,
    )
    new.metrics()  # register now, so a clash with existing metrics surfaces at configuration time
    old, _state = _state, new
    if old.owns_writer and old.writer is not None and old.writer is not writer:
        old.writer.close()


def reset() -> None:
    """Return to the unconfigured state (global tracer and registry, no store) and zero the counters."""
    global _state, _errors
    old, _state = _state, _State()
    with _errors_lock:
        _errors = 0
    if old.owns_writer and old.writer is not None:
        old.writer.close()


def stats() -> HookStats:
    """Return the hooks' own failure count and the writer's counters."""
    writer = _state.writer
    return HookStats(errors=_errors, writer=None if writer is None else writer.stats())


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


class _LLMCall(ContextDecorator):
    """The context manager behind ``llm_call``; a fresh copy runs for each decorated call."""

    def __init__(self, call: dict[str, Any], params: dict[str, Any]) -> None:
        self._call = call
        self._params = params
        self._state: _State | None = None
        self._rec: CallRecord | None = None
        self._span: trace.Span | None = None
        self._otel_token: object | None = None
        self._token: Token[CallRecord | None] | None = None
        self._sampled = False

    def _recreate_cm(self) -> _LLMCall:
        return _LLMCall(self._call, self._params)

    def __enter__(self) -> CallRecord:
        state = self._state = _state
        try:
            rec = self._start(state)
        except Exception as exc:
            _note_error("llm_call start", exc)
            rec = CallRecord(**self._call, trace_id=_new_trace_id(), span_id=_new_span_id(),
                             ts=_utcnow(), timer=time.perf_counter)
        self._rec = rec
        self._token = _current.set(rec)
        return rec

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        try:
            self._finish(exc)
        except Exception as err:
            _note_error("llm_call finish", err)
        return False  # the application's exception, if any, propagates unchanged

    def _start(self, state: _State) -> CallRecord:
        call = self._call
        attrs: dict[str, Any] = {
            attr.GEN_AI_OPERATION_NAME: call["operation"],
            attr.GEN_AI_PROVIDER_NAME: call["provider"],
            attr.GEN_AI_REQUEST_MODEL: call["model"],
        }
        if state.emit_gen_ai_system:
            attrs[attr.GEN_AI_SYSTEM] = call["provider"]
        for name, value in (("tenant", attr.WATCHER_TENANT), ("feature", attr.WATCHER_FEATURE),
                            ("prompt_version", attr.WATCHER_PROMPT_VERSION)):
            if call[name]:
                attrs[value] = call[name]
        for param, value in self._params.items():
            if isinstance(value, _ATTR_TYPES):
                attrs[attr.request_attribute(param)] = value
            elif isinstance(value, list | tuple) and all(isinstance(v, _ATTR_TYPES) for v in value):
                attrs[attr.request_attribute(param)] = tuple(value)
        parent = trace.get_current_span().get_span_context()
        span = state.tracer.start_span(
            f"{call['operation']} {call['model']}", kind=SpanKind.CLIENT, attributes=attrs,
            record_exception=False, set_status_on_exception=False,
        )
        self._span = span
        self._otel_token = otel_context.attach(trace.set_span_in_context(span))
        ctx = span.get_span_context()
        if not ctx.is_valid:  # no tracer provider: ids of our own, so the row still has a trace
            outer = _current.get()
            trace_id = outer.trace_id if outer is not None else _new_trace_id()
            span_id = _new_span_id()
        elif not span.is_recording() and parent.is_valid and ctx.span_id == parent.span_id:
            trace_id, span_id = f"{ctx.trace_id:032x}", _new_span_id()  # no-op tracer under a parent
        else:
            trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
            self._sampled = ctx.trace_flags.sampled
        return CallRecord(**call, trace_id=trace_id, span_id=span_id, ts=state.clock(), timer=state.timer)

    def _finish(self, exc: BaseException | None) -> None:
        state, rec, span = self._state, self._rec, self._span
        assert state is not None and rec is not None
        try:
            rec.stop(error=exc)
            if span is not None:
                try:
                    self._annotate(span, rec, exc)
                except Exception as err:
                    _note_error("span attributes", err)
            capture = state.capture_calls and state.writer is not None
            metrics = state.metrics()
            if metrics is not None:
                try:
                    metrics.observe(rec, exemplar=self._sampled or capture)
                except Exception as err:
                    _note_error("metrics", err)
            if capture:
                assert state.writer is not None
                try:
                    state.writer.submit(_CALLS, _clip("calls", rec.row()))
                except Exception as err:
                    _note_error("calls row", err)
        finally:
            if self._token is not None:
                _current.reset(self._token)
            if self._otel_token is not None:
                otel_context.detach(cast(Any, self._otel_token))
            if span is not None:
                span.end()

    @staticmethod
    def _annotate(span: trace.Span, rec: CallRecord, exc: BaseException | None) -> None:
        if not span.is_recording():
            return
        values: dict[str, Any] = {
            attr.GEN_AI_USAGE_INPUT_TOKENS: rec.input_tokens,
            attr.GEN_AI_USAGE_OUTPUT_TOKENS: rec.output_tokens,
            attr.WATCHER_OUTCOME: rec.outcome,
            attr.WATCHER_COST_USD: rec.cost_usd,
            attr.WATCHER_COST_KNOWN: rec.cost_known,
        }
        if rec.cached_tokens:
            values[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = rec.cached_tokens
        if rec.response_model:
            values[attr.GEN_AI_RESPONSE_MODEL] = rec.response_model
        if rec.finish_reason:
            values[attr.GEN_AI_RESPONSE_FINISH_REASONS] = (rec.finish_reason,)
        if rec.response_id:
            values[attr.GEN_AI_RESPONSE_ID] = rec.response_id
        span.set_attributes(values)
        if exc is not None:
            span.set_attribute(attr.ERROR_TYPE, type(exc).__name__)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def llm_call(
    *,
    provider: str,
    model: str,
    operation: str = "chat",
    tenant: str = "",
    feature: str = "",
    user_id: str | None = None,
    prompt_version: str | None = None,
    **request_params: Any,
) -> _LLMCall:
    """Return a context manager (or decorator) that traces, meters and records one model call.

    ``with llm_call(provider="openai", model="gpt-4o", temperature=0.2) as rec:`` yields a
    ``CallRecord`` to fill from the response. Request parameters become ``gen_ai.request.<name>``
    span attributes. Used as a decorator, the function reaches its record via ``current_call()``.
    """
    call = {
        "provider": str(provider), "model": str(model), "operation": str(operation),
        "tenant": str(tenant), "feature": str(feature), "user_id": user_id, "prompt_version": prompt_version,
    }
    return _LLMCall(call, request_params)


def record_score(
    trace_id: str,
    name: str,
    value: float,
    *,
    label: str | None = None,
    source: str = "judge",
    evaluator: str | None = None,
    tenant: str = "",
    feature: str = "",
    model: str = "",
    comment: str | None = None,
    ts: datetime | None = None,
) -> bool:
    """Queue one ``scores`` row about a trace; return whether it was queued (never raise).

    Bad input (empty trace or name, non-finite value, unknown source) is logged, counted and dropped.
    """
    try:
        state = _state
        if not isinstance(trace_id, str) or not trace_id.strip():
            _note_error(f"record_score: bad trace_id {trace_id!r}")
            return False
        if not isinstance(name, str) or not name.strip():
            _note_error(f"record_score: bad name {name!r}")
            return False
        number = float(value)
        if not math.isfinite(number):
            _note_error(f"record_score: non-finite value for {name!r}")
            return False
        if source not in SCORE_SOURCES:
            _note_error(f"record_score: unknown source {source!r} (expected one of {sorted(SCORE_SOURCES)})")
            return False
        if state.writer is None:
            return False
        row = {
            "trace_id": trace_id.strip(), "ts": ts or state.clock(), "name": name, "value": number,
            "label": label, "source": source, "evaluator": evaluator, "tenant": str(tenant),
            "feature": str(feature), "model": str(model), "eval_run": None, "comment": comment,
        }
        return state.writer.submit(_SCORES, _clip("scores", row))
    except Exception as exc:
        _note_error("record_score", exc)
        return False


def record_feedback(trace_id: str, positive: bool, *, comment: str | None = None, **labels: Any) -> bool:
    """Queue a user's thumbs up/down about a trace: score "feedback" 1.0/0.0, source "feedback".

    ``labels`` are passed to ``record_score`` (tenant, feature, model, evaluator, label, ts).
    """
    try:
        if not isinstance(positive, bool):
            _note_error(f"record_feedback: positive must be a bool, got {type(positive).__name__}")
            return False
        labels.setdefault("label", "positive" if positive else "negative")
        return record_score(
            trace_id, "feedback", 1.0 if positive else 0.0, source="feedback", comment=comment, **labels
        )
    except Exception as exc:
        _note_error("record_feedback", exc)
        return False

