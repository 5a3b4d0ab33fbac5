"""PagerDuty, webhook, Alertmanager and Slack (Apprise) receivers against real loopback HTTP servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlmodel import select

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore, firing, make_settings, resolved
from tests.notify.secrets import assert_no_secret
from watcher.config import ReceiverSettings, RouteSettings, Settings
from watcher.core import NotificationKind
from watcher.errors import NotifyError
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers import build_receiver
from watcher.notify.receivers.pagerduty import map_severity
from watcher.notify.templates import render_notification
from watcher.store.tables import OutboxRow

M = timedelta(minutes=1)
H = timedelta(hours=1)
ROUTING_KEY = "R0ut1ngKeyS3cr3t0000000000000000"
HOOK_SECRET = "HmacS3cr3tValue"
RULE_URL = "http://watcher.test/rules/llm-cost/SpendAnomaly"
TRACE_URL = "http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736"


def _settings(name: str, rs: ReceiverSettings) -> Settings:
    return make_settings(receivers={name: rs}, route=RouteSettings(receivers=[name]))


def _rows(store: SqliteStore) -> list[OutboxRow]:
    with store.session() as s:
        return list(s.exec(select(OutboxRow).order_by(OutboxRow.id)).all())  # type: ignore[arg-type]


def _pd(url: str, **kw: Any) -> ReceiverSettings:
    return ReceiverSettings(type="pagerduty", routing_key=SecretStr(ROUTING_KEY), url=SecretStr(url), **kw)


def test_pagerduty_trigger_and_resolve_share_the_dedup_key(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    alert = firing(labels={"tenant": "acme", "severity": "page", "model": "gpt-4o"})
    notifier = Notifier(store, _settings("pd", _pd(f"{http_receiver.url}/v2/enqueue")))
    notifier.submit([(alert, [])], T0)
    assert notifier.flush(T0).sent == 1
    notifier.submit([(resolved(alert, T0 + H), [])], T0 + H)
    assert notifier.flush(T0 + H).sent == 1
    (p1, h1, trigger), (p2, _, resolve) = http_receiver.requests
    assert p1 == p2 == "/v2/enqueue" and h1["Content-Type"] == "application/json"
    assert trigger["routing_key"] == ROUTING_KEY and trigger["event_action"] == "trigger"
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    payload = trigger["payload"]
    assert payload["severity"] == "critical"  # severity=page mapped
    assert payload["summary"].startswith("[FIRING] SpendAnomaly") and payload["class"] == "SpendAnomaly"
    assert payload["component"] == "gpt-4o" and payload["timestamp"] == "2026-11-26T14:05:00Z"
    details = payload["custom_details"]
    assert details["value"] == pytest.approx(12.3456) and details["expected"] == 1.2
    assert details["band"] == [0.8, 2.1] and details["labels"]["tenant"] == "acme"
    hrefs = [link["href"] for link in trigger["links"]]
    assert hrefs[0] == TRACE_URL and hrefs[-1] == RULE_URL
    assert trigger["client_url"] == RULE_URL


@pytest.mark.parametrize(
    ("value", "expected"),
    [("page", "critical"), ("warning", "warning"), ("ticket", "warning"), ("zzz", "error")],
)
def test_pagerduty_severity_mapping(value: str, expected: str) -> None:
    rs = _pd("http://127.0.0.1:9/")
    assert map_severity({"severity": value}, rs) == expected


@pytest.mark.parametrize(
    ("status", "outcome", "reason"),
    [
        (400, "dead", "client_error"),
        (429, "pending", "rate_limited"),
        (503, "pending", "server_error"),
        (202, "sent", None),
    ],
)
def test_pagerduty_status_classes(
    store: SqliteStore, http_receiver: HTTPReceiver, status: int, outcome: str, reason: str | None
) -> None:
    http_receiver.set_statuses([status])
    notifier = Notifier(store, _settings("pd", _pd(http_receiver.url)))
    notifier.submit([(firing(), [])], T0)
    notifier.flush(T0)
    (row,) = _rows(store)
    assert (row.status, row.last_reason) == (outcome, reason)


def test_webhook_is_signed_and_redelivery_keeps_the_notification_id(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([500, 200])
    rs = ReceiverSettings(
        type="webhook", url=SecretStr(f"{http_receiver.url}/in"), secret=SecretStr(HOOK_SECRET)
    )
    notifier = Notifier(store, _settings("hook", rs), rng=random.Random(1))
    notifier.submit([(firing(), [])], T0)
    assert notifier.flush(T0).failed == 1
    assert notifier.flush(T0 + M).sent == 1
    (_, h1, b1), (_, h2, b2) = http_receiver.requests
    assert b1 == b2 and b1["notification_id"] == h1["X-Watcher-Notification-Id"]
    assert len(b1["notification_id"]) == 32
    raw = json.dumps(b2, sort_keys=True, separators=(",", ":")).encode()
    expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert h2["X-Watcher-Signature"] == expected
    assert b1["status"] == "firing" and b1["alertname"] == "SpendAnomaly" and b1["receiver"] == "hook"
    assert b1["traces"][0]["url"] == TRACE_URL and b1["rule_url"] == RULE_URL
    assert {"title", "body", "value", "expected", "lower", "upper", "labels", "dedup_key", "version"} <= set(
        b1
    )


def test_alertmanager_firing_repeat_and_resolve(store: SqliteStore, http_receiver: HTTPReceiver) -> None:
    rs = ReceiverSettings(type="alertmanager", url=SecretStr(http_receiver.url))
    notifier = Notifier(store, _settings("am", rs))
    alert = firing()
    for at in (0 * M, 30 * M // 60, M):  # repeat_interval for this type defaults to 1m
        notifier.submit([(alert, [])], T0 + at)
        notifier.flush(T0 + at)
    notifier.submit([(resolved(alert, T0 + 2 * M), [])], T0 + 2 * M)
    notifier.flush(T0 + 2 * M)
    reqs = http_receiver.requests
    assert [p for p, _, _ in reqs] == ["/api/v2/alerts"] * 3
    (first,), (repeat,), (done,) = (b for _, _, b in reqs)
    assert first["labels"] == {"alertname": "SpendAnomaly", "tenant": "acme"}
    assert first["annotations"]["summary"] == "acme spends too much"
    assert first["annotations"]["trace_1"] == TRACE_URL and first["generatorURL"] == RULE_URL
    assert first["startsAt"] == "2026-11-26T14:05:00Z" and first["endsAt"] > first["startsAt"]
    assert repeat["annotations"]["watcher_notification_id"] != first["annotations"]["watcher_notification_id"]
    assert done["endsAt"] == "2026-11-26T14:07:00Z"


def test_alertmanager_real_server_accepts_the_alerts(store: SqliteStore, alertmanager: Any) -> None:
    import httpx

    rs = ReceiverSettings(type="alertmanager", url=SecretStr(alertmanager.url))
    notifier = Notifier(store, _settings("am", rs))
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    notifier.submit([(firing(active_at=now - M, now=now), [])], now)
    assert notifier.flush(now).sent == 1
    got = httpx.get(f"{alertmanager.url}/api/v2/alerts", timeout=5).json()
    (a,) = [x for x in got if x["labels"].get("alertname") == "SpendAnomaly"]
    assert a["labels"]["tenant"] == "acme" and a["generatorURL"] == RULE_URL
    assert a["annotations"]["trace_1"] == TRACE_URL


@pytest.fixture
def slack(http_receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPReceiver]:
    """Point Apprise's Slack plugin (webhook and bot API) at the loopback receiver."""
    from apprise.plugins.slack import NotifySlack

    monkeypatch.setattr(NotifySlack, "webhook_url", f"{http_receiver.url}/services")
    monkeypatch.setattr(NotifySlack, "api_url", f"{http_receiver.url}/api/{{}}")
    yield http_receiver


