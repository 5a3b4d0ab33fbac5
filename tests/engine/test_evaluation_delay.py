"""``evaluation_delay`` in the daemon's evaluator: the data window ends that long ago; alert times do not."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.core import AlertState, Labels
from watcher.engine.group import GroupEvaluator
from watcher.notify.templates import DETAIL
from watcher.rules.schema import Group
from watcher.sources.sql import SqlSource
from watcher.store.db import Store, open_store
from watcher.store.tables import Score

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    yield s
    s.close()


def _group(**rule: object) -> Group:
    base = {
        "alert": "Grounded",
        "source": "scores",
        "query": {"score": "groundedness", "agg": "mean", "window": "5m", "by": ["feature"]},
        "detector": {"kind": "threshold", "below": 0.5},
    }
    return Group.model_validate({"name": "q", "interval": "1m", "rules": [{**base, **rule}]})


def test_delayed_rule_judges_the_window_of_delay_ago_on_the_real_clock(store: Store) -> None:
    with store.session() as session:
        for m in range(40):
            value = 0.2 if 20 <= m < 25 else 0.9
            session.add(
                Score(trace_id=f"t{m}", ts=T0 + m * M, name="groundedness", value=value, feature="rag")
            )
        session.commit()
    ev = GroupEvaluator(_group(evaluation_delay="10m"), {"scores": SqlSource(store)})
    for m in range(15, 33):
        ev.evaluate(T0 + m * M)
        if m < 32:  # the window (17m, 22m] is the first with three low scores: judged at 32m
            assert not ev.alerts(), m
    (alert,) = ev.alerts()
    assert alert.state is AlertState.FIRING and alert.labels == Labels(feature="rag")
    assert alert.active_at == T0 + 32 * M  # the alert's clock is the evaluation's, not the data's
    assert alert.value == pytest.approx((2 * 0.9 + 3 * 0.2) / 5)
    [(_, verdict)] = ev.verdicts()["Grounded"].items()
    assert verdict.ts == (T0 + 22 * M).timestamp()


def test_undelayed_rule_judges_the_newest_window(store: Store) -> None:
    with store.session() as session:
        session.add(Score(trace_id="t", ts=T0 + 20 * M, name="groundedness", value=0.1, feature="rag"))
        session.commit()
    ev = GroupEvaluator(_group(), {"scores": SqlSource(store)})
    ev.evaluate(T0 + 20 * M)
    (alert,) = ev.alerts()
    assert alert.value == pytest.approx(0.1) and DETAIL not in alert.annotations
