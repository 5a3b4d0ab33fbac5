"""Group evaluation with real detectors, the in-memory source and a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from watcher.config import ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.core import AlertState, Labels, Notification, TraceRef, to_epoch
from watcher.engine.group import GroupEvaluator, rank_traces
from watcher.engine.scheduler import Daemon
from watcher.engine.state import AlertStore
from watcher.errors import QueryError, SourceUnavailableError
from watcher.rules.loader import load_rule_files
from watcher.rules.schema import Group, TracesSpec
from watcher.sources.memory import MemorySource
from watcher.store.db import Store, open_store

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)

GROUP = {
    "name": "g",
    "interval": "1m",
    "rules": [
        {
            "alert": "CostHigh",
            "expr": "sum by (tenant) (rate(llm_cost_usd_total[5m]))",
            "detector": {"kind": "threshold", "above": 10},
            "for": "2m",
            "labels": {"severity": "page"},
            "annotations": {"summary": "{{ labels.tenant }} at {{ value }}"},
            "traces": {"from": "exemplars", "top": 2},
        }
    ],
}


class Recorder:
    """A receiver that records what it is asked to send."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.sent: list[Notification] = []

    def send(self, n: Notification) -> None:
        self.sent.append(n)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    yield s
    s.close()


def _feed(src: MemorySource, minute: int, value: float, trace: str | None = None) -> None:
    refs = (TraceRef(trace, value=value),) if trace else ()
    src.series("CostHigh", {"tenant": "acme"}).add(to_epoch(T0 + minute * M), value, refs)


def test_failing_source_keeps_firing_alert_firing(store: Store) -> None:
    src = MemorySource()
    ev = GroupEvaluator(Group.model_validate(GROUP), {"prometheus": src}, alert_store=AlertStore(store))
    for m in range(4):
        _feed(src, m, 50.0 + m, f"t{m}")
        res = ev.evaluate(T0 + m * M)
    (alert,) = res.alerts
    assert alert.state is AlertState.FIRING and alert.fired_at == T0 + 2 * M
    assert alert.labels == Labels(tenant="acme", severity="page")
    assert alert.annotations["summary"] == "acme at 53.0"
    assert [t.trace_id for t in alert.traces] == ["t3", "t2"]  # the costliest of the episode

    for exc in (SourceUnavailableError("connection refused"), QueryError("bad_data: parse error")):
        src.fail_with = exc
        res = ev.evaluate(T0 + 10 * M)
        assert res.alerts[0].state is AlertState.FIRING
        assert res.health[0].ok is False and str(exc) in (res.health[0].error or "")
    health = AlertStore(store).health()
    assert health[0]["health"] == "err" and health[0]["failures"] == 2

    src.fail_with = None
    _feed(src, 11, 1.0)
    res = ev.evaluate(T0 + 11 * M)
    assert res.alerts[0].resolved and res.alerts[0].value == 1.0


def test_state_is_persisted_and_restored(store: Store) -> None:
    src = MemorySource()
    ev = GroupEvaluator(Group.model_validate(GROUP), {"prometheus": src}, alert_store=AlertStore(store))
    for m in range(3):
        _feed(src, m, 50.0, f"t{m}")
        ev.evaluate(T0 + m * M)
    (before,) = ev.alerts()
    fresh = GroupEvaluator(Group.model_validate(GROUP), {"prometheus": src}, alert_store=AlertStore(store))
    assert fresh.restore(AlertStore(store).load("g")) == []
    (after,) = fresh.alerts()
    assert after == before


def test_rank_traces_orders_and_dedups() -> None:
    refs = [TraceRef("a", value=1.0), TraceRef("b", value=3.0), TraceRef("a", value=5.0), TraceRef("c", value=None)]
    assert [r.trace_id for r in rank_traces(refs, None, 2)] == ["a", "b"]
    asc = rank_traces(refs, TracesSpec.model_validate({"order": "value_asc"}), 3)
    assert [r.trace_id for r in asc] == ["a", "b", "c"] and asc[0].value == 1.0


