"""Rendering: rule annotations and the title, body and links of a notification about one alert.

This module owns the sandboxed Jinja2 environment and the default wording of every message. It does
not own deciding what to send (``pipeline``), queueing (``outbox``) nor delivery (``receivers``).

Templates come from rule files and settings, so they are untrusted: they run in a
``SandboxedEnvironment`` with autoescape off (messages are Markdown, not HTML). Every data-derived
string placed into the Markdown body (label values, annotations, trace IDs and notes, rule names) is
escaped with ``markup.md_text``/``md_code``, and a custom body template's ``{{ … }}`` outputs are
escaped the same way (``default_body`` excepted: it is escaped already); only http(s) URLs become
links (``markup.safe_url``). Annotations are shown as text: Markdown written into a rule's
annotation is not interpreted. An undefined name renders empty; a syntax or runtime error never
escapes into the pipeline: the annotation falls back to its raw text plus ``" (template error: …)"``,
a custom title/body falls back to the default, and the error is logged.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from ..config import Settings
from ..core import Alert, AlertState, Listed, Notification, NotificationKind, utc
from ..links import NO_EXEMPLARS, TRACE_SEARCH
from .document import alert_document, trace_document, trace_links
from .markup import md_code, md_link, md_text, safe_url

logger = logging.getLogger(__name__)

_TRACE_ID_SHOWN = 8
TRACE_SEARCH_TEXT = "search traces in the alert's window"


def format_number(x: float | None) -> str:
    """Format a number with 4 significant digits, at least 2 decimals below 100; NaN as ``n/a``."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3e}"
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    text = f"{x:.4g}"
    decimals = len(text.split(".")[1]) if "." in text else 0
    if abs(x) < 100 and decimals < 2:
        return f"{x:.2f}"
    return text


EXPLANATION = "explanation"
"""The annotation the engine writes with an alert's contribution by dimension (``engine.contribution``)."""
DETAIL = "detail"
"""The annotation the engine writes with a detector's verdict in words (``drift``: medians before/after)."""
RELEASE = "release"
"""The annotation the engine writes when an episode follows a release marker (``engine.why``)."""
FORECAST = "forecast"
"""The annotation holding a budget's exhaustion forecast (``detectors.budget``), shown with the numbers."""

UNIT_ANNOTATION = "unit"
"""A rule annotation naming the series' unit (``USD``, ``USD/h``, ``%``, ``ms``, ``tokens``…)."""


def with_unit(x: float | None, unit: str) -> str:
    """Format ``x`` with its unit: ``$12.35``, ``$0.42/h``, ``3.10%``, ``850 ms``; NaN as ``n/a``."""
    text = format_number(x)
    unit = unit.strip()
    if not unit or text == "n/a":
        return text
    money, _, per = unit.partition("/")
    if money in ("USD", "$"):
        sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
        return f"{sign}${digits}" + (f"/{per}" if per else "")
    if unit == "%":
        return f"{text}%"
    return f"{text} {unit}"


def _two_units(d: timedelta, units: tuple[str, str, str, str]) -> str:
    """Format ``d`` in its largest unit and the next one (days, hours, minutes, seconds)."""
    s = max(0, int(d.total_seconds()))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, seconds = divmod(s, 60)
    d_, h_, m_, s_ = units
    if days:
        return f"{days}{d_} {hours}{h_}" if hours else f"{days}{d_}"
    if hours:
        return f"{hours}{h_} {minutes}{m_}" if minutes else f"{hours}{h_}"
    if minutes:
        return f"{minutes}{m_}"
    return f"{seconds}{s_}"


def _fmt_duration(d: timedelta) -> str:
    """Format a duration compactly: ``40s``, ``25m``, ``2h 5m``, ``3d 4h``."""
    return _two_units(d, ("d", "h", "m", "s"))


def format_elapsed(d: timedelta) -> str:
    """Format how long something has lasted in words: ``40 s``, ``25 min``, ``2 h 5 min``, ``3 d 4 h``.

    Messages use it for elapsed time so that it cannot be read as a rule's ``for: 25m``.
    """
    return _two_units(d, (" d", " h", " min", " s"))


def _fmt_time(ts: datetime) -> str:
    """Format a timestamp for humans: ``2026-11-26 14:05 UTC``."""
    return utc(ts).strftime("%Y-%m-%d %H:%M UTC")


def _make_env() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False, undefined=jinja2.ChainableUndefined)
    env.filters["sig"] = format_number
    env.filters["unit"] = with_unit
    env.filters["duration"] = _fmt_duration
    return env


