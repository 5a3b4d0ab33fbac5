"""The cost digest (spend vs budget, top models, forecasts) and the forecast in every receiver's message.

Real stores (SQLite, PostgreSQL) with generated calls, a real loopback HTTP receiver, the real
outbox; time is always a parameter.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import firing, make_settings
from watcher.config import CostDigestSettings, ReceiverSettings, RouteSettings
from watcher.core import NotificationKind
from watcher.daemon import Daemon
from watcher.notify.costdigest import budget_rules, collect, due, enqueue_due, render, text
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers import ConsoleReceiver
from watcher.notify.templates import render_notification
from watcher.rules.schema import Group
from watcher.sources.memory import MemorySource
from watcher.store.db import Store, open_store
from watcher.store.tables import Call

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # 6.5 days into December, 588 h left
H = timedelta(hours=1)
GROUP = Group.model_validate(
    {
        "name": "llm-budget",
        "interval": "5m",
        "rules": [
            {
                "alert": "TenantBudgetBurn",
                "source": "calls",
                "query": {"agg": "sum", "field": "cost_usd", "window": "5m", "by": ["tenant"]},
                "detector": {"kind": "budget", "amount": 1000, "amounts": {"acme": 5000, "idle": 300}},
            },
            {
                "alert": "UserBudgetBurn",
                "source": "calls",
                "query": {
                    "agg": "sum",
                    "field": "cost_usd",
                    "window": "5m",
                    "by": ["user_id"],
                    "top": {"n": 2},
                },
                "detector": {"kind": "budget", "period": "day", "amount": 50},
            },
        ],
    }
)


def _calls() -> list[Call]:
    """acme: $20/h since Dec 1 ($3,120 by Dec 7 12:00); beta: $1/h; a $60 call on Nov 30 (last month)."""
    rows = []
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for h in range(156):
        t = start + (h + 1) * H
        rows.append(
            Call(trace_id=f"a{h}", ts=t, tenant="acme", model="gpt-4o", user_id=f"u{h % 3}", cost_usd=20.0)
        )
        rows.append(Call(trace_id=f"b{h}", ts=t, tenant="beta", model="gpt-4o-mini", cost_usd=1.0))
    rows.append(Call(trace_id="old", ts=start - H, tenant="acme", model="gpt-4o", cost_usd=60.0))
    return rows


def _fill(store: Store) -> Store:
    with store.session() as s:
        s.add_all(_calls())
        s.commit()
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = _fill(open_store(url))
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = _fill(open_store(f"sqlite:///{tmp_path}/w.db"))
    yield s
    s.close()


DIGEST = CostDigestSettings(receivers=["hook"], at="08:00", time_zone="Europe/Paris", top_models=2)


def test_digest_says_spend_vs_budget_top_models_and_forecasts(store: Store) -> None:
    d = collect(store, budget_rules([GROUP]), NOW, DIGEST)
    assert d.total == pytest.approx(24 * 21)
    assert d.models == (("gpt-4o", pytest.approx(480.0)), ("gpt-4o-mini", pytest.approx(24.0)))
    head, body = text(d)
    assert head == "LLM spend: $504 in the last 24h"
    lines = body.splitlines()
    assert lines[:5] == [
        "TenantBudgetBurn (monthly budget per tenant):",
        # $3,120 spent, $20/h over the last 6h: $1,880 left lasts 94 h, Dec 11 10:00
        "  acme: $3,120 of $5,000 (62%); at this rate acme exceeds $5,000 on Dec 11"
        " ($3,120 spent this month, 62%)",
        "  beta: $156 of $1,000 (16%); at this rate beta stays within $1,000"
        " (forecast $744 by Dec 31; $156 spent this month, 16%)",
        "  idle: $0.00 of $300 (0%); at this rate idle stays within $300"
        " (forecast $0.00 by Dec 31; $0.00 spent this month, 0%)",
        "UserBudgetBurn (daily budget per user_id):",
    ]
    # today: 12 hours of acme's calls, 4 per user; the calls without a user are not a user
    assert lines[5:8] == [
        "  u0: $80.00 of $50.00 (160%); u0 has exceeded $50.00 ($80.00 spent today, 160%)",
        "  u1: $80.00 of $50.00 (160%); u1 has exceeded $50.00 ($80.00 spent today, 160%)",
        "  u2: $80.00 of $50.00 (160%); u2 has exceeded $50.00 ($80.00 spent today, 160%)",
    ]
    assert lines[-3:] == ["Top models (the last 24h):", "  gpt-4o: $480", "  gpt-4o-mini: $24.00"]


def test_digest_is_due_once_a_day_after_its_local_time(sqlite_store: Store) -> None:
    rules = budget_rules([GROUP])
    early = datetime(2026, 12, 7, 6, 59, tzinfo=UTC)  # 07:59 in Paris
    assert due(sqlite_store, early, DIGEST) == []
    assert enqueue_due(sqlite_store, rules, early, DIGEST) == []
    at = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)  # 08:00 in Paris
    assert enqueue_due(sqlite_store, rules, at, DIGEST) == ["hook"]
    assert enqueue_due(sqlite_store, rules, at + H, DIGEST) == []  # queued already today
    assert enqueue_due(sqlite_store, rules, at + 24 * H, DIGEST) == ["hook"]  # the next day's


def test_digest_goes_through_the_outbox_and_is_retried_in_order(
    sqlite_store: Store, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([503, 200])
    rs = ReceiverSettings(type="webhook", url=SecretStr(f"{http_receiver.url}/digest"))
    settings = make_settings(receivers={"hook": rs}, route=RouteSettings(receivers=["hook"]))
    notifier = Notifier(sqlite_store, settings)
    at = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    assert enqueue_due(sqlite_store, budget_rules([GROUP]), at, DIGEST) == ["hook"]
    assert notifier.flush(at).failed == 1
    assert notifier.flush(at + timedelta(minutes=5)).sent == 1
    (_, _, first), (path, _, body) = http_receiver.requests
    assert path == "/digest" and first == body
    assert body["alertname"] == "WatcherCostDigest" and body["receiver"] == "hook"
    assert body["title"] == "[COST DIGEST] 2026-12-07: LLM spend: $504 in the last 24h"
    # at 07:00: $3,020 spent, $20/h: $1,980 left lasts 99 h, Dec 11 10:00 again
    assert "at this rate acme exceeds $5,000 on Dec 11 ($3,020 spent this month, 60%)" in body["body"]
    assert "at this rate acme exceeds $5,000 on Dec 11" in body["annotations"]["description"]


def test_digest_text_is_escaped_for_slack(sqlite_store: Store, http_receiver: HTTPReceiver) -> None:
    with sqlite_store.session() as s:
        s.add(Call(trace_id="x", ts=NOW - H, tenant="<!channel> & co", model="m", cost_usd=5.0))
        s.commit()
    d = collect(sqlite_store, budget_rules([GROUP]), NOW, DIGEST)
    rs = ReceiverSettings(type="slack", url=SecretStr(f"{http_receiver.url}/slack"))
    settings = make_settings(receivers={"slack": rs}, route=RouteSettings(receivers=["slack"]))
    from watcher.notify.receivers import build_receiver

    build_receiver("slack", rs, settings).send(render(d, "slack", "2026-12-07"))
    (_, _, doc) = http_receiver.requests[0]
    raw = json.dumps(doc)
    assert "<!channel>" not in raw and "&lt;!channel&gt; &amp; co" in raw


FORECAST = "at this rate acme exceeds $5,000 on Dec 19 ($3,100 spent this month, 62%)"


def _budget_alert() -> Any:
    return firing(
        "TenantBudgetBurn",
        labels={"tenant": "acme", "severity": "page"},
        value=15.7,
        expected=1.0,
        lower=float("nan"),
        upper=14.4,
        annotations={"summary": "acme burns its monthly LLM budget 15.7x too fast", "forecast": FORECAST},
    )


def test_the_forecast_is_in_every_receivers_message(http_receiver: HTTPReceiver, tmp_path: Path) -> None:
    url = http_receiver.url
    receivers = {
        "pd": ReceiverSettings(type="pagerduty", routing_key=SecretStr("R" * 32), url=SecretStr(f"{url}/pd")),
        "hook": ReceiverSettings(type="webhook", url=SecretStr(f"{url}/hook")),
        "slack": ReceiverSettings(type="slack", url=SecretStr(f"{url}/slack")),
    }
    settings = make_settings(receivers=receivers, route=RouteSettings(receivers=list(receivers)))
    s = open_store(f"sqlite:///{tmp_path}/n.db")
    try:
        notifier = Notifier(s, settings)
        notifier.submit([(_budget_alert(), [])], NOW)
        assert notifier.flush(NOW).sent == 3
    finally:
        s.close()
    got = {path: body for path, _, body in http_receiver.requests}
    assert got["/pd"]["payload"]["custom_details"]["annotations"]["forecast"] == FORECAST
    assert got["/hook"]["annotations"]["forecast"] == FORECAST
    assert f"Forecast: {FORECAST}" in got["/hook"]["body"].replace("\\", "")
    slack_text = json.dumps(got["/slack"], ensure_ascii=False)
    assert f"*Forecast:* {FORECAST}" in slack_text
    out = io.StringIO()
    n = render_notification(
        _budget_alert(), kind=NotificationKind.FIRING, receiver="console", settings=settings, rule_url=""
    )
    ConsoleReceiver(stream=out).send(n)
    assert f"  forecast: {FORECAST}" in out.getvalue().splitlines()


def test_the_daemon_queues_the_digest_at_its_time(tmp_path: Path, http_receiver: HTTPReceiver) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n  - name: b\n    interval: 5m\n    rules:\n"
        "      - alert: TenantBudgetBurn\n        source: calls\n"
        "        query: {agg: sum, field: cost_usd, window: 5m, by: [tenant]}\n"
        "        detector: {kind: budget, amount: 1000, amounts: {acme: 5000}}\n"
    )
    settings = make_settings(
        store={"url": SecretStr(f"sqlite:///{tmp_path}/d.db")},
        rules=[rules],
        receivers={"hook": ReceiverSettings(type="webhook", url=SecretStr(f"{http_receiver.url}/d"))},
        route=RouteSettings(receivers=["hook"]),
        notify={"cost_digest": DIGEST},
        server={"enabled": False},
    )
    d = Daemon(settings, sources={"prometheus": MemorySource()})
    try:
        _fill(d.store)
        assert d.cost_digest(datetime(2026, 12, 7, 6, 0, tzinfo=UTC)) == []
        assert d.cost_digest(datetime(2026, 12, 7, 7, 30, tzinfo=UTC)) == ["hook"]
        assert d.cost_digest(datetime(2026, 12, 7, 9, 0, tzinfo=UTC)) == []
        d.flush(datetime(2026, 12, 7, 7, 31, tzinfo=UTC))
        (_, _, body) = http_receiver.wait_for(1, timeout=20)[0]
        assert "TenantBudgetBurn (monthly budget per tenant)" in body["body"]
    finally:
        d.store.close()
