"""Hostile HTTP requests: every invalid request is a 4xx with a reason, never a 5xx, a traceback or
a secret (issue 18, findings 2, 5 and the ingest time bounds of issue 16).

Each row is one request against the real app of a real daemon (SQLite store, the daemon's clock).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.web import test_page as test_status
from tests.web.test_page import ADMIN_AUTH, ADMIN_TOKEN, AUTH, DB_PASSWORD, NOW, TOKEN, make_daemon
from watcher.web.app import build_app

T = "4bf92f3577b34da6a3ce929d0e0e4736"
CALL = {"trace_id": T, "model": "gpt-4o", "tenant": "acme"}
SCORE = {"trace_id": T, "name": "groundedness", "value": 0.5}
FEEDBACK = {"trace_id": T, "positive": True}
SECRETS = [TOKEN, ADMIN_TOKEN, DB_PASSWORD, "T0PSECRET-webhook-path"]


def _with(base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {**base, **kw}


# (id, method, path, json body or raw bytes, extra headers or None for the token, expected status)
BAD: list[tuple[str, str, str, Any, dict[str, str] | None, int]] = []


def _bad(
    name: str, method: str, path: str, body: Any, status: int, headers: dict[str, str] | None = None
) -> None:
    BAD.append((name, method, path, body, headers, status))


# Shifted out-of-range timestamps (500 before), on every ingest route, alone and in a list.
for route, base in (("calls", CALL), ("scores", SCORE), ("feedback", FEEDBACK)):
    for ts in (
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+01:00",
        "10000-01-01T00:00:00Z",
        "2026-13-01T00:00:00Z",
    ):
        _bad(f"{route}-ts-{ts}", "POST", f"/api/v1/{route}", _with(base, ts=ts), 422)
    _bad(
        f"{route}-ts-list",
        "POST",
        f"/api/v1/{route}",
        [base, _with(base, ts="9999-12-31T23:59:59-23:59")],
        422,
    )
    # The ingest time bounds: far future, older than retention, a number instead of a string.
    _bad(f"{route}-future", "POST", f"/api/v1/{route}", _with(base, ts="2027-01-01T00:00:00Z"), 422)
    _bad(f"{route}-year-9999", "POST", f"/api/v1/{route}", _with(base, ts="9999-01-01T00:00:00Z"), 422)
    _bad(f"{route}-too-old", "POST", f"/api/v1/{route}", _with(base, ts="2001-01-01T00:00:00Z"), 422)
    _bad(f"{route}-unix-ts", "POST", f"/api/v1/{route}", _with(base, ts=1796651413), 422)
    _bad(f"{route}-not-json", "POST", f"/api/v1/{route}", b"{not json", 422)
    _bad(f"{route}-empty", "POST", f"/api/v1/{route}", b"", 422)
    _bad(f"{route}-no-token", "POST", f"/api/v1/{route}", base, 401, {})
    _bad(f"{route}-bad-token", "POST", f"/api/v1/{route}", base, 401, {"Authorization": "Bearer nope"})
    _bad(f"{route}-extra-field", "POST", f"/api/v1/{route}", _with(base, surprise=1), 422)
    _bad(f"{route}-nul-trace", "POST", f"/api/v1/{route}", _with(base, trace_id="a\x00b"), 422)
    _bad(f"{route}-huge-trace", "POST", f"/api/v1/{route}", _with(base, trace_id="a" * 100_000), 422)
    _bad(f"{route}-tenant-list", "POST", f"/api/v1/{route}", _with(base, tenant=["a"]), 422)
    _bad(f"{route}-null-body", "POST", f"/api/v1/{route}", None, 422)

# Schema and server agree: strict numbers and booleans (lax mode took these).
for field, value in (
    ("duration_s", False),
    ("duration_s", "1.5"),
    ("ttft_s", True),
    ("input_tokens", "3"),
    ("input_tokens", 2.0),
    ("output_tokens", True),
    ("cost_usd", "0.1"),
    ("cost_usd", float("nan")),
    ("tokens_estimated", 1),
    ("tokens_estimated", "yes"),
    ("duration_s", -1),
    ("duration_s", 1e300),
    ("input_tokens", 2**40),
    ("outcome", "exploded"),
):
    _bad(f"calls-{field}-{value!r}", "POST", "/api/v1/calls", _with(CALL, **{field: value}), 422)
for field, value in (("value", True), ("value", "0.5"), ("value", 1e13), ("source", "oracle")):
    _bad(f"scores-{field}-{value!r}", "POST", "/api/v1/scores", _with(SCORE, **{field: value}), 422)
for value in (1, "true", None):
    _bad(f"feedback-positive-{value!r}", "POST", "/api/v1/feedback", _with(FEEDBACK, positive=value), 422)

# Silences.
SIL = {"matchers": ["tenant=acme"], "duration": "1h"}
for name, body in (
    ("duration-overflow", _with(SIL, duration="99999999999d")),
    ("duration-10000000w", _with(SIL, duration="10000000w")),
    ("duration-negative", _with(SIL, duration="-1h")),
    ("duration-number", _with(SIL, duration=3600)),
    ("too-long", _with(SIL, duration="400d")),
    ("ends-9999-shifted", {"matchers": ["tenant=acme"], "endsAt": "9999-12-31T23:59:59-23:59"}),
    (
        "starts-0001-shifted",
        {"matchers": ["tenant=acme"], "startsAt": "0001-01-01T00:00:00+01:00", "duration": "1h"},
    ),
    ("ends-in-past", {"matchers": ["tenant=acme"], "endsAt": "2001-01-01T00:00:00Z"}),
    ("regex-backtracking-backref", {"matchers": ["tenant=~(a)\\1"], "duration": "1h"}),
    ("regex-lookahead", {"matchers": [{"name": "tenant", "op": "=~", "value": "(?=a)a"}], "duration": "1h"}),
    ("regex-unbalanced", {"matchers": ["tenant=~(a"], "duration": "1h"}),
    ("match-all", {"matchers": ["tenant=~.*"], "duration": "1h"}),
    ("match-all-empty", {"matchers": ['tenant=""'], "duration": "1h"}),
    ("no-matchers", {"matchers": [], "duration": "1h"}),
    ("nul-comment", _with(SIL, comment="a\x00b")),
    ("bad-matcher-text", {"matchers": ["no operator"], "duration": "1h"}),
    ("bad-label-name", {"matchers": [{"name": "1x", "value": "a"}], "duration": "1h"}),
    (
        "both-end-and-duration",
        {"matchers": ["tenant=acme"], "duration": "1h", "endsAt": "2026-11-21T00:00:00Z"},
    ),
):
    _bad(f"silence-{name}", "POST", "/api/v1/silences", body, 422)
_bad("silence-no-token", "POST", "/api/v1/silences", SIL, 401, {})
_bad("silence-delete-missing", "DELETE", "/api/v1/silences/nope", None, 404)

# Reads and the page.
_bad("alerts-bad-state", "GET", "/api/v1/alerts?state=exploded", None, 422)
_bad("silences-bad-flag", "GET", "/api/v1/silences?include_expired=maybe", None, 422)
_bad("rule-page-missing", "GET", "/rules/nope/Nope", None, 404)
_bad("chart-missing", "GET", "/chart/alert/nope.png", None, 404)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    daemon, _, _ = make_daemon(tmp, NOW)
    daemon.run_once(NOW, drain_s=0)
    with TestClient(build_app(daemon), raise_server_exceptions=False) as c:
        yield c
    daemon.close()


def test_there_are_at_least_sixty_bad_requests() -> None:
    assert len(BAD) >= 60
    assert len({b[0] for b in BAD}) == len(BAD)


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "headers", "status"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_request_is_a_4xx_with_a_reason(
    client: TestClient,
    name: str,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
) -> None:
    token = ADMIN_AUTH if path.startswith("/api/v1/silences") else AUTH  # silence writes: scope admin
    hdrs = dict(token if headers is None else headers)
    if isinstance(body, bytes):
        r = client.request(method, path, content=body, headers={**hdrs, "Content-Type": "application/json"})
    elif body is None and method == "POST":
        r = client.request(
            method, path, content=b"null", headers={**hdrs, "Content-Type": "application/json"}
        )
    elif body is None:
        r = client.request(method, path, headers=hdrs)
    else:
        r = client.request(
            method,
            path,
            content=json.dumps(body, allow_nan=True),
            headers={**hdrs, "Content-Type": "application/json"},
        )
    assert r.status_code == status, (name, r.status_code, r.text[:500])
    assert "Traceback" not in r.text
    for secret in SECRETS:
        assert secret not in r.text
    if status == 422:
        assert r.json()["detail"], r.text  # says why


def test_time_bounds_say_why(client: TestClient) -> None:
    r = client.post("/api/v1/calls", json=_with(CALL, ts="2027-01-01T00:00:00Z"), headers=AUTH)
    (problem,) = r.json()["detail"]
    assert problem["type"] == "timestamp_in_future" and problem["loc"] == ["body", "ts"]
    assert "server.ingest_max_future" in problem["msg"] and "in the future" in problem["msg"]
    r = client.post("/api/v1/scores", json=[SCORE, _with(SCORE, ts="2001-01-01T00:00:00Z")], headers=AUTH)
    (problem,) = r.json()["detail"]
    assert problem["type"] == "timestamp_too_old" and problem["loc"] == ["body", 1, "ts"]
    assert "retention.scores" in problem["msg"]


def test_within_the_skew_is_accepted(client: TestClient) -> None:
    ahead = "2026-11-20T12:09:00Z"  # NOW + 8.5 min: clock skew, accepted
    for route, base in (("calls", CALL), ("scores", SCORE), ("feedback", FEEDBACK)):
        r = client.post(f"/api/v1/{route}", json=_with(base, ts=ahead), headers=AUTH)
        assert r.status_code == 200, r.text


assert test_status  # the daemon fixture's module
