"""The shipped Prometheus rule pack on a real Prometheus holding 7 days of backfilled LLM metrics.

The history (``llm_history``) is built with the metric names the hooks emit and backfilled with
``promtool tsdb create-blocks-from openmetrics``. The first tests run each rule's PromQL (through
``PrometheusSource``, as the daemon does) and compare with what the history holds by construction;
the last runs ``watcher backtest`` over the week as a user would and checks that the seasonal
spend rule catches the night-time loop (about as much spend as the normal afternoon peak) and
never fires on the daily peaks.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.prom import PrometheusServer
from tests.sources.llm_history import (
    BASE_CALLS,
    DAY,
    ERRORS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REFUSED,
    TTFT_P95,
    History,
    daily,
    generate,
)
from watcher.config import PrometheusEndpoint
from watcher.core import Series, from_epoch
from watcher.rules.loader import load_rule_files
from watcher.rules.schema import Group, Rule
from watcher.sources.prometheus import PrometheusSource

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules-prometheus" / "llm-prometheus.yaml"
END = int(time.time()) // 3600 * 3600 - 4 * 3600  # backfilled samples must be older than ~3 h


@pytest.fixture(scope="module")
def history() -> History:
    return generate(END)


@pytest.fixture(scope="module")
def prom(prometheus_module_factory: Any, history: History) -> PrometheusServer:
    return prometheus_module_factory(openmetrics=history.text)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pack() -> dict[str, tuple[Group, Rule]]:
    return {r.alert: (lg.group, r) for lg in load_rule_files([PACK]).groups for r in lg.group.rules}


@pytest.fixture
def source(prom: PrometheusServer) -> Iterator[PrometheusSource]:
    with PrometheusSource({"main": PrometheusEndpoint(url=prom.url)}) as src:
        yield src


def fetch_at(
    source: PrometheusSource, pack: dict[str, tuple[Group, Rule]], alert: str, ts: int
) -> dict[str, Series]:
    """Return the rule's series at the one grid point ``ts``, keyed by their label values."""
    group, rule = pack[alert]
    series = source.fetch(rule, from_epoch(ts) - group.interval, from_epoch(ts), group.interval)
    return {",".join(s.labels.values()): s for s in series}


def test_pack_is_what_the_doc_says(pack: dict[str, tuple[Group, Rule]]) -> None:
    assert set(pack) == {
        "TenantSpendAnomaly",
        "SpendBudgetBurn",
        "TokensPerRequestDrift",
        "FeatureRefusalRateHigh",
        "ProviderErrorRateHigh",
        "ModelTTFTHigh",
    }
    assert pack["TenantSpendAnomaly"][1].detector.kind == "seasonal"  # type: ignore[union-attr]
    rates = ("FeatureRefusalRateHigh", "ProviderErrorRateHigh")
    assert {pack[a][1].detector.kind for a in rates} == {"rate"}  # type: ignore[union-attr]


def test_spend_tokens_and_ttft_exprs(source: PrometheusSource, pack: Any, history: History) -> None:
    t = history.start + 3 * DAY + 12 * 3600  # day 3, 12:00 UTC: normal traffic
    spend = fetch_at(source, pack, "TenantSpendAnomaly", t)
    assert set(spend) == {"acme", "beta"}
    for tenant, base in BASE_CALLS.items():  # $0.001 a call: $/h = calls/min · 60 · 0.001
        expected = base * float(daily(np.array([t], dtype=np.float64))[0]) * 0.06
        assert spend[tenant].values[-1] == pytest.approx(expected, rel=0.08)

    tokens = fetch_at(source, pack, "TokensPerRequestDrift", t)
    assert set(tokens) == {"gpt-4o"}
    assert tokens["gpt-4o"].values[-1] == pytest.approx(INPUT_TOKENS + OUTPUT_TOKENS, rel=1e-6)

    ttft = fetch_at(source, pack, "ModelTTFTHigh", t)
    assert set(ttft) == {"gpt-4o"}
    assert ttft["gpt-4o"].values[-1] == pytest.approx(TTFT_P95, rel=1e-6)


def test_rate_rules_give_proportion_and_trials(source: PrometheusSource, pack: Any, history: History) -> None:
    t = history.start + 3 * DAY + 12 * 3600
    refusals = fetch_at(source, pack, "FeatureRefusalRateHigh", t)
    assert set(refusals) == {"chat", "search"}
    chat, search = refusals["chat"], refusals["search"]
    assert chat.values[-1] == pytest.approx(REFUSED, rel=1e-6)
    assert chat.counts is not None and search.counts is not None
    calls_5m = sum(BASE_CALLS.values()) * 5 * float(daily(np.array([t], dtype=np.float64))[0])
    assert chat.counts[-1] == pytest.approx(calls_5m, rel=0.15)  # the detector's sample size
    # A feature never refused has no llm_refusals_total series: its rate is 0, not missing.
    assert search.values[-1] == 0.0 and search.counts[-1] == pytest.approx(25, rel=0.25)

    errors = fetch_at(source, pack, "ProviderErrorRateHigh", t)
    (openai,) = errors.values()
    assert openai.counts is not None
    assert openai.counts[-1] == pytest.approx(chat.counts[-1] + search.counts[-1], rel=1e-6)
    assert openai.values[-1] == pytest.approx(ERRORS * chat.counts[-1] / openai.counts[-1], rel=1e-6)


