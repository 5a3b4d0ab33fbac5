"""``POST /api/v1/slack/interactions``: the "Real incident" / "False alarm" buttons of Slack messages.

This module owns Slack's request signature (v0: ``v0=`` + hex HMAC-SHA256 of ``v0:TIMESTAMP:BODY``
under ``server.slack_signing_secret``, the timestamp within five minutes of the daemon's clock),
reading the ``block_actions`` payload (a form field ``payload`` holding JSON), recording the verdict
through the feedback store, and the reply: the message with the feedback buttons replaced by who
marked it how, as the request's answer and, when Slack gives one, posted to ``response_url``.
It does not own the buttons (``notify.receivers.slack``) nor the storage (``store.feedback``).

Answers: 200 with the updated message; 401 for a missing, stale or wrong signature; 400 for a
body that is not a ``block_actions`` payload with one of our buttons; 403 when no signing secret
is set. A store failure or an alert watcher no longer knows is said in a 200 reply that Slack
shows only to the person who clicked, so Slack never sees a 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..core import Alert, iso
from ..errors import WatcherError
from ..notify.markup import safe_url, slack_text
from ..notify.receivers.slack import FEEDBACK_BUTTONS
from ..store.db import Store
from ..store.feedback import record

log = logging.getLogger(__name__)

REPLAY_WINDOW = timedelta(minutes=5)
"""Slack's advice: refuse a request whose timestamp is further than this from the clock."""
ACTIONS = {
    action: verdict
    for verdict, action in (("real", FEEDBACK_BUTTONS[0][1]), ("false", FEEDBACK_BUTTONS[1][1]))
}
"""The buttons' ``action_id`` and the verdict each records."""
SHOWN = {"real": "a real incident", "false": "a false alarm"}
MAX_BODY = 64 * 1024
RESPONSE_URL_TIMEOUT_S = 2.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return Slack's v0 signature of ``body`` sent at ``timestamp`` (``v0=<hex>``)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, sig: str | None, body: bytes, now: datetime) -> str | None:
    """Return why the request is not from Slack (None when it is)."""
    if not timestamp or not sig:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    if not timestamp.isdigit() or len(timestamp) > 12:
        return "X-Slack-Request-Timestamp is not a Unix time"
    if abs(now.timestamp() - int(timestamp)) > REPLAY_WINDOW.total_seconds():
        return "X-Slack-Request-Timestamp is more than 5 minutes from the server's clock"
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), sig.encode()):
        return "X-Slack-Signature does not match"
    return None


def _parse(body: bytes) -> tuple[dict[str, Any], str, str, int]:
    """Return (payload, verdict, fingerprint, episode start) or raise ``ValueError`` saying why."""
    fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
    raw = fields.get("payload")
    if not raw:
        raise ValueError("no payload field (Slack posts payload=<JSON> form-encoded)")
    payload = json.loads(raw[0])
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise ValueError("not a block_actions payload")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise ValueError("no actions in the payload")
    action = actions[0]
    verdict = ACTIONS.get(str(action.get("action_id")))
    if verdict is None:
        raise ValueError("not a watcher feedback button")
    fingerprint, _, start = str(action.get("value") or "").partition(":")
    if not (0 < len(fingerprint) <= 32 and all(c in "0123456789abcdef" for c in fingerprint)):
        raise ValueError("the button's value names no alert")
    if not start.isdigit() or len(start) > 12:
        raise ValueError("the button's value has no episode start")
    return payload, verdict, fingerprint, int(start)


def _who(payload: dict[str, Any]) -> str:
    user = payload.get("user")
    if not isinstance(user, dict):
        return "someone"
    return str(user.get("username") or user.get("name") or user.get("id") or "someone")[:100]


