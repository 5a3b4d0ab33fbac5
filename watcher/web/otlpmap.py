"""GenAI spans to ``calls`` rows and evaluation events to ``scores`` rows (the OTLP receiver's mapping).

This module owns which OTLP spans are model calls and how their attributes become the columns of a
``calls`` row, read in the order: the current GenAI semantic conventions (``gen_ai.*``), then the
older names OpenLLMetry still emits (``gen_ai.usage.prompt_tokens``, ``llm.request.type``,
``llm.usage.*``, ``gen_ai.completion.0.finish_reason``), then OpenInference's (``llm.model_name``,
``llm.token_count.*``, ``openinference.span.kind``), then watcher's own (``watcher.*``, set by the
hooks). Attribution (tenant, feature, user, prompt version, conversation) is read from the span,
then from the resource. Every ``gen_ai.evaluation.result`` event, on any span, becomes a ``scores``
row. A retrieval span (``gen_ai.operation.name`` ``retrieval``, or OpenInference's ``RETRIEVER``
kind) becomes the ``retrieval.top_score``/``retrieval.empty`` scores the ``retrieval`` hook writes,
from ``gen_ai.retrieval.documents``, OpenInference's ``retrieval.documents.N.document.*`` or
OpenLLMetry's ``db.query.result`` events (vector stores; distances negated).
Values are coerced leniently (strings clipped to their column, NUL removed, bad numbers
dropped); a span that cannot make a valid row is rejected with a reason, never raised.

It does not own decoding the request, the HTTP answer or the insert (``web.otlp``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

MAX_COUNT: Final = 2**31 - 1
MODEL_OPERATIONS: Final = frozenset({"chat", "text_completion", "embeddings", "generate_content"})
"""``gen_ai.operation.name`` values that are one model call (agents, tools and retrieval are not)."""
_OPENLLMETRY_TYPES: Final = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "rerank": "rerank",
}
_OPENINFERENCE_KINDS: Final = {"LLM": "chat", "EMBEDDING": "embeddings"}
EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
RETRIEVAL_OPERATIONS: Final = frozenset({"retrieval", "retrieve"})
"""``gen_ai.operation.name`` of a retrieval (the conventions' name; ``retrieve`` in some SDKs)."""
RETRIEVER: Final = ("gen_ai.data_source.id", "db.collection.name", "db.system.name", "db.system")
TOP_K: Final = (
    "gen_ai.retrieval.top_k",
    "gen_ai.request.top_k",
    "db.vector.query.top_k",
    "pinecone.query.top_k",
)
VECTOR_RESULT_EVENT: Final = "db.query.result"
"""OpenLLMetry's vector-store instrumentations: one event per result (``db.query.result.id``,
``.score`` or ``.distance``)."""
_OI_DOCUMENT: Final = re.compile(r"retrieval\.documents\.(\d{1,4})\.document\.(id|score)")

# Each column's sources, first present wins: current conventions, older OpenLLMetry names, OpenInference.
INPUT_TOKENS: Final = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKENS: Final = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
)
CACHE_READ_TOKENS: Final = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_CREATION_TOKENS: Final = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REASONING_TOKENS: Final = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)
PROVIDER: Final = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
REQUEST_MODEL: Final = ("gen_ai.request.model", "llm.request.model")
RESPONSE_MODEL: Final = ("gen_ai.response.model", "llm.response.model", "llm.model_name")
TTFT: Final = ("gen_ai.response.time_to_first_chunk", "watcher.ttft_s")
TENANT: Final = ("watcher.tenant", "traceloop.association.properties.tenant")
FEATURE: Final = ("watcher.feature", "traceloop.association.properties.feature")
USER: Final = ("user.id", "enduser.id", "traceloop.association.properties.user_id")
PROMPT_VERSION: Final = ("watcher.prompt_version", "llm.prompt_template.version")
CONVERSATION: Final = ("gen_ai.conversation.id", "session.id", "traceloop.association.properties.session_id")
FIRST_CHUNK_EVENTS: Final = frozenset({"gen_ai.content.completion.chunk", "First Token Stream Event"})
"""Span events whose first occurrence marks the first chunk of a stream (OpenLLMetry, OpenInference)."""


