"""The message for one flush of a group: a single alert as ``templates`` words it, or a digest.

This module owns the title and Markdown body of a group notification (``[FIRING:3] …``, firing
alerts then resolved ones, each with value vs band, since when and its top trace link) and what
it lists (``Notification.listed``, ``group``). It does not own the wording of one alert
(``templates``), the structured form (``document``) nor deciding what to send (``grouping``).

A group listing one alert is worded exactly like an ungrouped alert, so grouping changes nothing
for the common case; its structured form still carries the group fields when the receiver groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..config import Settings
from ..core import Alert, GroupRef, Labels, Notification, NotificationKind
from .grouping import AggGroup, Decision, group_dedup_key
from .templates import render_notification, since_line, value_line

RuleUrl = Callable[[str, str], str]
_MAX_LISTED = 20


def _labels_text(labels: Labels, skip: frozenset[str] = frozenset()) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items() if k not in skip and k != "alertname")
    return "{" + inner + "}"


def _title(kind: NotificationKind, group: AggGroup, alerts: list[Alert], firing: int) -> str:
    names = sorted({a.rule for a in alerts})
    name = names[0] if len(names) == 1 else "+".join(names[:3])
    count = firing if kind is NotificationKind.FIRING else len(alerts)
    labels = _labels_text(group.labels)
    return f"[{str(kind).upper()}:{count}] {name}" + (f" {labels}" if labels != "{}" else "")


def _short(text: str) -> str:
    """Shorten ``trace <32 hex>`` link texts to ``trace <8 hex>…``."""
    kind, _, ident = text.partition(" ")
    return f"{kind} {ident[:8]}…" if kind == "trace" and len(ident) > 8 else text


def _alert_block(n: Notification, group: AggGroup) -> str:
    a = n.alert
    head = f"*{a.rule}* {_labels_text(a.labels, frozenset(group.labels))}"
    summary = a.annotations.get("summary") or a.annotations.get("description")
    lines = [f"{head} — {summary}" if summary else head, value_line(a, n.kind)]
    since = since_line(a, n.kind)
    if since:
        lines.append(since)
    links = [f"[{_short(text)}]({url})" for text, url in n.links[:2]]
    if links:
        lines.append(" · ".join(links))
    return "\n".join(lines)


def render_group(
    group: AggGroup,
    decision: Decision,
    *,
    settings: Settings,
    rule_url: RuleUrl,
    episode: Any,
) -> Notification:
    """Return the notification for ``decision`` on ``group`` (``episode`` dates the dedup key)."""
    rs = settings.receivers[group.receiver]
    listed = list(decision.firing) + list(decision.resolved)

    def one(a: Alert) -> Notification:
        kind = NotificationKind.FIRING if a in decision.firing else NotificationKind.RESOLVED
        return render_notification(
            a,
            kind=kind,
            receiver=group.receiver,
            settings=settings,
            rule_url=rule_url(a.group, a.rule),
            title_template=rs.title_template,
            body_template=rs.body_template,
        )

    if not group.grouped:
        (alert,) = listed
        n = one(alert)
        return n if n.kind is decision.kind else replace(n, kind=decision.kind)
    singles = [one(a) for a in listed]
    base = singles[0]
    if len(singles) == 1:
        title, body = base.title, base.body
    else:
        title = _title(decision.kind, group, listed, len(decision.firing))
        blocks: list[str] = []
        for label, part in (
            ("Firing", singles[: len(decision.firing)]),
            ("Resolved", singles[len(decision.firing) :]),
        ):
            if part:
                blocks.append(f"**{label} ({len(part)})**")
                blocks += [_alert_block(n, group) for n in part[:_MAX_LISTED]]
                if len(part) > _MAX_LISTED:
                    blocks.append(f"… and {len(part) - _MAX_LISTED} more")
        body = "\n\n".join(blocks)
    key = group_dedup_key(group.key, episode)
    links: list[tuple[str, str]] = []
    for n in singles:
        links += [link for link in n.links if link not in links]
    return Notification(
        receiver=group.receiver,
        kind=decision.kind,
        dedup_key=key,
        title=title,
        body=body,
        alert=base.alert,
        links=tuple(links),
        listed=tuple(n.lead for n in singles),
        group=GroupRef(group.key, group.labels),
    )