_ENV = _make_env()


class _Escaped(str):
    """Text already escaped for Markdown (the default body), left alone by the body template."""

    __slots__ = ()


def _finalize_markdown(value: Any) -> Any:
    if isinstance(value, _Escaped) or not isinstance(value, str):
        return value
    return md_text(value, multiline=True)


def _make_body_env() -> SandboxedEnvironment:
    env = _make_env()
    env.finalize = _finalize_markdown
    return env


_BODY_ENV = _make_body_env()


@functools.lru_cache(maxsize=1024)
def _compile(text: str) -> jinja2.Template:
    """Compile a template once; compiled templates are safe to render from many threads."""
    return _ENV.from_string(text)


def _render(text: str, context: Mapping[str, Any]) -> str:
    """Render ``text`` with ``context``; raise whatever Jinja2 raises."""
    return _compile(text).render(**context)


@functools.lru_cache(maxsize=256)
def _compile_body(text: str) -> jinja2.Template:
    return _BODY_ENV.from_string(text)


def sandbox_filters() -> frozenset[str]:
    """Return the names of the filters a rule's or receiver's template may use."""
    return frozenset(_ENV.filters)


def render_annotations(
    templates: Mapping[str, str],
    *,
    labels: Mapping[str, str],
    value: float,
    expected: float,
    lower: float,
    upper: float,
    score: float,
    note: str = "",
) -> dict[str, str]:
    """Render each annotation template; a broken one becomes its raw text plus the error.

    A detector's ``note`` (the budget forecast) is the template variable ``forecast``.
    """
    context: dict[str, Any] = {
        "labels": dict(labels),
        "value": value,
        "expected": expected,
        "lower": lower,
        "upper": upper,
        "score": score,
    }
    if note:
        context["forecast"] = note
    out: dict[str, str] = {}
    for name, text in templates.items():
        try:
            out[name] = _render(text, context)
        except Exception as exc:  # template errors of every kind must stay out of the pipeline
            logger.warning("annotation %r: template error: %s", name, exc)
            out[name] = f"{text} (template error: {exc})"
    return out


def _label_text(alert: Alert) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in alert.labels.items() if k != "alertname") + "}"


def value_line(alert: Alert, kind: NotificationKind) -> str:
    """Return ``value 12.34 (expected 1.20, band 0.80 – 2.10)`` (``final value`` once resolved).

    With a ``unit`` annotation the numbers carry it: ``value $12.34/h (expected $1.20/h, …)``.
    """
    prefix = "final value" if kind is NotificationKind.RESOLVED else "value"
    unit = alert.annotations.get(UNIT_ANNOTATION, "")

    def num(x: float) -> str:
        return with_unit(x, unit)

    line = f"{prefix} {num(alert.value)}"
    parts = []
    if math.isfinite(alert.expected):
        parts.append(f"expected {num(alert.expected)}")
    lo, hi = math.isfinite(alert.lower), math.isfinite(alert.upper)
    if lo and hi:
        parts.append(f"band {num(alert.lower)} – {num(alert.upper)}")
    elif hi:
        parts.append(f"limit ≤ {num(alert.upper)}")
    elif lo:
        parts.append(f"limit ≥ {num(alert.lower)}")
    return f"{line} ({', '.join(parts)})" if parts else line


def since_line(alert: Alert, kind: NotificationKind) -> str | None:
    """Return ``firing for 25 min (since …)`` or ``resolved at …, lasted 40 min``; None without a start.

    A firing alert counts from when it fired; ``active since`` names the start of its pending
    time when that came first.
    """
    start = alert.active_at or alert.fired_at
    if start is None:
        return None
    if kind is NotificationKind.RESOLVED and alert.resolved_at is not None:
        lasted = format_elapsed(alert.resolved_at - start)
        return f"resolved at {_fmt_time(alert.resolved_at)}, lasted {lasted} (since {_fmt_time(start)})"
    until = alert.last_eval or alert.fired_at or start
    if alert.state is AlertState.FIRING and alert.fired_at is not None:
        began = "since" if alert.fired_at == start else "active since"
        return f"firing for {format_elapsed(until - alert.fired_at)} ({began} {_fmt_time(start)})"
    if alert.state is AlertState.PENDING:
        return f"pending for {format_elapsed(until - start)} (since {_fmt_time(start)})"
    return f"since {_fmt_time(start)} ({format_elapsed(until - start)})"


