"""What the status page and the read API show: plain dicts gathered from a running daemon.

This module owns collecting the daemon's state for display — rule groups with their health, the
current alerts with their bands and trace links, recent notifications, dead letters, silences and
the outbox's depth and oldest age — and keeping secrets out of it (``Redactor``). It also owns
what the page adds to an alert: why it is muted (``mute_status``: the silences, maintenance window
and inhibiting alert that keep it from being notified, as the notification pipeline decides it),
its threshold for a threshold rule, label filters on the alert list (``parse_filters``,
Alertmanager's matchers) and one alert's state history from the store (``state_history``). It does
not own the HTML (``page``), the JSON routes (``api``) nor the charts (``charts``).

Every function takes the daemon duck-typed (``settings``, ``store``, ``rules``, ``evaluators``,
``alert_store``) and reads missing parts as empty, so a partly built daemon still renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from ..core import Alert, AlertState, iso, json_num, trace_to_dict, utc
from ..engine.state import row_to_alert
from ..notify.document import trace_link
from ..notify.inhibit import inhibiting
from ..notify.maintenance import open_window
from ..notify.mute import firing_in_store
from ..notify.silences import Matcher, active_silences, matches_all, parse_matcher
from ..redact import Masker, secret_values
from ..store.tables import AlertRow, OutboxRow, SilenceRow, TransitionRow
from .charts import thresholds_of
from .view import DaemonView

DEFAULT_TRACE_URL = "http://localhost:16686/trace/{trace_id}"
MASK = "[redacted]"


class Redactor:
    """Replaces every configured secret (and the password inside a secret URL) with ``[redacted]``."""

    def __init__(self, settings: Any) -> None:
        found: set[str] = set()
        for value in secret_values(settings):  # SecretStr values and the secret parts of URLs
            found.add(value)
            try:
                url = make_url(value)
            except Exception:  # not a database URL: the whole value is the secret
                continue
            if url.password:
                found.add(str(url.password))
        # Longest first, so a URL is masked whole before its password is; tiny values would mask noise.
        self._masker = Masker(found, mask=MASK)

    def __call__(self, text: str | None) -> str:
        """Return ``text`` with every secret masked ("" for None)."""
        return self._masker(text) if text else ""

    def deep(self, obj: Any) -> Any:
        """Return ``obj`` (JSON-like) with every string masked."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, Mapping):
            return {k: self.deep(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.deep(v) for v in obj]
        return obj


def trace_url_of(daemon: DaemonView) -> str:
    """Return the daemon's trace link template."""
    return str(getattr(daemon.settings, "trace_url", DEFAULT_TRACE_URL))


def health_rows(daemon: DaemonView) -> dict[tuple[str, str], dict[str, Any]]:
    """Return the stored health of every rule, keyed by (group, rule); empty when unreadable."""
    store = getattr(daemon, "alert_store", None)
    if store is None:
        return {}
    try:
        rows = store.health()
    except Exception:  # the status page must render with the store down; readyz says why
        return {}
    return {(r["group_name"], r["rule"]): r for r in rows}


def current_alerts(daemon: DaemonView) -> list[Alert]:
    """Return every alert the daemon's evaluators hold."""
    evaluators: Mapping[str, Any] = getattr(daemon, "evaluators", {}) or {}
    return [a for ev in list(evaluators.values()) for a in ev.alerts()]


def rule_groups(daemon: DaemonView) -> list[dict[str, Any]]:
    """Return the loaded groups, each with its rules' health, last evaluation, error and alerts.

    ``warmingUp`` counts the rule's series whose detector has not enough history for a verdict
    yet (``warmUp``: one of their reasons, e.g. ``warming up: 40/288 points``).
    """
    rules = getattr(daemon, "rules", None)
    if rules is None:
        return []
    health = health_rows(daemon)
    by_rule: dict[tuple[str, str], list[Alert]] = {}
    for a in current_alerts(daemon):
        by_rule.setdefault((a.group, a.rule), []).append(a)
    warming: dict[tuple[str, str], list[str]] = {}
    for name, ev in list((getattr(daemon, "evaluators", {}) or {}).items()):
        latest = getattr(ev, "verdicts", None)
        for rule_name, per_series in (latest() if callable(latest) else {}).items():
            reasons = [
                v.reason for v in per_series.values() if not v.ready and v.reason.startswith("warming up")
            ]
            if reasons:
                warming[(name, rule_name)] = reasons
    out = []
    for lg in rules.groups:
        group = lg.group
        rows = []
        for rule in group.rules:
            h = health.get((group.name, rule.alert), {})
            alerts = by_rule.get((group.name, rule.alert), [])
            worst = max((a.state for a in alerts), default=AlertState.INACTIVE)
            rows.append(
                {
                    "name": rule.alert,
                    "group": group.name,
                    "source": rule.source,
                    "detector": rule.detector.kind if rule.detector is not None else "expr",
                    "health": h.get("health", "unknown"),
                    "lastEvaluation": iso(h.get("last_eval")),
                    "evaluationTime": h.get("duration_s"),
                    "lastError": h.get("last_error"),
                    "evaluations": h.get("evaluations", 0),
                    "failures": h.get("failures", 0),
                    "series": h.get("series", 0),
                    "state": str(worst),
                    "firing": sum(1 for a in alerts if a.state is AlertState.FIRING),
                    "pending": sum(1 for a in alerts if a.state is AlertState.PENDING),
                    "warmingUp": len(warming.get((group.name, rule.alert), [])),
                    "warmUp": next(iter(warming.get((group.name, rule.alert), [])), None),
                }
            )
        states = {r["health"] for r in rows}
        out.append(
            {
                "name": group.name,
                "file": str(lg.file),
                "interval": group.interval.total_seconds(),
                "health": "err" if "err" in states else ("ok" if states == {"ok"} else "unknown"),
                "rules": rows,
            }
        )
    return out


def alert_dict(alert: Alert, trace_url: str) -> dict[str, Any]:
    """Return one alert as the API and the page show it."""
    return {
        "fingerprint": alert.fingerprint,
        "group": alert.group,
        "rule": alert.rule,
        "labels": {"alertname": alert.rule, **dict(alert.labels)},
        "annotations": dict(alert.annotations),
        "state": str(alert.state),
        "value": json_num(alert.value),
        "expected": json_num(alert.expected),
        "lower": json_num(alert.lower),
        "upper": json_num(alert.upper),
        "score": json_num(alert.score),
        "surprise": json_num(alert.surprise),
        "activeAt": iso(alert.active_at),
        "firingAt": iso(alert.fired_at),
        "resolvedAt": iso(alert.resolved_at),
        "lastEvaluation": iso(alert.last_eval),
        "traces": [{**trace_to_dict(t), "url": trace_link(trace_url, t.trace_id)} for t in alert.traces],
    }


def _rules_by_name(daemon: DaemonView) -> dict[tuple[str, str], Any]:
    rules = getattr(daemon, "rules", None)
    return {
        (lg.group.name, r.alert): r
        for lg in (rules.groups if rules is not None else ())
        for r in lg.group.rules
    }


def with_thresholds(daemon: DaemonView, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``thresholds`` (``["threshold > 5"]``; empty for a learned band) to each alert dict."""
    by_name = _rules_by_name(daemon)
    for a in alerts:
        rule = by_name.get((a["group"], a["rule"]))
        a["thresholds"] = [str(t) for t in thresholds_of(rule)] if rule is not None else []
    return alerts


def mute_status(daemon: DaemonView, alerts: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Add why each alert is muted at ``now``, as the notification pipeline decides it.

    Each dict gains ``silencedBy`` (ids of the silences in force that match it), ``inhibitedBy``
    (the fingerprints of firing alerts that inhibit it, with ``inhibitedByNames``), ``maintenance``
    (the open window's name, or None) and ``muted`` (any of these). Labels include ``alertname``.
    """
    settings = daemon.settings
    notify = getattr(settings, "notify", None)
    windows = list(getattr(notify, "maintenance_windows", []) or [])
    rules = list(getattr(notify, "inhibit_rules", []) or [])
    with daemon.store.session() as s:
        sil = active_silences(s, now)
        firing = firing_in_store(s) if rules else []
    firing += [dict(a["labels"]) for a in alerts if a["state"] == "firing"]
    for a in alerts:
        labels = dict(a["labels"])
        a["silencedBy"] = [x.id for x in sil if matches_all(x.matchers or [], labels)]
        window = open_window(windows, labels, now) if windows else None
        a["maintenance"] = window.name if window is not None else None
        hit = inhibiting(rules, labels, firing) if rules else None
        src = dict(hit[1]) if hit is not None else None
        a["inhibitedBy"] = [_fingerprint_of(src)] if src is not None else []
        a["inhibitedByNames"] = [src.get("alertname", "?")] if src is not None else []
        a["muted"] = bool(a["silencedBy"] or a["maintenance"] or a["inhibitedBy"])
    return alerts


def _fingerprint_of(labels: Mapping[str, str]) -> str:
    from ..core import Labels

    return Labels(dict(labels)).fingerprint


RESERVED_PARAMS = frozenset({"filter", "refresh"})
"""Query parameters of the alert list that are not label filters (filter those labels with
``filter=refresh="x"``)."""


def parse_filters(params: Iterable[tuple[str, str]]) -> list[Matcher]:
    """Return the label matchers of a query string (raise ValueError with the reason when bad).

    ``filter=tenant=~"ac.*"`` takes Alertmanager's matcher syntax (``=``, ``!=``, ``=~``, ``!~``;
    regexes anchored, RE2); any other parameter ``name=value`` that is not one of
    ``RESERVED_PARAMS`` is an equality matcher (``?tenant=acme&severity=page``).
    """
    out: list[Matcher] = []
    for key, value in params:
        if "\x00" in key or "\x00" in value:
            raise ValueError("NUL characters are not allowed in a filter")
        if key == "filter":
            for part in _split_filter(value):
                out.append(parse_matcher(part))
        elif key not in RESERVED_PARAMS:
            out.append(parse_matcher(f"{key}={_quote(value)}"))
        if len(out) > 50:
            raise ValueError("at most 50 label filters")
    return out


def _quote(value: str) -> str:
    return '"' + value + '"'


def _split_filter(text: str) -> list[str]:
    """Split ``{a="x", b=~"y,z"}`` (braces optional) at commas outside quotes."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    parts: list[str] = []
    cur: list[str] = []
    quote = ""
    escaped = False
    for ch in body:
        if escaped:
            escaped = False
        elif ch == "\\" and quote:
            escaped = True
        elif quote and ch == quote:
            quote = ""
        elif not quote and ch in "\"'":
            quote = ch
        elif not quote and ch == ",":
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (x.strip() for x in parts) if p]


def filter_alerts(alerts: list[dict[str, Any]], matchers: list[Matcher]) -> list[dict[str, Any]]:
    """Return the alerts whose labels (with ``alertname``) satisfy every matcher."""
    return [a for a in alerts if all(m.matches(a["labels"]) for m in matchers)]


def find_alert(daemon: DaemonView, fingerprint: str) -> tuple[Alert, bool] | None:
    """Return the alert with ``fingerprint`` and whether it has a rule, from the evaluators or the store.

    A resolved alert the evaluators have let go is read from the store's ``alerts`` table while
    it is kept there; ``WatcherSourceDown`` (no rule) comes from the source-down monitor.
    """
    for a in current_alerts(daemon):
        if a.fingerprint == fingerprint:
            return a, True
    monitor = getattr(daemon, "source_down", None)
    for a in list(monitor.alerts()) if monitor is not None else []:
        if a.fingerprint == fingerprint:
            return a, False
    with daemon.store.session() as s:
        row = s.get(AlertRow, fingerprint)
        return (row_to_alert(row), True) if row is not None else None


def state_history(daemon: DaemonView, alert: Alert, limit: int = 200) -> list[dict[str, Any]]:
    """Return the alert's state transitions, newest first.

    Each is ``{at, state, from, episode, value, expected, lower, upper, source}``, read from the
    store's ``alert_transitions`` (written with the alert state, ``source: "transition"``). The
    current episode's stamps on the alert itself fill in what the table lacks (``source:
    "alert"``): an episode already running when the store was migrated to version 10.
    """
    with daemon.store.session() as s:
        stmt = (
            select(TransitionRow)
            .where(col(TransitionRow.fingerprint) == alert.fingerprint)
            .order_by(col(TransitionRow.at).desc(), col(TransitionRow.id).desc())
            .limit(limit)
        )
        rows = list(s.exec(stmt).all())
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        at = iso(r.at)
        assert at is not None
        seen.setdefault(
            (r.to_state, at),
            {
                "at": at,
                "state": r.to_state,
                "from": r.from_state,
                "episode": iso(r.episode_start),
                "value": json_num(r.value),
                "expected": json_num(r.expected),
                "lower": json_num(r.lower),
                "upper": json_num(r.upper),
                "source": "transition",
            },
        )
    start = iso(alert.active_at or alert.fired_at)
    stamps = (("pending", alert.active_at), ("firing", alert.fired_at), ("resolved", alert.resolved_at))
    for state, when in stamps:
        at = iso(when)
        if at is not None and (state, at) not in seen:
            empty = {"from": None, "value": None, "expected": None, "lower": None, "upper": None}
            seen[(state, at)] = {"at": at, "state": state, "episode": start, **empty, "source": "alert"}
    order = {"pending": 0, "firing": 1, "resolved": 2}
    return sorted(seen.values(), key=lambda x: (x["at"], order[x["state"]]), reverse=True)


def _rank(surprise: float) -> float:
    """Return a sort key for ``surprise`` (NaN, from an alert without data, ranks last)."""
    return surprise if surprise == surprise else -1.0


def active_alerts(
    daemon: DaemonView, states: Iterable[AlertState] = (AlertState.FIRING, AlertState.PENDING)
) -> list[dict[str, Any]]:
    """Return the alerts in ``states``, firing first, the most surprising first, then by rule and labels."""
    wanted = set(states)
    monitor = getattr(daemon, "source_down", None)  # WatcherSourceDown belongs to no rule group
    down = list(monitor.alerts()) if monitor is not None else []
    alerts = [a for a in [*current_alerts(daemon), *down] if a.state in wanted]
    alerts.sort(key=lambda a: (-int(a.state), -_rank(a.surprise), a.group, a.rule, repr(a.labels)))
    url = trace_url_of(daemon)
    synthetic = {id(a) for a in down}  # no rule page and no series to chart
    return [{**alert_dict(a, url), "has_rule": id(a) not in synthetic} for a in alerts]


def _outbox_dict(row: OutboxRow) -> dict[str, Any]:
    message = row.message or {}
    return {
        "id": row.id,
        "receiver": row.receiver,
        "kind": row.kind,
        "status": row.status,
        "attempts": row.attempts,
        "title": str(message.get("title") or ""),
        "created_at": iso(row.created_at),
        "sent_at": iso(row.sent_at),
        "next_attempt_at": iso(row.next_attempt_at),
        "last_reason": row.last_reason,
        "last_error": row.last_error,
    }


def notifications(daemon: DaemonView, *, status: str | None = None, limit: int = 25) -> list[dict[str, Any]]:
    """Return the newest outbox rows (of one ``status``: pending, sent or dead), newest first."""
    with daemon.store.session() as s:
        stmt = select(OutboxRow).order_by(col(OutboxRow.id).desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(col(OutboxRow.status) == status)
        return [_outbox_dict(r) for r in s.exec(stmt).all()]


def outbox_stats(store: Any, now: datetime) -> tuple[int, float]:
    """Return the number of pending outbox rows and the age in seconds of the oldest (0 if none)."""
    with store.session() as s:
        stmt = select(func.count(), func.min(OutboxRow.created_at)).where(col(OutboxRow.status) == "pending")
        n, oldest = s.exec(stmt).one()
    if not n or oldest is None:
        return 0, 0.0
    # min() bypasses the column type on SQLite: it may come back as naive datetime or as text.
    when = datetime.fromisoformat(oldest) if isinstance(oldest, str) else oldest
    return int(n), max(0.0, (utc(now) - utc(when)).total_seconds())


def silence_state(row: SilenceRow, now: datetime) -> str:
    """Return ``active``, ``pending`` or ``expired``."""
    if utc(row.ends_at) <= utc(now):
        return "expired"
    return "pending" if utc(row.starts_at) > utc(now) else "active"


def silence_dict(row: SilenceRow, now: datetime) -> dict[str, Any]:
    """Return one silence as the API and the page show it."""
    matchers = list(row.matchers or [])
    return {
        "id": row.id,
        "matchers": matchers,
        "text": ", ".join(str(Matcher.from_dict(m)) for m in matchers),
        "startsAt": iso(row.starts_at),
        "endsAt": iso(row.ends_at),
        "createdBy": row.created_by,
        "comment": row.comment,
        "createdAt": iso(row.created_at),
        "state": silence_state(row, now),
    }


def silences(daemon: DaemonView, now: datetime, *, include_expired: bool = False) -> list[dict[str, Any]]:
    """Return the silences (active and pending; with ``include_expired`` all), oldest start first."""
    with daemon.store.session() as s:
        stmt = select(SilenceRow).order_by(col(SilenceRow.starts_at))
        if not include_expired:
            stmt = stmt.where(col(SilenceRow.ends_at) > now)
        return [silence_dict(r, now) for r in s.exec(stmt).all()]


def cluster_status(daemon: DaemonView) -> dict[str, Any] | None:
    """Return this replica's PostgreSQL cluster view (``/readyz``'s ``cluster``), else None."""
    cluster = getattr(daemon, "cluster", None)
    status = getattr(cluster, "status", None)
    if not callable(status):
        return None
    view = status()
    # the SQLite lock is one replica by construction: nothing to show
    return dict(view) if isinstance(view, dict) and view.get("mode") == "postgresql" else None


def endpoint_statuses(daemon: DaemonView) -> list[dict[str, Any]]:
    """Return each Prometheus endpoint's status after its latest call, by name (errors unredacted)."""
    sources: Mapping[str, Any] = getattr(daemon, "sources", {}) or {}
    found: dict[str, Any] = {}
    for source in {id(s): s for s in sources.values()}.values():
        report = getattr(source, "endpoint_status", None)
        if callable(report):
            found.update(report())
    return [
        {"name": name, "up": st.up, "error": st.error, "failures": st.failures}
        for name, st in sorted(found.items())
    ]
