"""The WatcherSourceDown alert: the daemon on a virtual clock against a loopback PromQL endpoint.

The endpoint is a real HTTP server on loopback (``HTTPReceiver``) answering a fixed
``query_range`` matrix (the value 1 every minute) and then 503, so the real ``PrometheusSource``
(HTTP, error translation, backoff on the same virtual clock) and the real notify pipeline run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.httpreceiver import HTTPReceiver
from watcher.config import Settings, load_settings
from watcher.core import Alert, AlertState, Labels
from watcher.daemon import Daemon
from watcher.engine.sourcedown import ALERTNAME, SourceDownMonitor
from watcher.sources.prometheus import PrometheusSource

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
RULES = {
    "groups": [
        {
            "name": "g",
            "interval": "1m",
            "rules": [{"alert": "AlwaysUp", "expr": "up == 1", "labels": {"severity": "page"}}],
        }
    ]
}


def matrix() -> str:
    """Return a query_range answer: ``up{job="app"}`` = 1 every minute from T0 - 1h to T0 + 2h."""
    start = int(T0.timestamp()) - 3600
    values = [[start + 60 * k, "1"] for k in range(181)]
    result = [{"metric": {"__name__": "up", "job": "app"}, "values": values}]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})


@pytest.fixture
def promql() -> Iterator[HTTPReceiver]:
    with HTTPReceiver(reply=matrix()) as server:
        yield server


class Clock:
    """A virtual clock for the daemon, with the monotonic seconds the source's backoff reads."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.now.timestamp()


def make_daemon(
    tmp_path: Path, promql: HTTPReceiver, hook: HTTPReceiver, clock: Clock, **notify: Any
) -> Daemon:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(RULES))
    config = {
        "store": {"url": f"sqlite:///{tmp_path}/w.db"},
        "rules": [str(tmp_path / "rules.yaml")],
        "prometheus": {
            "main": {"url": promql.url, "exemplars": False, "down_after": "5m", "down_severity": "ticket"}
        },
        "receivers": {"hook": {"type": "webhook", "url": hook.url}},
        "route": {"receivers": ["hook"]},
        "server": {"enabled": False},
        "notify": notify,
    }
    (tmp_path / "watcher.yaml").write_text(yaml.safe_dump(config))
    settings: Settings = load_settings(tmp_path / "watcher.yaml")
    source = PrometheusSource(settings.prometheus, clock=clock.monotonic)
    return Daemon(settings, sources={"prometheus": source}, clock=clock)


def tick(daemon: Daemon, clock: Clock) -> None:
    """Advance one minute, evaluate every group and flush the outbox."""
    clock.now += M
    daemon.run_once(clock.now)


def sent(hook: HTTPReceiver) -> list[tuple[str, str, dict[str, str]]]:
    return [(b["alertname"], b["status"], b["labels"]) for _, _, b in hook.requests]


def test_one_source_down_alert_after_the_delay_then_resolved_and_state_untouched(
    tmp_path: Path, promql: HTTPReceiver, http_receiver: HTTPReceiver
) -> None:
    clock = Clock()
    daemon = make_daemon(tmp_path, promql, http_receiver, clock)
    try:
        tick(daemon, clock)
        assert sent(http_receiver) == [("AlwaysUp", "firing", {"job": "app", "severity": "page"})]
        (firing,) = daemon.evaluators["g"].alerts()

        promql.set_statuses([503])
        while clock.now < T0 + 6 * M:  # down from T0+2m: 4 minutes, less than down_after
            tick(daemon, clock)
            (health,) = daemon.alert_store.health()
            assert health["health"] == "err" and "HTTP 503" in health["last_error"]
            assert daemon.evaluators["g"].alerts() == [firing]  # state untouched, never resolved
        assert len(sent(http_receiver)) == 1

        while clock.now < T0 + 12 * M:  # 5 minutes down at T0+7m, and it stays down: one page
            tick(daemon, clock)
        down = [s for s in sent(http_receiver) if s[0] == ALERTNAME]
        assert down == [(ALERTNAME, "firing", {"source": "main", "severity": "ticket"})]
        assert [s for s in sent(http_receiver) if s[0] == "AlwaysUp"] == [sent(http_receiver)[0]]
        (alert,) = daemon.evaluators["g"].alerts()
        assert alert.state is AlertState.FIRING and alert.fired_at == firing.fired_at

        promql.set_statuses([200])
        for _ in range(2):  # the backoff is at most 30 s: the next minute calls again
            tick(daemon, clock)
        assert sent(http_receiver)[-1] == (ALERTNAME, "resolved", {"source": "main", "severity": "ticket"})
        assert [s[0] for s in sent(http_receiver)] == ["AlwaysUp", ALERTNAME, ALERTNAME]  # no duplicate page
        (health,) = daemon.alert_store.health()
        assert health["health"] == "ok" and health["last_error"] is None
    finally:
        daemon.close()


