"""Slack's "Real incident" / "False alarm" buttons: signed requests to a real server, stored feedback.

The message comes from the real Slack receiver (posted to a loopback receiver); the click is what
Slack sends (``payload=<JSON>`` form-encoded, v0 signature over ``v0:timestamp:body``), posted with
a plain HTTP client to the daemon's uvicorn server; the updated message goes to a loopback
``response_url``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.web.incident import END, Incident, make_incident
from watcher.config import ReceiverSettings, Settings
from watcher.core import Alert, NotificationKind
from watcher.notify.receivers import build_receiver
from watcher.notify.templates import render_notification
from watcher.store.feedback import list_feedback
from watcher.web.app import ServerThread, build_app
from watcher.web.slack import signature

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's signing secrets are 32 hex-looking characters


def _with_secret(settings: Settings, secret: str | None) -> Settings:
    server = settings.server.model_copy(
        update={"slack_signing_secret": SecretStr(secret) if secret else None}
    )
    return settings.model_copy(update={"server": server})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Incident, str]]:
    inc = make_incident(tmp_path_factory.mktemp("slack"))
    inc.daemon.settings = _with_secret(inc.daemon.settings, SECRET)
    srv = ServerThread(build_app(inc.daemon), "127.0.0.1", 0).start()
    try:
        yield inc, f"http://127.0.0.1:{srv.port}"
    finally:
        srv.stop()
        inc.daemon.close()


def _alert(inc: Incident) -> Alert:
    fp = inc.fingerprint("ErrorRateHigh", tenant="acme")
    return next(a for ev in inc.daemon.evaluators.values() for a in ev.alerts() if a.fingerprint == fp)


def _message(settings: Settings, alert: Alert) -> dict[str, Any]:
    """Send ``alert`` through the real Slack receiver; return the Block Kit document it posted."""
    with HTTPReceiver() as hook:
        rs = ReceiverSettings(type="slack", url=SecretStr(hook.url + "/services/T/B/x"))
        n = render_notification(
            alert, kind=NotificationKind.FIRING, receiver="slack", settings=settings, rule_url="http://w/r"
        )
        build_receiver("slack", rs, settings).send(n)
        ((_, _, doc),) = hook.requests
    return dict(doc)


def _buttons(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in doc["blocks"] if b["type"] == "actions" for e in b["elements"]}


def _click(
    doc: dict[str, Any],
    action_id: str,
    response_url: str | None = None,
    user: str = "alice",
    value: str | None = None,
) -> bytes:
    """Return the form body Slack posts when ``user`` clicks ``action_id`` on ``doc``."""
    button = {**_buttons(doc)[action_id]}
    if value is not None:
        button["value"] = value
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0123", "username": user, "name": user, "team_id": "T0"},
        "api_app_id": "A0",
        "container": {"type": "message", "message_ts": "1.2"},
        "trigger_id": "1.2.3",
        "channel": {"id": "C0", "name": "oncall"},
        "message": {"type": "message", "text": doc["text"], "blocks": doc["blocks"]},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": button["value"]}],
    }
    if response_url:
        payload["response_url"] = response_url
    return urlencode({"payload": json.dumps(payload)}).encode()


def _post(base: str, body: bytes, *, ts: int, secret: str = SECRET, sig: str | None = None) -> httpx.Response:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sig or signature(secret, str(ts), body),
    }
    return httpx.post(base + "/api/v1/slack/interactions", content=body, headers=headers)


NOW = int(END.timestamp())  # the daemon's clock


def test_buttons_only_with_a_signing_secret(served: tuple[Incident, str]) -> None:
    inc, _ = served
    alert = _alert(inc)
    doc = _message(inc.daemon.settings, alert)
    buttons = _buttons(doc)
    assert alert.active_at is not None
    value = f"{alert.fingerprint}:{int(alert.active_at.timestamp())}"
    assert buttons["watcher-feedback-real"]["value"] == value == buttons["watcher-feedback-false"]["value"]
    assert buttons["watcher-feedback-real"]["text"]["text"] == "Real incident"
    assert "url" not in buttons["watcher-feedback-false"]  # an interactive button, not a link
    plain = _message(_with_secret(inc.daemon.settings, None), alert)
    assert not {"watcher-feedback-real", "watcher-feedback-false"} & set(_buttons(plain))


def test_a_click_is_stored_and_the_message_updated(served: tuple[Incident, str]) -> None:
    inc, base = served
    alert = _alert(inc)
    doc = _message(inc.daemon.settings, alert)
    with HTTPReceiver() as slack:
        r = _post(base, _click(doc, "watcher-feedback-false", slack.url + "/actions/T0/1/x"), ts=NOW - 30)
        assert r.status_code == 200, r.text
        reply = r.json()
        ((path, _, posted),) = slack.requests
    assert path == "/actions/T0/1/x" and posted == reply
    assert reply["replace_original"] is True and reply["text"] == doc["text"]
    assert not {"watcher-feedback-real", "watcher-feedback-false"} & set(_buttons(reply))
    assert "watcher-open-rule" in _buttons(reply)  # the other buttons stay
    assert (
        reply["blocks"][-1]["elements"][0]["text"] == "Marked a false alarm by alice at 2026-11-20T12:00:00Z"
    )
    (fb,) = [f for f in list_feedback(inc.daemon.store) if f.fingerprint == alert.fingerprint]
    assert (fb.verdict, fb.created_by, fb.episode_start) == ("false", "slack:alice", alert.active_at)
    # a second click changes the verdict of the same episode (no second row)
    r = _post(base, _click(doc, "watcher-feedback-real", user="<!channel>"), ts=NOW)
    assert r.status_code == 200
    assert "by &lt;!channel&gt; at" in r.json()["blocks"][-1]["elements"][0]["text"]  # escaped
    (fb,) = [f for f in list_feedback(inc.daemon.store) if f.fingerprint == alert.fingerprint]
    assert fb.verdict == "real"


def test_bad_signatures_are_401_malformed_bodies_400_never_5xx(served: tuple[Incident, str]) -> None:
    inc, base = served
    doc = _message(inc.daemon.settings, _alert(inc))
    body = _click(doc, "watcher-feedback-real")
    before = len(list_feedback(inc.daemon.store))
    refused = {
        "another secret": _post(base, body, ts=NOW, secret="not-the-signing-secret"),
        "stale (6 min old)": _post(base, body, ts=NOW - 360),
        "from the future": _post(base, body, ts=NOW + 360),
        "signature of another body": _post(base, body, ts=NOW, sig=signature(SECRET, str(NOW), body + b"x")),
        "no v0 prefix": _post(base, body, ts=NOW, sig=signature(SECRET, str(NOW), body)[3:]),
        "no headers": httpx.post(base + "/api/v1/slack/interactions", content=body),
    }
    for why, r in refused.items():
        assert r.status_code == 401, why
    assert "5 minutes" in refused["stale (6 min old)"].json()["detail"]
    assert _post(base, body, ts=NOW - 299).status_code == 200  # inside the window
    malformed = {
        "not a form": b"{}",
        "payload not JSON": b"payload=%7Bnope",
        "another type": urlencode({"payload": json.dumps({"type": "view_submission"})}).encode(),
        "someone else's button": body.replace(b"watcher-feedback-real", b"other-app-button"),
        "value names no alert": _click(doc, "watcher-feedback-real", value="zz:1"),
        "value without a start": _click(doc, "watcher-feedback-real", value=_alert(inc).fingerprint),
        "not UTF-8": b"payload=\xff\xfe",
    }
    for why, b in malformed.items():
        r = _post(base, b, ts=NOW)
        assert r.status_code == 400, (why, r.status_code, r.text)
    unknown = body.replace(_alert(inc).fingerprint.encode(), b"0" * 16)
    r = _post(base, unknown, ts=NOW)
    assert r.status_code == 200 and r.json()["response_type"] == "ephemeral"
    assert (
        len(list_feedback(inc.daemon.store)) == before + 0
        or len(list_feedback(inc.daemon.store)) == before + 1
    )


def test_without_a_signing_secret_the_route_is_off(served: tuple[Incident, str]) -> None:
    inc, _ = served
    daemon = inc.daemon
    saved = daemon.settings
    daemon.settings = _with_secret(saved, None)
    try:
        srv = ServerThread(build_app(daemon), "127.0.0.1", 0).start()
    finally:
        daemon.settings = saved
    try:
        body = _click(_message(saved, _alert(inc)), "watcher-feedback-real")
        r = _post(f"http://127.0.0.1:{srv.port}", body, ts=NOW)
        assert r.status_code == 403 and "server.slack_signing_secret" in r.json()["detail"]
    finally:
        srv.stop()


def test_the_replay_window_is_five_minutes() -> None:
    from watcher.web.slack import REPLAY_WINDOW, verify

    assert timedelta(minutes=5) == REPLAY_WINDOW
    body = b"payload=%7B%7D"
    ts = str(NOW)
    good = signature(SECRET, ts, body)
    assert good.startswith("v0=") and len(good) == 67
    assert verify(SECRET, ts, good, body, END) is None
    assert verify(SECRET, ts, good, body, END + timedelta(minutes=5, seconds=1)) is not None
    assert verify(SECRET, "12ab", good, body, END) is not None
