"""``llm_call``: one model call as a span, metrics with trace exemplars, a row and a payload.

This module owns the lifecycle of one call. On the caller's thread: the span
(``"{operation} {model}"``, kind CLIENT, the ``gen_ai.*`` attributes a sampler may use) made
current; with the SDK's tracer only its context is drawn here and the SDK span is started later
with the call's start time (``deferred``), other tracers start it here. At the end: take the
duration and end time, leave the context and queue the rest for the ``finisher``'s thread: start
the deferred span, settle the outcome (provider signals, then the refusal-phrase classifier;
``llm_call`` used directly settles on the caller, whose record it is), set the request and
response attributes and end the span, observe the metrics, queue the ``calls`` row
and the redacted ``payloads`` row when capture is on, and offer the call to the online evaluator.
A streamed call leaves the caller's context when ``create`` returns (``detach``) and ends when
the stream ends (``finish``). It does not own the process-wide state (``hooks``), the background
thread (``finisher``) nor reading vendor responses (the wrappers).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from contextlib import ContextDecorator
from contextvars import Token
from types import TracebackType
from typing import Any, Final, Literal, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import attributes as attr
from . import hooks
from .deferred import Deferred, PendingSpan, Started
from .finisher import FINISHER
from .hooks import _CALLS, _PAYLOADS, _clip, _new_span_id, _new_trace_id, _note_error, _State, _utcnow
from .record import CallRecord

_ATTR_TYPES: Final = (str, bool, int, float)


def _call_row(rec: CallRecord) -> dict[str, Any]:
    """Return the ``calls`` row of a finished call (built on the writer's thread)."""
    return _clip("calls", rec.row())


def _parent_span_id() -> int:
    """Return the span id of the current span before ours (a no-op tracer hands it back as ours)."""
    ctx = trace.get_current_span(otel_context.get_current()).get_span_context()
    return ctx.span_id if ctx.is_valid else -1


def _messages_attr(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}], ensure_ascii=False)


def _messages_json(
    state: _State, rec: CallRecord, prompt: str | None, response: str | None
) -> tuple[str | None, str | None]:
    """Return the redacted input and output messages as JSON (structured when the wrapper read them)."""
    from .messages import redacted_json

    scrub = state.scrub
    if rec.input_messages is not None:
        in_json: str | None = redacted_json(rec.input_messages, scrub)
    else:
        in_json = None if prompt is None else _messages_attr("user", prompt)
    if rec.output_messages is not None:
        out_json: str | None = redacted_json(rec.output_messages, scrub)
    else:
        out_json = None if response is None else _messages_attr("assistant", response)
    return in_json, out_json


