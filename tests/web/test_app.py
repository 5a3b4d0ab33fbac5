"""The daemon's HTTP server: health, readiness, metrics, and the ingest API's 4xx table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from watcher.config import ServerSettings
from watcher.errors import StoreError
from watcher.selfmetrics import SelfMetrics
from watcher.store.db import Store, open_store
from watcher.web.app import PortInUseError, ServerThread, build_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
NOW = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    yield s
    s.close()


def make_daemon(store: Any, **server: Any) -> SimpleNamespace:
    settings = SimpleNamespace(
        server=ServerSettings(
            **{"ingest_token": SecretStr(TOKEN), "max_body_bytes": 4096, "max_batch": 5, **server}
        )
    )
    rules = SimpleNamespace(groups=[object(), object()], rule_count=3)
    return SimpleNamespace(
        store=store,
        settings=settings,
        metrics=SelfMetrics(),
        rules=rules,
        last_reload_error=None,
        clock=lambda: NOW,
    )


@pytest.fixture
def daemon(store: Store) -> SimpleNamespace:
    return make_daemon(store)


@pytest.fixture
def client(daemon: SimpleNamespace) -> Iterator[TestClient]:
    with TestClient(build_app(daemon), raise_server_exceptions=False) as c:
        yield c


def count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text(f"select count(*) from {table}")).scalar_one())


def test_healthz_readyz_and_metrics(client: TestClient, daemon: SimpleNamespace) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "store": "ok",
        "rules": {"groups": 2, "rules": 3},
        "last_reload_error": None,
    }
    daemon.last_reload_error = "rules/x.yaml:3:5: bad"
    assert client.get("/readyz").json()["last_reload_error"] == "rules/x.yaml:3:5: bad"
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain") and "watcher_build_info" in text.text
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")


def test_readyz_is_503_without_store_or_rules(store: Store) -> None:
    class DownStore:
        engine = store.engine

        def ping(self) -> None:
            raise StoreError("store sqlite:///w.db: ping failed: locked")

    for daemon in (make_daemon(DownStore()), SimpleNamespace(**{**vars(make_daemon(store)), "rules": None})):
        with TestClient(build_app(daemon)) as c:
            r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False


def test_ingest_calls_scores_feedback(client: TestClient, store: Store) -> None:
    call = {
        "trace_id": TRACE,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        "ts": "2026-05-01T12:00:00",
    }
    r = client.post("/api/v1/calls", json=call, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"accepted": 1}
    scores = [{"trace_id": TRACE, "name": "groundedness", "value": 0.8, "source": "heuristic"}] * 5
    assert client.post("/api/v1/scores", json=scores, headers=AUTH).json() == {"accepted": 5}
    fb = {"trace_id": TRACE, "positive": False, "comment": "wrong"}
    assert client.post("/api/v1/feedback", json=fb, headers=AUTH).json() == {"accepted": 1}
    with store.engine.connect() as conn:
        cost, known, ts = conn.execute(sa.text("select cost_usd, cost_known, ts from calls")).one()
        fb_row = conn.execute(
            sa.text("select name, value, label, source from scores where name='feedback'")
        ).one()
    assert cost == pytest.approx((1000 * 0.15 + 100 * 0.6) / 1e6) and known
    assert str(ts).startswith("2026-05-01 12:00:00")
    assert tuple(fb_row) == ("feedback", 0.0, "negative", "feedback")
    assert count(store, "scores") == 6
    metrics = client.get("/metrics").text
    assert 'watcher_ingest_items_total{kind="scores"} 5.0' in metrics


OK_SCORE = {"trace_id": TRACE, "name": "relevance", "value": 0.5}


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "status", "reason"),
    [
        ("no token", "/api/v1/scores", OK_SCORE, {}, 401, "Bearer"),
        (
            "wrong token",
            "/api/v1/scores",
            OK_SCORE,
            {"Authorization": "Bearer nope"},
            401,
            "bad bearer token",
        ),
        ("basic auth", "/api/v1/scores", OK_SCORE, {"Authorization": "Basic dTpw"}, 401, "Bearer"),
        ("not json", "/api/v1/scores", b"{not json", AUTH, 422, "json"),
        ("empty body", "/api/v1/scores", b"", AUTH, 422, "missing"),
        ("missing field", "/api/v1/scores", {"trace_id": TRACE, "value": 1}, AUTH, 422, "name"),
        ("wrong type", "/api/v1/scores", {**OK_SCORE, "value": "high"}, AUTH, 422, "value"),
        ("nan value", "/api/v1/scores", b'{"trace_id": "ab", "name": "x", "value": NaN}', AUTH, 422, "value"),
        ("unknown field", "/api/v1/scores", {**OK_SCORE, "colour": "blue"}, AUTH, 422, "colour"),
        ("bad source", "/api/v1/scores", {**OK_SCORE, "source": "oracle"}, AUTH, 422, "source"),
        (
            "bad trace id",
            "/api/v1/scores",
            {**OK_SCORE, "trace_id": "no spaces allowed"},
            AUTH,
            422,
            "trace_id",
        ),
        ("too long name", "/api/v1/scores", {**OK_SCORE, "name": "x" * 129}, AUTH, 422, "name"),
        ("nul in text", "/api/v1/scores", {**OK_SCORE, "comment": "a\x00b"}, AUTH, 422, "NUL"),
        ("a list of strings", "/api/v1/scores", ["a", "b"], AUTH, 422, "body"),
        ("batch too large", "/api/v1/scores", [OK_SCORE] * 6, AUTH, 413, "max_batch"),
        (
            "body too large",
            "/api/v1/scores",
            {**OK_SCORE, "comment": "x" * 3999, "label": "y" * 100},
            AUTH,
            413,
            "max_body_bytes",
        ),
        (
            "negative tokens",
            "/api/v1/calls",
            {"trace_id": TRACE, "input_tokens": -1},
            AUTH,
            422,
            "input_tokens",
        ),
        (
            "huge tokens",
            "/api/v1/calls",
            {"trace_id": TRACE, "output_tokens": 2**63},
            AUTH,
            422,
            "output_tokens",
        ),
        ("bad outcome", "/api/v1/calls", {"trace_id": TRACE, "outcome": "meh"}, AUTH, 422, "outcome"),
        ("bad timestamp", "/api/v1/calls", {"trace_id": TRACE, "ts": "yesterday"}, AUTH, 422, "ts"),
        (
            "feedback not bool",
            "/api/v1/feedback",
            {"trace_id": TRACE, "positive": "maybe"},
            AUTH,
            422,
            "positive",
        ),
        ("get on post route", "/api/v1/scores", None, AUTH, 405, ""),
    ],
)
def test_ingest_rejections_are_4xx_with_a_reason(
    client: TestClient,
    store: Store,
    name: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    if body is None:
        r = client.get(path, headers=headers)
    elif isinstance(body, bytes):
        r = client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
    else:
        r = client.post(path, json=body, headers=headers)
    assert r.status_code == status, (name, r.text)
    assert reason.lower() in r.text.lower(), (name, r.text)
    assert count(store, "scores") == 0 and count(store, "calls") == 0


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'[{"trace_id": "ab", "name": "x", "value": 1, "comment": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]'

    r = client.post("/api/v1/scores", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_ingest_disabled_without_a_token(store: Store) -> None:
    with TestClient(build_app(make_daemon(store, ingest_token=None))) as c:
        r = c.post("/api/v1/scores", json=OK_SCORE, headers=AUTH)
    assert r.status_code == 403 and "server.ingest_token" in r.json()["detail"]
    assert TOKEN not in r.text


def test_store_failure_is_503_not_500(tmp_path: Path) -> None:
    empty = sa.create_engine(f"sqlite:///{tmp_path}/empty.db")  # no tables
    try:
        daemon = make_daemon(SimpleNamespace(engine=empty, ping=lambda: None))
        with TestClient(build_app(daemon), raise_server_exceptions=False) as c:
            r = c.post("/api/v1/scores", json=OK_SCORE, headers=AUTH)
        assert r.status_code == 503
    finally:
        empty.dispose()


def test_openapi_document(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert {"/api/v1/calls", "/api/v1/scores", "/api/v1/feedback", "/healthz", "/readyz"} <= set(doc["paths"])
    assert "HTTPBearer" in json.dumps(doc["components"]["securitySchemes"])


def test_real_uvicorn_on_a_free_port(daemon: SimpleNamespace, store: Store) -> None:
    srv = ServerThread(build_app(daemon), "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        r = httpx.post(f"{base}/api/v1/scores", json=[OK_SCORE] * 3, headers=AUTH)
        assert r.json() == {"accepted": 3}
        big = httpx.post(f"{base}/api/v1/scores", content=b"x" * 10_000, headers=AUTH)
        assert big.status_code == 413
    finally:
        srv.stop()
    assert count(store, "scores") == 3
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=1)


def test_a_taken_port_raises_one_error_and_logs_nothing(
    daemon: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level("DEBUG"), pytest.raises(PortInUseError) as excinfo:
            ServerThread(build_app(daemon), "127.0.0.1", port).start()
    assert excinfo.value.reason == "address already in use" and excinfo.value.port == port
    assert [r for r in caplog.records if r.name.startswith("uvicorn")] == []
    srv = ServerThread(build_app(daemon), "127.0.0.1", port).start()  # free again: it binds
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        srv.stop()
