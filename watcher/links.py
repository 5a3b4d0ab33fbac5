"""The "no exemplars" note and the trace-UI search link of an alert that has no trace IDs.

This module owns the ``trace_search_url`` template (its placeholders, checking them, filling them
in) and the wording of the note an alert carries when its Prometheus endpoint gave no exemplars.
It does not own deciding when an alert lacks trace IDs, nor the alert's time window
(``engine.group``), nor showing the note (``notify.templates``, the status page).

The note and the link travel as two alert annotations, ``no_exemplars`` and ``trace_search``, so
every receiver (message bodies, webhook and PagerDuty payloads, Alertmanager annotations) and the
status page show them without knowing about exemplars.

Placeholders of ``trace_search_url`` (anything else in braces that looks like one is an error):

* ``{start}`` / ``{end}``: the window in Unix seconds (start rounded down, end rounded up);
* ``{start_ms}`` / ``{end_ms}``: milliseconds (Grafana's ``from``/``to``);
* ``{start_us}`` / ``{end_us}``: microseconds (Jaeger UI's ``start``/``end``);
* ``{start_iso}`` / ``{end_iso}``: RFC 3339 UTC, ``2026-11-27T03:40:00Z``;
* ``{labels}``: the series' labels as ``tenant="acme",model="gpt-4o"``, URL-encoded;
* ``{labels_json}``: the same as a JSON object ``{"model":"gpt-4o","tenant":"acme"}``, URL-encoded
  (Jaeger UI's ``tags`` parameter).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from urllib.parse import quote

NO_EXEMPLARS = "no_exemplars"
"""The annotation saying that, and why, an alert has no trace IDs from exemplars."""
TRACE_SEARCH = "trace_search"
"""The annotation holding the trace UI's search link for the alert's window (with ``trace_search_url``)."""
NOTE_KEYS = (NO_EXEMPLARS, TRACE_SEARCH)
HOOK_SPAN_ATTRIBUTES: Mapping[str, str] = MappingProxyType(
    {
        "tenant": "watcher.tenant",
        "feature": "watcher.feature",
        "model": "gen_ai.request.model",
        "provider": "gen_ai.provider.name",
        "operation": "gen_ai.operation.name",
    }
)
"""The span attributes watcher's hooks record for the labels of the metrics they emit."""

PLACEHOLDERS = (
    "start", "end", "start_ms", "end_ms", "start_us", "end_us", "start_iso", "end_iso",
    "labels", "labels_json",
)  # fmt: skip
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ERROR_SHOWN = 300


def check_search_url(template: str) -> str:
    """Return ``template`` if its placeholders are all known and it pins both ends of the window.

    Raises ValueError naming the unknown placeholders and the known ones.
    """
    found = set(_PLACEHOLDER_RE.findall(template))
    unknown = sorted(found - set(PLACEHOLDERS))
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    if unknown:
        names = ", ".join("{" + p + "}" for p in unknown)
        raise ValueError(f"unknown placeholder(s) {names}; known: {known}")
    for end in ("start", "end"):
        if not found & {end, f"{end}_ms", f"{end}_us", f"{end}_iso"}:
            article = "a" if end == "start" else "an"
            raise ValueError(
                f"needs {article} {end} placeholder ({{{end}}}, {{{end}_ms}}, {{{end}_us}} or "
                f"{{{end}_iso}}) so the link opens the alert's window"
            )
    return template


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def label_matchers(labels: Mapping[str, str]) -> str:
    """Return ``tenant="acme",model="gpt-4o"`` (sorted, values escaped as in PromQL)."""
    esc = {k: v.replace("\\", "\\\\").replace('"', '\\"') for k, v in labels.items()}
    return ",".join(f'{k}="{esc[k]}"' for k in sorted(esc))


def trace_names(labels: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str]:
    """Return ``labels`` under the trace UI's attribute names: renamed by ``names``, ``""`` drops one."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        if key in ("__name__", "alertname"):
            continue
        name = names.get(key, key)
        if name:
            out[name] = value
    return out


def search_link(
    template: str, start: float, end: float, labels: Mapping[str, str], names: Mapping[str, str] | None = None
) -> str:
    """Return ``template`` with the window ``[start, end]`` (Unix seconds) and ``labels`` filled in.

    ``names`` maps metric label names to the trace UI's attribute names (``trace_search_labels``).
    """
    lo, hi = math.floor(start), math.ceil(end)
    labels = trace_names(labels, names or {})
    values = {
        "start": str(lo),
        "end": str(hi),
        "start_ms": str(lo * 1000),
        "end_ms": str(hi * 1000),
        "start_us": str(lo * 1_000_000),
        "end_us": str(hi * 1_000_000),
        "start_iso": _iso(lo),
        "end_iso": _iso(hi),
        "labels": quote(label_matchers(labels), safe=""),
        "labels_json": quote(json.dumps(labels, sort_keys=True, separators=(",", ":")), safe=""),
    }
    # one pass: a filled-in value is never scanned for placeholders again
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def window_text(start: float, end: float) -> str:
    """Return ``2026-11-27 03:40:00–03:55:10 UTC`` (the date twice when the window spans midnight)."""
    lo = datetime.fromtimestamp(math.floor(start), tz=UTC)
    hi = datetime.fromtimestamp(math.ceil(end), tz=UTC)
    if lo.date() == hi.date():
        return f"{lo:%Y-%m-%d %H:%M:%S}–{hi:%H:%M:%S} UTC"
    return f"{lo:%Y-%m-%d %H:%M:%S} – {hi:%Y-%m-%d %H:%M:%S} UTC"


def no_exemplars_note(endpoint: str, start: float, end: float, error: str | None = None) -> str:
    """Return ``no exemplars from Prometheus endpoint 'main' for <window>`` (plus why, on failure)."""
    text = f"no exemplars from Prometheus endpoint {endpoint!r} for {window_text(start, end)}"
    if error:
        reason = " ".join(error.split())
        if len(reason) > _ERROR_SHOWN:
            reason = reason[: _ERROR_SHOWN - 1] + "…"
        text += f" ({reason})"
    return text
