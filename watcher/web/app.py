"""The daemon's HTTP server: health, readiness, self-metrics and the ingest API.

This module owns the FastAPI app (``build_app``) and running it on a background thread
(``ServerThread``, uvicorn without signal handlers, so the daemon keeps SIGTERM/SIGHUP):

- ``GET /healthz``: the process answers.
- ``GET /readyz``: the store answers a ping and rules are loaded (503 otherwise); the last rule
  reload error is shown (the previous rules keep running, so it does not make the daemon unready).
- ``GET /metrics``: the daemon's self-metrics, in OpenMetrics when the Accept header asks for it.
- ``POST /api/v1/calls|scores|feedback``: one object or a list of them, with a bearer token
  (scope ``ingest``: ``server.ingest_token``; unset: 403), a body limit
  (``server.max_body_bytes``: 413) and a batch limit (``server.max_batch``: 413). Every rejection
  is a 4xx with a reason; a store failure is 503. The OpenAPI document is at ``/openapi.json``.
- ``POST /v1/traces``: OTLP/HTTP traces, scope ``ingest`` (``web.otlp``): GenAI spans become calls.
- ``GET /api/v1/alerts|rules|silences``, ``POST /api/v1/silences``, ``DELETE /api/v1/silences/{id}``
  (``statusapi``; writes need scope ``admin``: ``server.admin_token``, unset: 403).
- ``GET /``, ``/alerts/{fingerprint}``, ``/rules/{group}/{rule}`` and their chart PNGs, and the
  silence form ``POST /alerts/{fingerprint}/silence`` (admin token, same origin): the status page (``page``).
- ``GET /api/v1/payloads/{trace_id}``: captured prompts/responses, scope ``payload_read`` only,
  every read audited (``payloads``).
- ``POST/GET /api/v1/annotations``: release markers (``web.annotations``; writes: ``admin`` or
  ``ingest``); ``POST/GET /api/v1/alerts/feedback``: verdicts on alert episodes (``web.feedback``).

Reads (the page, its charts, the read API) need scope ``read`` once ``server.read_token`` is set;
``/healthz``, ``/readyz`` and ``/metrics`` stay open. Scopes and tokens: ``tokens``.

It does not own the request models and the insert (``ingest``), nor the daemon (``engine``).
Binds to 127.0.0.1 by default; no secret appears in an answer.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Generator, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final

import sqlalchemy as sa
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder

from .. import __version__
from .annotations import add_annotation_routes
from .api import add_api_routes
from .data import Redactor, current_alerts, find_alert, outbox_stats
from .feedback import add_feedback_routes
from .ingest import (
    CALLS,
    SCORES,
    Accepted,
    CallIn,
    FeedbackIn,
    ScoreIn,
    call_row,
    feedback_row,
    insert_rows,
    score_row,
    time_problems,
)
from .otlp import PATH as OTLP_PATH
from .otlp import add_otlp_routes, receiver_of
from .page import add_status_routes
from .payloads import add_payload_routes
from .slack import add_slack_routes
from .tokens import AuthProblem, Grant, TokenTable
from .tokens import Scope as TokenScope
from .view import DaemonView

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX: Final = "/api/v1/"
_bearer = HTTPBearer(
    auto_error=False,
    description="server.ingest_token (ingest), server.admin_token (silence writes), server.read_token "
    "(reads, when set), server.payload_tokens (payloads); see watcher.web.tokens",
)
Require = Callable[..., Callable[..., Grant]]
"""``require(scope, challenge=...)``: the FastAPI dependency that admits requests with ``scope``."""


class IngestMetrics:
    """Counters of the ingest API, registered once per registry."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, IngestMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.items = Counter(
            "watcher_ingest_items", "Rows committed by the ingest API.", ["kind"], registry=registry
        )
        self.rejected = Counter(
            "watcher_ingest_rejected", "Ingest requests refused, by reason.", ["reason"], registry=registry
        )
        self.denied = Counter(
            "watcher_http_denied",
            "Requests refused for their credentials, by scope and reason.",
            ["scope", "reason"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> IngestMetrics:
        """Return the ingest metrics of ``registry``, registering them on first use."""
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found


class BodyLimit:
    """ASGI middleware: refuse ingest bodies over ``limit`` bytes with 413, before they are parsed."""

    def __init__(self, app: ASGIApp, limit: int, rejected: Counter) -> None:
        self.app = app
        self.limit = limit
        self.rejected = rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path.startswith(API_PREFIX) or path == OTLP_PATH):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(send)
            return
        seen = 0
        too_large = False
        answered = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            # The framework turns our exception into its own 400: answer 413 in its place.
            nonlocal answered
            if not too_large:
                await send(message)
            elif not answered:
                answered = True
                await self._too_large(send)

        try:
            await self.app(scope, limited, guarded)
        except _TooLarge:
            if not answered:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        self.rejected.labels("too_large").inc()
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes (server.max_body_bytes)"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    pass


def build_app(daemon: DaemonView) -> FastAPI:
    """Return the app for ``daemon`` (anything with ``settings.server``, ``store``, ``metrics``, ``rules``).

    ``rules`` may be None (not loaded); ``last_reload_error`` is read when present.
    """
    server = daemon.settings.server
    registry: CollectorRegistry = daemon.metrics.registry
    counters = IngestMetrics.of(registry)
    app = FastAPI(
        title="watcher",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        description="Health, metrics and the ingest API of the watcher daemon.",
    )
    app.add_middleware(BodyLimit, limit=server.max_body_bytes, rejected=counters.rejected)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        counters.rejected.labels("invalid").inc()
        problems = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()[:50]
        ]
        return JSONResponse({"detail": problems}, status_code=422)

    tokens = TokenTable(server)

    def require(
        scope: TokenScope, challenge: str = "Bearer", *, also: tuple[TokenScope, ...] = ()
    ) -> Callable[..., Grant]:
        """Return the dependency that admits a request with a token of ``scope`` (or one of ``also``)."""

        def dependency(
            request: Request, _doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
        ) -> Grant:
            try:
                auth = request.headers.get("authorization")
                return tokens.check(scope, auth, challenge=challenge, also=also)
            except AuthProblem as problem:
                counters.denied.labels(scope.value, problem.reason).inc()
                if scope is TokenScope.INGEST:
                    counters.rejected.labels(problem.reason).inc()
                headers = {"WWW-Authenticate": problem.challenge} if problem.challenge else None
                raise HTTPException(problem.status, problem.detail, headers=headers) from None

        return dependency

    def write(kind: str, table: sa.Table, rows: list[dict[str, Any]]) -> Accepted:
        if len(rows) > server.max_batch:
            counters.rejected.labels("batch_too_large").inc()
            raise HTTPException(
                413, f"{len(rows)} items in one request; at most {server.max_batch} (server.max_batch)"
            )
        try:
            n = insert_rows(daemon.store.engine, table, rows)
        except sa.exc.SQLAlchemyError as exc:
            counters.rejected.labels("store").inc()
            log.warning("ingest: %s insert of %d rows failed: %s", kind, len(rows), type(exc).__name__)
            raise HTTPException(503, "the store is unavailable; retry later") from None
        counters.items.labels(kind).inc(n)
        return Accepted(accepted=n)

    now = daemon.clock  # the daemon's clock, as the engine uses: a simulated or test clock reaches the API
    retention = getattr(daemon.settings, "retention", None)

    def in_bounds(items: Sequence[CallIn | ScoreIn | FeedbackIn], t: datetime, table: str) -> None:
        """Refuse (422, saying why) timestamps too far in the future or older than ``table``'s retention."""
        keep = getattr(retention, table, None)
        problems = time_problems(
            items,
            t,
            max_future=server.ingest_max_future,
            max_age=keep if keep else None,  # 0 keeps rows forever
            retention_setting=f"retention.{table}",
        )
        if problems:
            counters.rejected.labels("out_of_range").inc()
            raise HTTPException(422, problems[:50])

    auth = [Depends(require(TokenScope.INGEST))]
    redact = Redactor(daemon.settings)
    add_api_routes(app, daemon, require, redact)
    add_status_routes(
        app,
        daemon,
        redact,
        require,
        tokens,
        denied=lambda scope, reason: counters.denied.labels(scope, reason).inc(),
    )
    add_payload_routes(app, daemon, require, redact)
    add_annotation_routes(app, daemon.store, now, require)
    add_feedback_routes(app, daemon.store, now, require, lambda: current_alerts(daemon))
    slack_secret = server.slack_signing_secret
    add_slack_routes(
        app,
        daemon.store,
        now,
        lambda: slack_secret.get_secret_value() if slack_secret is not None else None,
        lambda fp: (find_alert(daemon, fp) or (None, False))[0],
        lambda reason: counters.denied.labels("slack", reason).inc(),
    )
    add_otlp_routes(app, receiver_of(daemon, counters.rejected, counters.items), require(TokenScope.INGEST))

    @app.post(
        "/api/v1/calls",
        dependencies=auth,
        response_model=Accepted,
        tags=["ingest"],
        responses={401: {}, 403: {}, 413: {}, 422: {}, 503: {}},
    )
    def ingest_calls(body: CallIn | list[CallIn]) -> Accepted:
        """Store model calls made by an application without the Python hooks."""
        items = body if isinstance(body, list) else [body]
        t = now()
        in_bounds(items, t, "calls")
        return write("calls", CALLS, [call_row(i, t) for i in items])

    @app.post(
        "/api/v1/scores",
        dependencies=auth,
        response_model=Accepted,
        tags=["ingest"],
        responses={401: {}, 403: {}, 413: {}, 422: {}, 503: {}},
    )
    def ingest_scores(body: ScoreIn | list[ScoreIn]) -> Accepted:
        """Store quality scores (judge, heuristic, human) about traces."""
        items = body if isinstance(body, list) else [body]
        t = now()
        in_bounds(items, t, "scores")
        return write("scores", SCORES, [score_row(i, t) for i in items])

    @app.post(
        "/api/v1/feedback",
        dependencies=auth,
        response_model=Accepted,
        tags=["ingest"],
        responses={401: {}, 403: {}, 413: {}, 422: {}, 503: {}},
    )
    def ingest_feedback(body: FeedbackIn | list[FeedbackIn]) -> Accepted:
        """Store users' thumbs up/down about traces (score "feedback" 1/0)."""
        items = body if isinstance(body, list) else [body]
        t = now()
        in_bounds(items, t, "scores")
        return write("feedback", SCORES, [feedback_row(i, t) for i in items])

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Answer that the process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {}})
    def readyz() -> JSONResponse:
        """Report whether the store answers and rules are loaded (503 when not)."""
        store_error = None
        try:
            daemon.store.ping()
        except Exception as exc:  # StoreError: its message names the store without the password
            store_error = str(exc).splitlines()[0][:500]
        rules = getattr(daemon, "rules", None)
        ready = store_error is None and rules is not None
        body = {
            "ready": ready,
            "store": "ok" if store_error is None else store_error,
            "rules": None if rules is None else {"groups": len(rules.groups), "rules": rules.rule_count},
            "last_reload_error": redact(getattr(daemon, "last_reload_error", None)) or None,
        }
        cluster = getattr(daemon, "cluster", None)
        if cluster is not None:  # replicas: leases held, live peers, rules-hash agreement
            body["cluster"] = cluster.status()
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"])
    def metrics(request: Request) -> Response:
        """Serve the daemon's self-metrics (OpenMetrics when the Accept header asks for it)."""
        refresh_outbox_gauges(daemon)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return app


