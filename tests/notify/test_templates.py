"""Rendering: annotations, trace links, the default title/body and the JSON document."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.notify.factory import T0, firing, make_settings, resolved
from watcher.core import Alert, AlertState, NotificationKind
from watcher.notify.document import notification_document, trace_link
from watcher.notify.templates import (
    format_elapsed,
    format_number,
    render_annotations,
    render_notification,
    since_line,
)

RULE_URL = "http://watcher.test/rules/llm-cost/SpendAnomaly"


def _render(alert=None, kind=NotificationKind.FIRING, settings=None, **kw):  # type: ignore[no-untyped-def]
    return render_notification(
        alert or firing(),
        kind=kind,
        receiver="console",
        settings=settings or make_settings(),
        rule_url=RULE_URL,
        **kw,
    )


def test_annotations_render_labels_and_numbers() -> None:
    out = render_annotations(
        {
            "summary": "{{ labels.tenant }} spends ${{ value | round(2) }}/h, "
            "expected ≤ ${{ upper | round(2) }}/h"
        },
        labels={"tenant": "acme"},
        value=12.3456,
        expected=1.2,
        lower=0.8,
        upper=2.1,
        score=0.9,
    )
    assert out == {"summary": "acme spends $12.35/h, expected ≤ $2.1/h"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ labels.missing }}|", "|"),
        ("{{ labels.missing.deeper }}|", "|"),
        ("{{ nothing }}x", "x"),
        ("{{ score | sig }}", "0.90"),
    ],
)
def test_undefined_renders_empty(template: str, expected: str) -> None:
    out = render_annotations({"a": template}, labels={}, value=1, expected=1, lower=0, upper=2, score=0.9)
    assert out["a"] == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ value | round(2) ",  # syntax error
        "{{ 1 / 0 }}",  # runtime error
        "{{ labels.__class__.__mro__[1].__subclasses__() }}",  # sandbox refuses
        "{{ value | nosuchfilter }}",
    ],
)
def test_broken_annotation_falls_back_to_raw_text(template: str) -> None:
    out = render_annotations({"summary": template}, labels={}, value=1, expected=1, lower=0, upper=2, score=0)
    assert out["summary"].startswith(template + " (template error: ")


def test_trace_link_quotes_the_id() -> None:
    assert trace_link("http://t/trace/{trace_id}?x=1", "ab/c d") == "http://t/trace/ab%2Fc%20d?x=1"


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (12.3456, "12.35"),
        (1.2, "1.20"),
        (0.8, "0.80"),
        (2.0, "2.00"),
        (1234.5, "1234"),
        (0.0123, "0.0123"),
        (0.00001234, "1.234e-05"),
        (123456.0, "123,456"),
        (math.nan, "n/a"),
        (math.inf, "n/a"),
    ],
)
def test_format_number(x: float, text: str) -> None:
    assert format_number(x) == text


def test_default_firing_message() -> None:
    n = _render()
    assert n.title == '[FIRING] SpendAnomaly {tenant="acme"}'
    assert "acme spends too much" in n.body
    assert "value 12.35 (expected 1.20, band 0.80 – 2.10)" in n.body
    assert "firing for 25 min (since 2026-11-26 14:05 UTC)" in n.body
    assert "(for " not in n.body  # elapsed time never reads like the rule's `for:`
    assert "`tenant=acme`" in n.body
    assert (
        "- [trace 4bf92f35…](http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736)"
        " value 0.42 · gpt-4o · acme" in n.body
    )
    assert f"({RULE_URL})" in n.body
    assert n.links == (
        (
            "trace 4bf92f3577b34da6a3ce929d0e0e4736",
            "http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("trace " + "a" * 32, "http://jaeger.test/trace/" + "a" * 32),
        ("rule SpendAnomaly", RULE_URL),
    )


def test_top_traces_limit() -> None:
    n = _render(settings=make_settings(notify={"top_traces": 1}))
    assert n.body.count("jaeger.test/trace/") == 1
    assert len(n.lead.traces) == 1 and len(notification_document(n)["traces"]) == 1


def test_default_resolved_message() -> None:
    alert = resolved(firing(), T0 + timedelta(minutes=40))
    n = _render(alert, NotificationKind.RESOLVED)
    assert n.title == '[RESOLVED] SpendAnomaly {tenant="acme"}'
    assert "resolved at 2026-11-26 14:45 UTC, lasted 40 min" in n.body
    assert "final value 12.35" in n.body
    doc = notification_document(n)
    assert doc["status"] == "resolved"
    assert doc["ends_at"] == "2026-11-26T14:45:00Z"


def test_payload_is_json_with_nan_as_null() -> None:
    alert = firing(expected=math.nan, lower=math.nan, upper=math.inf)
    n = _render(alert)
    text = json.dumps(notification_document(n), allow_nan=False)  # raises on NaN/inf
    p = json.loads(text)
    assert p["expected"] is None and p["lower"] is None and p["upper"] is None
    assert p["value"] == 12.3456 and p["status"] == "firing" and p["version"] == "1"
    assert p["alertname"] == "SpendAnomaly" and p["group"] == "llm-cost" and p["labels"] == {"tenant": "acme"}
    assert p["starts_at"] == "2026-11-26T14:05:00Z" and p["ends_at"] is None
    assert p["fingerprint"] == alert.fingerprint and p["dedup_key"] == n.dedup_key
    assert p["rule_url"] == RULE_URL
    assert p["traces"][0] == {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "value": 0.42,
        "ts": "2026-11-26T14:05:00Z",
        "url": "http://jaeger.test/trace/4bf92f3577b34da6a3ce929d0e0e4736",
        "note": "gpt-4o · acme",
    }
    assert "\n\nvalue 12.35\n\n" in n.body


@pytest.mark.parametrize(
    ("lower", "upper", "text"),
    [
        (math.nan, 2.1, "value 12.35 (expected 1.20, limit ≤ 2.10)"),
        (0.8, math.nan, "value 12.35 (expected 1.20, limit ≥ 0.80)"),
    ],
)
def test_one_sided_band(lower: float, upper: float, text: str) -> None:
    assert text in _render(firing(lower=lower, upper=upper)).body


def test_dedup_key_is_stable_per_episode() -> None:
    a = firing()
    later = replace(a, last_eval=T0 + timedelta(hours=5), value=99.0)
    other_episode = firing(active_at=T0 + timedelta(hours=6))
    other_alert = firing(labels={"tenant": "globex"})
    key = _render(a).dedup_key
    assert len(key) == 32
    assert _render(later).dedup_key == key
    assert _render(resolved(a, T0 + timedelta(hours=1)), NotificationKind.RESOLVED).dedup_key == key
    assert _render(other_episode).dedup_key != key
    assert _render(other_alert).dedup_key != key


def test_custom_templates_and_fallback() -> None:
    n = _render(
        title_template="{{ alertname }} on {{ labels.tenant }} ({{ status }})",
        body_template="{{ value | sig }} > {{ upper | sig }} {% for t in traces %}{{ t.url }} {% endfor %}",
    )
    assert n.title == "SpendAnomaly on acme (firing)"
    assert n.body.startswith("12.35 > 2.10 http://jaeger.test/trace/4bf92f35")
    broken = _render(title_template="{{ oops", body_template="{{ 1/0 }}")
    assert broken.title == '[FIRING] SpendAnomaly {tenant="acme"}'
    assert "value 12.35" in broken.body


@pytest.mark.parametrize(
    ("x", "unit", "text"),
    [
        (12.3456, "USD", "$12.35"),
        (-0.5, "$", "-$0.50"),
        (0.42, "USD/h", "$0.42/h"),
        (3.1, "%", "3.10%"),
        (850.0, "ms", "850 ms"),
        (1234.0, "tokens", "1234 tokens"),
        (math.nan, "USD", "n/a"),
        (2.0, "", "2.00"),
    ],
)
def test_with_unit(x: float, unit: str, text: str) -> None:
    from watcher.notify.templates import with_unit

    assert with_unit(x, unit) == text


def test_unit_annotation_labels_every_number_of_the_message() -> None:
    alert = firing(annotations={"summary": "acme spends too much", "unit": "USD/h", "runbook": "http://rb"})
    n = render_notification(
        alert, kind=NotificationKind.FIRING, receiver="r", settings=make_settings(), rule_url=""
    )
    assert "value $12.35/h (expected $1.20/h, band $0.80/h – $2.10/h)" in n.body
    assert "- runbook: http://rb" in n.body and "- unit:" not in n.body  # shown with the numbers instead
    done = render_notification(
        resolved(alert, T0 + timedelta(minutes=40)),
        kind=NotificationKind.RESOLVED,
        receiver="r",
        settings=make_settings(),
        rule_url="",
    )
    assert "final value $12.35/h" in done.body


def test_unit_filter_in_custom_templates() -> None:
    n = render_notification(
        firing(),
        kind=NotificationKind.FIRING,
        receiver="r",
        settings=make_settings(),
        rule_url="",
        body_template="p95 {{ value | unit('ms') }} vs {{ expected | unit('ms') }}",
    )
    assert n.body == "p95 12.35 ms vs 1.20 ms"


def test_the_explanation_and_the_release_marker_are_in_every_message() -> None:
    why = "sum cost_usd +11.15: 94 % from feature=agent on model=gpt-4o"
    release = "started 4 min after deploy api-v2.3 (2026-11-26 14:01 UTC)"
    alert = replace(firing(), annotations={**firing().annotations, "explanation": why, "release": release})
    for kind, a in ((NotificationKind.FIRING, alert), (NotificationKind.RESOLVED, resolved(alert, T0))):
        n = _render(a, kind)
        assert "Why: sum cost_usd +11.15: 94 % from feature=agent on model=gpt-4o" in n.body
        if kind is NotificationKind.FIRING:
            assert "(since 2026-11-26 14:05 UTC) · started 4 min after deploy api-v2.3" in n.body
        assert "api-v2.3" in n.body
        assert "- explanation:" not in n.body  # shown once, in its own line
        assert notification_document(n)["annotations"]["explanation"] == why  # structured receivers: as it is
    hostile = replace(
        alert, annotations={"explanation": "rate +1 pp: 90 % from tenant=<@here> [x](http://evil)"}
    )
    body = _render(hostile).body
    assert "[x](http://evil)" not in body and "<@here>" not in body


@pytest.mark.parametrize(
    ("alert", "kind", "line"),
    [
        (firing(), NotificationKind.FIRING, "firing for 25 min (since 2026-11-26 14:05 UTC)"),
        (
            replace(firing(), fired_at=T0 + timedelta(minutes=5)),
            NotificationKind.FIRING,
            "firing for 20 min (active since 2026-11-26 14:05 UTC)",
        ),
        (
            replace(firing(), state=AlertState.PENDING, fired_at=None),
            NotificationKind.FIRING,
            "pending for 25 min (since 2026-11-26 14:05 UTC)",
        ),
        (
            resolved(firing(), T0 + timedelta(hours=2, minutes=5)),
            NotificationKind.RESOLVED,
            "resolved at 2026-11-26 16:10 UTC, lasted 2 h 5 min (since 2026-11-26 14:05 UTC)",
        ),
    ],
)
def test_since_line_words_elapsed_time_apart_from_the_rules_for(
    alert: Alert, kind: NotificationKind, line: str
) -> None:
    assert since_line(alert, kind) == line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (40, "40 s"),
        (60, "1 min"),
        (1500, "25 min"),
        (3600, "1 h"),
        (7500, "2 h 5 min"),
        (86400 * 3 + 4 * 3600, "3 d 4 h"),
        (86400, "1 d"),
    ],
)
def test_format_elapsed(seconds: int, text: str) -> None:
    assert format_elapsed(timedelta(seconds=seconds)) == text
