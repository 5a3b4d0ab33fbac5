"""End to end: a real Prometheus WITHOUT exemplar storage → the engine → a receiver that says so.

Most Prometheus installs run without ``--enable-feature=exemplar-storage``; then
``/api/v1/query_exemplars`` answers success with no data, even though the application exposes
exemplars. An alert on such a backend has no trace IDs, so it must say that no exemplars came from
the endpoint and link the alert's time window in the trace UI instead (``trace_search_url``).

An app in this process serves a counter with a trace-ID exemplar; the real Prometheus scrapes it
every second with exemplar storage off; the daemon evaluates a one-second rule once at a known
``now`` and delivers to a loopback webhook receiver.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.httpreceiver import HTTPReceiver
from tests.prom import PrometheusServer, free_port
from watcher.config import load_settings
from watcher.daemon import Daemon
from watcher.links import window_text

pytestmark = pytest.mark.integration

SEARCH = "http://jaeger.local/search?service=app&start={start_us}&end={end_us}&tags={labels_json}&q={labels}"
RULES = {
    "groups": [
        {
            "name": "cost",
            "interval": "1s",
            "rules": [
                {
                    "alert": "CostOverBudget",
                    "expr": "sum by (tenant) (demo_cost_usd_total) > 5",
                    "labels": {"severity": "page"},
                    "annotations": {"summary": "{{ labels.tenant }} spent {{ value }} USD"},
                    "traces": {"from": "exemplars", "top": 3},
                }
            ],
        }
    ]
}


@pytest.fixture
def app() -> Iterator[tuple[Counter, str]]:
    """Return a counter served with exemplars (OpenMetrics) on a loopback port, and its address."""
    registry = CollectorRegistry()
    cost = Counter("demo_cost_usd", "Cost.", ["tenant"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield cost, f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_alert_without_exemplar_storage_says_so_and_links_the_window(
    app: tuple[Counter, str], prometheus_factory: Any, http_receiver: HTTPReceiver, tmp_path: Path
) -> None:
    cost, target = app
    cost.labels("acme").inc(12, exemplar={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    prom: PrometheusServer = prometheus_factory(targets=[target], exemplars=False)
    # three scrapes in the last 5 s: the rule's two 1 s points both have data
    prom.wait_for('count_over_time(demo_cost_usd_total{tenant="acme"}[5s]) >= 3')
    now = datetime.now(UTC).replace(microsecond=0)
    exemplars = httpx.get(
        f"{prom.url}/api/v1/query_exemplars",
        params={"query": "demo_cost_usd_total", "start": now.timestamp() - 60, "end": now.timestamp() + 1},
        timeout=5,
    ).json()
    assert exemplars["status"] == "success" and not exemplars["data"]  # the premise: success, and nothing

    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(RULES, sort_keys=False))
    config = {
        "store": {"url": f"sqlite:///{tmp_path}/watcher.db"},
        "rules": [str(tmp_path / "rules.yaml")],
        "prometheus": {"local": {"url": prom.url, "timeout_s": 5}},
        "receivers": {"hook": {"type": "webhook", "url": f"{http_receiver.url}/alerts"}},
        "route": {"receivers": ["hook"]},
        "trace_url": "http://jaeger.local/trace/{trace_id}",
        "trace_search_url": SEARCH,
        "external_url": "http://watcher.local:9464",
        "server": {"enabled": False},
    }
    (tmp_path / "watcher.yaml").write_text(yaml.safe_dump(config))
    daemon = Daemon(load_settings(tmp_path / "watcher.yaml"))
    try:
        daemon.run_once(now, drain_s=10)
    finally:
        daemon.close()

    (path, _headers, body), *more = http_receiver.wait_for(1)
    assert path == "/alerts" and not more
    assert body["alertname"] == "CostOverBudget" and body["status"] == "firing"
    assert body["labels"] == {"tenant": "acme", "severity": "page"} and body["value"] == 12
    assert body["traces"] == []
    # The window: from the first anomalous point (one 1 s step before now) less one step, to now.
    t = math.floor(now.timestamp())
    note = f"no exemplars from Prometheus endpoint 'local' for {window_text(t - 2, t)}"
    link = (
        f"http://jaeger.local/search?service=app&start={(t - 2) * 1_000_000}&end={t * 1_000_000}"
        "&tags=%7B%22watcher.tenant%22%3A%22acme%22%7D&q=watcher.tenant%3D%22acme%22"  # the hooks' span names
    )
    notes = {"summary": "acme spent 12.0 USD", "no_exemplars": note, "trace_search": link}
    assert body["annotations"] == notes
    assert f"Traces: {note} · [search traces in the alert's window]({link})" in body["body"]
