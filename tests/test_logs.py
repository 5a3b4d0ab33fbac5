"""Structured logs: JSON off a terminal, readable on one, context fields, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from watcher.config import Settings
from watcher.logs import bind, choose_format, secret_values, setup_logging


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def _log(stream: io.StringIO, **kwargs: object) -> str:
    setup_logging("info", stream=stream, **kwargs)  # type: ignore[arg-type]
    log = bind("watcher.test", group="cost", rule="Spend")
    log.warning("spend %s above band", "42.0", extra={"fingerprint": "abc123", "trace_id": "t" * 32})
    return stream.getvalue()


@pytest.mark.parametrize(
    ("stream", "fmt", "expected"),
    [
        (io.StringIO(), "auto", "json"),
        (_Tty(), "auto", "text"),
        (_Tty(), "json", "json"),
        (io.StringIO(), "text", "text"),
    ],
)
def test_format_follows_the_terminal(stream: io.StringIO, fmt: str, expected: str) -> None:
    assert choose_format(fmt, stream) == expected  # type: ignore[arg-type]


def test_json_line_has_context_fields(restore_root: None) -> None:
    out = _log(io.StringIO())
    lines = out.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "warning" and doc["logger"] == "watcher.test"
    assert doc["msg"] == "spend 42.0 above band"
    context = (doc["group"], doc["rule"], doc["fingerprint"], doc["trace_id"])
    assert context == ("cost", "Spend", "abc123", "t" * 32)
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]
    assert list(doc)[4:8] == ["group", "rule", "fingerprint", "trace_id"]


def test_text_line_is_readable(restore_root: None) -> None:
    out = _log(_Tty())
    assert " WARNING watcher.test: spend 42.0 above band  group=cost rule=Spend fingerprint=abc123 " in out
    assert not out.lstrip().startswith("{")


def test_multiline_message_and_exception_stay_one_json_line(restore_root: None) -> None:
    stream = io.StringIO()
    setup_logging("info", fmt="json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("watcher.test").exception("job failed:\nsecond line")
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["msg"] == "job failed:\nsecond line" and "ValueError: boom" in doc["exc"]


def test_level_is_configurable(restore_root: None) -> None:
    stream = io.StringIO()
    setup_logging("warning", fmt="json", stream=stream)
    logging.getLogger("watcher.test").info("hidden")
    logging.getLogger("watcher.test").error("shown")
    assert [json.loads(x)["msg"] for x in stream.getvalue().splitlines()] == ["shown"]


def test_setup_replaces_its_own_handler(restore_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", fmt="json", stream=first)
    setup_logging("info", fmt="json", stream=second)
    logging.getLogger("watcher.test").warning("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1


def test_secrets_from_settings_never_reach_a_line(restore_root: None) -> None:
    settings = Settings(
        store={"url": "postgresql+psycopg://watcher:Hunter2Secret@db:5432/watcher"},  # type: ignore[arg-type]
        receivers={"slack": {"type": "apprise", "urls": ["slack://T0AAA1234/B0BBB5678/XoXoToken12345678"]}},  # type: ignore[dict-item]
        route={"receivers": ["slack"]},  # type: ignore[arg-type]
    )
    secrets = secret_values(settings)
    assert "Hunter2Secret" in secrets and "XoXoToken12345678" in secrets
    stream = io.StringIO()
    setup_logging("info", fmt="json", stream=stream, secrets=secrets)
    log = logging.getLogger("watcher.test")
    log.error("connect failed: password=Hunter2Secret")
    log.error("apprise: POST https://hooks.slack.com/services/T0AAA1234/B0BBB5678/XoXoToken12345678 -> 500")
    log.error("context leak", extra={"url": "slack://T0AAA1234/B0BBB5678/XoXoToken12345678"})
    out = stream.getvalue()
    assert "Hunter2Secret" not in out and "XoXoToken12345678" not in out
    assert out.count("***") >= 3


def test_sqlite_paths_are_not_secrets() -> None:
    settings = Settings(store={"url": "sqlite:////var/lib/watcher/watcher-2024.db"})  # type: ignore[arg-type]
    assert secret_values(settings) == []
