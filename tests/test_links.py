"""The trace-search link template, its validation in the settings, and the "no exemplars" note."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from watcher.config import Settings, load_settings
from watcher.errors import ConfigError
from watcher.links import (
    HOOK_SPAN_ATTRIBUTES,
    check_search_url,
    no_exemplars_note,
    search_link,
    window_text,
)

T0 = datetime(2026, 11, 27, 3, 40, tzinfo=UTC).timestamp()  # 1795750800
LABELS = {"tenant": "acme", "model": "gpt-4o"}


@pytest.mark.parametrize(
    ("template", "link"),
    [
        ("u?s={start}&e={end}", "u?s=1795750800&e=1795751401"),
        ("u?from={start_ms}&to={end_ms}", "u?from=1795750800000&to=1795751401000"),
        ("u?start={start_us}&end={end_us}", "u?start=1795750800000000&end=1795751401000000"),
        ("u/{start_iso}/{end_iso}", "u/2026-11-27T03:40:00Z/2026-11-27T03:50:01Z"),
        ("u?{start}{end}&q={labels}", "u?17957508001795751401&q=model%3D%22gpt-4o%22%2Ctenant%3D%22acme%22"),
        (
            "u?{start}{end}&tags={labels_json}",
            "u?17957508001795751401&tags=%7B%22model%22%3A%22gpt-4o%22%2C%22tenant%22%3A%22acme%22%7D",
        ),
        # braces that are no placeholder (URL-encoded JSON is the norm; a TraceQL {} too) stay as they are
        ('u?{start}{end}&q={ .x = "1" }{}', 'u?17957508001795751401&q={ .x = "1" }{}'),
    ],
)
def test_search_link_fills_every_placeholder(template: str, link: str) -> None:
    # start rounds down, end rounds up: the window always covers the alert
    assert search_link(check_search_url(template), T0 + 0.9, T0 + 600.2, LABELS) == link


def test_search_link_escapes_values_and_drops_alertname() -> None:
    labels = {"tenant": 'a"b\\c', "alertname": "X", "__name__": "m"}
    link = search_link("{start}{end}{labels}", T0, T0, labels)
    assert link.endswith("tenant%3D%22a%5C%22b%5C%5Cc%22")  # tenant="a\"b\\c"
    # a filled-in value is not scanned for placeholders again
    link = search_link("{labels}|{start}{end}", T0, T0, {"x": "{end}"})
    assert link == f"x%3D%22%7Bend%7D%22|{T0:.0f}{T0:.0f}"


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("u?s={start}&e={stop}", "unknown placeholder(s) {stop}; known: {start}, {end},"),
        ("u?s={start}&e={end}&t={trace_id}&x={Labels}", "unknown placeholder(s) {Labels}, {trace_id}"),
        ("u?e={end}", "needs a start placeholder ({start}, {start_ms}, {start_us} or {start_iso})"),
        ("u?s={start_ms}", "needs an end placeholder ({end}, {end_ms}, {end_us} or {end_iso})"),
    ],
)
def test_bad_templates_are_config_errors(template: str, error: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="placeholder") as exc:
        check_search_url(template)
    assert error in str(exc.value)
    config = tmp_path / "watcher.yaml"
    config.write_text(f"trace_search_url: '{template}'\n")
    with pytest.raises(ConfigError) as cfg:
        load_settings(config)
    # config errors carry file:line:col like rule errors (issue 18)
    assert str(cfg.value).startswith(f"{config}:1:19: trace_search_url: ") and error in str(cfg.value)


def test_setting_is_optional_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().trace_search_url is None
    monkeypatch.setenv("WATCHER_TRACE_SEARCH_URL", "http://tempo/search?from={start_ms}&to={end_ms}")
    assert Settings().trace_search_url == "http://tempo/search?from={start_ms}&to={end_ms}"


def test_window_text_and_note() -> None:
    assert window_text(T0, T0 + 610.5) == "2026-11-27 03:40:00–03:50:11 UTC"
    assert window_text(T0 - 4 * 3600, T0 - 3.5 * 3600) == "2026-11-26 23:40:00 – 2026-11-27 00:10:00 UTC"
    assert no_exemplars_note("main", T0, T0 + 60) == (
        "no exemplars from Prometheus endpoint 'main' for 2026-11-27 03:40:00–03:41:00 UTC"
    )
    failed = no_exemplars_note("main", T0, T0 + 60, "the exemplar query failed:\n  HTTP 400 " + "x" * 400)
    assert failed.startswith(
        "no exemplars from Prometheus endpoint 'main' for 2026-11-27 03:40:00–03:41:00 UTC "
        "(the exemplar query failed: HTTP 400 xxx"
    )
    assert failed.endswith("…)") and len(failed) < 400


def test_documented_templates_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    found = [
        line.split('"')[1]
        for doc in (root / "docs" / "prometheus.md", root / "README.md")
        for line in doc.read_text(encoding="utf-8").splitlines()
        if line.startswith("trace_search_url: ")
    ]
    assert len(found) == 3
    for template in found:
        assert "{" not in search_link(check_search_url(template), T0, T0 + 60, LABELS)


def test_labels_take_the_trace_uis_names() -> None:
    labels = {"tenant": "acme", "model": "gpt-4o", "route": "/chat", "alertname": "A"}
    names = {**HOOK_SPAN_ATTRIBUTES, "route": ""}  # "" leaves a label out
    link = search_link("{start}{end}{labels_json}", T0, T0, labels, names)
    assert link.endswith(quote('{"gen_ai.request.model":"gpt-4o","watcher.tenant":"acme"}', safe=""))
    assert search_link("{start}{end}{labels}", T0, T0, {"tenant": "acme"}, {}).endswith("tenant%3D%22acme%22")


def test_the_default_names_are_the_hooks_and_can_be_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().trace_search_labels == dict(HOOK_SPAN_ATTRIBUTES)
    monkeypatch.setenv("WATCHER_TRACE_SEARCH_LABELS", '{"tenant": "span.tenant"}')
    assert Settings().trace_search_labels == {"tenant": "span.tenant"}
    monkeypatch.setenv("WATCHER_TRACE_SEARCH_LABELS", "{}")
    assert Settings().trace_search_labels == {}
