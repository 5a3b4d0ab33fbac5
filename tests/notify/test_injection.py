"""Data-derived strings stay text in every receiver's markup (issue 18, findings 1 and 8).

A tenant, feature or model name comes from ingested data; posted as-is into a Slack message it pings
the channel (``<!channel>``) or shows a phishing link (``<https://evil|re-auth>``); in an HTML
message (e-mail, Teams) it is markup. The payloads are captured by a loopback receiver, exactly as
the service would get them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, firing, make_settings
from watcher.config import ReceiverSettings, RouteSettings
from watcher.core import NotificationKind, TraceRef
from watcher.notify.markup import md_code, md_link, md_text, safe_url
from watcher.notify.receivers import build_receiver
from watcher.notify.templates import render_notification

EVIL = "<!channel> <https://evil|re-auth> & [x](javascript:alert(1)) <img src=x onerror=alert(1)>"
RULE_URL = "http://watcher.test/rules/llm-cost/SpendAnomaly"
SLACK_URL = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#llm-alerts"
# What Slack must receive for EVIL inside mrkdwn: &, <, > as entities, no <…> anchor or mention.
EVIL_SLACK = (
    "&lt;!channel&gt; &lt;https://evil|re-auth&gt; &amp; [x](javascript:alert(1)) "
    "&lt;img src=x onerror=alert(1)&gt;"
)


@pytest.fixture
def slack(http_receiver: HTTPReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPReceiver]:
    from apprise.plugins.slack import NotifySlack

    monkeypatch.setattr(NotifySlack, "webhook_url", f"{http_receiver.url}/services")
    yield http_receiver


def _hostile_alert(**kw: Any) -> Any:
    defaults: dict[str, Any] = {
        "labels": {"tenant": EVIL, "model": "gpt`4o"},
        "annotations": {"summary": f"tenant {EVIL} spends too much", "runbook": EVIL},
        "traces": (TraceRef("4bf92f3577b34da6a3ce929d0e0e4736", None, 0.42, T0, f"note {EVIL}"),),
    }
    defaults.update(kw)
    return firing(**defaults)


def _send(url: str, alert: Any) -> None:
    rs = ReceiverSettings(type="apprise", urls=[SecretStr(url)], timeout_s=3)
    settings = make_settings(receivers={"r": rs}, route=RouteSettings(receivers=["r"]))
    n = render_notification(
        alert, kind=NotificationKind.FIRING, receiver="r", settings=settings, rule_url=RULE_URL
    )
    build_receiver("r", rs).send(n)


def _anchors(mrkdwn: str) -> list[str]:
    """Return every Slack control sequence <…> in a mrkdwn text (links, mentions)."""
    return re.findall(r"<[^<>]*>", mrkdwn)


def test_slack_gets_no_mention_and_no_foreign_link(slack: HTTPReceiver) -> None:
    _send(SLACK_URL, _hostile_alert())
    ((_, _, body),) = slack.requests
    text = body["attachments"][0]["text"]
    # The only anchors are ours: the trace deep link and the rule link.
    assert _anchors(text) == [
        "<http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736|trace 4bf92f35…>",
        f"<{RULE_URL}|llm-cost / SpendAnomaly>",
    ]
    assert f"tenant {EVIL_SLACK} spends too much" in text  # the summary
    assert f"· note {EVIL_SLACK}" in text  # the trace line
    assert f"- runbook: {EVIL_SLACK}" in text  # other annotations
    assert f"`tenant={EVIL_SLACK}`" in text  # the Labels line
    assert "``model=gpt`4o``" in text  # a backtick cannot close the code span early
    assert "<!channel>" not in json.dumps(body) and "<https://evil" not in json.dumps(body)


def test_slack_trace_search_javascript_is_not_a_link(slack: HTTPReceiver) -> None:
    alert = _hostile_alert(
        traces=(), annotations={"no_exemplars": "no exemplars", "trace_search": "javascript:alert(1)"}
    )
    _send(SLACK_URL, alert)
    ((_, _, body),) = slack.requests
    text = body["attachments"][0]["text"]
    assert "Traces: no exemplars\n" in text and "search traces" not in text
    assert "javascript:alert(1)|" not in text
    assert _anchors(text) == [f"<{RULE_URL}|llm-cost / SpendAnomaly>"]


def test_slack_trace_search_https_is_a_link(slack: HTTPReceiver) -> None:
    search = "https://jaeger.test/search?start=1&end=2"
    alert = _hostile_alert(traces=(), annotations={"no_exemplars": "none", "trace_search": search})
    _send(SLACK_URL, alert)
    ((_, _, body),) = slack.requests
    assert (
        "<https://jaeger.test/search?start=1&amp;end=2|search traces in the alert's window>"
        in (body["attachments"][0]["text"])
    )


def test_html_receivers_get_entities_not_tags(http_receiver: HTTPReceiver) -> None:
    """``json://…?format=html`` runs Apprise's Markdown → HTML, as e-mail and Teams do."""
    _send(f"json://127.0.0.1:{http_receiver.port}/h?format=html", _hostile_alert())
    ((_, _, body),) = http_receiver.requests
    html = body["message"]
    assert re.findall(r"<a [^>]*>", html) == [
        '<a href="http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736">',
        f'<a href="{RULE_URL}">',
    ]
    assert "<img" not in html and "javascript:alert(1)</a>" not in html
    assert "tenant &lt;!channel&gt; &lt;https://evil|re-auth&gt; &amp; [x](javascript:alert(1)) " in html
    assert "&lt;img src=x onerror=alert(1)&gt; spends too much" in html