class _LLMCall(ContextDecorator):
    """The context manager behind ``llm_call``; a fresh copy runs for each decorated call."""

    def __init__(
        self,
        call: dict[str, Any],
        params: dict[str, Any] | Callable[[], dict[str, Any]],
        labels: Mapping[str, Any],
        server: tuple[str, int | None] | None = None,
    ) -> None:
        self._call = call
        self._params = params
        self._labels = labels
        self._server = server
        self._state: _State | None = None
        self._rec: CallRecord | None = None
        self._span: trace.Span | None = None
        self._otel_token: object | None = None
        self._token: Token[CallRecord | None] | None = None
        self._sampled = False
        self._done = False
        self._deferred: Deferred | None = None
        self._started: Started | None = None

    def _recreate_cm(self) -> _LLMCall:
        return _LLMCall(self._call, self._params, self._labels, self._server)

    def __enter__(self) -> CallRecord:
        state = self._state = hooks._state
        try:
            rec = self._start(state)
        except Exception as exc:
            _note_error("llm_call start", exc)
            rec = CallRecord(
                **self._call,
                trace_id=_new_trace_id(),
                span_id=_new_span_id(),
                ts=_utcnow(),
                timer=time.perf_counter,
            )
        if self._labels:
            rec.labels = {str(k): str(v) for k, v in self._labels.items()}
        self._rec = rec
        self._token = hooks._current.set(rec)
        return rec

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        self._end_once(exc, None, settle_now=True)  # the application's record: final at once
        return False  # the application's exception, if any, propagates unchanged

    @property
    def record(self) -> CallRecord | None:
        """Return the record of the call (None before ``__enter__``)."""
        return self._rec

    def detach(self) -> None:
        """Leave the caller's context now; the span stays open until ``finish`` (streams)."""
        try:
            if self._token is not None:
                hooks._current.reset(self._token)
                self._token = None
            if self._otel_token is not None:
                otel_context.detach(cast(Any, self._otel_token))
                self._otel_token = None
        except Exception as err:  # reset from another context: nothing of ours is left attached
            self._token = self._otel_token = None
            _note_error("llm_call detach", err)

    def finish(self, exc: BaseException | None = None, fill: Callable[[], None] | None = None) -> None:
        """End the call once (later calls do nothing): outcome, span, metrics, rows, evaluator.

        Only the end time is taken here; ``fill`` (reading the response into the record), the
        outcome and the rest run on the finisher's thread. For the wrappers, whose record the
        application never sees.
        """
        self._end_once(exc, fill, settle_now=False)

    def _end_once(self, exc: BaseException | None, fill: Callable[[], None] | None, settle_now: bool) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._finish(exc, fill, settle_now)
        except Exception as err:
            _note_error("llm_call finish", err)

    def _start(self, state: _State) -> CallRecord:
        call = self._call
        # Only what a sampler may use goes on the span at its start; the request parameters and
        # attribution are set with the response attributes, on the finisher's thread.
        attrs: dict[str, Any] = {
            attr.GEN_AI_OPERATION_NAME: call["operation"],
            attr.GEN_AI_PROVIDER_NAME: call["provider"],
            attr.GEN_AI_REQUEST_MODEL: call["model"],
        }
        if state.emit_gen_ai_system:
            attrs[attr.GEN_AI_SYSTEM] = call["provider"]
        if self._server is not None:  # the conventions ask for it at the start: samplers may use it
            attrs[attr.SERVER_ADDRESS] = self._server[0]
            if self._server[1] is not None:
                attrs[attr.SERVER_PORT] = self._server[1]
        name = f"{call['operation']} {call['model']}"
        deferred = state.deferred()
        if deferred is not None:  # the SDK's tracer: only the span's context here, the span later
            span, self._started = deferred.begin(name, SpanKind.CLIENT, attrs)
            self._deferred = deferred
            self._span = span
            ctx = span.get_span_context()
            self._sampled = ctx.trace_flags.sampled
            self._otel_token = otel_context.attach(trace.set_span_in_context(span))
            ts = time.time() if state.clock is _utcnow else state.clock()
            return CallRecord(
                **call,
                trace_id=f"{ctx.trace_id:032x}",
                span_id=f"{ctx.span_id:016x}",
                ts=ts,
                timer=state.timer,
            )
        outer = hooks._current.get()
        span = state.tracer.start_span(
            name,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        ctx = span.get_span_context()
        if not ctx.is_valid:  # no tracer provider: ids of our own, so the row still has a trace
            trace_id = outer.trace_id if outer is not None else _new_trace_id()
            span_id = _new_span_id()
        elif not span.is_recording() and ctx.span_id == _parent_span_id():  # (ours is not current yet)
            trace_id, span_id = f"{ctx.trace_id:032x}", _new_span_id()  # no-op tracer under a parent
        else:
            trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
            self._sampled = ctx.trace_flags.sampled
        self._otel_token = otel_context.attach(trace.set_span_in_context(span))
        # The default clock's datetime is built when the row is, on the writer's thread.
        ts = time.time() if state.clock is _utcnow else state.clock()
        return CallRecord(**call, trace_id=trace_id, span_id=span_id, ts=ts, timer=state.timer)

    def _finish(self, exc: BaseException | None, fill: Callable[[], None] | None, settle_now: bool) -> None:
        """Take the end time and leave the context now; queue the rest for the finisher's thread."""
        state, rec = self._state, self._rec
        assert state is not None and rec is not None
        try:
            rec.mark_end()
            if settle_now:
                self._settle(state, rec, exc)
        finally:
            self.detach()
            FINISHER.submit(  # a full queue drops the call and counts it
                functools.partial(self._complete, exc, time.time_ns(), fill, not settle_now)
            )

    @staticmethod
    def _settle(state: _State, rec: CallRecord, exc: BaseException | None) -> None:
        """Settle the outcome: provider signals, then the refusal-phrase classifier."""
        if exc is None and not rec.refused and state.refusal is not None and rec.response:
            rec.refused = state.refusal(rec.response)
        rec.stop(error=exc)

    def _complete(
        self, exc: BaseException | None, end_ns: int, fill: Callable[[], None] | None, settle: bool
    ) -> None:
        """Fill and settle the record, annotate and end the span, observe, queue the rows, offer."""
        state, rec, span = self._state, self._rec, self._span
        assert state is not None and rec is not None
        started, self._started = self._started, None  # (it holds the caller's context snapshot)
        if started is not None:  # a deferred span: the SDK span is started now, as of the call's start
            pending, span = span, None
            try:
                assert self._deferred is not None
                span = self._deferred.create(started)
                if isinstance(pending, PendingSpan):
                    pending.resolve(span)
            except Exception as err:
                _note_error("span start", err)
                if isinstance(pending, PendingSpan):
                    pending.resolve(trace.INVALID_SPAN)  # what the application did to it goes nowhere
        try:
            if fill is not None:
                try:
                    fill()
                except Exception as err:
                    _note_error("response", err)
            if settle:
                self._settle(state, rec, exc)
            capture = state.capture_calls and state.writer is not None
            content = state.capture_content and (
                rec.prompt is not None
                or rec.response is not None
                or rec.input_messages is not None
                or rec.output_messages is not None
            )
            prompt = response = in_json = out_json = None
            if content:
                prompt, response = state.scrub(rec.prompt), state.scrub(rec.response)
                in_json, out_json = _messages_json(state, rec, prompt, response)
            if span is not None:
                try:
                    self._annotate(span, rec, exc, in_json, out_json)
                except Exception as err:
                    _note_error("span attributes", err)
            metrics = state.metrics()
            if metrics is not None:
                try:
                    metrics.observe(rec, exemplar=self._sampled or capture)
                except Exception as err:
                    _note_error("metrics", err)
            if state.otel_metrics:
                try:
                    meters = state.meters()
                    if meters is not None:
                        meters.record(rec, self._server)
                except Exception as err:
                    _note_error("otel metrics", err)
            if capture:
                assert state.writer is not None
                try:
                    state.writer.submit(_CALLS, functools.partial(_call_row, rec))
                    if content:
                        state.writer.submit(
                            _PAYLOADS,
                            _clip(
                                "payloads",
                                {
                                    "trace_id": rec.trace_id,
                                    "ts": rec.ts,
                                    "prompt": prompt,
                                    "response": response,
                                },
                            ),
                        )
                except Exception as err:
                    _note_error("calls row", err)
            if state.observer is not None:
                try:
                    state.observer.offer(rec)
                except Exception as err:
                    _note_error("evaluator offer", err)
        except Exception as err:
            _note_error("llm_call finish", err)
        finally:
            if span is not None:
                try:
                    span.end(end_time=end_ns)
                except Exception as err:
                    _note_error("span end", err)

    def _annotate(
        self,
        span: trace.Span,
        rec: CallRecord,
        exc: BaseException | None,
        input_messages: str | None,
        output_messages: str | None,
    ) -> None:
        if not span.is_recording():
            return
        call = self._call
        values: dict[str, Any] = {}
        if call["tenant"]:
            values[attr.WATCHER_TENANT] = call["tenant"]
        if call["feature"]:
            values[attr.WATCHER_FEATURE] = call["feature"]
        if call["prompt_version"]:
            values[attr.WATCHER_PROMPT_VERSION] = call["prompt_version"]
        if rec.conversation_id:
            values[attr.GEN_AI_CONVERSATION_ID] = rec.conversation_id
        params = self._params
        if callable(params):
            try:
                params = params()
            except Exception as err:
                _note_error("request parameters", err)
                params = {}
        for param, value in params.items():
            if isinstance(value, _ATTR_TYPES):
                values[attr.request_attribute(param)] = value
            elif isinstance(value, list | tuple) and all(isinstance(v, _ATTR_TYPES) for v in value):
                values[attr.request_attribute(param)] = tuple(value)
        values.update(
            {
                attr.GEN_AI_USAGE_INPUT_TOKENS: rec.input_tokens,
                attr.GEN_AI_USAGE_OUTPUT_TOKENS: rec.output_tokens,
                attr.WATCHER_OUTCOME: rec.outcome,
                attr.WATCHER_COST_USD: rec.cost_usd,
            }
        )
        if not rec.cost_known:  # the flag of an unpriced model; each attribute costs the SDK ~1 µs
            values[attr.WATCHER_COST_KNOWN] = False
        if rec.cached_tokens:
            values[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = rec.cached_tokens
        if rec.cache_creation_tokens:
            values[attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = rec.cache_creation_tokens
        if rec.reasoning_tokens:
            values[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = rec.reasoning_tokens
        if rec.tokens_estimated:
            values[attr.WATCHER_TOKENS_ESTIMATED] = True
        if rec.ttft_s is not None:
            values[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = rec.ttft_s
        if rec.response_model:
            values[attr.GEN_AI_RESPONSE_MODEL] = rec.response_model
        if rec.finish_reason:
            values[attr.GEN_AI_RESPONSE_FINISH_REASONS] = (rec.finish_reason,)
        if rec.response_id:
            values[attr.GEN_AI_RESPONSE_ID] = rec.response_id
        if input_messages is not None:
            values[attr.GEN_AI_INPUT_MESSAGES] = input_messages
        if output_messages is not None:
            values[attr.GEN_AI_OUTPUT_MESSAGES] = output_messages
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
    labels: Mapping[str, Any] | None = None,
    conversation_id: str | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
    **request_params: Any,
) -> _LLMCall:
    """Return a context manager (or decorator) that traces, meters and records one model call.

    ``with llm_call(provider="openai", model="gpt-4o", temperature=0.2) as rec:`` yields a
    ``CallRecord`` to fill from the response. Request parameters become ``gen_ai.request.<name>``
    span attributes; ``labels`` give values to extra metric labels configured beyond tenant and
    feature. ``conversation_id`` becomes ``gen_ai.conversation.id`` (and the row's column);
    ``server_address``/``server_port`` name the endpoint called (``server.*`` attributes).
    Used as a decorator, the function reaches its record via ``current_call()``.
    """
    call = call_fields(provider, model, operation, tenant, feature, user_id, prompt_version, conversation_id)
    server = (str(server_address), server_port) if server_address else None
    return _LLMCall(call, request_params, labels or {}, server)


def call_fields(
    provider: Any,
    model: Any,
    operation: Any,
    tenant: Any,
    feature: Any,
    user_id: Any,
    prompt_version: Any,
    conversation_id: Any = None,
) -> dict[str, Any]:
    """Return what a call is known by before it starts (the ``CallRecord``'s first fields)."""
    return {
        "provider": str(provider),
        "model": str(model),
        "operation": str(operation),
        "tenant": str(tenant),
        "feature": str(feature),
        "user_id": user_id,
        "prompt_version": prompt_version,
        "conversation_id": None if conversation_id is None else str(conversation_id),
    }
