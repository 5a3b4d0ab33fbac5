"""Evaluator-health queries on real stores (SQLite and PostgreSQL): score coverage, judge lag, error rate."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watcher.core import Labels
from watcher.rules.schema import Rule
from watcher.sources.sql import SqlSource
from watcher.store.db import Store, open_store
from watcher.store.tables import Call, Score

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    calls = [Call(trace_id=f"t{m}", ts=T0 + m * M, model="gpt-4o", feature="chat") for m in (1, 2, 3, 5, 6)]
    scores = [
        Score(trace_id="t1", ts=T0 + 2 * M, name="groundedness", value=0.9, evaluator="j"),  # lag 60 s
        Score(trace_id="t3", ts=T0 + 3.5 * M, name="groundedness", value=0.8, evaluator="j"),  # lag 30 s
        Score(trace_id="t3", ts=T0 + 8 * M, name="groundedness", value=0.7, evaluator="j"),  # a re-score
        Score(trace_id="orphan", ts=T0 + 4 * M, name="groundedness", value=0.5, evaluator="j"),  # no call
        Score(
            trace_id="t2", ts=T0 + 4 * M, name="eval.error", value=1.0, label="TimeoutError", evaluator="j"
        ),
        Score(trace_id="t2", ts=T0 + 4 * M, name="retrieval.top_score", value=0.3, source="retrieval"),
        Score(trace_id="t5", ts=T0 + 9 * M, name="groundedness", value=0.6, evaluator="j"),  # lag 240 s
    ]
    with s.session() as session:
        session.add_all([*calls, *scores])
        session.commit()
    yield s
    s.close()


def _rule(source: str, query: dict[str, Any], **extra: Any) -> Rule:
    spec = {"alert": "R", "source": source, "query": query, "detector": {"kind": "threshold", "above": 1}}
    return Rule.model_validate({**spec, **extra})


def _values(store: Store, rule: Rule, first: int, last: int) -> dict[Labels, list[float]]:
    got = SqlSource(store).fetch(rule, T0 + (first - 1) * M, T0 + last * M, M)
    return {s.labels: [round(float(v), 6) if not math.isnan(v) else math.nan for v in s.values] for s in got}


COVERAGE = {"agg": "ratio", "missing_score": "groundedness", "window": "5m"}


def test_coverage_counts_a_call_unscored_until_its_score_arrives(store: Store) -> None:
    # Points 1..6 hold calls {1} {1,2} {1,2,3} {1,2,3} {1,2,3,5} {2,3,5,6}; t1 is scored at 2,
    # t3 at 3.5, t5 at 9, t2 and t6 never (t2's eval.error is not a groundedness score).
    got = _values(store, _rule("calls", COVERAGE), 1, 6)
    assert got == {Labels(): [1.0, 0.5, round(2 / 3, 6), round(1 / 3, 6), 0.5, 0.75]}


def test_coverage_with_evaluation_delay_counts_the_scores_known_by_then(store: Store) -> None:
    # The point at t is evaluated at t + 5m: t1 (scored at 2), t3 (3.5) and t5 (9) count as scored.
    rule = _rule("calls", COVERAGE, evaluation_delay="5m")
    assert _values(store, rule, 1, 6) == {Labels(): [0.0, 0.5, round(1 / 3, 6), round(1 / 3, 6), 0.25, 0.5]}


def test_coverage_trace_references_are_calls_never_scored_in_their_window(store: Store) -> None:
    rule = _rule("calls", COVERAGE, traces={"from": "rows", "top": 5})
    (series,) = SqlSource(store).fetch(rule, T0, T0 + 6 * M, M)
    # t2 and t6 are never scored; t5 is, at 9, before the last window holding it ends (at 10)
    assert [r.trace_id for r in series.traces_at(5)] == ["t6", "t2"]


def test_score_lag_is_seconds_from_the_newest_call_before_the_score(store: Store) -> None:
    rule = _rule("scores", {"score": "groundedness", "field": "lag_s", "agg": "max", "window": "5m"})
    # the orphan score has no call (left out); t3's re-score at 8 lags 5 minutes behind t3's call
    got = _values(store, rule, 2, 9)
    assert got == {Labels(): [60.0, 60.0, 60.0, 60.0, 60.0, 30.0, 300.0, 300.0]}


def test_judge_error_rate_over_every_score_name_of_the_judges(store: Store) -> None:
    query = {"score": "*", "agg": "ratio", "match": {"name": "eval.error"}, "where": {"source": "judge"}}
    rule = _rule("scores", {**query, "window": "5m", "by": ["evaluator"]})
    # at 4: groundedness at 2, 3.5 and 4 (orphan) and the error at 4; the retrieval score is not a judgement
    assert _values(store, rule, 4, 5) == {Labels(evaluator="j"): [0.25, 0.25]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": "prometheus", "expr": "up", "evaluation_delay": "5m"}, "evaluation_delay"),
        ({"source": "calls", "query": {"agg": "mean", "field": "lag_s"}}, "is for source: scores"),
        (
            {"source": "scores", "query": {"agg": "ratio", "score": "x", "missing_score": "x"}},
            "for source: calls",
        ),
        ({"source": "scores", "query": {"agg": "mean", "score": "x", "field": "cost_usd"}}, "only be lag_s"),
        (
            {"source": "calls", "query": {"agg": "mean", "field": "cost_usd", "missing_score": "x"}},
            "agg: ratio",
        ),
        ({"source": "calls", "query": {"agg": "count"}, "evaluation_delay": "-5m"}, "bad duration"),
    ],
)
def test_bad_evaluator_health_rules_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Rule.model_validate({"alert": "R", "detector": {"kind": "threshold", "above": 1}, **spec})