def test_markdown_receivers_get_backslash_escapes(http_receiver: HTTPReceiver) -> None:
    _send(f"json://127.0.0.1:{http_receiver.port}/m", _hostile_alert())
    ((_, _, body),) = http_receiver.requests
    md = body["message"]
    assert (
        "tenant \\<!channel\\> \\<https://evil|re-auth\\> & \\[x\\](javascript:alert(1)) "
        "\\<img src=x onerror=alert(1)\\> spends too much"
    ) in md
    outside_code = re.sub(r"(`+).*?\1", "", md)
    assert "](javascript" not in outside_code.replace("\\](javascript", "")


def test_custom_body_template_outputs_are_escaped() -> None:
    rs = ReceiverSettings(
        type="console",
        body_template="{{ labels.tenant }} · {{ default_body | length > 0 }}\n\n{{ default_body }}",
    )
    settings = make_settings(receivers={"r": rs}, route=RouteSettings(receivers=["r"]))
    n = render_notification(
        _hostile_alert(),
        kind=NotificationKind.FIRING,
        receiver="r",
        settings=settings,
        rule_url=RULE_URL,
        body_template=rs.body_template,
    )
    first = n.body.split("\n")[0]
    assert first == md_text(EVIL) + " · True"
    assert f"[trace 4bf92f35…](http://jaeger.test/trace/{'4bf92f3577b34da6a3ce929d0e0e4736'})" in n.body


def test_links_for_pagerduty_are_http_only() -> None:
    alert = _hostile_alert(traces=(), annotations={"trace_search": "javascript:alert(1)"})
    settings = make_settings()
    n = render_notification(
        alert, kind=NotificationKind.FIRING, receiver="console", settings=settings, rule_url=RULE_URL
    )
    assert n.links == ((f"rule {alert.rule}", RULE_URL),)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://jaeger/trace/1", True),
        ("http://x.test/a?b=c&d=e", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("data:text/html,<script>", False),
        ("vbscript:x", False),
        ("//evil.test/x", False),
        ("/relative", False),
        ("https://evil|re-auth", False),
        ("https://a.test/\nx", False),
        ("https://a.test/<x>", False),
        ("", False),
        ("http://", False),
    ],
)
def test_safe_url(url: str, ok: bool) -> None:
    assert (safe_url(url) == url) is ok


def test_md_helpers() -> None:
    assert md_text("a<b>[c](d)`e`\\") == "a\\<b\\>\\[c\\](d)\\`e\\`\\\\"
    assert md_text("line1\nline2") == "line1 line2"
    assert md_text("line1\nline2", multiline=True) == "line1\nline2"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`") == "`` ` ``"
    assert md_link("x]", "javascript:1") == "x\\]"
    assert md_link("t", "https://a.test/(x)") == "[t](https://a.test/%28x%29)"


def test_status_page_never_links_a_javascript_trace_search(tmp_path: Any) -> None:
    from watcher.web.page import make_env

    env = make_env()
    tpl = env.from_string('{% import "macros.html" as m %}{{ m.alert_card(a, chart=false) }}')
    a = {
        "state": "firing",
        "fingerprint": "f",
        "rule": "R",
        "group": "g",
        "labels": {"tenant": EVIL},
        "value": 1.0,
        "expected": 1.0,
        "lower": 0.0,
        "upper": 2.0,
        "score": 0.5,
        "activeAt": None,
        "firingAt": None,
        "annotations": {"trace_search": "javascript:alert(1)"},
        "traces": [{"trace_id": "abc", "url": "javascript:alert(2)", "value": None, "note": EVIL}],
    }
    html = tpl.render(a=a)
    assert 'href="javascript' not in html and "<img" not in html
    assert "javascript:alert(1)" in html  # shown as text