@dataclass
class Mapped:
    """What one request's spans became: rows to insert, and the spans refused with why."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    spans: int = 0
    ignored: int = 0
    """spans that are not model calls (HTTP, database, agent, tool spans): accepted, not stored"""
    retrievals: int = 0
    """retrieval spans (their signals are in ``scores``)"""
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    """the first few reasons for rejected spans and events (the OTLP partial-success message)"""

    def reject(self, why: str) -> None:
        """Count one rejected span or event and keep its reason (the first 10)."""
        self.rejected += 1
        if len(self.problems) < 10:
            self.problems.append(why)


@dataclass(frozen=True)
class Bounds:
    """Which timestamps a row may have, relative to the receiver's clock."""

    now: datetime
    max_future: timedelta
    max_age_calls: timedelta | None
    max_age_scores: timedelta | None

    def problem(self, ts: datetime, max_age: timedelta | None, table: str) -> str | None:
        """Return why ``ts`` is refused for ``table``, or None."""
        if ts > self.now + self.max_future:
            return f"timestamp {ts.isoformat()} is more than {self.max_future} ahead of the server clock"
        if max_age is not None and ts < self.now - max_age:
            return f"timestamp {ts.isoformat()} is older than the retention of {table} ({max_age})"
        return None


def value_of(v: AnyValue) -> Any:
    """Return the Python value of an OTLP ``AnyValue`` (arrays as lists, kvlists as dicts)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind)


def attributes(kvs: Sequence[KeyValue]) -> dict[str, Any]:
    """Return the attributes of a span, event or resource as a dict (the last duplicate key wins)."""
    return {kv.key: value_of(kv.value) for kv in kvs}


def clean(value: Any, limit: int) -> str | None:
    """Return ``value`` as a string clipped to ``limit`` characters without NULs (None when empty)."""
    if value is None or isinstance(value, list | dict | bytes):
        return None
    text = str(value).replace("\x00", "").strip()
    return text[:limit] or None


def count(value: Any) -> int | None:
    """Return a token count: a non-negative integer (strings of digits accepted), else None."""
    if isinstance(value, bool):
        return None
    whole_float = isinstance(value, float) and math.isfinite(value) and value.is_integer()
    if whole_float or (isinstance(value, str) and value.strip().isdigit()):
        value = int(value)
    if isinstance(value, int) and value >= 0:
        return min(value, MAX_COUNT)
    return None


def seconds(value: Any, *, limit: float = 86_400 * 7) -> float | None:
    """Return a finite, non-negative number of seconds up to ``limit``, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and 0 <= number <= limit else None


