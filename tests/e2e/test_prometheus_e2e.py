"""End to end: hooks → /metrics → a real Prometheus → ``watcher run --once`` → a receiver, with trace IDs.

An application in this process drives the real ``openai`` client against the local stub server
through watcher's hooks and serves its metrics (OpenMetrics, with trace-ID exemplars). A real
Prometheus scrapes it four times a second with exemplar storage on. Then tenant acme's agent switches to
a model ten times as expensive (the incident), ``watcher run --once`` runs as a real subprocess
with the shipped budget-burn rule (``SpendBudgetBurn`` from rules-prometheus/, evaluated every 5s
instead of every 5m so the test is quick) and the alert reaches a loopback webhook receiver. The
trace IDs in it must be those of acme's expensive calls, as the hooks' spans recorded them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from tests.httpreceiver import HTTPReceiver
from tests.prom import PrometheusServer, poll
from watcher import instrument
from watcher.bench.stub import StubServer
from watcher.config import load_settings
from watcher.daemon import Daemon
from watcher.instrument import attribution, instrument_openai, start_metrics_server

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules-prometheus" / "llm-prometheus.yaml"
# USD per 1M tokens; the stub answers 12 input (4 cached) + 6 output tokens: $0.18 and $1.80 a call
SCRAPE = "250ms"  # Prometheus scrapes the app four times a second: the incident's calls wait for it
PRICES = {
    "models": {
        "agent-base": {"input": 10_000, "output": 10_000, "cached_input": 10_000},
        "agent-xl": {"input": 100_000, "output": 100_000, "cached_input": 100_000},
    }
}


def spans_of(exporter: InMemorySpanExporter, tenant: str, model: str) -> set[str]:
    """Return the trace IDs (hex, as in exemplars) of the finished spans of ``tenant`` on ``model``."""
    return {
        format(s.context.trace_id, "032x")
        for s in exporter.get_finished_spans()
        if s.attributes is not None
        and s.attributes.get("gen_ai.request.model") == model
        and s.attributes.get("watcher.tenant") == tenant
    }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Any, InMemorySpanExporter, str]]:
    """Return (instrumented openai client, span exporter, metrics address) of a running app."""
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump(PRICES))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = CollectorRegistry()
    instrument.configure(
        None, registry=registry, tracer_provider=provider, capture_calls=False, pricing=prices
    )
    server = start_metrics_server(0, registry=registry)
    try:
        with (
            StubServer() as stub,
            openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as client,
        ):
            yield instrument_openai(client), exporter, f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        instrument.reset()


def call(client: Any, tenant: str, model: str) -> None:
    """Make one call; return once the hooks finished it (span ended, metrics and exemplar set)."""
    with attribution(tenant=tenant, feature="agent"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "next step?"}])
    assert instrument.flush(), "the hooks did not finish the call"


def shipped_rule(alert: str, interval: str) -> dict[str, Any]:
    """Return a one-rule group file: the shipped rule as is, in a group evaluated every ``interval``."""
    doc = yaml.safe_load(PACK.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                return {"groups": [{"name": group["name"], "interval": interval, "rules": [rule]}]}
    raise AssertionError(f"{alert} is not in {PACK}")


def test_exemplar_trace_ids_of_the_offending_calls_reach_the_receiver(
    app: tuple[Any, InMemorySpanExporter, str],
    prometheus_factory: Any,
    http_receiver: HTTPReceiver,
    alertmanager: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    client, exporter, target = app
    prom: PrometheusServer = prometheus_factory(targets=[target], scrape_interval=SCRAPE)
    for tenant in ("acme", "beta"):  # normal traffic: both tenants on the base model
        call(client, tenant, "agent-base")
    prom.wait_for('llm_cost_usd_total{tenant="beta"}')

    http = httpx.Client(timeout=5)  # one connection: the incident's calls poll it many times each
    request.addfinalizer(http.close)

    def exemplars_in() -> set[str]:
        now = time.time()
        doc = http.get(
            f"{prom.url}/api/v1/query_exemplars",
            params={"query": 'llm_cost_usd_total{model="agent-xl"}', "start": now - 120, "end": now},
        ).json()
        return {e["labels"]["trace_id"] for g in doc["data"] for e in g["exemplars"]}

    def incident_call() -> None:
        """Make one of acme's expensive calls and wait until Prometheus has stored its exemplar.

        A series exposes only its latest exemplar: waiting for the scrape before the next call
        gets every call's exemplar stored, however slow the machine.
        """
        before = spans_of(exporter, "acme", "agent-xl")
        call(client, "acme", "agent-xl")
        (trace_id,) = spans_of(exporter, "acme", "agent-xl") - before
        poll(lambda: trace_id in exemplars_in(), timeout=20, interval=0.05, what="the call's exemplar")

    # The incident: acme's agent loops on the ten-times-dearer model.
    for i in range(16):
        incident_call()
        if i % 4 == 0:
            call(client, "beta", "agent-base")
    scraped_by = time.time()  # the 16th call's sample is in Prometheus, stamped no later than this
    offending = spans_of(exporter, "acme", "agent-xl")
    innocent = spans_of(exporter, "beta", "agent-base") | spans_of(exporter, "acme", "agent-base")
    assert len(offending) == 16 and innocent and not offending & innocent
    assert exemplars_in() == offending  # exemplars are exactly the hooks' trace IDs, every one of them

    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(shipped_rule("SpendBudgetBurn", "5s"), sort_keys=False))
    config = tmp_path / "watcher.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"url": f"sqlite:///{tmp_path}/watcher.db"},
                "rules": [str(rules)],
                "prometheus": {"local": {"url": prom.url, "timeout_s": 5}},
                "receivers": {
                    "hook": {"type": "webhook", "url": f"{http_receiver.url}/alerts"},
                    "am": {"type": "alertmanager", "url": alertmanager.url},
                },
                "route": {"receivers": ["hook", "am"]},
                "trace_url": "http://jaeger.local/trace/{trace_id}",
                "external_url": "http://watcher.local:9464",
                "server": {"enabled": False},
            }
        )
    )
    # The incident goes on while watcher starts and evaluates: the alert links the traces of the
    # rule's last two 5s points, whenever the subprocess gets to evaluate. The rule is evaluated on
    # a 5s grid: watcher starts once a grid point has passed the 16th call's scrape, so the
    # evaluated point sees the whole incident so far (the 1h burn rate passes 14.4 only after ~12 calls).
    stop, failed = threading.Event(), []

    def go_on() -> None:
        try:
            while not stop.is_set():
                incident_call()
        except BaseException as exc:  # re-raised on the test's thread
            failed.append(exc)

    caller = threading.Thread(target=go_on)
    caller.start()
    try:
        poll(lambda: time.time() // 5 * 5 >= scraped_by, timeout=6, interval=0.05, what="a 5s grid point")
        proc = subprocess.run(
            [sys.executable, "-m", "watcher", "run", "--once", "--config", str(config)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        stop.set()
        caller.join(30)
    assert not failed, failed
    assert proc.returncode == 0, proc.stdout + proc.stderr
    offending = spans_of(exporter, "acme", "agent-xl")

    (path, _headers, body), *more = http_receiver.wait_for(1)
    assert path == "/alerts" and not more
    assert body["alertname"] == "SpendBudgetBurn" and body["status"] == "firing"
    assert body["labels"]["tenant"] == "acme" and body["labels"]["severity"] == "page"
    assert body["value"] > 14.4
    trace_ids = [t["trace_id"] for t in body["traces"]]
    assert len(trace_ids) == 5 and len(set(trace_ids)) == 5
    assert set(trace_ids) <= offending, "every linked trace is one of acme's expensive calls"
    assert all(t["url"] == f"http://jaeger.local/trace/{t['trace_id']}" for t in body["traces"])
    assert all(tid in body["body"] for tid in trace_ids)
    assert "no_exemplars" not in body["annotations"] and "no exemplars" not in body["body"]

    # The same alert in a real Alertmanager, with the same trace links and a link back to the rule.
    (am,) = am_alerts(alertmanager, "SpendBudgetBurn")
    assert am["labels"] == {"alertname": "SpendBudgetBurn", **body["labels"]}
    assert am["status"]["state"] == "active"
    assert [am["annotations"][f"trace_{i}"] for i in range(1, 6)] == [t["url"] for t in body["traces"]]
    assert am["annotations"]["summary"] == body["annotations"]["summary"]
    assert am["generatorURL"] == "http://watcher.local:9464/rules/llm-cost-prometheus/SpendBudgetBurn"


# --- the same path into a real Alertmanager, with the daemon running --------------------------

XL_COST = 'llm_cost_usd_total{model="agent-xl"}'
AM_RULES = {
    "groups": [
        {
            "name": "llm-e2e",
            "interval": "1s",
            "rules": [
                {
                    "alert": "ExpensiveModelInUse",
                    "expr": 'sum by (tenant) (rate(llm_cost_usd_total{model="agent-xl"}[5s])) > 0',
                    "labels": {"severity": "page"},
                    "annotations": {"summary": "{{ labels.tenant }} spends on agent-xl"},
                    # the offending series only (the alert's labels, tenant, match both models)
                    "traces": {"from": "exemplars", "metric": XL_COST, "top": 3},
                }
            ],
        }
    ]
}


def am_alerts(am: Any, alertname: str) -> list[dict[str, Any]]:
    """Return the alerts Alertmanager lists (active ones: it drops resolved alerts from the list)."""
    with httpx.Client(timeout=5) as http:
        alerts: list[dict[str, Any]] = http.get(f"{am.url}/api/v2/alerts").json()
    return [a for a in alerts if a["labels"].get("alertname") == alertname]


def am_received(am: Any, status: str) -> float:
    """Return Alertmanager's own count of received alerts with ``status`` (firing or resolved)."""
    with httpx.Client(timeout=5) as http:
        text = http.get(f"{am.url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("alertmanager_alerts_received_total{") and f'status="{status}"' in line
    )


def test_alert_reaches_a_real_alertmanager_with_trace_links_and_resolves(
    app: tuple[Any, InMemorySpanExporter, str],
    prometheus_factory: Any,
    alertmanager: Any,
    tmp_path: Path,
) -> None:
    client, exporter, target = app
    prom: PrometheusServer = prometheus_factory(targets=[target], scrape_interval=SCRAPE)
    call(client, "acme", "agent-base")
    prom.wait_for('llm_cost_usd_total{tenant="acme"}')

    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(AM_RULES, sort_keys=False))
    config = {
        "store": {"url": f"sqlite:///{tmp_path}/watcher.db"},
        "rules": [str(tmp_path / "rules.yaml")],
        "prometheus": {"local": {"url": prom.url, "timeout_s": 5}},
        "receivers": {"am": {"type": "alertmanager", "url": alertmanager.url, "repeat_interval": "2s"}},
        "route": {"receivers": ["am"]},
        "notify": {"flush_interval": "1s"},
        "trace_url": "http://jaeger.local/trace/{trace_id}",
        "external_url": "http://watcher.local:9464",
        "server": {"enabled": False},
    }
    (tmp_path / "watcher.yaml").write_text(yaml.safe_dump(config))
    daemon = Daemon(load_settings(tmp_path / "watcher.yaml"))
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    runner.start()
    try:
        seen: list[dict[str, Any]] = []

        def firing_in_am() -> bool:
            call(client, "acme", "agent-xl")  # the incident goes on while we wait
            seen[:] = am_alerts(alertmanager, "ExpensiveModelInUse")
            return bool(seen) and len([k for k in seen[0]["annotations"] if k.startswith("trace_")]) == 3

        poll(firing_in_am, timeout=40, interval=1.2, what="the alert with 3 trace links in Alertmanager")
        (alert,) = seen
        offending = spans_of(exporter, "acme", "agent-xl")
        assert alert["labels"] == {"alertname": "ExpensiveModelInUse", "tenant": "acme", "severity": "page"}
        assert alert["status"]["state"] == "active"
        assert alert["annotations"]["summary"] == "acme spends on agent-xl"
        links = [alert["annotations"][f"trace_{i}"] for i in (1, 2, 3)]
        assert {link.rsplit("/", 1)[1] for link in links} <= offending
        assert all(link.startswith("http://jaeger.local/trace/") for link in links)
        assert alert["generatorURL"] == "http://watcher.local:9464/rules/llm-e2e/ExpensiveModelInUse"
        first_end = alert["endsAt"]

        def resent() -> bool:  # re-sent while firing: Alertmanager's endsAt moves forward
            call(client, "acme", "agent-xl")
            now = am_alerts(alertmanager, "ExpensiveModelInUse")
            return bool(now) and now[0]["endsAt"] > first_end

        poll(resent, timeout=20, interval=1.2, what="watcher to re-send the firing alert")
        assert am_received(alertmanager, "resolved") == 0

        # The incident stops: the 5s rate drops to 0, the rule resolves, Alertmanager is told.
        poll(lambda: not am_alerts(alertmanager, "ExpensiveModelInUse"), timeout=40, interval=0.5,
             what="the alert to resolve in Alertmanager")  # fmt: skip
        assert am_received(alertmanager, "resolved") >= 1
        (resolved,) = [a for a in daemon.evaluators["llm-e2e"].alerts() if a.labels["tenant"] == "acme"]
        assert resolved.resolved
    finally:
        daemon.request_stop()
        runner.join(timeout=30)
        daemon.close()
