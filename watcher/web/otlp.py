"""The OTLP/HTTP traces receiver: ``POST /v1/traces`` on the daemon's HTTP port.

Any OpenTelemetry SDK or Collector can export traces here (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=
http://watcher:9464/v1/traces``). This module owns the transport as the OTLP/HTTP specification
describes it: binary protobuf (``application/x-protobuf``) or JSON (``application/json``, IDs in hex),
optionally gzip-compressed (``Content-Encoding: gzip``, decompressed size bounded); the answer is an
``ExportTraceServiceResponse`` in the request's encoding, with ``partial_success`` naming the spans
it refused. Bad requests get a 4xx with a reason (400 undecodable, 413 too large, 415 unsupported
media type; 401/403 from the token check, scope ``ingest``), never a 5xx; a store failure is 503,
which exporters retry. Rows of one request are written in one transaction, and a call whose
(trace_id, span_id) is already stored is skipped, so an exporter's retry does not count a call twice.

It does not own the mapping of spans to rows (``web.otlpmap``), the token check (``tokens``) nor the
app (``server``).
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, cast

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import CollectorRegistry, Counter
from starlette.concurrency import run_in_threadpool

from ..store.tables import Call, Score
from .otlpmap import Bounds, Mapped, map_request

log = logging.getLogger(__name__)

PATH: Final = "/v1/traces"
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_MEDIA: Final = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
GZIP_EXPANSION: Final = 20
"""A gzip body may expand to this many times ``server.max_body_bytes``, no more (413 above)."""
CALLS: Final = cast(sa.Table, Call.__table__)  # type: ignore[attr-defined]
SCORES: Final = cast(sa.Table, Score.__table__)  # type: ignore[attr-defined]
# google.rpc.Code values used in the error body (google.rpc.Status)
_INVALID_ARGUMENT: Final = 3
_RESOURCE_EXHAUSTED: Final = 8
_UNAVAILABLE: Final = 14


class OtlpProblem(Exception):
    """A request refused as a whole: the status, the metric reason and the message for the client."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class OtlpMetrics:
    """What the receiver did with the spans it was sent, registered once per registry."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, OtlpMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.spans = Counter(
            "watcher_otlp_spans",
            "Spans received on /v1/traces, by result: call (a model call), retrieval (a retrieval step, "
            "stored as retrieval.* scores), ignored (neither), rejected; "
            "duplicate counts calls and scores already stored (an exporter's retry).",
            ["result"],
            registry=registry,
        )
        self.requests = Counter(
            "watcher_otlp_requests",
            "Requests to /v1/traces, by HTTP status.",
            ["status"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> OtlpMetrics:
        """Return the receiver's metrics of ``registry``, registering them on first use."""
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found