def first(attrs: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """Return the value of the first of ``keys`` present in ``attrs`` (None if none is)."""
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def hex_id(raw: bytes, size: int) -> str | None:
    """Return a trace or span ID as lowercase hex, or None when it is absent, all zero or mis-sized."""
    if len(raw) != size or not any(raw):
        return None
    return raw.hex()


def _nanos(ns: int) -> datetime | None:
    if ns <= 0:
        return None
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def operation_of(attrs: Mapping[str, Any]) -> str | None:
    """Return the operation of a model-call span (``chat``, ``embeddings``…), or None for other spans."""
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op if op in MODEL_OPERATIONS else None
    legacy = attrs.get("llm.request.type")  # OpenLLMetry before the current conventions
    if isinstance(legacy, str) and legacy:
        return _OPENLLMETRY_TYPES.get(legacy)
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind:
        return _OPENINFERENCE_KINDS.get(kind.upper())
    if first(attrs, ("gen_ai.request.model", "gen_ai.system", "gen_ai.provider.name")) is not None:
        return "chat"  # an early-convention span without an operation name
    return None


def iter_spans(resource_spans: Sequence[ResourceSpans]) -> Iterator[tuple[dict[str, Any], Span]]:
    """Yield each span of a request with its resource's attributes."""
    for rs in resource_spans:
        resource = attributes(rs.resource.attributes)
        for scope_spans in rs.scope_spans:
            for span in scope_spans.spans:
                yield resource, span


def map_request(resource_spans: Sequence[ResourceSpans], bounds: Bounds) -> Mapped:
    """Return the ``calls`` and ``scores`` rows of an OTLP traces request, and what was refused."""
    out = Mapped()
    for resource, span in iter_spans(resource_spans):
        out.spans += 1
        attrs = attributes(span.attributes)
        trace_id = hex_id(span.trace_id, 16)
        span_id = hex_id(span.span_id, 8)
        op = operation_of(attrs)
        has_scores = any(e.name == EVALUATION_EVENT for e in span.events)
        retrieval = op is None and is_retrieval(attrs, span)
        if op is None and not has_scores and not retrieval:
            out.ignored += 1
            continue
        if trace_id is None or span_id is None:
            out.reject(f"span {span.name[:64]!r}: trace_id must be 16 bytes and span_id 8, not all zero")
            continue
        context = {**resource, **attrs}  # the span's own attributes win over the resource's
        if retrieval:
            found = retrieval_rows(span, attrs, context, trace_id)
            why = (
                "no timestamp"
                if found is None
                else found and bounds.problem(found[0]["ts"], bounds.max_age_scores, "scores")
            )
            if why:
                out.reject(f"span {span_id} ({span.name[:64]!r}): {why}")
            elif found:
                out.retrievals += 1
                out.scores.extend(found)
            else:
                out.ignored += 1  # a failed retrieval: no signal
        elif op is not None:
            row = call_row(span, attrs, context, op, trace_id, span_id)
            why = (
                "start time missing"
                if row is None
                else bounds.problem(row["ts"], bounds.max_age_calls, "calls")
            )
            if row is None or why:
                out.reject(f"span {span_id} ({span.name[:64]!r}): {why}")
            else:
                out.calls.append(row)
        elif not has_scores and not retrieval:
            out.ignored += 1
        for event in span.events:
            if event.name == EVALUATION_EVENT:
                score_or_why = score_row(event, context, trace_id, span)
                if isinstance(score_or_why, str):
                    out.reject(f"span {span_id}: {EVALUATION_EVENT}: {score_or_why}")
                    continue
                why = bounds.problem(score_or_why["ts"], bounds.max_age_scores, "scores")
                if why:
                    out.reject(f"span {span_id}: {EVALUATION_EVENT}: {why}")
                else:
                    out.scores.append(score_or_why)
    return out


def _ttft(span: Span, attrs: Mapping[str, Any]) -> float | None:
    explicit = seconds(first(attrs, TTFT))
    if explicit is not None:
        return explicit
    for event in span.events:  # events are in the order they were added
        if event.name in FIRST_CHUNK_EVENTS and event.time_unix_nano >= span.start_time_unix_nano > 0:
            return float(event.time_unix_nano - span.start_time_unix_nano) / 1e9
    return None


def _finish_reason(attrs: Mapping[str, Any]) -> str | None:
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list) and reasons:
        return clean(reasons[0], 32)
    if isinstance(reasons, str):
        return clean(reasons, 32)
    return clean(first(attrs, ("llm.finish_reason", "gen_ai.completion.0.finish_reason")), 32)


def _error_type(span: Span, attrs: Mapping[str, Any]) -> str:
    explicit = clean(attrs.get("error.type"), 128)
    if explicit:
        return explicit
    for event in span.events:
        if event.name == "exception":
            found = clean(attributes(event.attributes).get("exception.type"), 128)
            if found:
                return found
    return "error"


