"""``span(name)``: the application's own steps (retrieval, tool calls, the request) as spans.

This module owns ``span``: an INTERNAL span from the hooks' tracer, current for the ``with``
block, so that the wrapped model calls and the other steps inside it share one trace (the RAG
shape: a ``rag.query`` parent with ``retrieval`` and ``chat`` children). ``operation`` sets
``gen_ai.operation.name`` (``retrieval``, ``execute_tool``, ``embeddings``...). An exception of
the application marks the span as failed (``error.type``, status ERROR) and propagates
unchanged; a failure of the hooks is counted, never raised. It does not own model calls
(``call``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import attributes as attr
from . import hooks
from .hooks import _note_error

_ATTR_TYPES: Final = (str, bool, int, float)


@contextmanager
def span(name: str, *, operation: str | None = None, **attributes: Any) -> Iterator[trace.Span]:
    """Open a span named ``name`` under the current one for the ``with`` block; yield it.

    ``attributes`` (str, bool, int, float or lists of them) are set on the span; attribute names
    with dots can be given as ``**{"gen_ai.retrieval.query.text": q}``.
    """
    current: trace.Span = trace.INVALID_SPAN
    token: object | None = None
    try:
        values = {
            k: (tuple(v) if isinstance(v, list | tuple) else v)
            for k, v in attributes.items()
            if isinstance(v, _ATTR_TYPES)
            or (isinstance(v, list | tuple) and all(isinstance(x, _ATTR_TYPES) for x in v))
        }
        if operation:
            values[attr.GEN_AI_OPERATION_NAME] = operation
        current = hooks._state.tracer.start_span(
            str(name),
            kind=SpanKind.INTERNAL,
            attributes=values,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = otel_context.attach(trace.set_span_in_context(current))
    except Exception as exc:
        _note_error("span start", exc)
    try:
        yield current
    except BaseException as exc:
        try:
            current.set_attribute(attr.ERROR_TYPE, type(exc).__name__)
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        except Exception as err:
            _note_error("span error", err)
        raise
    finally:
        try:
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            current.end()
        except Exception as err:
            _note_error("span end", err)
