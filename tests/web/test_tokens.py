"""Token scopes on the HTTP server (issue 18, finding 4): ingest, admin, read, payload_read.

One table of requests against the real app of a real daemon with every token configured, the
backwards-compatible refusal when ``server.admin_token`` is unset, and the token table itself.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.web.test_page import ADMIN_TOKEN, NOW, TOKEN, TRACE, scenario
from watcher.config import ServerSettings
from watcher.daemon import Daemon
from watcher.notify.receivers.base import RecordingReceiver
from watcher.store.db import open_store
from watcher.store.tables import Payload
from watcher.web.app import build_app
from watcher.web.tokens import ANONYMOUS, AuthProblem, Scope, TokenTable, credential

READ_TOKEN = "read-t0ken-for-the-status-page"
PAYLOAD_TOKEN = "payl0ad-token-of-alice-0123"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


INGEST, ADMIN, READ, PAYLOAD = bearer(TOKEN), bearer(ADMIN_TOKEN), bearer(READ_TOKEN), bearer(PAYLOAD_TOKEN)
SILENCE = {"matchers": ["tenant=acme"], "duration": "1h"}
SCORE = {"trace_id": TRACE, "name": "relevance", "value": 0.5}


def make(tmp_path: Path, **server: object) -> Daemon:
    """Return a daemon of ``tests.web.test_page``'s scenario with ``server`` settings replaced."""
    settings, mem = scenario(tmp_path, NOW)
    settings = settings.model_copy(update={"server": ServerSettings(port=0, **server)})  # type: ignore[arg-type]
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    hook = RecordingReceiver("hook")
    return Daemon(
        settings, store=store, sources={"prometheus": mem}, receivers={"hook": hook}, clock=lambda: NOW
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    daemon = make(
        tmp_path_factory.mktemp("scopes"),
        ingest_token=TOKEN,
        admin_token=ADMIN_TOKEN,
        read_token=READ_TOKEN,
        payload_tokens={"alice": PAYLOAD_TOKEN},
    )
    daemon.run_once(NOW, drain_s=0)
    with daemon.store.session() as s:
        s.add(Payload(trace_id=TRACE, ts=NOW, prompt="hi [EMAIL]", response="hello"))
        s.commit()
    with TestClient(build_app(daemon), raise_server_exceptions=False) as c:
        yield c
    daemon.close()


NOBODY: dict[str, str] = {}
# (method, path, headers, body, expected status)
MATRIX: list[tuple[str, str, dict[str, str], object, int]] = [
    # open: health, readiness, self-metrics
    ("GET", "/healthz", NOBODY, None, 200),
    ("GET", "/readyz", NOBODY, None, 200),
    ("GET", "/metrics", NOBODY, None, 200),
    # reads need scope read (the read token, or the admin token), bearer or basic
    ("GET", "/", NOBODY, None, 401),
    ("GET", "/", basic(READ_TOKEN), None, 200),
    ("GET", "/", basic("wrong"), None, 401),
    ("GET", "/", READ, None, 200),
    ("GET", "/", INGEST, None, 403),
    ("GET", "/rules/llm-cost/SpendSpike", NOBODY, None, 401),
    ("GET", "/rules/llm-cost/SpendSpike", READ, None, 200),
    ("GET", "/chart/rule/llm-cost/SpendSpike/0.png", NOBODY, None, 401),
    ("GET", "/chart/alert/nope.png", NOBODY, None, 401),
    ("GET", "/api/v1/alerts", NOBODY, None, 401),
    ("GET", "/api/v1/alerts", READ, None, 200),
    ("GET", "/api/v1/alerts", ADMIN, None, 200),
    ("GET", "/api/v1/alerts", INGEST, None, 403),
    ("GET", "/api/v1/alerts", PAYLOAD, None, 403),
    ("GET", "/api/v1/alerts", bearer("nope"), None, 401),
    ("GET", "/api/v1/rules", NOBODY, None, 401),
    ("GET", "/api/v1/rules", READ, None, 200),
    ("GET", "/api/v1/silences", NOBODY, None, 401),
    ("GET", "/api/v1/silences", basic(READ_TOKEN), None, 200),
    # silence writes need scope admin: the ingest and read tokens are refused
    ("POST", "/api/v1/silences", INGEST, SILENCE, 403),
    ("POST", "/api/v1/silences", READ, SILENCE, 403),
    ("POST", "/api/v1/silences", PAYLOAD, SILENCE, 403),
    ("POST", "/api/v1/silences", NOBODY, SILENCE, 401),
    ("DELETE", "/api/v1/silences/nope", INGEST, None, 403),
    ("DELETE", "/api/v1/silences/nope", ADMIN, None, 404),
    # ingest needs scope ingest: the admin token does not ingest
    ("POST", "/api/v1/scores", ADMIN, SCORE, 403),
    ("POST", "/api/v1/scores", READ, SCORE, 403),
    ("POST", "/api/v1/scores", INGEST, SCORE, 200),
    # payloads need scope payload_read, and nothing else grants it
    ("GET", f"/api/v1/payloads/{TRACE}", NOBODY, None, 401),
    ("GET", f"/api/v1/payloads/{TRACE}", READ, None, 403),
    ("GET", f"/api/v1/payloads/{TRACE}", ADMIN, None, 403),
    ("GET", f"/api/v1/payloads/{TRACE}", INGEST, None, 403),
    ("GET", f"/api/v1/payloads/{TRACE}", basic(PAYLOAD_TOKEN), None, 200),
    ("GET", "/api/v1/payloads/not-captured", PAYLOAD, None, 404),
    ("GET", "/api/v1/payloads/bad%20id", PAYLOAD, None, 422),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    MATRIX,
    ids=[f"{m} {p} {'+'.join(h.get('Authorization', 'none').split()[:1])}-{s}" for m, p, h, _, s in MATRIX],
)
def test_scope_matrix(
    client: TestClient, method: str, path: str, headers: dict[str, str], body: object, status: int
) -> None:
    r = (
        client.request(method, path, headers=headers, json=body)
        if body is not None
        else client.request(method, path, headers=headers)
    )
    assert r.status_code == status, r.text[:300]
    for secret in (TOKEN, ADMIN_TOKEN, READ_TOKEN, PAYLOAD_TOKEN):
        assert secret not in r.text
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Basic" if not path.startswith("/api/") else "Bearer")
    if status == 403 and headers:
        assert "server." in r.json()["detail"]  # names the setting whose token is needed


def test_admin_token_unset_refuses_silence_writes_naming_the_setting(tmp_path: Path) -> None:
    """Before: the ingest token created and deleted silences. Now: 403 until server.admin_token is set."""
    daemon = make(tmp_path, ingest_token=TOKEN)
    try:
        with TestClient(build_app(daemon)) as c:
            for r in (
                c.post("/api/v1/silences", json=SILENCE, headers=INGEST),
                c.delete("/api/v1/silences/x", headers=INGEST),
                c.post("/api/v1/silences", json=SILENCE),
            ):
                assert r.status_code == 403, r.text
                detail = r.json()["detail"]
                assert "server.admin_token" in detail and "WATCHER_SERVER__ADMIN_TOKEN" in detail
            assert c.get("/api/v1/silences").status_code == 200  # no read_token: reads stay open
            assert c.get("/").status_code == 200
            assert c.get(f"/api/v1/payloads/{TRACE}", headers=INGEST).status_code == 403  # no payload tokens
            metrics = c.get("/metrics").text
        assert 'watcher_http_denied_total{reason="disabled",scope="admin"} 3.0' in metrics
    finally:
        daemon.close()


def test_credential_forms() -> None:
    assert credential("Bearer abc") == "abc" and credential("bearer  abc ") == "abc"
    assert credential(basic("pw", "u")["Authorization"]) == "pw"
    assert (
        credential("Basic !!!") is None
        and credential("Basic " + base64.b64encode(b"nocolon").decode()) is None
    )
    assert credential("Digest x") is None and credential(None) is None and credential("Bearer ") is None


def test_token_table_scopes() -> None:
    server = ServerSettings(
        ingest_token=SecretStr("same-value"),
        admin_token=SecretStr("same-value"),
        payload_tokens={"bob": SecretStr("b" * 16)},
    )
    table = TokenTable(server)
    grant = table.identify("same-value")
    assert grant is not None and grant.scopes == {Scope.INGEST, Scope.ADMIN, Scope.READ}
    assert grant.who == "ingest+admin"
    assert table.check(Scope.PAYLOAD_READ, "Bearer " + "b" * 16).who == "payload:bob"
    assert table.check(Scope.READ, None) is ANONYMOUS  # read_token unset: reads are open
    with pytest.raises(AuthProblem) as info:
        table.check(Scope.PAYLOAD_READ, "Bearer same-value")  # known, but not a payload token
    assert info.value.status == 403 and "server.payload_tokens" in info.value.detail
    with pytest.raises(AuthProblem) as info:
        TokenTable(ServerSettings()).check(Scope.ADMIN, "Bearer x")
    assert info.value.status == 403 and info.value.reason == "disabled"


def test_payload_token_names_and_lengths_are_checked() -> None:
    with pytest.raises(ValueError, match="shorter than 16"):
        ServerSettings(payload_tokens={"bob": SecretStr("short")})
    with pytest.raises(ValueError, match="payload token name"):
        ServerSettings(payload_tokens={"bad name": SecretStr("x" * 16)})