def refresh_outbox_gauges(daemon: DaemonView) -> None:
    """Set the outbox depth and oldest-age gauges from the table, at scrape time (best effort)."""
    gauge = getattr(daemon.metrics, "outbox_oldest_age", None)
    if gauge is None:
        return
    try:
        depth, age = outbox_stats(daemon.store, daemon.clock())
    except Exception as exc:  # a scrape must still answer with the store down; readyz says why
        log.debug("outbox gauges not refreshed: %s", type(exc).__name__)
        return
    daemon.metrics.outbox_depth.set(depth)
    gauge.set(age)


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon owns SIGTERM/SIGHUP; uvicorn must never install its handlers


class PortInUseError(RuntimeError):
    """The HTTP server could not bind its address; ``reason`` is the system's one-line answer."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host, self.port, self.reason = host, port, reason


def bind_listener(host: str, port: int) -> socket.socket:
    """Return a listening TCP socket on ``host:port``; raise ``PortInUseError`` when it cannot bind.

    Binding here, before uvicorn runs, turns a taken port into one error the caller words, instead
    of uvicorn's own ``[Errno 98] …`` log line and an exit of its thread.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortInUseError(host, port, f"unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts rebind
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PortInUseError(host, port, (exc.strerror or str(exc)).lower()) from None
    return sock


class ServerThread:
    """Run an ASGI app with uvicorn on a background thread; ``port=0`` picks a free port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 9464) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            server_header=False,
        )
        self.server = _Server(config)
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="watcher-http", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self._socket] if self._socket is not None else None)

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving; return once the socket is bound.

        Raise ``PortInUseError`` (a ``RuntimeError``) when the address cannot be bound, with
        nothing logged, and ``RuntimeError`` when the server does not come up within ``timeout``.
        """
        self._socket = bind_listener(self.server.config.host, self.server.config.port)
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self.server.started and self._thread.is_alive() and waited < timeout:
            deadline.wait(0.02)
            waited += 0.02
        if not self.server.started:
            self.stop()
            raise RuntimeError(
                f"HTTP server did not start on {self.server.config.host}:{self.server.config.port}"
            )
        log.info("HTTP server listening on http://%s:%d/", self.server.config.host, self.port)
        return self

    @property
    def port(self) -> int:
        """Return the bound port (the real one when started with port 0)."""
        for srv in self.server.servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (in-flight requests finish) and wait for the thread."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
