"""Deferred spans: a model call's span context on the caller's thread, its SDK span on the finisher's.

Starting an OpenTelemetry SDK span costs the caller ~20 µs (the span object, its attribute
container and lock, the processors' ``on_start``). This module owns doing only what the call's
children need on the caller: the span *context* (the trace id from the parent or the provider's
id generator, a span id from it, the provider's sampling decision, the flags and trace state
exactly as the SDK's ``Tracer.start_span`` sets them), made current through a ``PendingSpan``
that buffers what the application does to the current span meanwhile. The finisher's thread
later asks the SDK tracer itself for the span, with the call's start time, in a copy of the
caller's ``contextvars`` (so the span processors' ``on_start`` see the caller's context), through
a view of the tracer whose id generator and sampler hand back what the caller drew: the SDK has
no public way to start a span with a given ``SpanContext`` (opentelemetry-python #3091; the id
generator is its extension point), and its span class is not to be built directly. A probe span
checks the view once per tracer, and every deferred span is compared with its context: a tracer
that does not honour the view (another SDK version, a disabled tracer) is left to the ordinary
path. Only the SDK's own ``Tracer`` qualifies; any other tracer (no-op, a vendor's) is started
on the caller as before. It does not own the call's lifecycle (``call``) nor the thread
(``finisher``).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger(__name__)

_SDK_TRACE: Final = "opentelemetry.sdk.trace"
_RANDOM: Final = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_STACKTRACE: Final = "exception.stacktrace"
_PENDING_LOCK = threading.Lock()
"""Guards a pending span's buffer against its resolution (only contended when the application
touches the span from another thread while the finisher resolves it)."""


class PendingSpan(trace.Span):
    """The current span of a deferred call until its SDK span exists: records what is done to it.

    What the application does to the current span inside the call (attributes, events, status,
    a recorded exception, a new name) is kept, with the time it happened, and replayed in order on
    the SDK span when the finisher creates it; afterwards every method goes to that span.
    """

    __slots__ = ("_context", "_ops", "_real")

    def __init__(self, context: SpanContext) -> None:
        self._context = context
        self._ops: list[tuple[str, tuple[Any, ...]]] | None = None
        self._real: trace.Span | None = None

    def _do(self, method: str, *args: Any) -> None:
        real = self._real
        if real is None:
            with _PENDING_LOCK:
                real = self._real
                if real is None:
                    if self._ops is None:
                        self._ops = []
                    self._ops.append((method, args))
                    return
        getattr(real, method)(*args)

    def resolve(self, real: trace.Span) -> None:
        """Replay what was done so far on ``real``; from now on everything goes to it.

        ``INVALID_SPAN`` when no SDK span could be started: what was kept is dropped.
        """
        with _PENDING_LOCK:
            ops, self._ops, self._real = self._ops, None, real
            for method, args in ops or ():
                try:
                    getattr(real, method)(*args)
                except Exception as exc:  # the SDK logs bad values itself; this is a last guard
                    log.warning("watcher hooks: replaying %s on the call's span failed (%s)", method, exc)

    def get_span_context(self) -> SpanContext:
        """Return the context drawn on the caller's thread (the SDK span gets the same)."""
        return self._context

    def is_recording(self) -> bool:
        """Return True until the SDK span exists, then what it says."""
        real = self._real
        return True if real is None else real.is_recording()

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (kept until the SDK span exists)."""
        self._do("set_attribute", key, tuple(value) if isinstance(value, list) else value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes (kept until the SDK span exists)."""
        self._do("set_attributes", _copy(attributes))

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        """Add an event stamped now unless ``timestamp`` says otherwise."""
        self._do("add_event", name, _copy(attributes), _now(timestamp))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        """Add a link (kept until the SDK span exists)."""
        self._do("add_link", context, _copy(attributes))

    def update_name(self, name: str) -> None:
        """Rename the span (kept until the SDK span exists)."""
        self._do("update_name", name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status (kept until the SDK span exists)."""
        self._do("set_status", status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record an exception event with the stack trace it has now (a re-raise would lengthen it)."""
        merged: Any = attributes
        try:
            merged = {_STACKTRACE: "".join(traceback.format_exception(exception))}
            if attributes:
                merged.update(attributes)
        except Exception:  # not an exception after all: the SDK span gets it as it came
            merged = attributes
        self._do("record_exception", exception, merged, _now(timestamp), escaped)

    def end(self, end_time: int | None = None) -> None:
        """End the span now unless ``end_time`` says otherwise (the call's own end then does nothing)."""
        self._do("end", _now(end_time))

    def __repr__(self) -> str:
        return f"PendingSpan({self._context!r})"


def _now(timestamp: int | None) -> int:
    return time.time_ns() if timestamp is None else timestamp


def _copy(attributes: Any) -> Any:
    """Return the attributes as they are now (the SDK copies them when set; lists become tuples)."""
    if attributes is None:
        return None
    try:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in attributes.items()}
    except Exception:  # not a mapping: the SDK span gets it as it came, and says what it thinks
        return attributes


