"""Golden scenarios: the exact bodies watcher POSTs to webhook, PagerDuty, Alertmanager and Slack.

Each scenario runs the real pipeline (``Notifier``: group, render, outbox on SQLite) and delivers
through the real receivers to a loopback ``HTTPReceiver``; what arrives, byte for byte, is the
public face these tests pin (``data/golden_bodies.json``, captured from the version before the
receivers read typed notifications). The console receiver's text is kept beside them.

``python -m tests.notify.golden`` rewrites the fixtures (do it only on purpose: a changed body is a
changed public face) and the outbox rows as that version stored them (``data/outbox_v1.json``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlmodel import select

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore, firing, make_settings, resolved
from watcher.config import ReceiverSettings, RouteSettings, Settings
from watcher.core import Alert
from watcher.links import NO_EXEMPLARS, TRACE_SEARCH
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers import build_receiver
from watcher.notify.receivers.console import ConsoleReceiver
from watcher.store.tables import OutboxRow

DATA = Path(__file__).parent / "data"
BODIES = DATA / "golden_bodies.json"
OUTBOX_V1 = DATA / "outbox_v1.json"
PUBLIC = "https://watcher.example.com"
HOOK_SECRET = "golden-hmac-secret"
ROUTING_KEY = "golden-routing-key-000000000000"
PATHS = {"hook": "/webhook", "pd": "/v2/enqueue", "am": "/api/v2/alerts", "slack": "/services/T/B/x"}
S, M, H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)


def receiver_settings(base: str, **grouping: Any) -> dict[str, ReceiverSettings]:
    """Return the four HTTP receivers (and a console) pointed at ``base``, with ``grouping`` each."""
    return {
        "hook": ReceiverSettings(
            type="webhook", url=SecretStr(base + PATHS["hook"]), secret=SecretStr(HOOK_SECRET), **grouping
        ),
        "pd": ReceiverSettings(
            type="pagerduty",
            url=SecretStr(base + PATHS["pd"]),
            routing_key=SecretStr(ROUTING_KEY),
            **grouping,
        ),
        "am": ReceiverSettings(type="alertmanager", url=SecretStr(base), **grouping),
        "slack": ReceiverSettings(type="slack", url=SecretStr(base + PATHS["slack"]), **grouping),
        "console": ReceiverSettings(type="console", **grouping),
    }


def settings_for(base: str, **grouping: Any) -> Settings:
    """Return settings routing every alert to all five receivers, one send at a time."""
    receivers = receiver_settings(base, **grouping)
    return make_settings(
        receivers=receivers,
        route=RouteSettings(receivers=list(receivers)),
        public_url=PUBLIC,
        notify={"delivery_workers": 1, "delivery_per_receiver": 1},
    )


def _alerts() -> dict[str, Alert]:
    a = firing(
        labels={"tenant": "acme", "model": "gpt-4o", "severity": "page"},
        annotations={
            "summary": "acme spends too much",
            "unit": "USD/h",
            "runbook": "https://runbooks.test/spend",
        },
    )
    b = replace(
        firing("LatencyAnomaly", labels={"tenant": "acme", "model": "gpt-4o-mini"}, value=3.2, surprise=7.25),
        group="llm-latency",
    )
    c = firing(
        labels={"tenant": "acme", "model": "claude"},
        active_at=T0 + 2 * M,
        traces=(),
        annotations={
            NO_EXEMPLARS: "no exemplars on llm_cost_usd",
            TRACE_SEARCH: "http://jaeger.test/search?x=1",
        },
    )
    return {"a": a, "b": b, "c": c}


Step = tuple[timedelta, list[Alert]]


def scenarios() -> dict[str, tuple[dict[str, Any], list[Step]]]:
    """Return name → (receiver grouping, [(time since T0, alerts handed over)])."""
    al = _alerts()
    a, b, c = al["a"], al["b"], al["c"]
    a2 = replace(a, active_at=T0 + 3 * M, fired_at=T0 + 3 * M, last_eval=T0 + 3 * M)
    grouped = {"group_by": ["tenant"], "group_wait": 30 * S, "group_interval": 5 * M}
    return {
        "single": ({}, [(0 * S, [a]), (H, [resolved(a, T0 + H)])]),
        "superseded": (
            {"group_interval": 5 * M},
            [(0 * S, [a]), (M, [resolved(a, T0 + M)]), (3 * M, [a2]), (5 * M, [a2])],
        ),
        "group": (
            grouped,
            [
                (0 * S, [a, b]),
                (30 * S, [a, b]),
                (2 * M, [resolved(a, T0 + 2 * M), b, c]),
                (5 * M + 30 * S, [b, c]),
                (40 * M, [resolved(b, T0 + 40 * M), resolved(c, T0 + 40 * M)]),
                (41 * M, []),
            ],
        ),
        "group_of_one": (grouped, [(0 * S, [a]), (30 * S, [a]), (H, [resolved(a, T0 + H)]), (H + 5 * M, [])]),
    }


def _notices(notifier: Notifier, store: SqliteStore) -> None:
    from watcher.core import NotificationKind
    from watcher.notify.deadletter import failure_notice
    from watcher.notify.failing import receiver_notice
    from watcher.notify.outbox import enqueue

    now = T0 + 2 * H
    with store.session() as s:
        for to in ("hook", "pd", "am", "slack", "console"):
            enqueue(
                s,
                failure_notice(
                    row_id=7,
                    dead_receiver="pager",
                    reason="client_error",
                    error="receiver pager: error=400 bad",
                    message={"title": '[FIRING] SpendAnomaly {tenant="acme"}'},
                    attempts=3,
                    to=to,
                    now=now,
                ),
                now,
            )
            for kind in (NotificationKind.FIRING, NotificationKind.RESOLVED):
                enqueue(
                    s,
                    receiver_notice(
                        to=to,
                        failing="pager",
                        kind=kind,
                        since=T0 + H,
                        now=now,
                        attempts=4,
                        reason="server_error",
                        error="receiver pager: error=503",
                    ),
                    now,
                )
        s.commit()
    notifier.flush(now)


def run(
    name: str, http: HTTPReceiver, store: SqliteStore
) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """Run scenario ``name``; return (receiver → what it got, in order; the outbox messages stored)."""
    buf = io.StringIO()
    if name == "notices":
        grouping: dict[str, Any] = {}
        steps: list[Step] = []
    else:
        grouping, steps = scenarios()[name]
    settings = settings_for(http.url, **grouping)
    receivers = {k: build_receiver(k, rs, settings) for k, rs in settings.receivers.items() if k != "console"}
    receivers["console"] = ConsoleReceiver("console", stream=buf)
    notifier = Notifier(store, settings, receivers)
    consoles: list[str] = []
    for at, alerts in steps:
        notifier.submit([(x, []) for x in alerts], T0 + at)
        notifier.flush(T0 + at)
    if name == "notices":
        _notices(notifier, store)
    notifier.close()
    got: dict[str, list[Any]] = {k: [] for k in PATHS}
    by_path = {p: k for k, p in PATHS.items()}
    for (path, headers, _), raw in zip(http.requests, http.raw_bodies, strict=True):
        entry: dict[str, Any] = {"body": raw.decode()}
        if "X-Watcher-Notification-Id" in headers:
            entry["id"] = headers["X-Watcher-Notification-Id"]
        got[by_path[path]].append(entry)
    consoles = [block for block in buf.getvalue().split("\n\n") if block.strip()]
    got["console"] = consoles
    with store.session() as s:
        messages = [r.message for r in s.exec(select(OutboxRow).order_by(OutboxRow.id)).all()]  # type: ignore[arg-type]
    return got, messages


NAMES = ("single", "superseded", "group", "group_of_one", "notices")


def capture(tmp: Path, each: Callable[[str, dict[str, list[Any]], list[dict[str, Any]]], None]) -> None:
    """Run every scenario on a fresh store and loopback server; hand each result to ``each``."""
    for name in NAMES:
        store = SqliteStore(tmp / f"{name}.db")
        with HTTPReceiver() as http:
            got, messages = run(name, http, store)
        store.engine.dispose()
        each(name, got, messages)


def main() -> None:
    """Write ``data/golden_bodies.json`` and ``data/outbox_v1.json`` from this version's code."""
    import tempfile

    bodies: dict[str, Any] = {}
    rows: dict[str, Any] = {}

    def keep(name: str, got: dict[str, list[Any]], messages: list[dict[str, Any]]) -> None:
        bodies[name] = got
        rows[name] = messages

    with tempfile.TemporaryDirectory() as tmp:
        capture(Path(tmp), keep)
    DATA.mkdir(exist_ok=True)
    BODIES.write_text(json.dumps(bodies, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    if not OUTBOX_V1.exists():  # the previous version's rows: written once, never regenerated
        OUTBOX_V1.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")  # key order kept


if __name__ == "__main__":
    main()
