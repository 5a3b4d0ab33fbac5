"""Group evaluation with real detectors, the in-memory source and a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.groups import cost_group
from watcher.config import ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.core import AlertState, Labels, Notification, TraceRef, Verdict, to_epoch
from watcher.daemon import Daemon
from watcher.engine.group import GroupEvaluator, rank_traces
from watcher.engine.state import AlertStore
from watcher.errors import QueryError, SourceUnavailableError
from watcher.rules.loader import load_rule_files
from watcher.rules.schema import Group, TracesSpec
from watcher.sources.memory import MemorySource
from watcher.store.db import Store, open_store

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)

GROUP = cost_group(
    **{
        "for": "2m",
        "labels": {"severity": "page"},
        "annotations": {"summary": "{{ labels.tenant }} at {{ value }}"},
        "traces": {"from": "exemplars", "top": 2},
    }
)


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
    refs = [
        TraceRef("a", value=1.0),
        TraceRef("b", value=3.0),
        TraceRef("a", value=5.0),
        TraceRef("c", value=None),
    ]
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
    path.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up\n        for: soon\n"
    )
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
    rule = dict(
        GROUP["rules"][0],
        source="calls",
        query={"agg": "sum", "field": "cost_usd", "by": ["tenant"]},
        no_data=policy,
        **{"for": "0s"},
    )
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


def test_rule_wide_no_data_alert_resolves_when_series_come_back(store: Store) -> None:
    rule = dict(GROUP["rules"][0], no_data="alert", detector={"kind": "threshold", "above": 100})
    src = MemorySource()
    ev = GroupEvaluator(Group.model_validate(dict(GROUP, rules=[rule])), {"prometheus": src})
    (alert,) = ev.evaluate(T0).alerts
    assert alert.annotations["no_data"] and not alert.resolved
    _feed(src, 1, 5.0)  # below the threshold: nothing should stay firing
    res = ev.evaluate(T0 + M)
    assert [a.labels for a in res.alerts if not a.resolved] == []


def test_history_keeps_recent_verdicts_per_series_bounded(store: Store) -> None:
    src = MemorySource()
    ev = GroupEvaluator(Group.model_validate(GROUP), {"prometheus": src}, alert_store=AlertStore(store))
    src.series("CostHigh", {"tenant": "other"}).add(to_epoch(T0), 1.0)
    for m in range(5):
        _feed(src, m, 5.0 + 10 * m)
        ev.evaluate(T0 + m * M)
    hist = [v for v in ev.history("CostHigh", Labels(tenant="acme")) if v.ready]  # the lookback has gaps
    assert [v.ts for v in hist] == [to_epoch(T0 + m * M) for m in range(5)]  # each point once, oldest first
    assert [v.anomalous for v in hist] == [False, True, True, True, True]
    hist = ev.history("CostHigh", Labels(tenant="acme"))
    latest = ev.verdicts()["CostHigh"][Labels(tenant="acme")]
    assert (hist[-1].ts, hist[-1].value, hist[-1].anomalous) == (latest.ts, latest.value, latest.anomalous)
    # The alert's labels (rule labels laid over, with or without alertname) find the same series.
    (alert,) = [a for a in ev.alerts() if a.labels["tenant"] == "acme"]

    def key(vs: list[Verdict]) -> list[tuple[float, str, bool, bool]]:
        return [(v.ts, repr(v.value), v.anomalous, v.ready) for v in vs]  # repr: nan == nan

    assert key(ev.history("CostHigh", alert.labels)) == key(hist)
    assert key(ev.history("CostHigh", alert.labels.merge({"alertname": "CostHigh"}))) == key(hist)
    other = ev.history("CostHigh", Labels(tenant="other"))
    assert {v.value for v in other if v.ready} == {1.0}  # its own series
    assert ev.history("CostHigh", Labels(tenant="nobody")) == []
    assert ev.history("NoSuchRule", Labels(tenant="acme")) == []
    bare = GroupEvaluator(Group.model_validate(GROUP), {"prometheus": src}, keep_history=False)
    bare.evaluate(T0 + 4 * M)
    assert bare.history("CostHigh", Labels(tenant="acme")) == [] and bare.verdicts()["CostHigh"]

    # Bounded: never more than max(lookback/step, 360) points.
    for m in range(5, 400):
        _feed(src, m, 1.0)
    ev.evaluate(T0 + 399 * M)
    hist = ev.history("CostHigh", Labels(tenant="acme"))
    assert len(hist) == 360 and hist[-1].ts == to_epoch(T0 + 399 * M) and hist[0].ts == to_epoch(T0 + 40 * M)


def test_verdict_ring_keeps_the_newest_in_order_each_timestamp_once() -> None:
    import math

    from watcher.engine.history import VerdictRing

    ring = VerdictRing(4)
    assert ring.verdicts() == [] and ring.last_ts == -math.inf
    ring.extend([Verdict(ts=float(t), value=float(t), anomalous=t % 2 == 1) for t in range(3)])
    ring.extend([Verdict(ts=float(t), value=10.0 * t) for t in range(1, 4)])  # 1, 2 again: ignored
    assert [(v.ts, v.value) for v in ring.verdicts()] == [(0, 0), (1, 1), (2, 2), (3, 30)]
    ring.extend(
        [
            Verdict(ts=4.0, value=4.0, expected=3.0, lower=2.0, upper=5.0, score=0.5, anomalous=True),
            Verdict(ts=5.0, value=math.nan, ready=False),
            Verdict(ts=6.0, value=7.0, ready=False),
        ]
    )
    got = ring.verdicts()
    assert len(ring) == 4 and ring.last_ts == 6.0 and [v.ts for v in got] == [3.0, 4.0, 5.0, 6.0]
    band = (got[1].expected, got[1].lower, got[1].upper, got[1].score, got[1].anomalous)
    assert band == (3, 2, 5, 0.5, True)
    assert [(v.ready, v.reason) for v in got[2:]] == [(False, "no data"), (False, "warming up")]
    assert got[0].ready and got[0].reason == "" and not got[0].anomalous


def test_series_gone_longer_than_their_state_reaches_are_forgotten(store: Store) -> None:
    src = MemorySource()
    ev = GroupEvaluator(Group.model_validate(GROUP), {"prometheus": src}, alert_store=AlertStore(store))
    src.series("CostHigh", {"tenant": "gone"}).add(to_epoch(T0), 1.0)
    for m in range(4):
        _feed(src, m, 50.0)  # acme fires (threshold 10, for 2m)
        ev.evaluate(T0 + m * M)
    assert set(ev.verdicts()["CostHigh"]) == {Labels(tenant="acme"), Labels(tenant="gone")}
    # The history span of a 1-minute rule is 360 points: six hours later both series are silent,
    # but acme's alert is still around (no data keeps it), so only "gone" is forgotten.
    later = T0 + 6 * 60 * M + 10 * M
    ev.evaluate(later)
    assert set(ev.verdicts()["CostHigh"]) == {Labels(tenant="acme")}
    assert ev.history("CostHigh", Labels(tenant="gone")) == []
    assert ev.history("CostHigh", Labels(tenant="acme")) != []
    assert any(a.labels["tenant"] == "acme" for a in ev.alerts())


def test_annotations_rendered_only_for_alerting_series_and_unchanged_alerts_not_rewritten() -> None:
    """Of 50 series one crosses the threshold: only its annotations are rendered; a firing alert
    whose evaluation changes nothing but the time is not written again."""
    from watcher.notify.templates import render_annotations

    rendered: list[str] = []

    def counting(*args: object, **kw: object) -> dict[str, str]:
        labels = kw["labels"]
        assert isinstance(labels, Labels)
        rendered.append(labels["tenant"])
        return render_annotations(*args, **kw)  # type: ignore[arg-type]

    src = MemorySource()
    for minute in range(5):
        for i in range(50):
            value = 50.0 if i == 7 else 1.0
            src.series("CostHigh", {"tenant": f"t{i:02d}"}).add(to_epoch(T0 + minute * M), value)
    ev = GroupEvaluator(Group.model_validate(GROUP), {"prometheus": src}, render=counting)
    first = ev.evaluate(T0 + 2 * M, persist=False)
    assert rendered == ["t07"] and [a.state for a in first.changed] == [AlertState.PENDING]
    ev.saved(first)
    fired = ev.evaluate(T0 + 4 * M, persist=False)
    assert [a.state for a in fired.changed] == [AlertState.FIRING]
    ev.saved(fired)
    again = ev.evaluate(T0 + 4 * M + timedelta(seconds=20), persist=False)  # same point, same value
    assert again.changed == [] and [a.state for a in again.alerts] == [AlertState.FIRING]
    assert set(rendered) == {"t07"}
