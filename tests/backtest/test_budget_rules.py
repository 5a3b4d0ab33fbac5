"""A per-user daily budget through the real engine (``watcher test`` on a SQLite store): the top-N
guard keeps the biggest spenders' own series, the runaway user pages with its forecast, and the
small users folded into ``(other)`` stay quiet."""

from __future__ import annotations

from pathlib import Path

from watcher.backtest.testing import run_test_file

RULES = """\
groups:
  - name: user-budget
    interval: 5m
    rules:
      - alert: UserBudgetBurn
        source: calls
        query: {agg: sum, field: cost_usd, window: 5m, by: [user_id], top: {n: 2, over: 1d}}
        detector: {kind: budget, period: day, amount: 10}
        no_data: ok
        labels: {severity: ticket}
"""

# $10 a day is $0.4167/h at the even rate; 14.4x is $6/h. u1 spends $0.30/h, then $12/h more from
# 5h; u3 and u4 fold into (other) at $0.10/h together.
TESTS = """\
rule_files: [rules.yaml]
evaluation_interval: 5m
tests:
  - name: the runaway user pages; the folded small users do not
    input_calls:
      - {every: 1m, from: 0m, to: 6h, rows: {user_id: u1, cost_usd: 0.005}}
      - {every: 1m, from: 0m, to: 6h, rows: {user_id: u2, cost_usd: 0.0033}}
      - {every: 1m, from: 0m, to: 6h, rows: {user_id: [u3, u4], cost_usd: 0.00167}}
      - {every: 1m, from: 5h, to: 6h, rows: {user_id: u1, cost_usd: 0.2, trace_id: "loop-{i}"}}
    alert_rule_test:
      - eval_time: 4h
        alertname: UserBudgetBurn
        exp_alerts: []
      - eval_time: 5h30m
        alertname: UserBudgetBurn
        exp_alerts:
          - exp_labels: {user_id: u1, severity: ticket}
            exp_annotations:  # $7.855 in the 6h window: $1.309/h; $2.145 left lasts 1h38m
              forecast: "at this rate u1 exceeds $10.00 at 07:08 UTC ($7.85 spent today, 78%)"
"""


def test_a_per_user_budget_pages_the_runaway_user_only(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text(TESTS)
    assert run_test_file(tmp_path / "t.yaml") == []


def test_the_same_rule_without_the_guard_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES.replace(", top: {n: 2, over: 1d}", ""))
    (tmp_path / "t.yaml").write_text(TESTS)
    (failure,) = run_test_file(tmp_path / "t.yaml")
    text = "\n".join(failure.lines)
    assert "rules.yaml:5:9:" in text and "by: user_id makes one series per user_id" in text


def test_a_backtest_of_the_per_user_budget_finds_the_runaway_with_its_traces(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    import yaml

    from watcher.backtest.replay import replay
    from watcher.rules.schema import Group
    from watcher.sources.sql import SqlSource
    from watcher.store.db import open_store
    from watcher.store.tables import Call

    t0 = datetime(2026, 12, 7, tzinfo=UTC)
    m = timedelta(minutes=1)
    rows = []
    for k in range(6 * 60):
        for user, cost in (("u1", 0.005), ("u2", 0.0033), (f"u{3 + k % 2}", 0.00167)):
            rows.append(Call(trace_id=f"{user}-{k}", ts=t0 + k * m, user_id=user, cost_usd=cost))
        if k >= 5 * 60:
            rows.append(Call(trace_id=f"loop-{k}", ts=t0 + k * m, user_id="u1", cost_usd=0.2))
    store = open_store(f"sqlite:///{tmp_path}/b.db")
    try:
        with store.session() as s:
            s.add_all(rows)
            s.commit()
        groups = [Group.model_validate(g) for g in yaml.safe_load(RULES)["groups"]]
        sql = SqlSource(store)
        result = replay(groups, {"calls": sql}, t0 + timedelta(hours=2), t0 + timedelta(hours=6))
    finally:
        store.close()
    assert result.errors == []
    (episode,) = result.episodes
    assert dict(episode.labels)["user_id"] == "u1"
    assert episode.trace_ids and all(t.startswith("loop-") for t in episode.trace_ids)