def updated_message(payload: dict[str, Any], line: str) -> dict[str, Any]:
    """Return the clicked message with the feedback buttons replaced by ``line`` (mrkdwn)."""
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    assert isinstance(message, dict)
    blocks = message.get("blocks") if isinstance(message.get("blocks"), list) else []
    assert isinstance(blocks, list)
    kept: list[Any] = []
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "actions":
            elements = [
                e
                for e in block.get("elements") or []
                if not (isinstance(e, dict) and e.get("action_id") in ACTIONS)
            ]
            if not elements:
                continue
            block = {**block, "elements": elements}
        kept.append(block)
    kept.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line, "verbatim": True}]})
    text = str(message.get("text") or line)
    return {"replace_original": True, "text": text, "blocks": kept[:50]}


def _ephemeral(text: str) -> JSONResponse:
    return JSONResponse({"response_type": "ephemeral", "replace_original": False, "text": text})


def add_slack_routes(
    app: FastAPI,
    store: Store,
    clock: Callable[[], datetime],
    secret: Callable[[], str | None],
    lookup: Callable[[str], Alert | None],
    denied: Callable[[str], None] | None = None,
) -> None:
    """Add ``POST /api/v1/slack/interactions`` to ``app``.

    ``secret()`` returns the signing secret (None: the route answers 403), ``lookup(fingerprint)``
    the alert the daemon holds or still keeps in the store, ``denied(reason)`` counts a refusal.
    """

    @app.post("/api/v1/slack/interactions", tags=["alerts"], responses={400: {}, 401: {}, 403: {}})
    async def slack_interaction(request: Request) -> JSONResponse:
        """Record a verdict from a Slack message's "Real incident" / "False alarm" button."""
        key = secret()
        if not key:
            raise HTTPException(403, "Slack interactions are off: set server.slack_signing_secret")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(413, "request too large")
        now = clock()
        why = verify(
            key,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
            body,
            now,
        )
        if why is not None:
            if denied is not None:
                denied("slack_signature")
            raise HTTPException(401, why)
        try:
            payload, verdict, fingerprint, start = _parse(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"malformed Slack interaction: {exc}"[:300]) from None
        # the store and the reply to response_url block: off the event loop
        return await run_in_threadpool(answer, payload, verdict, fingerprint, start, now)

    def answer(
        payload: dict[str, Any], verdict: str, fingerprint: str, start: int, now: datetime
    ) -> JSONResponse:
        try:
            alert = lookup(fingerprint)
        except Exception as exc:  # a store outage must not answer Slack with a 5xx
            log.warning("slack: looking up alert %s failed: %s", fingerprint, type(exc).__name__)
            return _ephemeral("watcher could not record this right now; try again in a minute.")
        if alert is None:
            return _ephemeral("watcher no longer holds this alert; mark it with `watcher feedback mark`.")
        who = _who(payload)
        episode = datetime.fromtimestamp(start, UTC)
        try:
            record(store, alert=alert, verdict=verdict, who=f"slack:{who}", now=now, episode_start=episode)
        except (ValueError, WatcherError) as exc:
            log.warning("slack: recording feedback on %s failed: %s", fingerprint, exc)
            return _ephemeral("watcher could not record this right now; try again in a minute.")
        log.info("alert %s %s marked %s from Slack by %s", alert.rule, fingerprint, verdict, who)
        line = f"Marked {SHOWN[verdict]} by {slack_text(who)} at {iso(now)}"
        reply = updated_message(payload, line)
        url = payload.get("response_url")
        if isinstance(url, str) and safe_url(url):
            try:
                httpx.post(url, json=reply, timeout=RESPONSE_URL_TIMEOUT_S, follow_redirects=False)
            except httpx.HTTPError as exc:  # the verdict is stored; the message just stays as it was
                log.warning("slack: updating the message failed: %s", type(exc).__name__)
        return JSONResponse(reply)


__all__ = [
    "ACTIONS",
    "REPLAY_WINDOW",
    "add_slack_routes",
    "signature",
    "updated_message",
    "verify",
]
