"""Contribution by dimension for PromQL rules: the inner series of a ``sum by``, on a real Prometheus."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.prom import PrometheusServer
from watcher.config import PrometheusEndpoint
from watcher.core import AlertState, from_epoch
from watcher.engine.contribution_prom import inner_sum
from watcher.engine.group import GroupEvaluator
from watcher.rules.schema import Group
from watcher.sources.prometheus import PrometheusSource

NOW = int(time.time()) // 60 * 60
DATA_END = NOW - 4 * 3600  # backfilled samples must be older than ~3 h
DATA_START = DATA_END - 6 * 3600
ONSET = DATA_END - 40 * 60
# (tenant, model, feature) → $ per minute; from ONSET globex's agent on gpt-4o spends ×10
SERIES = {
    ("acme", "gpt-4o-mini", "chat"): 0.20,
    ("acme", "gpt-4o", "agent"): 0.10,
    ("globex", "gpt-4o-mini", "chat"): 0.15,
    ("globex", "gpt-4o", "agent"): 0.05,
    ("globex", "claude-sonnet-4", "summarize"): 0.08,
}


def history_text() -> str:
    lines = ["# HELP llm_cost_usd Spend.", "# TYPE llm_cost_usd counter"]
    totals = dict.fromkeys(SERIES, 0.0)
    for ts in range(DATA_START, DATA_END + 1, 60):
        for key, per_min in SERIES.items():
            runaway = key == ("globex", "gpt-4o", "agent") and ts >= ONSET
            totals[key] += per_min * (10 if runaway else 1)
            tenant, model, feature = key
            labels = f'tenant="{tenant}",model="{model}",feature="{feature}"'
            lines.append(f"llm_cost_usd_total{{{labels}}} {totals[key]:.6f} {ts}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prom(prometheus_module_factory: Any) -> PrometheusServer:
    return prometheus_module_factory(openmetrics=history_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        (
            "sum by (tenant) (rate(llm_cost_usd_total[5m])) * 3600",
            ("rate(llm_cost_usd_total[5m])", ("tenant",)),
        ),
        ("60 * (sum by (tenant, model) (rate(x[5m])))", ("rate(x[5m])", ("tenant", "model"))),
        ("sum(rate(x[5m]))", ("rate(x[5m])", ())),
        ("sum by (a) (rate(x[5m])) / sum by (a) (rate(y[5m]))", None),
        ("histogram_quantile(0.95, sum by (le) (rate(h[5m])))", None),
        ("sum without (b) (x)", None),
        ("not promql ((", None),
    ],
)
def test_inner_sum(expr: str, want: tuple[str, tuple[str, ...]] | None) -> None:
    assert inner_sum(expr) == want


@pytest.mark.integration
def test_a_spend_alert_on_prometheus_names_the_series_inside_the_sum(prom: PrometheusServer) -> None:
    group = Group.model_validate(
        {
            "name": "cost",
            "interval": "1m",
            "rules": [
                {
                    "alert": "SpendHigh",
                    "expr": "sum by (tenant) (rate(llm_cost_usd_total[5m])) * 3600",
                    "detector": {"kind": "threshold", "above": 30},
                    "for": "2m",
                    "traces": {"from": "none"},
                }
            ],
        }
    )
    source = PrometheusSource({"main": PrometheusEndpoint(url=prom.url, exemplars=False)})
    try:
        ev = GroupEvaluator(group, {"prometheus": source})
        for k in range(-10, 20):
            res = ev.evaluate(from_epoch(ONSET + 60 * k))
    finally:
        source.close()
    (alert,) = [a for a in res.alerts if a.state is AlertState.FIRING]
    assert alert.labels["tenant"] == "globex"
    text = alert.annotations["explanation"]
    assert text.startswith("sum of rate(llm_cost_usd_total[5m]) +"), text
    first = text.split(": ", 1)[1].split("; ")[0]
    assert first.startswith("100 % from ") and "feature=agent" in first and "model=gpt-4o" in first, text
    assert "tenant=" not in text  # the alert's own label is not a dimension
