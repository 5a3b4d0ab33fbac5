"""The top-N guard of ``by: [user_id]``: ranked in SQL, the rest folded into ``(other)``.

On SQLite and PostgreSQL. Generated rows: 12 users of tenant acme, user ``u{k}`` spending ``k``
dollars per minute for 30 minutes, plus rows without a user. Every fetch path (points, buckets,
raw rows) must give the same series: the top users' own, and one ``(other)`` holding every other
row, so the totals are those of the rule without ``by``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from watcher.core import Series
from watcher.rules.schema import Rule
from watcher.sources.sql import SqlSource
from watcher.store.db import Store, open_store
from watcher.store.tables import Call

T0 = datetime(2026, 12, 1, tzinfo=UTC)
M = timedelta(minutes=1)
USERS = 12
MINUTES = 30


def _rows() -> list[Call]:
    rows = []
    for minute in range(1, MINUTES + 1):
        for k in range(1, USERS + 1):
            rows.append(
                Call(
                    trace_id=f"t{minute}-{k}",
                    ts=T0 + minute * M,
                    model="gpt-4o",
                    tenant="acme",
                    user_id=f"u{k:02d}",
                    cost_usd=float(k),
                )
            )
        rows.append(Call(trace_id=f"anon{minute}", ts=T0 + minute * M, tenant="acme", cost_usd=0.5))
    return rows


def _fill(store: Store) -> Store:
    with store.session() as s:
        s.add_all(_rows())
        s.commit()
    return store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = _fill(open_store(f"sqlite:///{tmp_path}/w.db"))
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/w.db")
    else:
        s = open_store(request.getfixturevalue("pg_url"))
    _fill(s)
    yield s
    s.close()


def _rule(top: dict[str, Any] | None, by: list[str] | None = None, traces: str = "none") -> Rule:
    query: dict[str, Any] = {"agg": "sum", "field": "cost_usd", "window": "5m", "by": by or ["user_id"]}
    if top is not None:
        query["top"] = top
    return Rule.model_validate(
        {
            "alert": "UserBudget",
            "source": "calls",
            "query": query,
            "detector": {"kind": "budget", "amount": 100},
            "traces": {"from": traces},
        }
    )


def _by_label(series: list[Series], name: str = "user_id") -> dict[str, Series]:
    return {s.labels[name]: s for s in series}


@pytest.mark.parametrize("points", [2, 30], ids=["points", "buckets"])
def test_top_three_get_their_own_series_and_the_rest_fold_into_other(store: Store, points: int) -> None:
    end = T0 + MINUTES * M
    rule = _rule({"n": 3, "over": "1d"})
    got = _by_label(SqlSource(store).fetch(rule, end - points * M, end, M))
    assert sorted(got) == ["(other)", "u10", "u11", "u12"]
    # each point: the 5 minutes before it; users 1..9 (45 $/min) and the anonymous rows (0.5 $/min)
    last = -1
    assert got["u12"].values[last] == pytest.approx(12 * 5)
    assert got["(other)"].values[last] == pytest.approx((45 + 0.5) * 5)
    total = sum(s.values[last] for s in got.values())
    assert total == pytest.approx((78 + 0.5) * 5)  # nothing lost to the fold


def test_every_fetch_path_agrees(sqlite_store: Store) -> None:
    end = T0 + MINUTES * M
    rule = _rule({"n": 4})
    fast = _by_label(SqlSource(sqlite_store).fetch(rule, end - 20 * M, end, M))
    raw = _by_label(SqlSource(sqlite_store, aggregate=False).fetch(rule, end - 20 * M, end, M))
    assert sorted(fast) == sorted(raw) == ["(other)", "u09", "u10", "u11", "u12"]
    for key in fast:
        np.testing.assert_allclose(fast[key].values, raw[key].values, equal_nan=True)


def test_ranking_window_is_before_the_last_point(sqlite_store: Store) -> None:
    """A user that spent most only in the last minutes is top only when ``over`` reaches them."""
    with sqlite_store.session() as s:
        s.add(Call(trace_id="late", ts=T0 + 40 * M, tenant="acme", user_id="late", cost_usd=1000.0))
        s.commit()
    end = T0 + 40 * M
    src = SqlSource(sqlite_store)
    with_late = _by_label(src.fetch(_rule({"n": 1, "over": "1h"}), end - M, end, M))
    assert sorted(with_late) == ["late"]  # nobody else spent in (35m, 40m]
    before = _by_label(src.fetch(_rule({"n": 1, "over": "1h"}), end - 12 * M, end - 10 * M, M))
    assert sorted(before) == ["(other)", "u12"]


def test_traces_of_the_other_series_are_its_rows(sqlite_store: Store) -> None:
    end = T0 + MINUTES * M
    rule = _rule({"n": 2}, traces="rows")
    got = _by_label(SqlSource(sqlite_store).fetch(rule, end - 30 * M, end, M))
    other = got["(other)"].traces[-1]
    assert other, "the folded series has trace references"
    assert all(not ref.trace_id.startswith(("t30-11", "t30-12")) for ref in other)
    top = got["u12"].traces[-1]
    assert {ref.trace_id.split("-")[1] for ref in top} == {"12"}


def test_with_a_second_label(sqlite_store: Store) -> None:
    end = T0 + MINUTES * M
    got = SqlSource(sqlite_store).fetch(_rule({"n": 2}, by=["tenant", "user_id"]), end - M, end, M)
    assert sorted((s.labels["tenant"], s.labels["user_id"]) for s in got) == [
        ("acme", "(other)"),
        ("acme", "u11"),
        ("acme", "u12"),
    ]
    assert all(not math.isnan(s.values[-1]) for s in got)


def test_user_id_without_the_guard_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"by: user_id makes one series per user_id.*top: \{n: 20\}"):
        _rule(None)
    with pytest.raises(ValidationError, match="`top` guards a high-cardinality `by` label"):
        _rule({"n": 3}, by=["tenant"])
