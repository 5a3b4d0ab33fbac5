"""An alert without exemplar trace IDs: its note and trace-search link in every kind of message."""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr

from tests.notify.factory import T0, firing, make_settings, resolved
from watcher.config import ReceiverSettings
from watcher.core import Alert, Notification, NotificationKind
from watcher.notify.document import notification_document
from watcher.notify.receivers.alertmanager import postable_alerts
from watcher.notify.receivers.console import render_lines
from watcher.notify.receivers.pagerduty import event
from watcher.notify.receivers.webhook import webhook_body
from watcher.notify.templates import TRACE_SEARCH_TEXT, render_notification

RULE_URL = "http://watcher.test/rules/llm-cost/SpendAnomaly"
NOTE = "no exemplars from Prometheus endpoint 'main' for 2026-11-26 14:04:00–14:30:00 UTC"
LINK = "http://jaeger.test/search?start=1795788240&end=1795789800&tags=%7B%22tenant%22%3A%22acme%22%7D"


def alert(**annotations: str) -> Alert:
    return firing(traces=(), annotations={"summary": "acme spends too much", **annotations})


def render(a: Alert, kind: NotificationKind = NotificationKind.FIRING) -> Notification:
    return render_notification(a, kind=kind, receiver="console", settings=make_settings(), rule_url=RULE_URL)


def test_body_says_no_exemplars_and_links_the_window_first() -> None:
    n = render(alert(no_exemplars=NOTE, trace_search=LINK))
    assert f"Traces: {NOTE} · [{TRACE_SEARCH_TEXT}]({LINK})" in n.body
    assert "Top traces" not in n.body and "- no_exemplars:" not in n.body and "- trace_search:" not in n.body
    assert n.links == ((TRACE_SEARCH_TEXT, LINK), ("rule SpendAnomaly", RULE_URL))
    assert n.lead.traces == () and notification_document(n)["traces"] == []
    notes = {"summary": "acme spends too much", "no_exemplars": NOTE, "trace_search": LINK}
    assert notification_document(n)["annotations"] == notes
    # the resolve says it too
    done = render(resolved(alert(no_exemplars=NOTE, trace_search=LINK), T0 + timedelta(minutes=40)),
                  NotificationKind.RESOLVED)  # fmt: skip
    assert f"Traces: {NOTE} · [{TRACE_SEARCH_TEXT}]({LINK})" in done.body


def test_note_without_a_configured_search_link() -> None:
    n = render(alert(no_exemplars=NOTE))
    assert f"Traces: {NOTE}\n\n" in n.body and TRACE_SEARCH_TEXT not in n.body
    assert n.links == (("rule SpendAnomaly", RULE_URL),)


def test_alert_with_traces_shows_no_note() -> None:
    n = render(firing())
    assert "Top traces:" in n.body and "Traces: " not in n.body
    assert all(text != TRACE_SEARCH_TEXT for text, _ in n.links)


def test_receivers_carry_the_note_and_the_link() -> None:
    n = render(alert(no_exemplars=NOTE, trace_search=LINK))
    (am,) = postable_alerts(n, timedelta(minutes=4))
    assert am["annotations"]["no_exemplars"] == NOTE and am["annotations"]["trace_search"] == LINK
    assert not any(k.startswith("trace_") and k != "trace_search" for k in am["annotations"])
    pd = event(n, "routing-key", ReceiverSettings(type="pagerduty", routing_key=SecretStr("routing-key")))
    assert pd["links"][0] == {"href": LINK, "text": TRACE_SEARCH_TEXT}
    assert pd["payload"]["custom_details"]["annotations"]["no_exemplars"] == NOTE
    hook = webhook_body(n)
    assert hook["annotations"]["trace_search"] == LINK and NOTE in hook["body"]
    text = [line.plain for line in render_lines(n)]
    assert f"  traces: {NOTE}" in text and f"  search {LINK}" in text