def call_row(
    span: Span, attrs: Mapping[str, Any], context: Mapping[str, Any], op: str, trace_id: str, span_id: str
) -> dict[str, Any] | None:
    """Return the ``calls`` row of a model-call span (cost from the price table); None without a start."""
    from ..instrument.pricing import cost_usd

    ts = _nanos(span.start_time_unix_nano)
    if ts is None:
        return None
    invocation = _json_object(attrs.get("llm.invocation_parameters"))  # OpenInference: the request's kwargs
    request_model = clean(first(attrs, REQUEST_MODEL) or invocation.get("model"), 128)
    response_model = clean(first(attrs, RESPONSE_MODEL), 128)
    model = request_model or response_model or ""
    metadata = _json_object(context.get("metadata"))  # OpenInference `using_metadata`
    provider = (clean(first(attrs, PROVIDER), 64) or "").lower()
    input_tokens = count(first(attrs, INPUT_TOKENS)) or 0
    cached = count(first(attrs, CACHE_READ_TOKENS)) or 0
    created = count(first(attrs, CACHE_CREATION_TOKENS)) or 0
    output_tokens = count(first(attrs, OUTPUT_TOKENS)) or 0
    end = span.end_time_unix_nano
    duration = (end - span.start_time_unix_nano) / 1e9 if end >= span.start_time_unix_nano else None
    finish_reason = _finish_reason(attrs)
    errored = span.status.code == Status.STATUS_CODE_ERROR
    outcome = "error" if errored else "refused" if finish_reason == "content_filter" else "ok"
    stated = attrs.get("watcher.outcome")  # the hooks' own verdict (refusal phrases, filters)
    if stated in ("ok", "error", "refused", "filtered") and not errored:
        outcome = str(stated)
    explicit_cost = seconds(first(attrs, ("watcher.cost_usd", "llm.cost.total")), limit=1e6)
    if explicit_cost is not None and attrs.get("watcher.cost_known") is not False:
        cost, known = explicit_cost, True
    else:
        tokens = (input_tokens, output_tokens, cached, created)
        cost, known = cost_usd(response_model or model, *tokens, provider=provider, at=ts)
        if not known and response_model and request_model and response_model != request_model:
            cost, known = cost_usd(request_model, *tokens, provider=provider, at=ts)
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "ts": ts,
        "provider": provider,
        "model": model,
        "operation": op[:32],
        "tenant": clean(first(context, TENANT) or metadata.get("tenant"), 128) or "",
        "feature": clean(first(context, FEATURE) or metadata.get("feature"), 128) or "",
        "user_id": clean(first(context, USER), 128),
        "prompt_version": clean(first(context, PROMPT_VERSION), 64),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": min(cached, input_tokens) if input_tokens else cached,
        "reasoning_tokens": count(first(attrs, REASONING_TOKENS)) or 0,
        "cache_creation_tokens": created,
        "conversation_id": clean(first(context, CONVERSATION), 128),
        "tokens_estimated": attrs.get("watcher.tokens_estimated") is True,
        "cost_usd": cost,
        "cost_known": known,
        "ttft_s": _ttft(span, attrs),
        "duration_s": seconds(duration) if duration is not None else None,
        "finish_reason": finish_reason,
        "outcome": outcome,
        "error_type": _error_type(span, attrs) if outcome == "error" else None,
    }