def test_source_down_inhibits_the_symptoms_when_configured(
    tmp_path: Path, promql: HTTPReceiver, http_receiver: HTTPReceiver
) -> None:
    clock = Clock()
    inhibit = [{"source_matchers": [f"alertname={ALERTNAME}"], "target_matchers": ["severity=page"]}]
    daemon = make_daemon(tmp_path, promql, http_receiver, clock, inhibit_rules=inhibit)
    try:
        tick(daemon, clock)  # AlwaysUp fires at T0+1m
        promql.set_statuses([503])
        for _ in range(6):  # down from T0+2m; WatcherSourceDown fires at T0+7m
            tick(daemon, clock)
        assert [s[0] for s in sent(http_receiver)] == ["AlwaysUp", ALERTNAME]

        # A page-severity symptom that starts firing while the source is down (say, a rule on the
        # store whose rows stopped coming) goes through the real pipeline and is muted.
        symptom = Alert(
            rule="CallsMissing", group="store", labels=Labels(severity="page", tenant="acme"),
            state=AlertState.FIRING, active_at=clock.now, fired_at=clock.now, last_eval=clock.now,
        )  # fmt: skip
        assert daemon.notifier.submit([(symptom, ())], clock.now) == 0
        daemon.flush(clock.now)
        assert [s[0] for s in sent(http_receiver)] == ["AlwaysUp", ALERTNAME]

        promql.set_statuses([200])
        tick(daemon, clock)
        assert sent(http_receiver)[-1][:2] == (ALERTNAME, "resolved")
        # Once the cause is resolved the symptom, still firing, is no longer muted.
        symptom = replace(symptom, last_eval=clock.now)
        assert daemon.notifier.submit([(symptom, ())], clock.now) == 1
        daemon.flush(clock.now)
        assert sent(http_receiver)[-1][:2] == ("CallsMissing", "firing")
    finally:
        daemon.close()


class _Status:
    def __init__(self, up: bool, error: str | None = None) -> None:
        self.up, self.error = up, error


class _Reporting:
    """A source that only reports endpoint statuses (what the monitor reads)."""

    def __init__(self) -> None:
        self.status: dict[str, _Status] = {}

    def endpoint_status(self) -> dict[str, _Status]:
        return dict(self.status)


def test_monitor_table() -> None:
    endpoints = {"a": {"url": "http://a:9090", "down_after": "2m"}, "b": {"url": "http://b:9090"}}
    settings = Settings(prometheus=endpoints)  # type: ignore[arg-type]
    monitor = SourceDownMonitor(settings.prometheus, resolved_retention=timedelta(minutes=3))
    src = _Reporting()
    sources = {"prometheus": src, "calls": object()}
    steps = [  # minute, status of a, status of b, alerts expected (endpoint, state)
        (0, True, True, []),
        (1, False, True, []),
        (2, False, None, []),  # b not called yet this run: its last status stands
        (3, False, True, [("a", "firing")]),
        (4, False, True, [("a", "firing")]),
        (5, True, True, [("a", "resolved")]),
        (8, True, True, [("a", "resolved")]),
        (9, True, True, []),  # past resolved_retention
    ]
    for minute, a_up, b_up, expected in steps:
        src.status["a"] = _Status(a_up, None if a_up else "connection refused")
        if b_up is not None:
            src.status["b"] = _Status(b_up)
        got = monitor.update(sources, T0 + minute * M)
        states = [(a.labels["source"], "resolved" if a.resolved else str(a.state)) for a, _ in got]
        assert states == expected, minute
        for alert, receivers in got:
            assert alert.rule == ALERTNAME and receivers == ()
            assert alert.labels == Labels(source="a", severity="page")
            if alert.resolved:
                assert alert.fired_at == T0 + 3 * M and alert.resolved_at == T0 + 5 * M
                assert "answers again" in alert.annotations["summary"]
            else:
                assert "connection refused" in alert.annotations["description"]
    assert monitor.alerts() == []


def test_source_down_alert_resolves_when_no_rule_uses_the_endpoint_any_more() -> None:
    from watcher.config import PrometheusEndpoint
    from watcher.engine.sourcedown import SourceDownMonitor
    from watcher.sources.prometheus import EndpointStatus

    class Down:
        def endpoint_status(self) -> dict[str, EndpointStatus]:
            return {"main": EndpointStatus(up=False, error="connection refused", failures=9)}

    monitor = SourceDownMonitor({"main": PrometheusEndpoint(url="http://prom.test:9090", down_after="1m")})
    sources = {"prometheus": Down()}
    monitor.update(sources, T0, {"main"})
    (alert, _), *_ = monitor.update(sources, T0 + 2 * M, {"main"})
    assert alert.state is AlertState.FIRING
    # a reload removed every rule of "main": it is never called again, its last status stays "down"
    ((gone, _),) = monitor.update(sources, T0 + 3 * M, set())
    assert gone.state is AlertState.INACTIVE and gone.resolved


def test_in_a_cluster_only_the_first_groups_holder_sends_the_source_down_alert(
    tmp_path: Path, promql: HTTPReceiver, http_receiver: HTTPReceiver
) -> None:
    """Each replica evaluates the groups it leases (``fence`` given): one page for one outage."""
    global RULES
    saved = RULES
    RULES = {"groups": [{**saved["groups"][0], "name": name} for name in ("b", "a")]}
    try:
        clock = Clock()
        daemon = make_daemon(tmp_path, promql, http_receiver, clock)
    finally:
        RULES = saved
    try:
        promql.set_statuses([503])
        while clock.now < T0 + 8 * M:
            clock.now += M
            daemon.evaluate_group("b", clock.now, fence=lambda session: None)  # another replica's lease
            daemon.flush(clock.now)
        assert not [s for s in sent(http_receiver) if s[0] == ALERTNAME]
        assert daemon.source_down.alerts()  # tracked all the same, ready if this replica takes "a"
        daemon.evaluate_group("a", clock.now, fence=lambda session: None)
        daemon.flush(clock.now)
        down = [s for s in sent(http_receiver) if s[0] == ALERTNAME]
        assert down == [(ALERTNAME, "firing", {"source": "main", "severity": "ticket"})]
    finally:
        daemon.close()
