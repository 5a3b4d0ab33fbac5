"""``watcher bench contribution``: planted drivers named first, noise left unnamed, the table and the CLI."""

from __future__ import annotations

import json

import pytest

from watcher.bench import contribution as bench
from watcher.cli import main


@pytest.mark.parametrize("metric", bench.METRICS)
def test_a_planted_driver_is_named_first_and_noise_is_not_named(metric: str) -> None:
    planted = bench.trial(metric, "planted", 7)
    assert planted.driver is not None and planted.first == planted.driver, planted
    quiet = [bench.trial(metric, "noise", seed) for seed in range(5)]
    assert all(t.explained and not t.named for t in quiet), quiet


def test_run_reports_rates_per_metric_and_arm() -> None:
    got = bench.run(trials=3, seed=1, metrics=("groundedness",))
    row = got["metrics"]["groundedness"]
    assert set(row) == {"driver_first", "driver_named", "planted_other_first", "noise_named", "spread_named"}
    assert row["driver_first"] == 1.0 and row["noise_named"] == 0.0
    assert "| groundedness | 100.0% |" in bench.table(got)


def test_the_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "contribution", "--trials", "2", "--metric", "spend", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["trials"] == 2 and set(got["metrics"]) == {"spend"}
