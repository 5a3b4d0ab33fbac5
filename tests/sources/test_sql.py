"""Tests for the SQL source: real rows in a temporary SQLite store (and PostgreSQL), hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from watcher.core import Labels, Series, to_epoch
from watcher.errors import QueryError, SourceUnavailableError
from watcher.rules.schema import Rule
from watcher.sources.base import Source
from watcher.sources.sql import SqlSource
from watcher.store.db import Store, open_store
from watcher.store.tables import Call, Score

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
NAN = math.nan

# (minute, cost, outcome, ttft): the windows of 5m at points 1..6 hold rows
# t1 {1}, t2 {1,2}, t3 {1,2,3}, t4 {1,2,3}, t5 {1,2,3,5}, t6 {2,3,5,6}: the row at minute 5 is on
# point 5 (inclusive end), the row at minute 1 leaves at point 6 (exclusive start).
CALLS = [
    (1, 1.0, "ok", 0.5),
    (2, 2.0, "refused", None),
    (3, 4.0, "ok", 1.5),
    (5, 3.0, "refused", 2.5),
    (6, 10.0, "refused", 0.1),
]


def _call(minute: int, cost: float, outcome: str = "ok", ttft: float | None = None, **kw: Any) -> Call:
    base: dict[str, Any] = {"model": "gpt-4o", "tenant": "acme", "feature": "chat", "provider": "openai"}
    base.update(kw)
    return Call(
        trace_id=f"t{minute}{base['tenant']}",
        span_id=f"s{minute}",
        ts=T0 + minute * M,
        cost_usd=cost,
        outcome=outcome,
        ttft_s=ttft,
        input_tokens=10 * minute,
        output_tokens=minute,
        **base,
    )


def _add(store: Store, rows: list[Any]) -> None:
    with store.session() as session:
        session.add_all(rows)
        session.commit()


def _rule(query: dict[str, Any], source: str = "calls", traces: dict[str, Any] | None = None) -> Rule:
    spec: dict[str, Any] = {
        "alert": "R",
        "source": source,
        "query": query,
        "detector": {"kind": "threshold", "above": 1},
    }
    if traces is not None:
        spec["traces"] = traces
    return Rule.model_validate(spec)


def _fetch(store: Store, rule: Rule, first: int = 1, last: int = 6) -> list[Series]:
    return SqlSource(store).fetch(rule, T0 + (first - 1) * M, T0 + last * M, M)


def _same(got: Any, want: list[float]) -> None:
    assert list(got) == pytest.approx(want, nan_ok=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    yield s
    s.close()


@pytest.fixture
def calls(store: Store) -> Store:
    _add(store, [_call(*row) for row in CALLS])
    return store


AGG_CASES = [
    ("count", {"agg": "count"}, [1, 2, 3, 3, 4, 4]),
    ("sum", {"agg": "sum", "field": "cost_usd"}, [1, 3, 7, 7, 10, 19]),
    ("mean", {"agg": "mean", "field": "cost_usd"}, [1, 1.5, 7 / 3, 7 / 3, 2.5, 4.75]),
    ("min", {"agg": "min", "field": "cost_usd"}, [1, 1, 1, 1, 1, 2]),
    ("max", {"agg": "max", "field": "cost_usd"}, [1, 2, 4, 4, 4, 10]),
    ("median", {"agg": "quantile", "quantile": 0.5, "field": "cost_usd"}, [1, 1.5, 2, 2, 2.5, 3.5]),
    ("p90", {"agg": "quantile", "quantile": 0.9, "field": "cost_usd"}, [1, 1.9, 3.6, 3.6, 3.7, 8.2]),
    ("sum per hour", {"agg": "sum", "field": "cost_usd", "per": "1h"}, [12, 36, 84, 84, 120, 228]),
    ("count per minute", {"agg": "count", "per": "1m"}, [0.2, 0.4, 0.6, 0.6, 0.8, 0.8]),
    ("ratio", {"agg": "ratio", "match": {"outcome": "refused"}}, [0, 0.5, 1 / 3, 1 / 3, 0.5, 0.75]),
    ("total tokens", {"agg": "sum", "field": "total_tokens"}, [11, 33, 66, 66, 121, 176]),
    # The row at minute 2 has no TTFT: it is left out of the mean and of the count.
    ("mean skips NULL", {"agg": "mean", "field": "ttft_s"}, [0.5, 0.5, 1.0, 1.0, 1.5, 4.1 / 3]),
    ("min_count", {"agg": "sum", "field": "cost_usd", "min_count": 3}, [NAN, NAN, 7, 7, 10, 19]),
]


@pytest.mark.parametrize(("query", "want"), [c[1:] for c in AGG_CASES], ids=[c[0] for c in AGG_CASES])
def test_aggregates_over_sliding_windows(calls: Store, query: dict[str, Any], want: list[float]) -> None:
    [series] = _fetch(calls, _rule(query))
    assert series.labels == Labels()
    _same(series.timestamps, [to_epoch(T0 + k * M) for k in range(1, 7)])
    _same(series.values, want)


def test_counts_are_rows_behind_each_point(calls: Store) -> None:
    [ratio] = _fetch(calls, _rule({"agg": "ratio", "match": {"outcome": "refused"}, "min_count": 4}))
    _same(ratio.counts, [1, 2, 3, 3, 4, 4])  # the denominator, also where the value is NaN
    _same(ratio.values, [NAN, NAN, NAN, NAN, 0.5, 0.75])
    [ttft] = _fetch(calls, _rule({"agg": "mean", "field": "ttft_s"}))
    _same(ttft.counts, [1, 1, 2, 2, 3, 3])


def test_window_edges_exclusive_start_inclusive_end(store: Store) -> None:
    _add(store, [_call(0, 100.0), _call(5, 1.0), _call(10, 2.0)])
    [s] = SqlSource(store).fetch(_rule({"agg": "sum", "field": "cost_usd"}), T0, T0 + 10 * M, 5 * M)
    _same(s.timestamps, [to_epoch(T0 + 5 * M), to_epoch(T0 + 10 * M)])
    _same(s.values, [1.0, 2.0])  # the row at 12:00 belongs to no point in (12:00, 12:10]


def test_only_grid_points_are_returned(calls: Store) -> None:
    start = T0 + timedelta(seconds=30)
    [s] = SqlSource(calls).fetch(_rule({"agg": "count"}), start, T0 + 3 * M + timedelta(seconds=59), M)
    _same(s.timestamps, [to_epoch(T0 + k * M) for k in (1, 2, 3)])


def test_by_groups_and_missing_values_become_empty_labels(store: Store) -> None:
    _add(
        store,
        [
            _call(1, 1.0),
            _call(2, 2.0, tenant="globex"),
            _call(3, 4.0, tenant="globex", prompt_version=""),  # "" and NULL: one series
            _call(3, 8.0, tenant=""),
        ],
    )
    series = _fetch(
        store, _rule({"agg": "sum", "field": "cost_usd", "by": ["tenant", "prompt_version"]}), 3, 3
    )
    got = {tuple(s.labels.items()): list(s.values) for s in series}
    assert got == {
        (("prompt_version", ""), ("tenant", "")): [8.0],
        (("prompt_version", ""), ("tenant", "acme")): [1.0],
        (("prompt_version", ""), ("tenant", "globex")): [6.0],
    }


WHERE_CASES = [
    ("one value", {"model": "gpt-4o"}, 5.0),
    ("list of values", {"model": ["gpt-4o", "claude"]}, 7.0),
    ("two labels", {"model": ["gpt-4o", "claude"], "outcome": "ok"}, 3.0),
    ("empty string matches NULL", {"prompt_version": ""}, 7.0),
    ("no match", {"tenant": "nobody"}, None),
]


@pytest.mark.parametrize(("where", "want"), [c[1:] for c in WHERE_CASES], ids=[c[0] for c in WHERE_CASES])
def test_where_filters_rows(store: Store, where: dict[str, Any], want: float | None) -> None:
    _add(
        store,
        [
            _call(1, 1.0),
            _call(2, 4.0, "refused"),
            _call(3, 2.0, model="claude"),
            _call(4, 8.0, model="mini", prompt_version="v2"),
        ],
    )
    series = _fetch(store, _rule({"agg": "sum", "field": "cost_usd", "where": where}), 4, 4)
    assert [s.values[0] for s in series] == ([] if want is None else [want])


def _ids(series: Series, i: int) -> list[str]:
    return [t.trace_id for t in series.traces_at(i)]


TRACE_CASES = [
    # point 6 holds the rows of minutes 2, 3, 5, 6 (costs 2, 4, 3, 10; refused 2, 5, 6)
    (
        "value_desc by default",
        {"agg": "sum", "field": "cost_usd"},
        None,
        ["t6acme", "t3acme", "t5acme", "t2acme"],
    ),
    ("top", {"agg": "sum", "field": "cost_usd"}, {"top": 2}, ["t6acme", "t3acme"]),
    (
        "value_asc",
        {"agg": "mean", "field": "cost_usd"},
        {"order": "value_asc", "top": 2},
        ["t2acme", "t5acme"],
    ),
    (
        "recent",
        {"agg": "max", "field": "cost_usd"},
        {"order": "recent", "top": 3},
        ["t6acme", "t5acme", "t3acme"],
    ),
    ("count without field is recent", {"agg": "count"}, {"top": 2}, ["t6acme", "t5acme"]),
    (
        "ratio gives matching rows, newest first",
        {"agg": "ratio", "match": {"outcome": "refused"}},
        None,
        ["t6acme", "t5acme", "t2acme"],
    ),
    (
        "ratio with an explicit value order",
        {"agg": "ratio", "field": "cost_usd", "match": {"outcome": "refused"}},
        {"order": "value_asc"},
        ["t2acme", "t5acme", "t6acme"],
    ),
    ("none", {"agg": "sum", "field": "cost_usd"}, {"from": "none"}, []),
]


@pytest.mark.parametrize(
    ("query", "traces", "want"), [c[1:] for c in TRACE_CASES], ids=[c[0] for c in TRACE_CASES]
)
def test_trace_refs_are_ranked(
    calls: Store, query: dict[str, Any], traces: dict[str, Any] | None, want: list[str]
) -> None:
    if traces is not None:
        traces = {"from": "rows", **traces}
    [s] = _fetch(calls, _rule(query, traces=traces))
    assert _ids(s, 5) == want
    if traces is not None and traces["from"] == "none":
        assert s.traces == ()


def test_trace_ref_carries_value_time_span_and_note(calls: Store) -> None:
    [s] = _fetch(calls, _rule({"agg": "ratio", "match": {"outcome": "refused"}, "field": "cost_usd"}))
    ref = s.traces_at(5)[0]
    assert (ref.trace_id, ref.span_id, ref.value) == ("t6acme", "s6", 10.0)
    assert ref.ts == T0 + 6 * M and ref.ts.tzinfo is not None
    assert ref.note == "gpt-4o · acme · refused"
    assert s.traces_at(0) == ()  # no refused call behind point 1


def test_no_traces_behind_points_without_a_value(calls: Store) -> None:
    [s] = _fetch(calls, _rule({"agg": "sum", "field": "cost_usd", "min_count": 3}))
    assert _ids(s, 0) == [] and _ids(s, 2) == ["t3acme", "t2acme", "t1acme"]


def _score(minute: int, value: float, name: str = "groundedness", **kw: Any) -> Score:
    base: dict[str, Any] = {"feature": "rag", "tenant": "acme", **kw}
    return Score(trace_id=f"g{minute}", ts=T0 + minute * M, name=name, value=value, **base)


@pytest.fixture
def scores(store: Store) -> Store:
    _add(
        store,
        [
            _score(1, 0.9),
            _score(2, 0.2),
            _score(3, 0.8, feature="faq"),
            _score(4, 0.4),
            _score(4, 0.0, name="relevance"),
        ],
    )
    return store


def test_scores_mean_by_feature_with_lowest_first(scores: Store) -> None:
    rule = _rule(
        {"agg": "mean", "score": "groundedness", "by": ["feature"]},
        "scores",
        {"from": "rows", "order": "value_asc", "top": 2},
    )
    faq, rag = _fetch(scores, rule, 4, 4)
    assert (faq.labels, rag.labels) == (Labels(feature="faq"), Labels(feature="rag"))
    _same(rag.values, [0.5])
    _same(rag.counts, [3])
    assert [(t.trace_id, t.value) for t in rag.traces_at(0)] == [("g2", 0.2), ("g4", 0.4)]
    assert rag.traces_at(0)[0].note == "groundedness · rag · acme"


def test_scores_ratio_below(scores: Store) -> None:
    rule = _rule(
        {"agg": "ratio", "score": "groundedness", "below": 0.5, "where": {"feature": "rag"}}, "scores"
    )
    [s] = _fetch(scores, rule, 4, 4)
    _same(s.values, [2 / 3])
    _same(s.counts, [3])
    assert _ids(s, 0) == ["g4", "g2"]


def test_empty_result_is_no_series(store: Store) -> None:
    assert _fetch(store, _rule({"agg": "count"})) == []
    assert SqlSource(store).fetch(_rule({"agg": "count"}), T0, T0 + timedelta(seconds=30), M) == []


def test_is_a_source(store: Store) -> None:
    assert isinstance(SqlSource(store), Source)
    assert SqlSource(store).name == "sql"


def test_prometheus_rule_is_a_query_error(store: Store) -> None:
    rule = Rule.model_validate({"alert": "P", "expr": "up == 0"})
    with pytest.raises(QueryError):
        _fetch(store, rule)


@pytest.mark.parametrize(
    "query",
    [
        {"agg": "count", "by": ["conversation_id"]},  # by: [user_id] needs the top-N guard: test_sql_topn
        {"agg": "count", "where": {"nope": "x"}},
        {"agg": "ratio", "match": {"comment": "x"}},
    ],
)
def test_unknown_column_is_rejected_when_the_rule_is_loaded(query: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"unknown calls column\(s\)"):
        _rule(query)


def test_unreachable_database_is_unavailable_without_password() -> None:
    url = "postgresql+psycopg://u:s3cret@127.0.0.1:1/x?connect_timeout=2"
    store = Store(sa.create_engine(url), "postgresql+psycopg://u:***@127.0.0.1:1/x", "postgresql", "s3cret")
    try:
        with pytest.raises(SourceUnavailableError) as excinfo:
            _fetch(store, _rule({"agg": "count"}))
    finally:
        store.close()
    assert "s3cret" not in str(excinfo.value) and "127.0.0.1" in str(excinfo.value)
    assert excinfo.value.source == "sql"


def test_same_results_on_postgresql(pg_url: str) -> None:
    pg = open_store(pg_url)
    try:
        _add(pg, [_call(*row) for row in CALLS] + [_call(4, 7.0, tenant="globex")])
        rule = _rule(
            {"agg": "sum", "field": "cost_usd", "by": ["tenant"], "per": "1h"},
            traces={"from": "rows", "top": 2},
        )
        acme, globex = _fetch(pg, rule)
        # Trace rows are read lazily, on the first question, from the open store.
        ids = _ids(acme, 5)
        first_ts = acme.traces_at(5)[0].ts
    finally:
        pg.close()
    assert acme.labels == Labels(tenant="acme")
    _same(acme.values, [12, 36, 84, 84, 120, 228])
    _same(globex.values, [NAN, NAN, NAN, 84, 84, 84])
    _same(acme.counts, [1, 2, 3, 3, 4, 4])
    assert ids == ["t6acme", "t3acme"]
    assert first_ts == T0 + 6 * M


def test_ties_are_broken_by_recency(store: Store) -> None:
    _add(store, [_call(1, 5.0), _call(2, 5.0), _call(3, 1.0)])
    [s] = _fetch(store, _rule({"agg": "max", "field": "cost_usd"}, traces={"from": "rows", "top": 2}), 3, 3)
    assert _ids(s, 0) == ["t2acme", "t1acme"]


@pytest.mark.parametrize("agg", ["count", "sum", "mean", "min", "max", "quantile", "ratio"])
def test_windows_match_a_brute_force_computation(store: Store, agg: str) -> None:
    rng = np.random.default_rng(3)
    seconds = rng.integers(0, 3600, 400)
    costs = rng.uniform(0, 1, 400).round(3)
    _add(
        store,
        [
            Call(
                trace_id=f"r{i}",
                ts=T0 + timedelta(seconds=int(x)),
                cost_usd=float(c),
                outcome="refused" if c > 0.8 else "ok",
            )
            for i, (x, c) in enumerate(zip(seconds, costs, strict=True))
        ],
    )
    query: dict[str, Any] = {"agg": agg, "window": "7m", "field": "cost_usd"}
    if agg == "quantile":
        query["quantile"] = 0.75
    if agg == "ratio":
        query["match"] = {"outcome": "refused"}
    [s] = SqlSource(store).fetch(_rule(query), T0, T0 + timedelta(hours=1), timedelta(seconds=150))
    for t, got in zip(s.timestamps, s.values, strict=True):
        inside = (seconds > t - to_epoch(T0) - 420) & (seconds <= t - to_epoch(T0))
        window = costs[inside]
        want = {
            "count": float(len(window)),
            "sum": float(window.sum()),
            "mean": float(window.mean()) if len(window) else NAN,
            "min": float(window.min()) if len(window) else NAN,
            "max": float(window.max()) if len(window) else NAN,
            "quantile": float(np.quantile(window, 0.75)) if len(window) else NAN,
            "ratio": float((window > 0.8).mean()) if len(window) else NAN,
        }[agg]
        if not len(window):
            want = NAN
        assert got == pytest.approx(want, nan_ok=True, abs=1e-9)


def test_scores_fetch_on_sqlite_reads_by_time_not_by_score_name(store: Store) -> None:
    # Without ANALYZE statistics SQLite would pick the index on name and read every score of that
    # name ever stored, on every tick; the fetch of a short range must walk the ts index.
    from watcher.sources.sql import _statement

    rule = _rule({"score": "groundedness", "agg": "mean", "window": "5m", "by": ["feature"]}, source="scores")
    assert rule.query is not None
    stmt = _statement(rule, rule.query, "sqlite", T0, T0 + timedelta(hours=1), want_traces=True)
    with store.engine.connect() as conn:
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = " ".join(str(row) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "ix_scores_ts" in plan and "ix_scores_name" not in plan, plan


def test_lazy_trace_refs_match_brute_force_in_any_order(store: Store) -> None:
    """References are ranked only for the points asked for (in blocks): whatever the order of the
    questions, and through ``Series.after`` views, each point gets the top rows of its window."""
    rng = np.random.default_rng(7)
    costs = rng.permutation(np.arange(1, 601)).astype(float)
    _add(store, [_call(m, float(costs[m - 1])) for m in range(1, 601)])
    rule = _rule({"agg": "sum", "field": "cost_usd", "window": "5m"}, traces={"from": "rows", "top": 3})
    forward, backward = _fetch(store, rule, 1, 600)[0], _fetch(store, rule, 1, 600)[0]
    n = len(forward)
    assert len(forward.traces) == n == 600
    back = {i: _ids(backward, i) for i in reversed(range(n))}
    tail = forward.after(float(forward.timestamps[299]))
    for i in range(n):
        window = [m for m in range(i - 3, i + 2) if 1 <= m <= 600]  # minutes (i+1-5, i+1]
        want = [f"t{m}acme" for m in sorted(window, key=lambda m: -costs[m - 1])[:3]]
        assert _ids(forward, i) == want == back[i]
        if i >= 300:
            assert _ids(tail, i - 300) == want
    assert forward.traces == backward.traces and forward.traces[-1] == tail.traces[-1]
    with pytest.raises(IndexError):
        forward.traces_at(n)
