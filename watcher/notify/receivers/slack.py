"""The Slack receiver: a Block Kit message posted to an incoming webhook (or a proxy in front of it).

This module owns the Block Kit document of a notification: a header with the state and the rule,
the rule's summary, value vs expected band, since when (a Slack date, shown in each reader's time
zone), the chart image from the status page (``public_url``), the top traces as links, the labels,
and buttons that open the rule page and a prefilled silence. It does not own the HTTP edge
(``http``), retries (``outbox``) nor the wording of values and times (``templates``).

Why not Apprise's ``slack://``: it sends the legacy attachment format with an "Apprise" footer,
cannot show a chart in webhook mode, has no buttons, and always posts to Slack's host, so it
cannot go through an egress proxy or be pointed at a test receiver. Here ``url`` is the whole
endpoint (``https://hooks.slack.com/services/…`` or any proxy's URL), kept secret like every URL.

Every data-derived string (rule, label values, annotations, trace notes) is escaped per Slack
mrkdwn (``markup.slack_text``, ``slack_code``, ``slack_link``) or sent as ``plain_text``; text
objects that carry data are ``verbatim`` (no auto-linking). The message respects Block Kit's
limits (``LIMITS``): long text is cut with "…" (never inside an entity), lists end with
"… and N more", at most ``MAX_BLOCKS`` blocks.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ...config import ReceiverSettings
from ...core import Alert, AlertState, Listed, Notification, NotificationKind, TraceLink, json_num, utc
from ...errors import NotifyError
from ...links import NO_EXEMPLARS, TRACE_SEARCH
from ...signing import sign
from ..document import shown_value
from ..markup import safe_url, slack_code, slack_link, slack_text
from ..silences import Matcher
from ..templates import FORECAST, UNIT_ANNOTATION, _fmt_time, format_elapsed, format_number, with_unit
from .http import JsonPoster, url_secrets

# Block Kit limits (Slack's reference for blocks, text objects and elements).
HEADER_MAX = 150
"""``header`` block: ``plain_text`` up to 150 characters."""
SECTION_MAX = 3000
"""``section`` text: up to 3,000 characters."""
FIELD_MAX = 2000
"""each ``section`` field: up to 2,000 characters."""
FIELDS_MAX = 10
"""at most 10 fields per ``section``."""
CONTEXT_ELEMENTS_MAX = 10
BUTTON_TEXT_MAX = 75
URL_MAX = 3000
"""button ``url`` and image ``image_url``: up to 3,000 characters."""
ALT_TEXT_MAX = 2000
ACTIONS_MAX = 25
MAX_BLOCKS = 50
"""A message holds at most 50 blocks."""
TEXT_MAX = 3000
"""The top-level ``text`` (notification and fallback text): kept short; Slack cuts at 40,000."""
LIMITS = {
    "header": HEADER_MAX,
    "section": SECTION_MAX,
    "field": FIELD_MAX,
    "fields": FIELDS_MAX,
    "context_elements": CONTEXT_ELEMENTS_MAX,
    "button_text": BUTTON_TEXT_MAX,
    "url": URL_MAX,
    "alt_text": ALT_TEXT_MAX,
    "actions": ACTIONS_MAX,
    "blocks": MAX_BLOCKS,
    "text": TEXT_MAX,
}

MAX_TRACES = 5
LABEL_MAX = 200
"""A label (``name=value``) is shown cut to this many characters (the silence link keeps it whole)."""
MAX_GROUP_ALERTS = 10
SILENCE_DURATION = "1h"
_TRACE_ID_SHOWN = 8
logger = logging.getLogger(__name__)
_ELLIPSIS = "…"


def fit(raw: str, limit: int, *, multiline: bool = False, escape: bool = True) -> str:
    """Return ``raw`` escaped (``slack_text``) in at most ``limit`` characters, cut with "…".

    The raw text is cut before escaping, so an entity (``&amp;``) is never split.
    """
    text = slack_text(raw, multiline=multiline) if escape else raw
    if len(text) <= limit:
        return text
    keep = limit - 1
    while keep > 0:
        cut = raw[:keep].rstrip()
        text = (slack_text(cut, multiline=multiline) if escape else cut) + _ELLIPSIS
        if len(text) <= limit:
            return text
        keep -= max(1, len(text) - limit)
    return _ELLIPSIS


def _plain(text: str, limit: int) -> dict[str, Any]:
    # plain_text is never parsed for links or mentions; emoji codes in data stay text too
    return {"type": "plain_text", "text": fit(text, limit, escape=False) or " ", "emoji": False}


def _mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object whose pieces are escaped already; verbatim: no auto-links or mentions."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _join_within(lines: Sequence[str], limit: int, sep: str = "\n", hidden: int = 0) -> str:
    """Join whole ``lines`` within ``limit``; then say how many did not fit (``… and N more``).

    ``hidden`` counts items left out before (beyond a list's cap), so the count stays true.
    """
    out: list[str] = []
    for i, line in enumerate(lines):
        left = len(lines) - i - 1 + hidden  # not shown if this line is the last that fits
        room = sep.join([*out, line] + ([f"… and {left} more"] if left else []))
        if len(room) > limit:
            return sep.join([*out, f"… and {len(lines) - i + hidden} more"])
        out.append(line)
    return sep.join([*out, f"… and {hidden} more"] if hidden else out)


def _code(raw: str, limit: int = LABEL_MAX) -> str:
    """Return ``raw`` as a Slack code span, cut to ``limit`` characters first."""
    return slack_code(raw if len(raw) <= limit else raw[: limit - 1] + _ELLIPSIS)


def _num(alert: Alert, x: float) -> str:
    return with_unit(x, alert.annotations.get(UNIT_ANNOTATION, ""))


def slack_date(ts: datetime, fallback: str) -> str:
    """Return a Slack date token: shown in the reader's time zone, ``fallback`` where unsupported."""
    epoch = int(utc(ts).timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{slack_text(fallback)}>"


def _fields(alert: Alert, kind: NotificationKind) -> list[dict[str, Any]]:
    resolved = kind is NotificationKind.RESOLVED
    out = [f"*{'Final value' if resolved else 'Value'}*\n{slack_text(_num(alert, alert.value))}"]
    if math.isfinite(alert.expected):
        out.append(f"*Expected*\n{slack_text(_num(alert, alert.expected))}")
    lo, hi = math.isfinite(alert.lower), math.isfinite(alert.upper)
    if lo and hi:
        out.append(f"*Band*\n{slack_text(_num(alert, alert.lower) + ' – ' + _num(alert, alert.upper))}")
    elif hi:
        out.append(f"*Limit*\n{slack_text('≤ ' + _num(alert, alert.upper))}")
    elif lo:
        out.append(f"*Limit*\n{slack_text('≥ ' + _num(alert, alert.lower))}")
    start = alert.active_at or alert.fired_at
    if start is not None:
        since = slack_date(start, _fmt_time(start))
        if resolved and alert.resolved_at is not None:
            ended = slack_date(alert.resolved_at, _fmt_time(alert.resolved_at))
            out.append(f"*Resolved*\n{ended}, lasted {format_elapsed(alert.resolved_at - start)}")
            out.append(f"*Since*\n{since}")
        else:
            until = alert.last_eval or alert.fired_at or start
            if alert.state is AlertState.FIRING and alert.fired_at is not None:
                out.append(f"*Firing for*\n{format_elapsed(until - alert.fired_at)}")
            out.append(f"*Since*\n{since} ({format_elapsed(until - start)})")
    if not resolved and alert.score:
        out.append(f"*Score*\n{format_number(alert.score)}")
    if alert.group:
        out.append(f"*Group*\n{fit(alert.group, FIELD_MAX - 10)}")
    return [_mrkdwn(text[:FIELD_MAX]) for text in out[:FIELDS_MAX]]


def _trace_lines(traces: Sequence[TraceLink]) -> list[str]:
    lines = []
    for link in traces:
        tid = link.trace.trace_id
        shown = tid[:_TRACE_ID_SHOWN] + _ELLIPSIS if len(tid) > _TRACE_ID_SHOWN else tid
        line = "• " + slack_link(f"trace {shown}", link.url)
        value = json_num(link.trace.value)
        if value is not None:
            line += f" value {format_number(value)}"
        if link.trace.note:
            line += " · " + fit(link.trace.note, 200)
        lines.append(line)
    return lines


def silence_url(external_url: str, labels: Mapping[str, str]) -> str | None:
    """Return the status page's new-silence link prefilled with ``labels``, or None.

    ``{external_url}/silences/new?matcher=alertname="…"&matcher=…&duration=1h&comment=…``: each
    ``matcher`` in the syntax of ``watcher silence add -m``. None without labels (a silence must
    name something) or when too long for a button.
    """
    if not labels:
        return None
    query = [("matcher", str(Matcher(name=k, value=str(v)))) for k, v in labels.items()]
    name = labels.get("alertname", "")
    query += [("duration", SILENCE_DURATION), ("comment", f"silenced from Slack: {name}".strip())]
    url = f"{external_url.rstrip('/')}/silences/new?{urlencode(query, quote_via=quote)}"
    return url if len(url) <= URL_MAX and safe_url(url) else None


def silence_labels(n: Notification) -> dict[str, str]:
    """Return the labels a silence from this message matches: the alert's, or its group's.

    A group message silences the group (its ``group_by`` labels); a label the group is keyed on
    but an alert lacks is matched as empty, as Alertmanager does.
    """
    if n.group is not None and len(n.items) > 1:
        return dict(n.group.labels)
    alert = n.alert
    return {"alertname": alert.rule, **{k: v for k, v in alert.labels.items() if k != "alertname"}}


FEEDBACK_BUTTONS = (
    ("Real incident", "watcher-feedback-real", "danger"),
    ("False alarm", "watcher-feedback-false", None),
)
"""The feedback buttons: text, ``action_id`` (what ``web.slack`` records) and style."""


def feedback_value(alert: Alert) -> str | None:
    """Return what a feedback button carries: ``FINGERPRINT:EPISODE_START_UNIX`` (None: no episode)."""
    start = alert.active_at or alert.fired_at
    return None if start is None else f"{alert.fingerprint}:{int(utc(start).timestamp())}"


@dataclass(frozen=True, slots=True)
class ChartSigner:
    """Signs chart links so Slack can fetch them while reads need ``server.read_token``.

    ``key`` is derived from the read token (``signing.derive_key``); a link expires ``ttl`` after
    the evaluation the message is about, so the same notification always gets the same link.
    """

    key: bytes = field(repr=False)
    ttl: timedelta

    def query(self, path: str, at: datetime) -> str:
        """Return the ``exp=…&sig=…`` query that signs ``path`` until ``at + ttl``."""
        return sign(self.key, path, at, self.ttl)


def chart_url(
    public_url: str | None, fingerprint: str, signer: ChartSigner | None = None, at: datetime | None = None
) -> str | None:
    """Return the status page's chart of one alert at ``public_url``, or None without one.

    With ``signer`` the link carries an expiring signature from ``at`` (None without ``at``: an
    unsigned link would be refused once reads need a token).
    """
    if not public_url or not fingerprint:
        return None
    path = f"/chart/alert/{quote(fingerprint, safe='')}.png"
    url = f"{public_url.rstrip('/')}{path}"
    if signer is not None:
        if at is None:
            return None
        url += "?" + signer.query(path, at)
    return url if len(url) <= URL_MAX and safe_url(url) else None


def _button(text: str, url: str, action_id: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "text": _plain(text, BUTTON_TEXT_MAX), "url": url}
    b["action_id"] = action_id
    if style:
        b["style"] = style
    return b


def _alert_line(n: Notification, item: Listed) -> str:
    """One member of a group: ``• *RULE* `k=v` … — value …`` (escaped)."""
    a = item.alert
    items = [(k, v) for k, v in a.labels.items() if k != "alertname"]
    shown = " ".join(_code(f"{k}={v}", LABEL_MAX // 2) for k, v in items[:6]) + (
        " …" if len(items) > 6 else ""
    )
    status = str(item.kind)
    value = shown_value(n, item)
    unit = a.annotations.get(UNIT_ANNOTATION, "")
    text = f"• {status} *{fit(a.rule, 200)}* {shown}"
    if value is not None:
        text += f" — value {slack_text(with_unit(value, unit))}"
    return text


def blocks(
    n: Notification,
    *,
    external_url: str,
    public_url: str | None,
    chart: bool = True,
    signer: ChartSigner | None = None,
    feedback: bool = False,
) -> dict[str, Any]:
    """Return the Block Kit message (``text`` + ``blocks``) for ``n`` (chart links signed by ``signer``).

    With ``feedback`` (``server.slack_signing_secret`` set) the message has "Real incident" and
    "False alarm" buttons, which Slack posts to the daemon's ``/api/v1/slack/interactions``.
    """
    alert, lead = n.alert, n.lead
    firing = n.kind is NotificationKind.FIRING
    icon = ":red_circle:" if firing else ":large_green_circle:"
    out: list[dict[str, Any]] = [{"type": "header", "text": _plain(n.title, HEADER_MAX)}]
    notes = dict(alert.annotations)
    prose = [notes.get(k, "") for k in ("summary", "description") if notes.get(k)]
    if prose:
        out.append({"type": "section", "text": _mrkdwn(fit("\n".join(prose), SECTION_MAX, multiline=True))})
    if notes.get(FORECAST):
        out.append(
            {"type": "section", "text": _mrkdwn("*Forecast:* " + fit(notes[FORECAST], SECTION_MAX - 20))}
        )
    out.append({"type": "section", "fields": _fields(alert, n.kind)})
    # Firing only: the status page draws the charts of the alerts it holds, and Slack refuses a
    # message whose image it cannot fetch (a resolved alert may be gone by then).
    at = alert.last_eval or alert.fired_at or alert.active_at
    image = chart_url(public_url, alert.fingerprint, signer, at) if chart and firing else None
    if image:
        alt = f"{alert.rule}: value and expected band"
        out.append(
            {
                "type": "image",
                "image_url": image,
                "alt_text": fit(alt, ALT_TEXT_MAX, escape=False),
                "title": _plain(f"{alert.rule} {_label_text(alert)}", HEADER_MAX),
            }
        )
    traces = lead.traces
    if traces:
        listed = _join_within(
            _trace_lines(traces[:MAX_TRACES]), SECTION_MAX - 20, hidden=max(0, len(traces) - MAX_TRACES)
        )
        out.append({"type": "section", "text": _mrkdwn(f"*Top traces*\n{listed}")})
    elif notes.get(NO_EXEMPLARS) or notes.get(TRACE_SEARCH):
        line = "*Traces:* " + fit(notes.get(NO_EXEMPLARS) or "none", 1000)
        if safe_url(notes.get(TRACE_SEARCH)):
            line += " · " + slack_link("search traces in the alert's window", notes[TRACE_SEARCH])
        out.append({"type": "section", "text": _mrkdwn(line[:SECTION_MAX])})
    members = n.items if n.group is not None else ()
    if len(members) > 1:
        lines = [_alert_line(n, item) for item in members[:MAX_GROUP_ALERTS]]
        listed = _join_within(lines, SECTION_MAX - 40, hidden=max(0, len(members) - MAX_GROUP_ALERTS))
        out.append({"type": "section", "text": _mrkdwn(f"*{len(members)} alerts in this group*\n{listed}")})
    label_items = [_code(f"{k}={v}") for k, v in alert.labels.items()]
    if label_items:
        labels_text = _join_within(label_items, SECTION_MAX, sep="  ")
        out.append({"type": "context", "elements": [_mrkdwn(labels_text)]})
    buttons = []
    rule_url = safe_url(lead.rule_url)
    if rule_url and len(rule_url) <= URL_MAX:
        buttons.append(_button("Open rule", rule_url, "watcher-open-rule", "primary"))
    if firing:
        silence = silence_url(external_url, silence_labels(n))
        if silence:
            buttons.append(_button(f"Silence {SILENCE_DURATION}…", silence, "watcher-silence"))
    first = next((t.url for t in traces if safe_url(t.url)), None)
    if first and len(first) <= URL_MAX:
        buttons.append(_button("Top trace", first, "watcher-top-trace"))
    value = feedback_value(alert) if feedback and n.notice is None else None
    if value is not None:
        for text, action, style in FEEDBACK_BUTTONS:
            button: dict[str, Any] = {"type": "button", "text": _plain(text, BUTTON_TEXT_MAX)}
            button |= {"action_id": action, "value": value}
            buttons.append(button | ({"style": style} if style else {}))
    if buttons:
        out.append({"type": "actions", "elements": buttons[:ACTIONS_MAX]})
    return {"text": f"{icon} " + fit(n.title, TEXT_MAX - len(icon) - 1), "blocks": out[:MAX_BLOCKS]}


def without_image(doc: dict[str, Any]) -> dict[str, Any]:
    """Return ``doc`` with its image block replaced by a "Chart" button (a link to the same PNG)."""
    image = next(b["image_url"] for b in doc["blocks"] if b["type"] == "image")
    kept = [b for b in doc["blocks"] if b["type"] != "image"]
    button = _button("Chart", image, "watcher-chart")
    actions = [b for b in kept if b["type"] == "actions"]
    if actions and len(actions[0]["elements"]) < ACTIONS_MAX:
        actions[0]["elements"] = [*actions[0]["elements"], button]
    elif not actions:
        kept = [*kept, {"type": "actions", "elements": [button]}]
    return {**doc, "blocks": kept}


def _label_text(alert: Alert) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in alert.labels.items() if k != "alertname") + "}"


class SlackReceiver:
    """POST Block Kit messages to a Slack incoming webhook (or to a proxy at ``url``)."""

    def __init__(
        self,
        name: str,
        rs: ReceiverSettings,
        *,
        external_url: str,
        public_url: str | None,
        signer: ChartSigner | None = None,
        feedback: bool = False,
    ) -> None:
        assert rs.url is not None  # guaranteed by ReceiverSettings
        self.name = name
        self._rs = rs
        self._external_url = external_url
        self._public_url = public_url
        self._signer = signer
        self._feedback = feedback
        url = rs.url.get_secret_value()
        self._http = JsonPoster(name, url, timeout_s=rs.timeout_s, secrets=url_secrets(url))
        # the longest a send may take (the stop budget uses it): twice when a refused image is resent
        self.timeout_s = rs.timeout_s * (2 if public_url and rs.attach_chart else 1)

    @property
    def last_response(self) -> str | None:
        """Return what Slack (or the proxy) answered last (redacted)."""
        return self._http.last_response

    def redact(self, text: str) -> str:
        """Return ``text`` without the webhook URL's secret parts."""
        return self._http.redact(text)

    def message(self, n: Notification) -> dict[str, Any]:
        """Return the JSON document posted for ``n``."""
        return blocks(
            n,
            external_url=self._external_url,
            public_url=self._public_url,
            chart=self._rs.attach_chart,
            signer=self._signer,
            feedback=self._feedback,
        )

    def send(self, n: Notification) -> None:
        """POST ``n``; raise ``NotifyError`` unless Slack accepts it.

        Slack answers ``200 ok``; errors come as 4xx with a word (``invalid_blocks``,
        ``channel_not_found``…), 429 with ``Retry-After``, or 5xx (``http.classify``). A 200 whose
        body is the Web API's ``{"ok": false, "error": …}`` is refused too.
        """
        doc = self.message(n)
        try:
            response = self._http.post(json.dumps(doc, ensure_ascii=False).encode())
        except NotifyError as exc:
            # Slack fetches the image while it takes the message and refuses the whole message
            # (400 invalid_blocks) when it cannot: send it again at once without the image, with
            # a button to the chart instead, rather than losing the alert.
            if exc.reason != "client_error" or not any(b["type"] == "image" for b in doc["blocks"]):
                raise
            logger.warning(
                "receiver %s: Slack refused the message with its chart image; sent without", self.name
            )
            response = self._http.post(json.dumps(without_image(doc), ensure_ascii=False).encode())
        _check_ok(self.name, response, self._http)


def _check_ok(name: str, response: httpx.Response, http: JsonPoster) -> None:
    body = response.text.strip()
    if not body.startswith("{"):
        return  # Slack's webhooks answer "ok"
    try:
        doc = json.loads(body)
    except ValueError:
        return
    if isinstance(doc, dict) and doc.get("ok") is False:
        word = str(doc.get("error") or "error")[:80]
        raise NotifyError(
            http.redact(f"receiver {name}: Slack refused the message: {word}"),
            retryable=word in ("ratelimited", "rate_limited", "service_unavailable", "internal_error"),
            reason="client_error",
            receiver=name,
        )
