"""The database-aggregated SQL path gives the windows and traces of the raw-row path.

``SqlSource(store)`` aggregates in SQLite/PostgreSQL (``sqlagg``: one GROUP BY per point for a
tick, time buckets for a longer fetch); ``SqlSource(store, aggregate=False)`` reads every row and
aggregates in numpy (the reference). On random rows, with rows exactly on window edges, sub-second
stamps, ties, NULL and "" labels, both must return the same series: the same labels, counts, min
and max, the same sums up to rounding, and the same trace references at every point.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from watcher.core import Series
from watcher.rules.schema import Rule
from watcher.sources.sql import SqlSource
from watcher.store.db import Store, open_store
from watcher.store.tables import Call, Score

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def _rows(seed: int) -> tuple[list[Call], list[Score]]:
    rng = np.random.default_rng(seed)
    n = 1500
    # a third of the stamps fall exactly on whole seconds, many on whole minutes (window edges)
    us = rng.integers(0, 3 * 3600 * 10**6, n)
    us[: n // 3] = us[: n // 3] // 10**6 * 10**6
    us[: n // 6] = us[: n // 6] // (60 * 10**6) * (60 * 10**6)
    us[n - 20 :] = us[n - 40 : n - 20]  # ties: equal stamps
    tenants = ["acme", "beta", "", "gamma"]
    calls, scores = [], []
    for i in range(n):
        ts = T0 + timedelta(microseconds=int(us[i]))
        tenant = tenants[int(rng.integers(0, len(tenants)))]
        cost = float(rng.choice([0.5, 1.0, 2.0])) if i % 7 == 0 else float(rng.lognormal(0, 1))
        calls.append(
            Call(
                trace_id=f"c{i}",
                span_id=f"s{i}",
                ts=ts,
                tenant=tenant,
                model=["m1", "m2"][i % 2],
                prompt_version=[None, "", "v1", "v2", None][i % 5],  # NULL and "" are one series
                cost_usd=cost,
                ttft_s=None if i % 11 == 0 else cost / 3,
                outcome="refused" if cost > 2.5 else "ok",
                input_tokens=i % 50,
                output_tokens=i % 13,
            )
        )
        scores.append(
            Score(trace_id=f"s{i}", ts=ts, name="groundedness", value=float(rng.uniform()), tenant=tenant)
        )
    return calls, scores


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    st = open_store(url)
    calls, scores = _rows(19)
    with st.engine.begin() as conn:  # Core inserts: the ORM's unit of work is slow for thousands
        for table, objs in ((Call.__table__, calls), (Score.__table__, scores)):  # type: ignore[attr-defined]
            cols = [c.name for c in table.columns if c.name != "id"]
            conn.execute(table.insert(), [{k: getattr(o, k) for k in cols} for o in objs])
    yield st
    st.close()


def _rule(query: dict[str, Any], source: str = "calls", traces: dict[str, Any] | None = None) -> Rule:
    spec: dict[str, Any] = {
        "alert": "R",
        "source": source,
        "query": query,
        "detector": {"kind": "threshold", "above": 1},
        "traces": traces or {"from": "rows", "top": 3},
    }
    return Rule.model_validate(spec)


def _same(got: list[Series], want: list[Series], exact: bool) -> None:
    assert [s.labels for s in got] == [s.labels for s in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.timestamps, w.timestamps)
        assert w.counts is not None and g.counts is not None
        np.testing.assert_array_equal(g.counts, w.counts)
        if exact:
            np.testing.assert_array_equal(g.values, w.values)
        else:
            np.testing.assert_allclose(g.values, w.values, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert [g.traces_at(i) for i in range(len(g))] == [w.traces_at(i) for i in range(len(w))]


QUERIES: list[tuple[str, dict[str, Any], str]] = [
    ("count", {"agg": "count", "by": ["tenant"]}, "calls"),
    ("nulls", {"agg": "count", "by": ["prompt_version", "model"]}, "calls"),
    ("sum-per", {"agg": "sum", "field": "cost_usd", "by": ["tenant"], "per": "1h"}, "calls"),
    ("tokens", {"agg": "sum", "field": "total_tokens", "by": ["tenant", "model"]}, "calls"),
    ("mean", {"agg": "mean", "field": "cost_usd", "by": ["model"], "min_count": 3}, "calls"),
    ("min", {"agg": "min", "field": "cost_usd", "by": ["tenant"]}, "calls"),
    ("max", {"agg": "max", "field": "cost_usd"}, "calls"),
    ("ttft", {"agg": "mean", "field": "ttft_s", "by": ["tenant"]}, "calls"),
    ("ratio", {"agg": "ratio", "match": {"outcome": "refused"}, "by": ["tenant"]}, "calls"),
    ("scores", {"agg": "mean", "score": "groundedness", "by": ["tenant"]}, "scores"),
    ("below", {"agg": "ratio", "score": "groundedness", "below": 0.2}, "scores"),
]
SHAPES = [
    # (step, window, first point, points): one to three points (a tick), or many (a cold start)
    (timedelta(minutes=1), "15m", timedelta(minutes=90), 1),
    (timedelta(minutes=1), "15m", timedelta(minutes=90), 3),
    (timedelta(minutes=1), "7m", timedelta(minutes=20), 120),
    (timedelta(seconds=150), "7m", timedelta(0), 60),
    (timedelta(minutes=5), "1h", timedelta(minutes=30), 30),
]


@pytest.mark.integration
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_aggregated_windows_equal_the_raw_row_path(store: Store, shape: int) -> None:
    step, window, first, points = SHAPES[shape]
    start = T0 + first
    end = start + step * points
    for name, query, source in QUERIES:
        rule = _rule({**query, "window": window}, source)
        fast = SqlSource(store).fetch(rule, start, end, step)
        reference = SqlSource(store, aggregate=False).fetch(rule, start, end, step)
        assert reference, name  # the data reaches every shape
        _same(fast, reference, exact=name in ("count", "nulls", "min", "max", "ratio", "below"))


@pytest.mark.integration
def test_traces_of_announced_series_are_read_together_and_equal(store: Store) -> None:
    rule = _rule({"agg": "sum", "field": "cost_usd", "by": ["tenant"], "window": "15m"})
    start, step = T0 + timedelta(minutes=60), timedelta(minutes=1)
    fast = SqlSource(store).fetch(rule, start, start + 40 * step, step)
    reference = SqlSource(store, aggregate=False).fetch(rule, start, start + 40 * step, step)
    for s in fast[:2]:
        s.traces.want()  # type: ignore[attr-defined]
    queries: list[str] = []
    import sqlalchemy as sa

    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    got = [fast[0].traces_at(i) for i in range(40)]
    got_second = [fast[1].traces_at(i) for i in range(40)]
    assert len(queries) == 1  # both announced series from one read
    assert got == [reference[0].traces_at(i) for i in range(40)]
    assert got_second == [reference[1].traces_at(i) for i in range(40)]
    assert any(got)


def test_quantiles_and_sub_second_buckets_keep_the_raw_row_path() -> None:
    from watcher.sources.sqlagg import bucket_us

    assert bucket_us("quantile", 60_000_000, 900_000_000) is None
    assert bucket_us("sum", 60_000_000, 900_000_000) == 60_000_000
    assert bucket_us("sum", 150_000_000, 420_000_000) == 30_000_000
    assert bucket_us("sum", 1_500_000, 1_000_000) is None  # gcd of half a second
