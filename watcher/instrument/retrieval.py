"""``retrieval(retriever)``: one RAG retrieval step as a span and as quality signals rules can query.

This module owns the retrieval hook and the signals derived from what a retriever returned. The
span follows the GenAI conventions for retrieval (name ``retrieval``, kind INTERNAL,
``gen_ai.operation.name`` ``retrieval``, ``gen_ai.data_source.id``, ``gen_ai.retrieval.top_k``,
``gen_ai.retrieval.documents`` as JSON ``[{"id", "score"}]``, the query text only with content
capture, redacted). Two ``scores`` rows (source ``retrieval``, evaluator = the retriever) make the
step visible to rules: ``retrieval.top_score`` (the best relevance score; only when the documents
have scores) and ``retrieval.empty`` (1.0 with label ``empty`` when nothing came back, else 0.0
with label ``found``). The OTLP receiver derives the same rows from other instrumentations'
retrieval spans with ``signals``. An application exception marks the span failed and records no
signal (a failed search is not an empty one); a failure of the hooks is counted, never raised. It
does not own the span machinery (``spans``) nor writing scores (``scores``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import trace

from . import attributes as attr
from . import hooks
from .hooks import _new_trace_id, _note_error
from .scores import record_score
from .spans import span
from .wrap import _attribution

TOP_SCORE: Final = "retrieval.top_score"
EMPTY: Final = "retrieval.empty"
SOURCE: Final = "retrieval"
OPERATION: Final = "retrieval"
MAX_DOCUMENTS: Final = 100
"""Documents kept on the span (the signals use all of them)."""
_COMMENT_CHARS: Final = 500

Document = tuple[str, float | None]
"""A retrieved document: its id and its relevance score (None when the retriever gives none)."""


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def document(item: Any) -> Document:
    """Return ``(id, score)`` of one retriever result.

    Accepts a ``(id, score)`` pair, a mapping with ``id`` and ``score``, or an object with
    ``id``/``score`` attributes (``metadata["id"]`` when it has no ``id``; LangChain's documents).
    """
    if isinstance(item, tuple | list) and len(item) == 2:
        ident, score = item
    elif isinstance(item, Mapping):
        ident, score = item.get("id"), item.get("score")
    else:
        ident = getattr(item, "id", None)
        if ident is None:
            meta = getattr(item, "metadata", None)
            ident = meta.get("id") if isinstance(meta, Mapping) else None
        score = getattr(item, "score", None)
    return ("" if ident is None else str(ident)), _score(score)


def signals(documents: Sequence[Document]) -> list[tuple[str, float, str | None]]:
    """Return the ``(score name, value, label)`` signals of one retrieval's documents."""
    out: list[tuple[str, float, str | None]] = [
        (EMPTY, 0.0 if documents else 1.0, "found" if documents else "empty")
    ]
    scored = [s for _, s in documents if s is not None]
    if scored:
        out.insert(0, (TOP_SCORE, max(scored), None))
    return out


def describe(documents: Sequence[Document], k: int | None) -> str:
    """Return a short human summary of a retrieval (the signals' comment): k, count, best ids."""
    head = f"k={k} " if k is not None else ""
    listed = ", ".join(i if s is None else f"{i} {s:.4g}" for i, s in documents if i)
    text = f"{head}returned={len(documents)}" + (f": {listed}" if listed else "")
    return text if len(text) <= _COMMENT_CHARS else text[: _COMMENT_CHARS - 1] + "…"


def documents_json(documents: Sequence[Document]) -> str:
    """Return the conventions' ``gen_ai.retrieval.documents`` value for a span (JSON)."""
    return json.dumps(
        [{"id": i, "score": s} if s is not None else {"id": i} for i, s in documents[:MAX_DOCUMENTS]],
        ensure_ascii=False,
    )


class Retrieval:
    """What a retrieval step returned; fill it inside ``with retrieval(...) as r``."""

    __slots__ = ("_documents", "k", "retriever", "span")

    def __init__(self, retriever: str, k: int | None, current: trace.Span) -> None:
        self.retriever = retriever
        self.k = k
        self.span = current
        self._documents: list[Document] = []

    def add(self, doc_id: Any, score: Any = None) -> None:
        """Record one retrieved document and its relevance score (higher is more relevant)."""
        self._documents.append(document((doc_id, score)))

    def record(self, results: Iterable[Any]) -> None:
        """Record the retriever's results, in its order (see ``document`` for the shapes read)."""
        for item in results:
            try:
                self._documents.append(document(item))
            except Exception as exc:
                _note_error("retrieval document", exc)

    @property
    def documents(self) -> list[Document]:
        """Return the documents recorded so far as ``(id, score)``."""
        return list(self._documents)


def _trace_id(current: trace.Span) -> str:
    ctx = current.get_span_context()
    if ctx.is_valid:
        return f"{ctx.trace_id:032x}"
    outer = hooks._current.get()  # no tracer provider: the enclosing call's trace, else one of our own
    return outer.trace_id if outer is not None else _new_trace_id()


def _finish(r: Retrieval, tenant: str | None, feature: str | None) -> None:
    """Annotate the span and queue the signals of a finished retrieval (never raises)."""
    try:
        docs = r._documents
        attrib = _attribution.get()
        tenant = str(tenant if tenant is not None else attrib.get("tenant", ""))
        feature = str(feature if feature is not None else attrib.get("feature", ""))
        if r.span.is_recording():
            values: dict[str, Any] = {
                attr.GEN_AI_RETRIEVAL_DOCUMENTS: documents_json(docs),
                attr.WATCHER_RETRIEVAL_RETURNED: len(docs),
            }
            if tenant:  # the OTLP receiver attributes the signals as the hooks do
                values[attr.WATCHER_TENANT] = tenant
            if feature:
                values[attr.WATCHER_FEATURE] = feature
            r.span.set_attributes(values)
        trace_id = _trace_id(r.span)
        comment = describe(docs, r.k)
        for name, value, label in signals(docs):
            record_score(
                trace_id,
                name,
                value,
                label=label,
                source=SOURCE,
                evaluator=r.retriever,
                tenant=tenant,
                feature=feature,
                comment=comment,
            )
    except Exception as exc:
        _note_error("retrieval", exc)


@contextmanager
def retrieval(
    retriever: str,
    *,
    k: int | None = None,
    query: str | None = None,
    tenant: str | None = None,
    feature: str | None = None,
    **attributes: Any,
) -> Iterator[Retrieval]:
    """Trace one retrieval from ``retriever`` (an index, a vector store); yield its ``Retrieval``.

    ``k`` is how many documents were asked for; ``query`` goes on the span only with content
    capture on (redacted). ``tenant``/``feature`` default to the enclosing ``attribution``. Record
    the results with ``r.record(hits)`` or ``r.add(id, score)``; relevance scores are read as
    "higher is more relevant" (negate distances). Extra ``attributes`` go on the span.
    """
    values: dict[str, Any] = dict(attributes)
    try:
        values[attr.GEN_AI_DATA_SOURCE_ID] = str(retriever)
        if k is not None:
            values[attr.GEN_AI_RETRIEVAL_TOP_K] = k = int(k)
        state = hooks._state
        if query is not None and state.capture_content:
            values[attr.GEN_AI_RETRIEVAL_QUERY_TEXT] = state.scrub(str(query))
    except Exception as exc:  # a bad k or query: the span goes on without it
        k = None
        _note_error("retrieval attributes", exc)
    with span(OPERATION, operation=OPERATION, **values) as current:
        r = Retrieval(str(retriever), k, current)
        yield r
        _finish(r, tenant, feature)
