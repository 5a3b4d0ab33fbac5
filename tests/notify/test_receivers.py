"""Receivers: the console block, building receivers from settings, and URL redaction."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from pydantic import SecretStr

from tests.notify.factory import T0, firing, make_settings, resolved
from watcher.config import ReceiverSettings
from watcher.core import NotificationKind
from watcher.errors import ConfigError, NotifyError
from watcher.notify.receivers import AppriseReceiver, ConsoleReceiver, Receiver, build_receivers
from watcher.notify.receivers.apprise import redact, secret_parts
from watcher.notify.templates import render_notification

RULE_URL = "http://watcher.test/rules/llm-cost/SpendAnomaly"


def test_console_prints_a_plain_readable_block() -> None:
    out = io.StringIO()
    n = render_notification(
        firing(),
        kind=NotificationKind.FIRING,
        receiver="console",
        settings=make_settings(),
        rule_url=RULE_URL,
    )
    ConsoleReceiver(stream=out).send(n)
    text = out.getvalue()
    assert "\x1b[" not in text  # not a terminal: no escape codes
    lines = text.splitlines()
    assert lines[0] == '[FIRING] SpendAnomaly {tenant="acme"}'
    assert "  acme spends too much" in lines
    assert "  value 12.35 (expected 1.20, band 0.80 – 2.10)  score 0.97" in lines
    assert "  firing for 25 min (since 2026-11-26 14:05 UTC)" in lines
    assert (
        "  trace http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736  value 0.42 · gpt-4o · acme"
        in lines
    )
    assert f"  rule  {RULE_URL}" in lines


def test_console_resolved_block() -> None:
    out = io.StringIO()
    n = render_notification(
        resolved(firing(), T0 + timedelta(minutes=40)),
        kind=NotificationKind.RESOLVED,
        receiver="console",
        settings=make_settings(),
        rule_url=RULE_URL,
    )
    ConsoleReceiver(stream=out).send(n)
    text = out.getvalue()
    assert text.startswith("[RESOLVED] SpendAnomaly")
    assert "resolved at 2026-11-26 14:45 UTC, lasted 40 min" in text


def test_console_closed_stream_is_a_notify_error() -> None:
    out = io.StringIO()
    out.close()
    n = render_notification(
        firing(), kind=NotificationKind.FIRING, receiver="console", settings=make_settings(), rule_url=""
    )
    with pytest.raises(NotifyError) as info:
        ConsoleReceiver(stream=out).send(n)
    assert not info.value.retryable


def test_build_receivers() -> None:
    settings = make_settings(
        receivers={
            "console": ReceiverSettings(type="console"),
            "hook": ReceiverSettings(type="apprise", urls=[SecretStr("json://127.0.0.1:9/")], timeout_s=1.5),
        }
    )
    built = build_receivers(settings)
    assert set(built) == {"console", "hook"}
    assert isinstance(built["console"], ConsoleReceiver)
    hook = built["hook"]
    assert isinstance(hook, AppriseReceiver) and hook.name == "hook" and hook.timeout_s == 1.5
    assert all(isinstance(r, Receiver) for r in built.values())


def test_invalid_apprise_url_is_a_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        AppriseReceiver("bad", ["nosuchscheme://user:SeCrEt123@host/"])
    assert "SeCrEt123" not in str(info.value) and "bad" in str(info.value)


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("json://user:pa55word@127.0.0.1:8080/", {"pa55word", "user"}),
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops",
            {"T1JJ3T3L2", "TIiajkdnlazkcOXrIdevi7FQ"},
        ),
        ("json://hooks.example.com/x/AbCdEf123?token=QwErTy789", {"AbCdEf123", "QwErTy789"}),
    ],
)
def test_secret_parts_and_redact(url: str, secrets: set[str]) -> None:
    parts = secret_parts(url)
    assert secrets <= parts
    text = redact(f"failed {url} because of {' and '.join(sorted(secrets))}", parts)
    assert all(s not in text for s in secrets)
    assert "127.0.0.1" in redact("connection error to 127.0.0.1", secret_parts(url)) or "127.0.0.1" in url


def test_redact_masks_long_token_looking_strings() -> None:
    assert (
        redact("Authorization: Bearer sk-abcdefghijklmnopqrstuvwxyz0123", []) == "Authorization: Bearer ***"
    )
    assert redact("error=500.", []) == "error=500."