SLACK_URL = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#llm-alerts"


def test_slack_webhook_gets_trigger_and_resolve_with_slack_links(
    store: SqliteStore, slack: HTTPReceiver
) -> None:
    rs = ReceiverSettings(type="apprise", urls=[SecretStr(SLACK_URL)], timeout_s=3)
    notifier = Notifier(store, _settings("slack", rs))
    notifier.submit([(firing(), [])], T0)
    notifier.submit([(resolved(firing(), T0 + H), [])], T0 + H)
    assert notifier.flush(T0 + H).sent == 2
    (p1, _, fire), (_, _, done) = slack.requests
    assert p1 == "/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    assert fire["channel"] == "#llm-alerts"
    text = json.dumps(fire, ensure_ascii=False)
    assert f"<{TRACE_URL}|trace 4bf92f35…>" in text and f"<{RULE_URL}|" in text
    assert "[FIRING] SpendAnomaly" in text
    assert "[RESOLVED] SpendAnomaly" in json.dumps(done) and "lasted 1 h" in json.dumps(done)


FAILURES = [500, 400]


@pytest.mark.parametrize("status", FAILURES)
@pytest.mark.parametrize("kind", ["apprise", "pagerduty", "webhook", "alertmanager"])
def test_no_receiver_leaks_its_secrets(
    store: SqliteStore, http_receiver: HTTPReceiver, caplog: pytest.LogCaptureFixture, kind: str, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    http_receiver.set_statuses([status])
    base = f"http://u53r:Pa55w0rdXyz@127.0.0.1:{http_receiver.port}"
    rs = {
        "apprise": lambda: ReceiverSettings(
            type="apprise",
            urls=[SecretStr(f"json://127.0.0.1:{http_receiver.port}/h/{HOOK_SECRET}?token=T0kenXyz")],
        ),
        "pagerduty": lambda: _pd(f"{http_receiver.url}/v2/enqueue"),
        "webhook": lambda: ReceiverSettings(
            type="webhook",
            url=SecretStr(f"{http_receiver.url}/h/{HOOK_SECRET}?token=T0kenXyz"),
            secret=SecretStr(HOOK_SECRET),
        ),
        "alertmanager": lambda: ReceiverSettings(type="alertmanager", url=SecretStr(base)),
    }[kind]()
    secrets = {
        "apprise": [HOOK_SECRET, "T0kenXyz"],
        "pagerduty": [ROUTING_KEY],
        "webhook": [HOOK_SECRET, "T0kenXyz"],
        "alertmanager": ["Pa55w0rdXyz"],
    }[kind]
    settings = _settings("r", rs)
    receiver = build_receiver("r", rs)
    n = render_notification(
        firing(), kind=NotificationKind.FIRING, receiver="r", settings=settings, rule_url=RULE_URL
    )
    with pytest.raises(NotifyError) as info:
        receiver.send(n)
    assert info.value.retryable is (status == 500)
    notifier = Notifier(store, settings, {"r": receiver})
    notifier.submit([(firing(), [])], T0)
    notifier.flush(T0)
    (row,) = _rows(store)
    for text in (
        str(info.value),
        repr(info.value),
        row.last_error or "",
        repr(settings),
        str(settings.model_dump()),
        caplog.text,
        str(getattr(receiver, "last_response", "") or ""),
    ):
        assert_no_secret(text, secrets)
    assert len(http_receiver.requests) == 2


def test_apprise_pagerduty_url_resolves_the_incident_it_triggered(
    store: SqliteStore, http_receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apprise.plugins import pagerduty

    for region in list(pagerduty.PAGERDUTY_API_LOOKUP):
        monkeypatch.setitem(pagerduty.PAGERDUTY_API_LOOKUP, region, f"{http_receiver.url}/v2/enqueue")
    monkeypatch.setattr(pagerduty.NotifyPagerDuty, "request_rate_per_sec", 0)  # Apprise waits 5.5 s otherwise
    http_receiver.set_statuses([202])
    url = f"pagerduty://{ROUTING_KEY}@ApiK3yS3cr3tApiK3y"
    rs = ReceiverSettings(type="apprise", urls=[SecretStr(url)], timeout_s=3)
    notifier = Notifier(store, _settings("pd", rs))
    alert = firing()
    notifier.submit([(alert, [])], T0)
    notifier.submit([(resolved(alert, T0 + H), [])], T0 + H)
    assert notifier.flush(T0 + H).sent == 2
    (p1, _, trigger), (_, _, resolve) = http_receiver.requests
    assert p1 == "/v2/enqueue" and trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == _rows(store)[0].dedup_key
    assert trigger["payload"]["summary"].startswith("[FIRING] SpendAnomaly")
    # The plugin is left as configured: the next notification gets its own key again.
    (plugin,) = list(notifier.receivers["pd"]._apprise)  # type: ignore[attr-defined]
    assert (plugin.action, plugin.dedup) == ("trigger", None)
