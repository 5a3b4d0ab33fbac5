"""Contribution by dimension: the decompositions (exact sums), the ranking, and the SQL rows behind them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import select

from watcher.core import Labels
from watcher.engine.contribution import Rows, explain_rows
from watcher.engine.contribution_sql import explain_sql, fetch_rows, metric_name
from watcher.rules.schema import Rule
from watcher.store.db import Store, open_store
from watcher.store.tables import Call, Score

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def _rows(cur: list[tuple[float, dict[str, str]]], ref: list[tuple[float, dict[str, str]]]) -> Rows:
    every = [*cur, *ref]
    dims = sorted({k for _, d in every for k in d})
    return Rows(
        np.array([x for x, _ in every], dtype=np.float64),
        np.array([True] * len(cur) + [False] * len(ref)),
        {k: [d.get(k, "∅") for _, d in every] for k in dims},
    )


def test_additive_spend_names_the_feature_that_spent() -> None:
    ref = [(1.0, {"feature": f, "model": "m"}) for f in ("chat", "search") for _ in range(10)]
    cur = [(1.0, {"feature": "search", "model": "m"}) for _ in range(10)]
    cur += [(1.0, {"feature": "chat", "model": "m"}) for _ in range(40)]
    got = explain_rows(_rows(cur, ref), agg="sum", metric="sum cost_usd")
    assert got is not None and got.method == "additive"
    assert got.change == pytest.approx(30.0)  # 50 now against 20 before
    top = got.top[0]
    assert top.labels == (("feature", "chat"),) and top.share == pytest.approx(1.0)
    assert got.text() == "sum cost_usd +30.00: 100 % from feature=chat"  # model has one value: skipped


def test_the_reference_is_rescaled_to_the_window() -> None:
    ref = [(1.0, {"tenant": t}) for t in ("a", "b") for _ in range(60)]  # 6 windows of 10 per tenant
    cur = [(1.0, {"tenant": "a"}) for _ in range(10)] + [(1.0, {"tenant": "b"}) for _ in range(30)]
    got = explain_rows(_rows(cur, ref), agg="count", metric="calls", scale=1 / 6, change=25.0)
    assert got is not None
    assert got.top[0].labels == (("tenant", "b"),) and got.top[0].share == pytest.approx(1.0)
    assert got.top[0].delta == pytest.approx(25.0)  # rescaled to the alert's own value - expected


def test_mix_rate_parts_sum_exactly_to_the_change() -> None:
    rng = random.Random(3)
    dims = {"tenant": ["a", "b", "c"], "model": ["x", "y"], "feature": ["f", "g", "h", "i"]}

    def row(bias: float) -> tuple[float, dict[str, str]]:
        d = {k: rng.choice(v) for k, v in dims.items()}
        p = 0.05 + (bias if d["model"] == "y" else 0.0)
        return (1.0 if rng.random() < p else 0.0, d)

    cur = [row(0.3) for _ in range(400)]
    ref = [row(0.0) for _ in range(900)]
    rows = _rows(cur, ref)
    want = rows.x[rows.current].mean() - rows.x[~rows.current].mean()
    got = explain_rows(rows, agg="ratio", metric="rate", percent=True, top=10)
    assert got is not None and got.method == "mix-rate"
    assert got.change == pytest.approx(want)
    # every value of one dimension together accounts for the whole change, rate + mix
    from watcher.engine import contribution as c

    for d in dims:
        codes, keys = c._factorize([rows.dims[d]], len(rows.x))
        segs, total = c._segments(rows, codes, keys, "mix-rate", 1.0)
        assert float(segs.delta.sum()) == pytest.approx(want)
        assert segs.rate is not None and segs.mix is not None
        assert float((segs.rate + segs.mix).sum()) == pytest.approx(total)
    assert got.top[0].labels[0] == ("model", "y")
    assert "pp" in got.text()


def test_a_traffic_shift_is_a_mix_effect() -> None:
    # Rates unchanged (chat 20 %, search 0 %); traffic moved from search to chat.
    def calls(feature: str, n: int, refused: int) -> list[tuple[float, dict[str, str]]]:
        return [(1.0 if i < refused else 0.0, {"feature": feature, "tenant": f"t{i % 3}"}) for i in range(n)]

    ref = calls("chat", 100, 20) + calls("search", 300, 0)
    cur = calls("chat", 300, 60) + calls("search", 100, 0)
    got = explain_rows(_rows(cur, ref), agg="ratio", metric="rate of outcome=refused", percent=True)
    assert got is not None
    assert got.change == pytest.approx(0.15 - 0.05)
    top = got.top[0]
    assert top.labels == (("feature", "chat"),)
    assert top.rate == pytest.approx(0.0, abs=1e-12) and top.mix is not None and top.mix > 0
    assert got.text().startswith("rate of outcome=refused +10.0 pp: ")
    assert "(traffic mix)" in got.text()


def test_a_quantile_is_explained_by_the_rows_beyond_the_old_one() -> None:
    rng = random.Random(5)
    ref = [(rng.uniform(0.2, 0.6), {"model": m}) for m in ("a", "b", "c") for _ in range(200)]
    cur = [(rng.uniform(0.2, 0.6), {"model": m}) for m in ("a", "c") for _ in range(60)]
    cur += [(rng.uniform(1.0, 2.0), {"model": "b"}) for _ in range(60)]
    got = explain_rows(_rows(cur, ref), agg="quantile", quantile=0.95, metric="p95 ttft_s", change=1.2)
    assert got is not None and got.method == "exceedance"
    assert got.top[0].labels == (("model", "b"),) and got.top[0].share > 0.9
    assert got.text().startswith("p95 ttft_s +1.20: ")


def test_nothing_to_say_when_the_reference_moved_the_other_way() -> None:
    ref = [(1.0, {"tenant": "a"}), (0.0, {"tenant": "b"})]
    cur = [(0.0, {"tenant": "a"}), (0.0, {"tenant": "b"})]
    assert explain_rows(_rows(cur, ref), agg="ratio", metric="r", change=0.3) is None
    assert explain_rows(_rows(cur, []), agg="ratio", metric="r") is None  # no reference rows


def test_the_same_rows_are_named_once_and_qualified() -> None:
    # v42 exists only on gpt-4o and only there refusals rose; feature chat is the same rows.
    rows: list[tuple[float, dict[str, str]]] = []
    ref: list[tuple[float, dict[str, str]]] = []
    rng = random.Random(9)
    for i in range(3000):
        model = rng.choice(["gpt-4o", "claude"])
        feature = "chat" if model == "gpt-4o" else rng.choice(["chat", "search"])
        tenant = rng.choice(["acme", "globex"])
        old = {"model": model, "feature": feature, "tenant": tenant, "prompt_version": "v41"}
        ref.append((1.0 if rng.random() < 0.02 else 0.0, old))
        if i % 3 == 0:
            v42 = model == "gpt-4o" and rng.random() < 0.7
            new = {**old, "prompt_version": "v42" if v42 else "v41"}
            rows.append((1.0 if rng.random() < (0.3 if v42 else 0.02) else 0.0, new))
    got = explain_rows(_rows(rows, ref), agg="ratio", metric="refusal rate", percent=True)
    assert got is not None
    first = got.top[0]
    assert first.labels == (("prompt_version", "v42"), ("model", "gpt-4o")), got.text()
    assert first.share > 0.8
    assert got.text().startswith("refusal rate +9.9 pp: 100 % from prompt_version=v42 on model=gpt-4o")
    # gpt-4o's and chat's parts are v42's: not listed again
    assert [c.labels[0][0] for c in got.top] == ["prompt_version"]


# --- against a real store -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/w.db")
    yield s
    s.close()


def refusal_incident(
    store: Store, *, onset: datetime, end: datetime, seed: int = 1, per_minute: int = 6
) -> None:
    """Write 2 h of calls: 2 % refusals, then from ``onset`` prompt v42 on gpt-4o refuses 30 %."""
    rng = random.Random(seed)
    rows: list[Any] = []
    t = onset - timedelta(hours=2)
    i = 0
    while t < end:
        for _ in range(per_minute):
            model = rng.choice(["gpt-4o", "claude-sonnet-4"])
            tenant = rng.choice(["acme", "globex", "initech"])
            feature = rng.choice(["chat", "search"])
            v42 = t >= onset and model == "gpt-4o" and rng.random() < 0.8
            refused = rng.random() < (0.3 if v42 else 0.02)
            rows.append(
                Call(
                    trace_id=f"tr{i}",
                    ts=t + timedelta(seconds=rng.uniform(0, 59)),
                    model=model,
                    tenant=tenant,
                    feature=feature,
                    user_id=f"u{rng.randrange(50)}",
                    prompt_version="v42" if v42 else "v41",
                    outcome="refused" if refused else "ok",
                    ttft_s=rng.uniform(0.2, 0.5) * (4 if v42 else 1),
                    cost_usd=0.01,
                )
            )
            i += 1
        t += M
    with store.session() as s:
        s.add_all(rows)
        s.commit()


RATIO_RULE = Rule.model_validate(
    {
        "alert": "RefusalRateHigh",
        "source": "calls",
        "query": {"agg": "ratio", "match": {"outcome": "refused"}, "window": "15m", "by": ["feature"]},
        "detector": {"kind": "threshold", "above": 0.05},
    }
)


def _explain_refusals(store: Store) -> str:
    refusal_incident(store, onset=T0, end=T0 + 30 * M)
    got = explain_sql(
        store,
        RATIO_RULE,
        Labels(feature="chat"),
        now=T0 + 30 * M,
        since=T0 + 10 * M,
        lookback=timedelta(hours=2),
        change=0.09,
    )
    assert got is not None
    return got.text()


def test_explain_sql_on_sqlite(store: Store) -> None:
    text = _explain_refusals(store)
    assert text.startswith("rate of outcome=refused +9.0 pp: ")
    assert "from prompt_version=v42 on model=gpt-4o" in text.split("; ")[0]


def test_explain_sql_on_postgresql(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        text = _explain_refusals(store)
        assert "from prompt_version=v42 on model=gpt-4o" in text.split("; ")[0]
    finally:
        store.close()


def test_rows_are_those_of_the_series_and_the_two_periods(store: Store) -> None:
    refusal_incident(store, onset=T0, end=T0 + 30 * M)
    rows = fetch_rows(
        store, RATIO_RULE, Labels(feature="search"), (T0 + 15 * M, T0 + 30 * M), (T0 - 60 * M, T0)
    )
    assert set(rows.dims["feature"]) == {"search"}
    n_cur, n_ref = int(rows.current.sum()), int((~rows.current).sum())
    assert 20 < n_cur < 70 and 4 * n_cur - 60 < n_ref < 4 * n_cur + 200  # ~3 calls/min each side
    assert set(np.unique(rows.x)) <= {0.0, 1.0}


def test_scores_take_the_prompt_version_of_their_call(store: Store) -> None:
    refusal_incident(store, onset=T0, end=T0 + 30 * M)
    with store.session() as s:
        calls = list(s.exec(select(Call)).all())
        s.add_all(
            Score(
                trace_id=c.trace_id,
                ts=c.ts + timedelta(seconds=1),
                name="groundedness",
                value=0.4 if c.prompt_version == "v42" else 0.9,
                tenant=c.tenant,
                feature=c.feature,
                model=c.model,
            )
            for c in calls
        )
        s.commit()
    rule = Rule.model_validate(
        {
            "alert": "GroundednessDrop",
            "source": "scores",
            "query": {"score": "groundedness", "agg": "mean", "window": "15m"},
            "detector": {"kind": "threshold", "below": 0.8},
        }
    )
    got = explain_sql(
        store, rule, Labels(), now=T0 + 30 * M, since=T0 + 5 * M, lookback=timedelta(hours=2), change=-0.2
    )
    assert got is not None and got.metric == "mean groundedness"
    assert got.text().startswith("mean groundedness -0.20: ")
    assert got.top[0].labels[0] == ("prompt_version", "v42")


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"agg": "ratio", "match": {"outcome": ["refused", "filtered"]}}, "rate of outcome=refused|filtered"),
        ({"agg": "quantile", "quantile": 0.95, "field": "ttft_s"}, "p95 ttft_s"),
        ({"agg": "sum", "field": "cost_usd", "per": "1h"}, "sum cost_usd"),
        ({"agg": "count"}, "calls"),
    ],
)
def test_metric_names(query: dict[str, Any], name: str) -> None:
    rule = Rule.model_validate(
        {"alert": "R", "source": "calls", "query": query, "detector": {"kind": "threshold", "above": 1}}
    )
    assert metric_name(rule) == name


def test_a_change_spread_evenly_names_no_value() -> None:
    rng = random.Random(8)
    tenants = ["a", "b", "c", "d"]
    ref = [(1.0 if rng.random() < 0.05 else 0.0, {"tenant": rng.choice(tenants)}) for _ in range(4000)]
    cur = [(1.0 if rng.random() < 0.25 else 0.0, {"tenant": rng.choice(tenants)}) for _ in range(2000)]
    got = explain_rows(_rows(cur, ref), agg="ratio", metric="rate", percent=True)
    assert got is not None and got.top == ()
    assert got.text() == "rate +21.3 pp: no single tenant explains it"


def test_a_p95_ttft_alert_on_sqlite_names_the_slow_rollout(store: Store) -> None:
    refusal_incident(store, onset=T0, end=T0 + 30 * M)  # v42 calls are also 4 times slower
    rule = Rule.model_validate(
        {
            "alert": "TTFTDegraded",
            "source": "calls",
            "query": {
                "agg": "quantile",
                "quantile": 0.95,
                "field": "ttft_s",
                "window": "15m",
                "by": ["model"],
            },
            "detector": {"kind": "threshold", "above": 1.0},
        }
    )
    got = explain_sql(
        store,
        rule,
        Labels(model="gpt-4o"),
        now=T0 + 30 * M,
        since=T0 + 5 * M,
        lookback=timedelta(hours=2),
        change=1.1,
    )
    assert got is not None and got.method == "exceedance" and got.metric == "p95 ttft_s"
    assert got.text().startswith("p95 ttft_s +1.10: ")
    assert got.top[0].labels[0] == ("prompt_version", "v42")


def _segs(p: list[float]) -> Any:
    from watcher.engine import contribution as c

    k = len(p)
    z = np.zeros(k)
    return (
        np.zeros(0, dtype=np.int64),
        c._Segments([(str(i),) for i in range(k)], z, None, None, z, z, np.array(p)),
    )


def test_holm_gives_each_dimension_an_equal_share_of_the_error() -> None:
    from watcher.engine import contribution as c

    # 4 models and 150 users, one small p-value in each: 0.004 passes among 4 models (0.05 / 2
    # dimensions / 4 values = 0.00625), not among 150 users; an unweighted Holm over all 154
    # values (0.05 / 154 = 0.0003) would have passed neither
    per_dim = {"model": _segs([0.004, 0.5, 0.5, 0.5]), "user_id": _segs([0.004] + [0.5] * 149)}
    assert c._holm(per_dim) == {("model", 0)}
    # untested values (NaN: too few rows) are not in the family; a value against the change is (1.0)
    per_dim = {"model": _segs([0.03, float("nan"), float("nan"), 1.0])}
    assert c._holm(per_dim) == set()  # 0.03 > 0.05 / 2
    per_dim = {"model": _segs([0.02, float("nan"), float("nan"), float("nan")])}
    assert c._holm(per_dim) == {("model", 0)}


def test_noise_over_many_values_names_none() -> None:
    # two periods of the same process over 12 tenants and 150 users: some value always has the
    # largest share of the change, none stands out of the noise
    rng = random.Random(11)

    def row() -> tuple[float, dict[str, str]]:
        dims = {"tenant": f"t{rng.randrange(12)}", "user_id": f"u{int(rng.paretovariate(1.0)) % 150}"}
        return (1.0 if rng.random() < 0.03 else 0.0, dims)

    cur = [row() for _ in range(1500)]
    ref = [row() for _ in range(9000)]
    got = explain_rows(_rows(cur, ref), agg="ratio", metric="refusal rate", percent=True, scale=1 / 6)
    assert got is not None and got.top == ()
    assert got.text().endswith(": no single tenant/user_id explains it")


def test_a_small_segment_needs_more_than_the_normal_tail() -> None:
    # 2 refusals in 6 calls of one user against 3 % everywhere: the normal tail says p ≈ 1e-4, the
    # binomial p ≈ 0.01 — not enough among 40 users
    rng = random.Random(4)
    ref = [(1.0 if rng.random() < 0.03 else 0.0, {"user_id": f"u{i % 40}"}) for i in range(6000)]
    cur = [(1.0 if rng.random() < 0.03 else 0.0, {"user_id": f"u{i % 40 + 1}"}) for i in range(234)]
    cur += [(1.0 if i < 2 else 0.0, {"user_id": "u0"}) for i in range(6)]
    got = explain_rows(_rows(cur, ref), agg="ratio", metric="refusal rate", percent=True, scale=1 / 25)
    assert got is not None and got.top == (), got.text()