@dataclass(slots=True)
class Started:
    """What the caller drew for one deferred span; the finisher creates the span from it."""

    name: str
    kind: SpanKind
    attributes: dict[str, Any]
    context: SpanContext
    random_trace_id: bool
    sampling: Any
    """The provider's sampler's ``SamplingResult`` for this span."""
    caller_context: contextvars.Context
    start_ns: int


class _PresetIds:
    """An id generator that hands back the ids the caller drew (the finisher sets them first)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.trace_id = 0
        self.span_id = 0
        self.random = False

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return self.random


class _Decided:
    """A sampler that hands back the decision the provider's sampler took on the caller's thread."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.result: Any = None

    def should_sample(self, *_: Any, **__: Any) -> Any:
        return self.result

    def get_description(self) -> str:
        return str(self._real.get_description())


class _TracerView:
    """The SDK tracer with the caller's ids and decision in place of its generator and sampler."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self.id_generator = _PresetIds(tracer.id_generator)
        self.sampler = _Decided(tracer.sampler)

    def __getattr__(self, name: str) -> Any:  # processors, limits, scope, resource: the tracer's own
        return getattr(self._tracer, name)


class Deferred:
    """Deferred spans for one SDK tracer."""

    def __init__(self, tracer: Any, start_span: Callable[..., Any]) -> None:
        self.tracer = tracer
        self.ok = True
        """False once the tracer did not honour the view: calls go back to the ordinary path."""
        self._start_span = start_span  # the SDK's ``Tracer.start_span``, called with the view as self
        self._view = _TracerView(tracer)
        self._lock = threading.Lock()

    def begin(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> tuple[trace.Span, Started]:
        """Draw the span's context as ``Tracer.start_span`` would; return the span to make current."""
        tracer = self.tracer
        ids = tracer.id_generator
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid:
            trace_id = parent.trace_id
            random_trace_id = bool(parent.trace_flags & _RANDOM)
        else:
            trace_id = ids.generate_trace_id()
            random_trace_id = bool(_RANDOM) and bool(ids.is_trace_id_random())
        # The same arguments as the SDK's: no explicit context (the sampler reads the current one).
        sampling = tracer.sampler.should_sample(None, trace_id, name, kind, attributes, ())
        decision = sampling.decision
        flags = TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= _RANDOM
        context = SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=sampling.trace_state,
        )
        started = Started(
            name,
            kind,
            attributes,
            context,
            random_trace_id,
            sampling,
            contextvars.copy_context(),  # before ours is attached: the context the SDK span starts in
            time.time_ns(),
        )
        span = PendingSpan(context) if decision.is_recording() else NonRecordingSpan(context)
        return span, started

    def create(self, started: Started) -> trace.Span:
        """Start the SDK span of ``started`` (on the finisher's thread), at the caller's start time."""
        with self._lock:
            view = self._view
            ids = view.id_generator
            ids.trace_id, ids.span_id, ids.random = (
                started.context.trace_id,
                started.context.span_id,
                started.random_trace_id,
            )
            view.sampler.result = started.sampling
            span: trace.Span = started.caller_context.run(
                self._start_span,
                view,
                started.name,
                None,
                started.kind,
                started.attributes,
                (),
                started.start_ns,
                False,
                False,
            )
        if span.get_span_context() != started.context:
            self.ok = False
            raise RuntimeError("the tracer did not start the span with the context drawn for it")
        return span

    def probe(self) -> bool:
        """Tell whether the tracer starts a span with the drawn context (a dropped one: nothing exported)."""
        ids = self.tracer.id_generator
        drop = _dropped_result()
        if drop is None:
            return False
        context = SpanContext(
            ids.generate_trace_id(),
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT | (_RANDOM if ids.is_trace_id_random() else 0)),
        )
        started = Started(
            "watcher.probe",
            SpanKind.INTERNAL,
            {},
            context,
            bool(_RANDOM) and bool(ids.is_trace_id_random()),
            drop,
            contextvars.Context(),  # empty: no current span, so the probe is a root
            time.time_ns(),
        )
        try:
            span = self.create(started)
        except Exception:
            return False
        return not span.is_recording()


def _dropped_result() -> Any:
    sampling = sys.modules.get(_SDK_TRACE + ".sampling")
    if sampling is None:
        return None
    return sampling.SamplingResult(sampling.Decision.DROP)


def for_tracer(tracer: Any, name: str) -> Deferred | bool:
    """Return deferred spans for ``tracer`` if it is the SDK's own; else whether to ask again later.

    A proxy tracer (the global provider's) is looked through once the global provider is set;
    until then, and until the SDK is loaded at all, the answer may still change (True).
    """
    sdk = sys.modules.get(_SDK_TRACE)
    if sdk is None:  # the SDK is not loaded, so no tracer can be one of its own (yet)
        return True
    if isinstance(tracer, trace.ProxyTracer):
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return True
        tracer = provider.get_tracer(name)
    if type(tracer) is not sdk.Tracer:
        return False
    deferred = Deferred(tracer, sdk.Tracer.start_span)
    return deferred if deferred.probe() else False
