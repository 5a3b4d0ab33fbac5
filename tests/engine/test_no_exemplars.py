"""An alert whose exemplar lookup found no trace IDs says so and links its window in the trace UI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.groups import cost_group
from watcher.core import Alert, AlertState, ExemplarLookup, TraceRef, to_epoch
from watcher.engine.group import GroupEvaluator
from watcher.links import NO_EXEMPLARS, TRACE_SEARCH, window_text
from watcher.rules.schema import Group
from watcher.sources.memory import MemorySource

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
M = timedelta(minutes=1)
SEARCH = "http://jaeger.test/search?start={start}&end={end}&tags={labels_json}"
SPIKE = (5, 6, 7)  # minutes with the value over the threshold


def group(**rule: Any) -> Group:
    return Group.model_validate(
        cost_group(**{"labels": {"severity": "page"}, "traces": {"from": "exemplars", "top": 2}, **rule})
    )


def run(
    ev: GroupEvaluator, src: MemorySource, minutes: range, traced: frozenset[int] = frozenset()
) -> list[Alert]:
    """Feed minutes (spiking in ``SPIKE``, a trace at ``traced``), evaluate 30 s after each; return alerts."""
    series = src.series("CostHigh", {"tenant": "acme"})
    out: list[Alert] = []
    for m in minutes:
        value = 50.0 if m in SPIKE else 1.0
        series.add(to_epoch(T0 + m * M), value, (TraceRef(f"t{m}", value=value),) if m in traced else ())
        out += ev.evaluate(T0 + m * M + timedelta(seconds=30)).alerts
    return out


def epoch(minute: float) -> int:
    return int(to_epoch(T0 + minute * M))


def test_alert_without_exemplars_says_so_with_its_window_then_resolves_saying_it() -> None:
    src = MemorySource()
    src.exemplars = ExemplarLookup("main")
    ev = GroupEvaluator(group(), {"prometheus": src}, trace_search_url=SEARCH)
    first, second, third, resolved = run(ev, src, range(9))[-4:]
    assert first.state is AlertState.FIRING and first.traces == ()
    # from the first anomalous point (minute 5) less one step, to the evaluation time
    assert first.annotations[NO_EXEMPLARS] == (
        f"no exemplars from Prometheus endpoint 'main' for {window_text(epoch(4), epoch(5.5))}"
    )
    assert first.annotations[TRACE_SEARCH] == (
        f"http://jaeger.test/search?start={epoch(4)}&end={epoch(5.5)}&tags=%7B%22tenant%22%3A%22acme%22%7D"
    )
    # the episode goes on: the window keeps its start and grows to the latest evaluation
    assert second.annotations[NO_EXEMPLARS].endswith(window_text(epoch(4), epoch(6.5)))
    assert f"start={epoch(4)}&end={epoch(7.5)}" in third.annotations[TRACE_SEARCH]
    # resolving keeps what the alert said, as it keeps its traces
    assert resolved.resolved and resolved.annotations == third.annotations


def test_window_survives_a_restart() -> None:
    src = MemorySource()
    src.exemplars = ExemplarLookup("main")
    ev = GroupEvaluator(group(), {"prometheus": src}, trace_search_url=SEARCH)
    run(ev, src, range(6))
    fresh = GroupEvaluator(group(), {"prometheus": src}, trace_search_url=SEARCH)
    assert fresh.restore(ev.alerts()) == []
    (alert,) = run(fresh, src, range(6, 7))
    assert f"start={epoch(4)}&end={epoch(6.5)}" in alert.annotations[TRACE_SEARCH]


def test_trace_ids_arriving_later_replace_the_note() -> None:
    src = MemorySource()
    src.exemplars = ExemplarLookup("main")
    ev = GroupEvaluator(group(), {"prometheus": src}, trace_search_url=SEARCH)
    first, second, *_ = run(ev, src, range(8), traced=frozenset({6}))[-3:]
    assert NO_EXEMPLARS in first.annotations
    assert [t.trace_id for t in second.traces] == ["t6"] and second.annotations == {}


def test_failed_lookup_says_why_and_no_link_without_the_setting() -> None:
    src = MemorySource()
    src.exemplars = ExemplarLookup("main", "the exemplar query failed: HTTP 400: bad_data: parse error")
    ev = GroupEvaluator(group(annotations={"summary": "{{ labels.tenant }} spends"}), {"prometheus": src})
    (alert,) = run(ev, src, range(6))[-1:]
    assert alert.annotations == {
        "summary": "acme spends",
        NO_EXEMPLARS: f"no exemplars from Prometheus endpoint 'main' for {window_text(epoch(4), epoch(5.5))} "
        "(the exemplar query failed: HTTP 400: bad_data: parse error)",
    }


@pytest.mark.parametrize(
    ("lookup", "traces"),
    [
        (None, {"from": "exemplars"}),  # the source did not look (a SQL store, exemplars: false)
        (ExemplarLookup("main"), {"from": "none"}),  # the rule wants no traces
    ],
    ids=["not-looked-up", "traces-off"],
)
def test_no_note_unless_exemplars_were_wanted_and_looked_up(
    lookup: ExemplarLookup | None, traces: dict[str, str]
) -> None:
    src = MemorySource()
    src.exemplars = lookup
    ev = GroupEvaluator(group(traces=traces), {"prometheus": src}, trace_search_url=SEARCH)
    (alert,) = run(ev, src, range(6))[-1:]
    assert alert.state is AlertState.FIRING and alert.annotations == {}