def _trace_line(t: Mapping[str, Any]) -> str:
    tid = str(t["trace_id"])
    shown = tid[:_TRACE_ID_SHOWN] + "…" if len(tid) > _TRACE_ID_SHOWN else tid
    line = f"- {md_link(f'trace {shown}', t['url'])}"
    if t["value"] is not None:
        line += f" value {format_number(t['value'])}"
    if t["note"]:
        line += f" · {md_text(t['note'])}"
    return line


def _default_title(alert: Alert, kind: NotificationKind) -> str:
    return f"[{str(kind).upper()}] {alert.rule} {_label_text(alert)}"


def _default_body(alert: Alert, kind: NotificationKind, traces: list[dict[str, Any]], rule_url: str) -> str:
    blocks: list[str] = []
    notes = dict(alert.annotations)
    for key in ("summary", "description"):
        if notes.get(key):
            blocks.append(md_text(notes.pop(key), multiline=True))
    notes.pop(UNIT_ANNOTATION, None)  # shown with the numbers
    gap, search = notes.pop(NO_EXEMPLARS, None), notes.pop(TRACE_SEARCH, None)  # shown with the traces
    why, release = notes.pop(EXPLANATION, None), notes.pop(RELEASE, None)  # shown with the numbers
    forecast = notes.pop(FORECAST, None)
    blocks.append(md_text(value_line(alert, kind)))
    if forecast:
        blocks.append("Forecast: " + md_text(forecast))
    if why:
        blocks.append("Why: " + md_text(why))
    since = since_line(alert, kind)
    if since:
        blocks.append(since + (" · " + md_text(release) if release else ""))
    elif release:
        blocks.append(md_text(release))
    if alert.labels:
        blocks.append("Labels: " + ", ".join(md_code(f"{k}={v}") for k, v in alert.labels.items()))
    if notes:
        blocks.append("\n".join(f"- {md_text(k)}: {md_text(v)}" for k, v in sorted(notes.items())))
    if traces:
        blocks.append("Top traces:\n" + "\n".join(_trace_line(t) for t in traces))
    elif gap or search:
        line = "Traces: " + md_text(gap or "none")
        blocks.append(line + (f" · {md_link(TRACE_SEARCH_TEXT, search)}" if safe_url(search) else ""))
    if rule_url:
        blocks.append(f"Rule: {md_link(f'{alert.group} / {alert.rule}', rule_url)}")
    return "\n\n".join(blocks)


def _custom(which: str, template: str | None, context: Mapping[str, Any], default: str, receiver: str) -> str:
    """Render a receiver's custom title/body template, or return ``default`` when absent or broken.

    A body template's outputs are Markdown-escaped (``default_body`` is escaped already).
    """
    if not template:
        return default
    try:
        if which == "body":
            return _compile_body(template).render(**{**context, "default_body": _Escaped(default)})
        return _render(template, context)
    except Exception as exc:  # a broken custom template must not stop the notification
        logger.warning("receiver %s: %s template error, using the default: %s", receiver, which, exc)
        return default


def render_notification(
    alert: Alert,
    *,
    kind: NotificationKind,
    receiver: str,
    settings: Settings,
    rule_url: str,
    title_template: str | None = None,
    body_template: str | None = None,
) -> Notification:
    """Render the title, Markdown body and links of one notification about one alert.

    An alert without trace IDs whose annotations say why (``no_exemplars``) shows that line in
    place of its top traces, with the ``trace_search`` link, which also leads ``links``.
    """
    item = Listed(alert, kind, rule_url, trace_links(alert, settings.trace_url, settings.notify.top_traces))
    traces = [trace_document(t) for t in item.traces]
    payload = alert_document(item)  # the template context: the webhook's field names
    title = _default_title(alert, kind)
    body = _default_body(alert, kind, traces, rule_url)
    if title_template or body_template:
        context = {
            **payload,
            "alert": alert,
            "kind": str(kind),
            "receiver": receiver,
            "default_title": title,
            "default_body": body,
        }
        title = _custom("title", title_template, context, title, receiver)
        body = _custom("body", body_template, context, body, receiver)
    links = [(f"trace {t['trace_id']}", str(t["url"])) for t in traces if safe_url(str(t["url"]))]
    search = alert.annotations.get(TRACE_SEARCH)
    if search and not traces and safe_url(search):
        links.append((TRACE_SEARCH_TEXT, search))
    if rule_url and safe_url(rule_url):
        links.append((f"rule {alert.rule}", rule_url))
    return Notification(
        receiver=receiver,
        kind=kind,
        dedup_key=payload["dedup_key"],
        title=title,
        body=body,
        alert=alert,
        links=tuple(links),
        listed=(item,),
    )