def _write_rules(path: Path, threshold: float) -> None:
    group = dict(GROUP)
    group["rules"] = [dict(GROUP["rules"][0], detector={"kind": "threshold", "above": threshold})]
    path.write_text(yaml.safe_dump({"groups": [group]}))


def _daemon(tmp_path: Path, store: Store, src: MemorySource, rec: Recorder) -> Daemon:
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/w.db"),
        rules=[tmp_path / "rules"],
        receivers={"rec": ReceiverSettings(type="console")},
        route=RouteSettings(receivers=["rec"]),
    )
    return Daemon(settings, store=store, sources={"prometheus": src}, receivers={"rec": rec})


def test_restart_mid_incident_neither_resends_nor_drops(tmp_path: Path, store: Store) -> None:
    (tmp_path / "rules").mkdir()
    _write_rules(tmp_path / "rules" / "r.yaml", 10)
    src, rec = MemorySource(), Recorder()
    d1 = _daemon(tmp_path, store, src, rec)
    for m in range(5):
        _feed(src, m, 50.0, f"t{m}")
        d1.run_once(T0 + m * M, drain_s=0)
    assert [n.kind.value for n in rec.sent] == ["firing"]

    # "Restart": a new daemon over the same database, detectors rebuilt, alert state restored.
    rec2 = Recorder()
    d2 = _daemon(tmp_path, store, src, rec2)
    for m in range(5, 8):
        _feed(src, m, 50.0)
        d2.run_once(T0 + m * M, drain_s=0)
    assert rec2.sent == []  # no re-page after the restart
    _feed(src, 8, 2.0)
    d2.run_once(T0 + 8 * M, drain_s=0)
    assert [n.kind.value for n in rec2.sent] == ["resolved"]  # and the resolve is not lost
    assert rec2.sent[0].dedup_key == rec.sent[0].dedup_key


def test_bad_reload_keeps_the_running_rules(tmp_path: Path, store: Store) -> None:
    (tmp_path / "rules").mkdir()
    path = tmp_path / "rules" / "r.yaml"
    _write_rules(path, 10)
    d = _daemon(tmp_path, store, MemorySource(), Recorder())
    before = d.evaluators["g"]
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up\n        for: soon\n")
    result = d.reload()
    assert not result.ok and "r.yaml:6:" in (result.error or "")
    assert d.evaluators["g"] is before and d.last_reload_error
    _write_rules(path, 20)
    assert d.reload().ok
    assert d.evaluators["g"] is not before  # the changed group was rebuilt
    assert load_rule_files([tmp_path / "rules"]).groups[0].group == d.evaluators["g"].group


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("keep_state", AlertState.FIRING), ("ok", None), ("alert", AlertState.FIRING)],
)
def test_no_data_policy_for_a_vanished_series(store: Store, policy: str, expected: AlertState | None) -> None:
    rule = dict(GROUP["rules"][0], source="calls", query={"agg": "sum", "field": "cost_usd", "by": ["tenant"]},
                no_data=policy, **{"for": "0s"})
    del rule["expr"]
    rule["traces"] = {"from": "rows"}
    group = Group.model_validate(dict(GROUP, rules=[rule]))
    src = MemorySource()
    ev = GroupEvaluator(group, {"calls": src}, alert_store=AlertStore(store))
    src.series("CostHigh", {"tenant": "acme"}).add(to_epoch(T0), 50.0)
    assert ev.evaluate(T0).alerts[0].state is AlertState.FIRING
    res = ev.evaluate(T0 + 30 * M)  # the series is gone (stale)
    states = [a.state for a in res.alerts if not a.resolved]
    assert states == ([] if expected is None else [expected])


def test_no_data_alert_when_nothing_ever_came_back(store: Store) -> None:
    rule = dict(GROUP["rules"][0], no_data="alert", detector={"kind": "threshold", "above": 1})
    ev = GroupEvaluator(Group.model_validate(dict(GROUP, rules=[rule])), {"prometheus": MemorySource()})
    (alert,) = ev.evaluate(T0).alerts
    assert alert.labels == Labels(severity="page") and alert.annotations["no_data"]