def media_type(content_type: str | None) -> str:
    """Return the OTLP encoding of a ``Content-Type`` header; raise ``OtlpProblem`` (415) otherwise."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    found = _MEDIA.get(base)
    if found is None:
        raise OtlpProblem(
            415,
            "unsupported_media_type",
            f"Content-Type {base or '(none)'!r} is not OTLP: send {PROTOBUF} or {JSON}",
        )
    return found


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Return ``body`` decompressed per ``Content-Encoding`` (gzip or none), at most ``limit`` bytes."""
    coding = (encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise OtlpProblem(415, "unsupported_media_type", f"Content-Encoding {coding!r}: send gzip or none")
    wbits = zlib.MAX_WBITS | 16 if coding != "deflate" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpProblem(400, "invalid", f"body is not valid {coding}: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise OtlpProblem(413, "too_large", f"decompressed body larger than {limit} bytes")
    if not inflater.eof:
        raise OtlpProblem(400, "invalid", f"body is truncated {coding}")
    return out


def _hex_to_base64(node: Any, where: str) -> None:
    """Rewrite the hex trace and span IDs of OTLP/JSON spans as protobuf-JSON's base64, in place."""
    import base64

    if not isinstance(node, dict):
        raise OtlpProblem(400, "invalid", f"{where}: expected an object")
    for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
        value = node.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise OtlpProblem(400, "invalid", f"{where}.{key}: expected a hex string")
        try:
            node[key] = base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise OtlpProblem(400, "invalid", f"{where}.{key}: {value[:40]!r} is not hex") from None


def _list(node: Any, key: str, other: str, where: str) -> list[Any]:
    found = node.get(key, node.get(other, [])) if isinstance(node, dict) else None
    if not isinstance(found, list):
        raise OtlpProblem(400, "invalid", f"{where}.{key}: expected an array")
    return found


def decode(body: bytes, media: str) -> ExportTraceServiceRequest:
    """Return the ``ExportTraceServiceRequest`` in ``body``; raise ``OtlpProblem`` (400) if malformed."""
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise OtlpProblem(
                400, "invalid", f"body is not an OTLP ExportTraceServiceRequest: {exc}"
            ) from None
        return request
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise OtlpProblem(400, "invalid", f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OtlpProblem(400, "invalid", "body: expected an object with resourceSpans")
    for i, rs in enumerate(_list(data, "resourceSpans", "resource_spans", "body")):
        for j, ss in enumerate(_list(rs, "scopeSpans", "scope_spans", f"resourceSpans[{i}]")):
            for k, span in enumerate(_list(ss, "spans", "spans", f"resourceSpans[{i}].scopeSpans[{j}]")):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                _hex_to_base64(span, where)
                for n, link in enumerate(_list(span, "links", "links", where)):
                    _hex_to_base64(link, f"{where}.links[{n}]")
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise OtlpProblem(400, "invalid", f"body is not OTLP/JSON: {str(exc)[:300]}") from None
    return request


def answer(media: str, mapped: Mapped | None = None) -> Response:
    """Return the 200 answer: an ``ExportTraceServiceResponse``, naming refused spans (partial success)."""
    reply = ExportTraceServiceResponse()
    if mapped is not None and mapped.rejected:
        reply.partial_success.rejected_spans = mapped.rejected
        reply.partial_success.error_message = "; ".join(mapped.problems)[:2000]
    if media == PROTOBUF:
        return Response(reply.SerializeToString(), media_type=PROTOBUF)
    return Response(json_format.MessageToJson(reply, indent=None), media_type=JSON)


def refusal(media: str, problem: OtlpProblem) -> Response:
    """Return the error answer of ``problem``: a ``google.rpc.Status`` in the request's encoding."""
    code = (
        _UNAVAILABLE
        if problem.status >= 500
        else _RESOURCE_EXHAUSTED
        if problem.status == 413
        else _INVALID_ARGUMENT
    )
    message = problem.message[:1000]
    if media == PROTOBUF:  # google.rpc.Status{code=1, message=2}, encoded by hand (two fields)
        text = message.encode()
        body = bytes([0x08, code, 0x12]) + _varint(len(text)) + text
        return Response(body, status_code=problem.status, media_type=PROTOBUF)
    return Response(
        json.dumps({"code": code, "message": message}), status_code=problem.status, media_type=JSON
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass
class OtlpReceiver:
    """Turns OTLP requests into committed ``calls`` and ``scores`` rows (a typed view of the daemon)."""

    engine: Callable[[], sa.Engine]
    clock: Callable[[], datetime]
    max_body_bytes: int
    max_future: timedelta
    max_age_calls: timedelta | None
    max_age_scores: timedelta | None
    metrics: OtlpMetrics
    rejected: Counter
    """the ingest API's ``watcher_ingest_rejected{reason}``"""
    committed: Counter
    """the ingest API's ``watcher_ingest_items{kind}``"""

    def handle(self, body: bytes, content_type: str | None, encoding: str | None) -> Response:
        """Answer one request (runs on a worker thread: it decodes and writes synchronously)."""
        media = JSON
        try:
            media = media_type(content_type)
            request = decode(inflate(body, encoding, self.max_body_bytes * GZIP_EXPANSION), media)
            bounds = Bounds(self.clock(), self.max_future, self.max_age_calls, self.max_age_scores)
            try:
                mapped = map_request(request.resource_spans, bounds)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # hostile values
                log.warning("otlp: spans not mapped: %s", type(exc).__name__)
                raise OtlpProblem(400, "invalid", f"span data cannot be read: {type(exc).__name__}") from None
            duplicates = self.write(mapped)
        except OtlpProblem as problem:
            self.rejected.labels(problem.reason).inc()
            self.metrics.requests.labels(str(problem.status)).inc()
            return refusal(media, problem)
        spans = self.metrics.spans
        spans.labels("call").inc(len(mapped.calls))
        spans.labels("retrieval").inc(mapped.retrievals)
        spans.labels("duplicate").inc(duplicates)
        spans.labels("ignored").inc(mapped.ignored)
        spans.labels("rejected").inc(mapped.rejected)
        self.metrics.requests.labels("200").inc()
        return answer(media, mapped)

    def write(self, mapped: Mapped) -> int:
        """Insert the rows of one request in one transaction; return how many were already stored.

        A retried export carries the same spans: a call already stored under its (trace_id, span_id),
        or a score under its (trace_id, name, ts), is skipped rather than counted twice.
        """
        if not mapped.calls and not mapped.scores:
            return 0
        try:
            with self.engine().begin() as conn:
                calls = _new_rows(conn, CALLS, mapped.calls, ("trace_id", "span_id"))
                scores = _new_rows(conn, SCORES, mapped.scores, ("trace_id", "name", "ts"))
                if calls:
                    conn.execute(sa.insert(CALLS), calls)
                if scores:
                    conn.execute(sa.insert(SCORES), scores)
        except sa.exc.SQLAlchemyError as exc:
            log.warning(
                "otlp: insert of %d calls and %d scores failed: %s",
                len(mapped.calls),
                len(mapped.scores),
                type(exc).__name__,
            )
            raise OtlpProblem(503, "store", "the store is unavailable; retry later") from None
        self.committed.labels("calls").inc(len(calls))
        self.committed.labels("scores").inc(len(scores))
        return len(mapped.calls) - len(calls) + len(mapped.scores) - len(scores)


def _new_rows(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Return the ``rows`` whose ``key`` columns are not stored yet (looked up by the indexed trace_id)."""
    if not rows:
        return rows
    traces = sorted({row["trace_id"] for row in rows})
    query = sa.select(*(table.c[k] for k in key)).where(table.c.trace_id.in_(traces))
    stored = {tuple(r) for r in conn.execute(query)}
    return [row for row in rows if tuple(row[k] for k in key) not in stored]


_OPENAPI: Final = {
    "requestBody": {
        "required": True,
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest"}},
        },
    },
    "responses": {
        "200": {"description": "ExportTraceServiceResponse (partial_success names refused spans)"},
        "400": {"description": "undecodable body (google.rpc.Status)"},
        "401": {"description": "missing or unknown bearer token"},
        "403": {"description": "ingest disabled (server.ingest_token unset) or token lacks scope"},
        "413": {"description": "body larger than server.max_body_bytes"},
        "415": {"description": "not application/x-protobuf or application/json, or not gzip"},
        "503": {"description": "the store is unavailable; retry"},
    },
}


def add_otlp_routes(app: FastAPI, receiver: OtlpReceiver, admit: Callable[..., Any]) -> None:
    """Add ``POST /v1/traces`` to ``app``; ``admit`` is the dependency that checks scope ``ingest``."""

    @app.post(PATH, dependencies=[Depends(admit)], tags=["otlp"], openapi_extra=_OPENAPI)
    async def otlp_traces(request: Request) -> Response:
        """Receive OTLP/HTTP traces: GenAI spans become calls, evaluation events become scores."""
        body = await request.body()
        headers = request.headers
        return await run_in_threadpool(
            receiver.handle, body, headers.get("content-type"), headers.get("content-encoding")
        )


def receiver_of(daemon: Any, rejected: Counter, committed: Counter) -> OtlpReceiver:
    """Return the receiver of ``daemon`` (``store``, ``clock``, ``settings``, ``metrics``)."""
    server = daemon.settings.server
    retention = getattr(daemon.settings, "retention", None)

    def keep(table: str) -> timedelta | None:
        value = getattr(retention, table, None)
        return value if value else None  # 0 keeps rows forever

    return OtlpReceiver(
        engine=lambda: daemon.store.engine,
        clock=daemon.clock,
        max_body_bytes=server.max_body_bytes,
        max_future=server.ingest_max_future,
        max_age_calls=keep("calls"),
        max_age_scores=keep("scores"),
        metrics=OtlpMetrics.of(daemon.metrics.registry),
        rejected=rejected,
        committed=committed,
    )