def test_budget_burn_fires_only_while_burning(source: PrometheusSource, pack: Any, history: History) -> None:
    normal = history.start + 3 * DAY + 15 * 3600  # the daily peak
    assert fetch_at(source, pack, "SpendBudgetBurn", normal) == {}
    during = history.beta_burst[0] + 3900  # 1h05m into the burst: the 1h window is all burst
    burning = fetch_at(source, pack, "SpendBudgetBurn", during)
    assert set(burning) == {"beta"}
    # $36/h against $1000 a month (720 h): 25.9x
    assert burning["beta"].values[-1] == pytest.approx(36 * 720 / 1000, rel=0.03)
    soon = history.beta_burst[1] + 600  # 10 min later the 6h and 30m windows still burn > 6x
    assert set(fetch_at(source, pack, "SpendBudgetBurn", soon)) == {"beta"}
    after = history.beta_burst[1] + 2100  # 35 min later the short windows are quiet: it stops
    assert fetch_at(source, pack, "SpendBudgetBurn", after) == {}


def backtest(
    prom: PrometheusServer, history: History, tmp_path: Path, pack: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``watcher backtest PACK`` over the last 5 days (the first 2 warm the profile up)."""
    config = tmp_path / "watcher.yaml"
    config.write_text(
        yaml.safe_dump(
            {"store": {"url": f"sqlite:///{tmp_path}/w.db"}, "prometheus": {"main": {"url": prom.url}}}
        )
    )
    incidents = tmp_path / "incidents.yaml"
    incidents.write_text(
        yaml.safe_dump(
            [
                {
                    "id": "acme-night-loop",
                    "start": history.at(history.acme_loop[0]).isoformat(),
                    "end": history.at(history.acme_loop[1]).isoformat(),
                    "alert": "TenantSpendAnomaly",
                    "labels": {"tenant": "acme"},
                },
                {
                    "id": "beta-burst",
                    "start": history.at(history.beta_burst[0]).isoformat(),
                    "end": history.at(history.beta_burst[1]).isoformat(),
                    "labels": {"tenant": "beta"},
                },
            ]
        )
    )
    start = history.at(history.start + 2 * DAY)  # the seasonal profile needs two days
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "watcher", "backtest", str(pack), "--config", str(config),
            "--from", start.isoformat(), "--to", history.at(history.end).isoformat(),
            "--incidents", str(incidents), "--json", str(out),
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_backtest_week_catches_the_night_loop_not_the_peaks(
    prom: PrometheusServer, history: History, tmp_path: Path
) -> None:
    proc, report = backtest(prom, history, tmp_path, PACK)
    assert report["errors"] == [], report["errors"]
    rules = {r["alert"]: r for r in report["rules"]}
    spend = rules["TenantSpendAnomaly"]
    by_tenant = {e["labels"]["tenant"]: e for e in spend["episodes"]}
    assert sorted(by_tenant) == ["acme", "beta"] and len(spend["episodes"]) == 2, proc.stdout
    loop = by_tenant["acme"]
    assert loop["start"] <= history.at(history.acme_loop[0] + 3600).isoformat().replace("+00:00", "Z")
    incidents_found = {i["id"]: i for i in report["incidents"]}
    assert all(i["detected"] for i in incidents_found.values()), proc.stdout
    # Nothing else fired all week: the five daily peaks (3x the night level, as high as the loop)
    # are no episode, and no other rule pages on normal traffic.
    assert report["false_episodes"] == 0, proc.stdout
    assert report["precision"] == 1.0
    weeks = 5 / 7
    assert spend["fires_per_week"] == pytest.approx(2 / weeks, rel=0.01)
    assert math.isclose(rules["TokensPerRequestDrift"]["fires_per_week"], 0.0)
    assert "acme-night-loop: detected after" in proc.stdout


def test_pack_is_opt_in_and_shipped_beside_the_default_rules() -> None:
    from watcher.config import Settings, shipped_prometheus_rules_dir, shipped_rules_dir

    assert shipped_prometheus_rules_dir() / "llm-prometheus.yaml" == PACK
    # The default rules (./rules, and the shipped store pack `watcher demo` runs) need no Prometheus.
    assert Settings().rules == [Path("rules")]
    default = load_rule_files([shipped_rules_dir()])
    assert default.groups and all(r.source != "prometheus" for lg in default.groups for r in lg.group.rules)


def test_a_rolling_baseline_would_miss_the_night_loop(
    prom: PrometheusServer, history: History, tmp_path: Path
) -> None:
    seasonal = "detector: {kind: seasonal, seasons: [1d, 1w], history: 3w, sensitivity: 5, direction: up}"
    text = PACK.read_text()
    assert text.count(seasonal) == 1
    rolling = tmp_path / "rolling.yaml"
    rolling.write_text(
        text.replace(seasonal, "detector: {kind: rolling, window: 7d, sensitivity: 5, direction: up}")
    )
    proc, report = backtest(prom, history, tmp_path, rolling)
    found = {i["id"]: i["detected"] for i in report["incidents"]}
    # The loop's spend is about the daily peak's: only the seasonal profile tells night from day.
    assert found == {"acme-night-loop": False, "beta-burst": True}, proc.stdout