def score_row(
    event: Span.Event, context: Mapping[str, Any], trace_id: str, span: Span
) -> dict[str, Any] | str:
    """Return the ``scores`` row of a ``gen_ai.evaluation.result`` event, or why it cannot be one."""
    ev = attributes(event.attributes)
    name = clean(ev.get("gen_ai.evaluation.name"), 128)
    if not name:
        return "gen_ai.evaluation.name is missing"
    raw = ev.get("gen_ai.evaluation.score.value")
    value = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    if value is None or not math.isfinite(value) or abs(value) > 1e12:
        return f"evaluation {name!r}: gen_ai.evaluation.score.value must be a finite number"
    ts = _nanos(event.time_unix_nano) or _nanos(span.end_time_unix_nano) or _nanos(span.start_time_unix_nano)
    if ts is None:
        return f"evaluation {name!r}: no timestamp on the event or its span"
    span_attrs = attributes(span.attributes)
    metadata = _json_object(context.get("metadata"))
    comment = ev.get("gen_ai.evaluation.explanation")
    return {
        "trace_id": trace_id,
        "ts": ts,
        "name": name,
        "value": value,
        "label": clean(ev.get("gen_ai.evaluation.score.label"), 128),
        "source": "judge",
        "evaluator": None,
        "tenant": clean(first(context, TENANT) or metadata.get("tenant"), 128) or "",
        "feature": clean(first(context, FEATURE) or metadata.get("feature"), 128) or "",
        "model": clean(first(span_attrs, REQUEST_MODEL) or first(span_attrs, RESPONSE_MODEL), 128) or "",
        "eval_run": None,
        "comment": None if comment is None else (clean(comment, 4000) or None),
    }


def is_retrieval(attrs: Mapping[str, Any], span: Span | None = None) -> bool:
    """Tell whether a span is a retrieval step: the conventions' operation, OpenInference's kind, or
    an OpenLLMetry vector-store query (``db.query.result`` events)."""
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op in RETRIEVAL_OPERATIONS
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind:
        return kind.upper() == "RETRIEVER"
    return span is not None and any(e.name == VECTOR_RESULT_EVENT for e in span.events)


def _vector_result(event: Span.Event) -> tuple[str, float | None]:
    """Return ``(id, score)`` of an OpenLLMetry ``db.query.result`` event (a distance is negated)."""
    from ..instrument.retrieval import document

    ev = attributes(event.attributes)
    ident, score = document({"id": ev.get("db.query.result.id"), "score": ev.get("db.query.result.score")})
    if score is None:
        distance = document({"score": ev.get("db.query.result.distance")})[1]
        score = None if distance is None else -distance
    return ident, score


def _documents_of(span: Span, attrs: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """Return a retrieval span's documents as ``(id, score)`` in the retriever's order."""
    from ..instrument.retrieval import document

    results = [_vector_result(e) for e in span.events if e.name == VECTOR_RESULT_EVENT]
    if results:
        return results

    value = attrs.get("gen_ai.retrieval.documents")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if isinstance(value, list):
        return [document(d) for d in value if isinstance(d, dict)]
    flat: dict[int, dict[str, Any]] = {}  # OpenInference: retrieval.documents.N.document.id|score
    for key, v in attrs.items():
        m = _OI_DOCUMENT.fullmatch(key)
        if m:
            flat.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return [document(flat[i]) for i in sorted(flat)]


def retrieval_rows(
    span: Span, attrs: Mapping[str, Any], context: Mapping[str, Any], trace_id: str
) -> list[dict[str, Any]] | None:
    """Return the ``retrieval.*`` scores rows of a retrieval span ([] if it failed, None without a time)."""
    from ..instrument.retrieval import SOURCE, describe, signals

    ts = _nanos(span.end_time_unix_nano) or _nanos(span.start_time_unix_nano)
    if ts is None:
        return None
    if span.status.code == Status.STATUS_CODE_ERROR:  # a failed search is not an empty one
        return []
    docs = _documents_of(span, attrs)
    k = count(first(attrs, TOP_K))
    retriever = clean(first(attrs, RETRIEVER), 128) or clean(span.name, 128)
    metadata = _json_object(context.get("metadata"))
    base = {
        "trace_id": trace_id,
        "ts": ts,
        "source": SOURCE,
        "evaluator": retriever,
        "tenant": clean(first(context, TENANT) or metadata.get("tenant"), 128) or "",
        "feature": clean(first(context, FEATURE) or metadata.get("feature"), 128) or "",
        "model": "",
        "eval_run": None,
        "comment": describe(docs, k),
    }
    return [{**base, "name": name, "value": value, "label": label} for name, value, label in signals(docs)]
