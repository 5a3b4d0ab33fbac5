"""The console receiver: a compact, readable block per notification on a text stream.

This module owns how an alert looks in a terminal (the embedded default receiver, used by
``watcher demo`` and by a config with no receivers). It does not own the wording of values and
times (``notify.templates``) nor retries (``outbox``).

Colours and styles appear only when the stream is a terminal; otherwise the block is plain text.
URLs are printed in full and never wrapped, so terminals make them clickable.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import TextIO

from rich.console import Console
from rich.style import Style
from rich.text import Text

from ...core import Notification, NotificationKind, json_num
from ...errors import NotifyError
from ...links import NO_EXEMPLARS, TRACE_SEARCH
from ..templates import EXPLANATION, FORECAST, RELEASE, format_number, since_line, value_line


class ConsoleReceiver:
    """Print notifications to ``stream`` (default: the current ``sys.stdout``)."""

    def __init__(self, name: str = "console", stream: TextIO | None = None) -> None:
        self.name = name
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, n: Notification) -> None:
        """Print ``n`` as one block; a closed or broken stream is a non-retryable failure."""
        stream = self._stream if self._stream is not None else sys.stdout
        console = Console(
            file=stream, highlight=False, soft_wrap=True, emoji=False, markup=False, log_path=False
        )
        try:
            with self._lock:
                for line in render_lines(n):
                    console.print(line)
                stream.flush()
        except (OSError, ValueError) as exc:
            raise NotifyError(
                f"console receiver {self.name}: cannot write: {type(exc).__name__}",
                retryable=False,
                reason="unknown",
                receiver=self.name,
            ) from None


def render_lines(n: Notification) -> list[Text]:
    """Return the styled lines of one notification block."""
    firing = n.kind is NotificationKind.FIRING
    colour = "bold red" if firing else "bold green"
    lines = [Text(n.title, style=colour)]
    lead = n.lead
    annotations = dict(lead.alert.annotations)
    summary = annotations.get("summary") or annotations.get("description")
    if summary:
        lines.append(Text("  " + str(summary)))
    value = Text("  " + value_line(n.alert, n.kind))
    score = n.alert.score
    if firing and n.notice is None and math.isfinite(score):  # a notice has no score
        value.append(f"  score {format_number(score)}", style="dim")
    lines.append(value)
    if annotations.get(FORECAST):
        lines.append(Text("  forecast: " + str(annotations[FORECAST])))
    why = annotations.get(EXPLANATION)
    if why:
        lines.append(Text("  why: " + str(why), style="bold"))
    since = since_line(n.alert, n.kind)
    if since:
        lines.append(Text("  " + since, style="dim"))
    if annotations.get(RELEASE):
        lines.append(Text("  " + str(annotations[RELEASE]), style="dim"))
    for link in lead.traces:
        line = Text("  trace ")
        line.append(link.url, style=Style(link=link.url))
        value_of = json_num(link.trace.value)
        if value_of is not None:
            line.append(f"  value {format_number(value_of)}")
        if link.trace.note:
            line.append(f" · {link.trace.note}", style="dim")
        lines.append(line)
    if not lead.traces and annotations.get(NO_EXEMPLARS):
        lines.append(Text(f"  traces: {annotations[NO_EXEMPLARS]}", style="dim"))
        search = annotations.get(TRACE_SEARCH)
        if search:
            line = Text("  search ")
            line.append(str(search), style=Style(link=str(search)))
            lines.append(line)
    rule_url = lead.rule_url
    if rule_url:
        line = Text("  rule  ", style="dim")
        line.append(str(rule_url), style=Style(link=str(rule_url)))
        lines.append(line)
    lines.append(Text(""))
    return lines
