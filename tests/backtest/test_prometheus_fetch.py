"""A backtest over a real Prometheus reads each rule's series once for the whole range (in chunks of
at most 11,000 points per range query), never per tick; the batch replay equals the tick-by-tick one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.prom import PrometheusServer
from watcher.backtest.replay import replay
from watcher.config import PrometheusEndpoint
from watcher.core import from_epoch
from watcher.rules.schema import Group
from watcher.sources.prometheus import MAX_POINTS, PrometheusSource, _Endpoint

pytestmark = pytest.mark.integration

DAY = 86_400
NOW = int(time.time()) // 3600 * 3600
DATA_END = NOW - 4 * 3600  # backfilled samples must be older than ~3 h
DATA_START = DATA_END - 9 * DAY
SPIKE = (DATA_END - 2 * DAY, DATA_END - 2 * DAY + 1800)  # acme spends 10× for 30 minutes


def _history() -> str:
    lines = ["# HELP llm_cost_usd Cost.", "# TYPE llm_cost_usd counter"]
    acme = beta = 0.0
    for ts in range(DATA_START, DATA_END + 1, 60):
        acme += 0.6 if SPIKE[0] <= ts < SPIKE[1] else 0.06
        beta += 0.03
        lines.append(f'llm_cost_usd_total{{tenant="acme"}} {acme:.6f} {ts}')
        lines.append(f'llm_cost_usd_total{{tenant="beta"}} {beta:.6f} {ts}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


GROUP = Group.model_validate(
    {
        "name": "cost",
        "interval": "1m",
        "rules": [
            {
                "alert": "SpendHigh",
                "expr": "sum by (tenant) (rate(llm_cost_usd_total[5m])) * 3600",
                "detector": {"kind": "rolling", "window": "1d", "direction": "up"},
                "min_value": 1,
                "for": "5m",
                "traces": {"from": "none"},
            }
        ],
    }
)


@pytest.fixture(scope="module")
def history(prometheus_module_factory: Any) -> PrometheusServer:
    return prometheus_module_factory(openmetrics=_history())  # type: ignore[no-any-return]


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[float, float]]]:
    """Record the (start, end) of every range query of the rule's own expression.

    An episode's explanation (issue 22) asks Prometheus for the expression's inner ``by``-less
    sum around the episode: those queries are the contribution analysis, not the rule's fetch.
    """
    seen: list[tuple[float, float]] = []
    real = _Endpoint.query_range
    rule_expr = GROUP.rules[0].expr

    def counting(self: _Endpoint, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        if expr == rule_expr:
            seen.append((start, end))
        return real(self, expr, start, end, step_s)

    monkeypatch.setattr(_Endpoint, "query_range", counting)
    yield seen


def test_backtest_fetches_each_series_once_in_chunks(
    history: PrometheusServer, queries: list[tuple[float, float]]
) -> None:
    start, end = from_epoch(DATA_END - 7 * DAY), from_epoch(DATA_END)
    with PrometheusSource({"main": PrometheusEndpoint(url=history.url)}) as src:
        batch = replay([GROUP], {"prometheus": src}, start, end)
        whole = list(queries)
        queries.clear()
        live = replay([GROUP], {"prometheus": src}, start, end, batch=False)

    # 7 days of 1-minute ticks plus the 1-day lookback: 11,522 points, so two range queries.
    assert MAX_POINTS < (7 + 1) * 1440
    assert len(whole) == 2 and whole[0][1] + 60 == whole[1][0]
    assert whole[0][0] <= DATA_END - 8 * DAY and whole[1][1] == DATA_END
    assert batch.ticks == 7 * 1440 + 1 and batch.evaluations < batch.ticks / 10
    assert [(e.labels["tenant"], e.start) for e in batch.episodes] == [
        ("acme", from_epoch(SPIKE[0] + 5 * 60))  # rate over 5m clears the band at once; for: 5m
    ]
    key = [(e.alert, dict(e.labels), e.start, e.end, e.peak_value) for e in batch.episodes]
    assert key == [(e.alert, dict(e.labels), e.start, e.end, e.peak_value) for e in live.episodes]
    assert len(queries) == 2, "the tick-by-tick replay too is served from one whole-range fetch"


def test_trace_blocks_of_a_prometheus_rule_are_fetched_only_around_episodes(
    history: PrometheusServer, queries: list[tuple[float, float]]
) -> None:
    rule = GROUP.rules[0].model_copy(update={"traces": None})  # the default: from exemplars
    group = GROUP.model_copy(update={"rules": [rule]})
    start, end = from_epoch(DATA_END - 3 * DAY), from_epoch(DATA_END)
    with PrometheusSource({"main": PrometheusEndpoint(url=history.url)}) as src:
        result = replay([group], {"prometheus": src}, start, end)
    assert len(result.episodes) == 1
    # One whole-range query (4 days < 11,000 points), then the 6-hour block(s) holding active points.
    blocks = queries[1:]
    assert queries[0][0] <= DATA_END - 4 * DAY and queries[0][1] == DATA_END
    assert 1 <= len(blocks) <= 2
    assert all(b - a <= timedelta(hours=6).total_seconds() for a, b in blocks)
    assert all(a <= SPIKE[1] and b >= SPIKE[0] for a, b in blocks)
