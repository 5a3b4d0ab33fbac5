"""deploy/grafana/*.json: every PromQL expression parses in a real Prometheus, names only metrics
that watcher exports, and the LLM panels return data from a scraped demo app (the compose topology
without Docker: demo app with the hooks → Prometheus → dashboard queries)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import PrometheusFactory
from tests.prom import PrometheusServer, free_port, poll
from watcher.instrument.metrics import LLMMetrics
from watcher.selfmetrics import SelfMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
_GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return ``(where, expr)`` for every panel target and every ``label_values`` variable."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{dashboard['uid']}: panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert m, f"variable {var['name']}: only label_values(selector, label) is used"
            out.append((f"{dashboard['uid']}: variable {var['name']}", m.group(1)))
    return out


def concrete(expr: str) -> str:
    """Return ``expr`` with Grafana's variables replaced by values Prometheus accepts."""
    for name, value in _GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression selects (strings, matchers, ranges and clauses removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", e):
        if m.group(2) is None and m.group(1) not in _KEYWORDS:
            names.add(m.group(1))
    return names


def exported_names() -> set[str]:
    """Return every sample name the hooks' metrics and the self-metrics can expose."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
        "summary": ("_count", "_sum", ""),
    }
    registry = CollectorRegistry()
    LLMMetrics(registry)
    names = set()
    for reg in (registry, SelfMetrics().registry):
        for family in reg.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, model) (rate(llm_request_duration_seconds_bucket"
        '{tenant=~"$tenant",x="a{b}"}[5m] offset 1h))) / on(model) group_left() time() - up'
    )
    assert metric_names(expr) == {"llm_request_duration_seconds_bucket", "up"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_shape_and_names(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    known = exported_names()
    for where, expr in expressions(dashboard):
        unknown = metric_names(expr) - known
        assert not unknown, f"{path.name}: {where}: unknown metric(s) {sorted(unknown)} in {expr}"


@pytest.fixture(scope="module")
def demo_prometheus(prometheus_module_factory: PrometheusFactory) -> Iterator[PrometheusServer]:
    """Return a real Prometheus scraping deploy/demo/app.py (the compose demo app) on loopback."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WATCHER_STORE__URL", None)
    app = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "deploy" / "demo" / "app.py"),
            "--addr",
            "127.0.0.1",
            "--port",
            str(port),
            "--rate",
            "200",
            "--spike-every",
            "4",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def up() -> bool:
            if app.poll() is not None:
                raise RuntimeError(f"demo app exited: {app.stderr.read() if app.stderr else ''}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        poll(up, timeout=20, what="the demo app's /metrics")
        server = prometheus_module_factory(targets=[f"127.0.0.1:{port}"])
        # rate() needs two scrapes of every series, refusals included
        server.wait_for("count(rate(llm_refusals_total[1m]) > 0)", timeout=30)
        yield server
    finally:
        app.terminate()
        try:
            app.wait(10)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        if app.stderr is not None:
            app.stderr.close()


def _query(server: PrometheusServer, expr: str) -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/api/v1/query", params={"query": expr}, timeout=10)
    return resp.json()  # type: ignore[no-any-return]


def test_every_expression_parses_in_prometheus(demo_prometheus: PrometheusServer) -> None:
    assert _query(demo_prometheus, "sum(rate(llm_requests_total[1m]")["status"] == "error"  # the check bites
    for path in DASHBOARDS:
        for where, expr in expressions(json.loads(path.read_text())):
            body = _query(demo_prometheus, concrete(expr))
            assert body["status"] == "success", f"{path.name}: {where}: {body.get('error')}\n{expr}"


def test_llm_panels_show_the_demo_traffic(demo_prometheus: PrometheusServer) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "llm-operations.json").read_text())
    for where, expr in expressions(dashboard):
        if not any(n.startswith("llm_") for n in metric_names(expr)):
            continue  # watcher's own signals: exported by the daemon, not the app
        result = _query(demo_prometheus, concrete(expr))["data"]["result"]
        assert result, f"{where}: no data for {expr}"
    exemplars = httpx.get(
        f"{demo_prometheus.url}/api/v1/query_exemplars",
        params={"query": "llm_cost_usd_total", "start": "0", "end": "9999999999"},
        timeout=10,
    ).json()["data"]
    assert any(len(e["labels"]["trace_id"]) == 32 for s in exemplars for e in s["exemplars"])
