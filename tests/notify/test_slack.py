"""The Slack receiver: Block Kit messages posted to a real loopback endpoint (issue 21).

Each message is checked against Block Kit's rules and limits (``assert_block_kit``), hostile label
values, annotations and trace notes must reach Slack as text (never a mention, link or date), and
the message carries value vs band, since when, trace links, the chart from ``public_url`` and
buttons that open the rule and a prefilled silence.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore, firing, make_settings, resolved
from tests.notify.secrets import assert_no_secret
from watcher.config import ReceiverSettings, RouteSettings, Settings
from watcher.core import NotificationKind, TraceRef
from watcher.errors import NotifyError
from watcher.notify.markup import slack_code, slack_link, slack_text
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers import build_receiver
from watcher.notify.receivers.slack import LIMITS, blocks, fit
from watcher.notify.silences import matches_all, parse_matcher
from watcher.notify.templates import render_notification

H = timedelta(hours=1)
HOOK_PATH = "/services/T0SECRET/B0SECRET/XoXoS3cr3tToken"
PUBLIC = "https://watcher.example.com"
HOSTILE = {
    "tenant": "<!channel> <@U024BE7LH> &amp; <https://evil.example|re-auth>",
    "feature": "`code` *bold* _it_ ~strike~ :skull: @here",
    "model": "line1\nline2\r\n<!date^1392734382^{date}|x>",
    "team": "x" * 5000,
}

# --- Block Kit: structure and limits --------------------------------------------------------------

_TEXT_TYPES = {"plain_text", "mrkdwn"}
_ALLOWED_ANGLE = re.compile(r"<(https?://[^|<>\s]+\|[^<>]*|!date\^\d+\^[^|<>]*\|[^<>]*)>")
_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def _text_object(obj: dict[str, Any], limit: int, where: str) -> None:
    assert obj["type"] in _TEXT_TYPES, where
    text = obj["text"]
    assert isinstance(text, str) and 0 < len(text) <= limit, (where, len(text))
    if obj["type"] == "mrkdwn":
        # every < starts a link or a date watcher made; no mention, no raw & outside an entity
        stripped = _ALLOWED_ANGLE.sub("", text)
        assert "<" not in stripped and ">" not in stripped, (where, text[:300])
        assert not _ENTITY.search(text), (where, text[:300])
        assert obj.get("verbatim") is True, where


def assert_block_kit(doc: dict[str, Any]) -> None:
    """Fail unless ``doc`` is a Block Kit message within Slack's documented limits.

    Two checks: Slack's own SDK models (``slack_sdk``: each block parsed and validated, limits
    included) and the rules below, which also cover what the SDK does not check (mrkdwn
    escaping, unique action IDs, the message's size).
    """
    assert set(doc) <= {"text", "blocks"} and 0 < len(doc["text"]) <= LIMITS["text"]
    assert 0 < len(doc["blocks"]) <= LIMITS["blocks"]
    sdk = pytest.importorskip("slack_sdk.models.blocks", reason="slack-sdk (test extra) validates Block Kit")
    for block in doc["blocks"]:
        parsed = sdk.Block.parse(block)
        assert parsed is not None and type(parsed) is not sdk.Block, block["type"]  # a known block type
        parsed.validate_json()  # raises SlackObjectFormationError beyond a limit
        assert parsed.to_dict()["type"] == block["type"]
    action_ids: set[str] = set()
    for i, block in enumerate(doc["blocks"]):
        kind = block["type"]
        where = f"block {i} ({kind})"
        if kind == "header":
            assert block["text"]["type"] == "plain_text", where
            _text_object(block["text"], LIMITS["header"], where)
        elif kind == "section":
            assert "text" in block or "fields" in block, where
            if "text" in block:
                _text_object(block["text"], LIMITS["section"], where)
            fields = block.get("fields", [])
            assert len(fields) <= LIMITS["fields"], where
            for f in fields:
                _text_object(f, LIMITS["field"], where)
        elif kind == "context":
            assert 0 < len(block["elements"]) <= LIMITS["context_elements"], where
            for e in block["elements"]:
                _text_object(e, LIMITS["section"], where)
        elif kind == "image":
            url = block["image_url"]
            assert url.startswith("https://") and len(url) <= LIMITS["url"], where
            assert 0 < len(block["alt_text"]) <= LIMITS["alt_text"], where
            _text_object(block["title"], LIMITS["header"], where)
        elif kind == "actions":
            assert 0 < len(block["elements"]) <= LIMITS["actions"], where
            for b in block["elements"]:
                assert b["type"] == "button" and b["text"]["type"] == "plain_text", where
                _text_object(b["text"], LIMITS["button_text"], where)
                assert b["url"].startswith(("http://", "https://")) and len(b["url"]) <= LIMITS["url"], where
                assert b["action_id"] not in action_ids and len(b["action_id"]) <= 255, where
                action_ids.add(b["action_id"])
                assert b.get("style") in (None, "primary", "danger"), where
        else:
            raise AssertionError(f"{where}: unexpected block type")


# --- helpers ---------------------------------------------------------------------------------------


def _rs(url: str, **kw: Any) -> ReceiverSettings:
    return ReceiverSettings(type="slack", url=SecretStr(url), **kw)


def _settings(url: str, **kw: Any) -> Settings:
    return make_settings(
        receivers={"slack": _rs(url)}, route=RouteSettings(receivers=["slack"]), public_url=PUBLIC, **kw
    )


def _all_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False)


def _mrkdwn_texts(doc: dict[str, Any]) -> str:
    """Return the top-level text and every mrkdwn text object (what Slack parses for markup)."""
    found = [doc["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc["blocks"])
    return "\n".join(found)


def _button(doc: dict[str, Any], action_id: str) -> dict[str, Any]:
    (actions,) = [b for b in doc["blocks"] if b["type"] == "actions"]
    (button,) = [b for b in actions["elements"] if b["action_id"] == action_id]
    return button


# --- escaping ---------------------------------------------------------------------------------------


def test_slack_escaping_helpers() -> None:
    assert slack_text("a & b <!channel> > c") == "a &amp; b &lt;!channel&gt; &gt; c"
    assert slack_text("x\ny\x00z") == "x y z" and slack_text("x\ny", multiline=True) == "x\ny"
    assert slack_code("a`b") == "`a\u02cbb`" and slack_code("") == "` `"
    assert (
        slack_link("t|<x>", "https://ok.example/a?b=1&c=2")
        == "<https://ok.example/a?b=1&amp;c=2|t|&lt;x&gt;>"
    )
    assert slack_link("click", "javascript:alert(1)") == "click"
    assert slack_link("click", "https://a.example/x|evil") == "click"
    # cutting never splits an entity, and stays within the limit
    for n in range(1, 30):
        out = fit("&&&&&&&&&&<<<<<<<<", n)
        assert len(out) <= n and not re.search(r"&(?!amp;|lt;|gt;)", out.removesuffix("…")), out


# --- the message -------------------------------------------------------------------------------------


def test_firing_message_over_loopback(store: SqliteStore, http_receiver: HTTPReceiver) -> None:
    settings = _settings(http_receiver.url + HOOK_PATH)
    alert = firing(
        labels={"tenant": "acme", "severity": "page"},
        annotations={"summary": "acme spends $12/h", "unit": "USD/h"},
    )
    notifier = Notifier(store, settings)
    notifier.submit([(alert, [])], T0)
    assert notifier.flush(T0).sent == 1
    ((path, headers, doc),) = http_receiver.requests
    assert path == HOOK_PATH and headers["Content-Type"] == "application/json"
    assert_block_kit(doc)
    text = _all_text(doc)
    assert doc["blocks"][0]["type"] == "header" and "SpendAnomaly" in doc["blocks"][0]["text"]["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in doc["blocks"][2]["fields"]}
    assert fields["*Value*"] == "$12.35/h" and fields["*Expected*"] == "$1.20/h"
    assert fields["*Band*"] == "$0.80/h – $2.10/h"
    epoch = int(T0.timestamp())
    assert fields["*Since*"].startswith(f"<!date^{epoch}^") and "2026-11-26 14:05 UTC" in fields["*Since*"]
    assert fields["*Since*"].endswith(" (25 min)") and fields["*Firing for*"] == "25 min"
    assert "<http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736|trace 4bf92f35…>" in text
    (image,) = [b for b in doc["blocks"] if b["type"] == "image"]
    assert image["image_url"] == f"{PUBLIC}/chart/alert/{alert.fingerprint}.png"
    assert _button(doc, "watcher-open-rule")["url"] == "http://watcher.test/rules/llm-cost/SpendAnomaly"
    assert _button(doc, "watcher-top-trace")["url"].endswith("4bf92f3577b34da6a3ce929d0e0e4736")
    silence = urlsplit(_button(doc, "watcher-silence")["url"])
    assert silence.netloc == "watcher.test" and silence.path == "/silences/new"
    query = parse_qs(silence.query)
    assert query["duration"] == ["1h"]
    matchers = [parse_matcher(m) for m in query["matcher"]]
    assert {(m.name, m.value, m.op) for m in matchers} == {
        ("alertname", "SpendAnomaly", "="),
        ("tenant", "acme", "="),
        ("severity", "page", "="),
    }


def test_resolved_message_has_no_silence_button(http_receiver: HTTPReceiver) -> None:
    settings = _settings(http_receiver.url + HOOK_PATH)
    alert = resolved(firing(), T0 + H)
    n = render_notification(
        alert,
        kind=NotificationKind.RESOLVED,
        receiver="slack",
        settings=settings,
        rule_url="http://watcher.test/r",
    )
    build_receiver("slack", settings.receivers["slack"], settings).send(n)
    ((_, _, doc),) = http_receiver.requests
    assert_block_kit(doc)
    fields = [f["text"] for f in doc["blocks"][2]["fields"]]
    assert fields[0].startswith("*Final value*") and any("lasted 1 h" in f for f in fields)
    (actions,) = [b for b in doc["blocks"] if b["type"] == "actions"]
    assert "watcher-silence" not in {b["action_id"] for b in actions["elements"]}


def test_hostile_values_stay_text(http_receiver: HTTPReceiver) -> None:
    settings = _settings(http_receiver.url + HOOK_PATH)
    alert = firing(
        labels=HOSTILE,
        annotations={"summary": "<!here> see <https://phish.example|the fix> & more", "runbook": "<@U1>"},
        traces=(TraceRef("4bf92f3577b34da6a3ce929d0e0e4736", None, 1.0, T0, "<!channel> note `x`"),),
    )
    n = render_notification(
        alert,
        kind=NotificationKind.FIRING,
        receiver="slack",
        settings=settings,
        rule_url="http://watcher.test/r",
    )
    build_receiver("slack", settings.receivers["slack"], settings).send(n)
    ((_, _, doc),) = http_receiver.requests
    assert_block_kit(doc)  # includes: every < is a link or date watcher made
    text = _mrkdwn_texts(doc)
    for raw in (
        "<!channel>",
        "<!here>",
        "<@U024BE7LH>",
        "<https://evil.example",
        "<https://phish",
        "<!date^1392734382",
    ):
        assert raw not in text, raw
    assert "&lt;!channel&gt;" in text and "&lt;!here&gt;" in text
    # plain_text (header, button labels) carries data as is: Slack never parses it
    assert all(
        b["text"]["type"] == "plain_text" and b["text"]["emoji"] is False
        for b in doc["blocks"]
        if b["type"] == "header"
    )
    # a 5,000-character label makes the silence URL too long for a button: no silence button
    (actions,) = [b for b in doc["blocks"] if b["type"] == "actions"]
    assert "watcher-silence" not in {b["action_id"] for b in actions["elements"]}


def test_silence_link_round_trips_hostile_labels(http_receiver: HTTPReceiver) -> None:
    settings = _settings(http_receiver.url + HOOK_PATH)
    labels = {k: v for k, v in HOSTILE.items() if k != "team"} | {"quote": 'a"b', "eq": "x=y&z=1"}
    alert = firing(labels=labels)
    doc = blocks(
        render_notification(
            alert, kind=NotificationKind.FIRING, receiver="slack", settings=settings, rule_url=""
        ),
        external_url="http://watcher.test",
        public_url=None,
    )
    assert_block_kit(doc)
    assert not [b for b in doc["blocks"] if b["type"] == "image"]  # no public_url: no image
    matchers = parse_qs(urlsplit(_button(doc, "watcher-silence")["url"]).query)["matcher"]
    stored = [{"name": m.name, "value": m.value, "op": m.op} for m in map(parse_matcher, matchers)]
    assert matches_all(stored, {**labels, "alertname": "SpendAnomaly"})
    assert not matches_all(stored, {**labels, "alertname": "SpendAnomaly", "tenant": "other"})


def test_big_group_stays_within_the_limits(http_receiver: HTTPReceiver, store: SqliteStore) -> None:
    settings = _settings(
        http_receiver.url + HOOK_PATH, notify={"group_by": ["alertname"], "group_wait": timedelta(0)}
    )
    notifier = Notifier(store, settings)
    alerts = [
        firing(
            labels={"tenant": f"t{i:03d}-" + "<&>" * 300},
            traces=tuple(TraceRef(f"{j:032x}") for j in range(40)),
        )
        for i in range(60)
    ]
    notifier.submit([(a, []) for a in alerts], T0)
    notifier.flush(T0)
    notifier.flush(T0 + timedelta(minutes=1))
    assert http_receiver.requests
    for _, _, doc in http_receiver.requests:
        assert_block_kit(doc)
    (listing,) = [
        b["text"]["text"]
        for b in http_receiver.requests[0][2]["blocks"]
        if b["type"] == "section" and "alerts in this group" in b.get("text", {}).get("text", "")
    ]
    assert listing.startswith("*60 alerts in this group*") and "t000-" in listing
    more = re.search(r"… and (\d+) more$", listing)
    assert more is not None and listing.count("\n• firing") + int(more.group(1)) == 60
    # the silence button of a group message silences the group (group_by: alertname), not one alert
    silence = parse_qs(urlsplit(_button(http_receiver.requests[0][2], "watcher-silence")["url"]).query)
    assert [str(parse_matcher(m)) for m in silence["matcher"]] == ['alertname="SpendAnomaly"']


@pytest.mark.parametrize(
    ("status", "reply", "retryable", "reason"),
    [
        (400, "invalid_blocks", False, "client_error"),
        (404, "no_service", False, "client_error"),
        (429, "rate_limited", True, "rate_limited"),
        (500, "internal_error", True, "server_error"),
    ],
)
def test_slack_errors_are_classified_without_leaking_the_url(
    status: int, reply: str, retryable: bool, reason: str
) -> None:
    with HTTPReceiver([status], reply=reply) as server:
        settings = _settings(server.url + HOOK_PATH)
        n = render_notification(
            firing(), kind=NotificationKind.FIRING, receiver="slack", settings=settings, rule_url=""
        )
        with pytest.raises(NotifyError) as err:
            build_receiver("slack", settings.receivers["slack"], settings).send(n)
    assert err.value.retryable is retryable and err.value.reason == reason
    assert reply in str(err.value)
    assert_no_secret(str(err.value), ["XoXoS3cr3tToken", "T0SECRET/B0SECRET"])


def test_web_api_style_refusal_is_an_error() -> None:
    with HTTPReceiver([200], reply='{"ok": false, "error": "channel_not_found"}') as server:
        settings = _settings(server.url + HOOK_PATH)
        n = render_notification(
            firing(), kind=NotificationKind.FIRING, receiver="slack", settings=settings, rule_url=""
        )
        with pytest.raises(NotifyError, match="channel_not_found") as err:
            build_receiver("slack", settings.receivers["slack"], settings).send(n)
    assert err.value.retryable is False


def test_slack_receiver_needs_a_url_and_public_url_is_checked() -> None:
    with pytest.raises(ValueError, match="a slack receiver needs `url`"):
        ReceiverSettings(type="slack")
    with pytest.raises(ValueError, match="public_url must be an absolute http"):
        Settings(public_url="javascript:alert(1)")
    assert Settings(public_url="https://w.example/").public_url == "https://w.example"


def test_an_image_slack_cannot_fetch_does_not_lose_the_alert() -> None:
    """Slack answers 400 invalid_blocks when it cannot download the image: send again without it."""
    with HTTPReceiver([400, 200], reply="invalid_blocks") as server:
        settings = _settings(server.url + HOOK_PATH)
        n = render_notification(
            firing(), kind=NotificationKind.FIRING, receiver="slack", settings=settings, rule_url=""
        )
        build_receiver("slack", settings.receivers["slack"], settings).send(n)
        (_, _, first), (_, _, second) = server.requests
    assert [b["type"] for b in first["blocks"]].count("image") == 1
    assert "image" not in [b["type"] for b in second["blocks"]]
    assert_block_kit(second)
    assert _button(second, "watcher-chart")["url"] == first["blocks"][3]["image_url"]
    with HTTPReceiver([400], reply="invalid_blocks") as server:  # refused again: the error stands
        settings = _settings(server.url + HOOK_PATH)
        with pytest.raises(NotifyError, match="invalid_blocks"):
            build_receiver("slack", settings.receivers["slack"], settings).send(n)
        assert len(server.requests) == 2


def test_no_image_on_the_resolve() -> None:
    settings = _settings("http://127.0.0.1:9" + HOOK_PATH)
    n = render_notification(
        resolved(firing(), T0 + H),
        kind=NotificationKind.RESOLVED,
        receiver="slack",
        settings=settings,
        rule_url="",
    )
    doc = blocks(n, external_url="http://watcher.test", public_url=PUBLIC)
    assert "image" not in [b["type"] for b in doc["blocks"]]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "a", "verbatim": True}] * 11},
        {"type": "section", "text": {"type": "mrkdwn", "text": "<!channel> hi", "verbatim": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "a & b", "verbatim": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001, "verbatim": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "a", "verbatim": True}] * 11},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "y" * 76},
                    "url": "https://x.example",
                    "action_id": "a",
                }
            ],
        },
        {
            "type": "image",
            "image_url": "https://x.example/c.png",
            "alt_text": "",
            "title": {"type": "plain_text", "text": "t"},
        },
        {"type": "bogus"},
    ],
)
def test_the_block_kit_check_bites(block: dict[str, Any]) -> None:
    from slack_sdk.errors import SlackObjectFormationError

    with pytest.raises((AssertionError, SlackObjectFormationError)):
        assert_block_kit({"text": "t", "blocks": [block]})


def test_the_stop_budget_knows_the_longest_send() -> None:
    settings = _settings("http://127.0.0.1:9" + HOOK_PATH)
    assert build_receiver("slack", _rs("http://x.example/h", timeout_s=3), settings).timeout_s == 6  # type: ignore[attr-defined]
    no_image = settings.model_copy(update={"public_url": None})
    assert build_receiver("slack", _rs("http://x.example/h", timeout_s=3), no_image).timeout_s == 3  # type: ignore[attr-defined]
