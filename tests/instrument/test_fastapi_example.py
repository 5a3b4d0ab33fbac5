"""The ASGI example (examples/fastapi_app.py): ``/ask`` through the hooks, ``/metrics`` mounted.

A real FastAPI app over the real ``openai`` client and the local stub model server; Starlette's
test client drives it in process. The metrics endpoint serves exemplars only in OpenMetrics, which
is why docs/prometheus.md says Prometheus must scrape it in that format (its default).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from watcher import instrument
from watcher.bench.stub import StubServer

openai = pytest.importorskip("openai")
testclient = pytest.importorskip("fastapi.testclient")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

pytestmark = pytest.mark.usefixtures("hooks")


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ask_then_scrape_exemplars(
    example: ModuleType, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    with StubServer() as stub, openai.OpenAI(base_url=stub.base_url, api_key="k", max_retries=0) as client:
        instrument.instrument_openai(client)
        app = example.create_app(client, registry)
        with testclient.TestClient(app) as http:
            answer = http.get("/ask", params={"q": "What is the answer?", "tenant": "globex"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["answer"] == "The answer is forty-two."
            assert instrument.flush(10)
            spans = {s.name: s for s in exporter.get_finished_spans()}
            assert f"{spans['ask'].context.trace_id:032x}" == body["trace_id"]
            om = http.get("/metrics/", headers={"Accept": OPENMETRICS})
            plain = http.get("/metrics")  # the mount redirects to /metrics/, as Prometheus follows
    assert om.status_code == 200 and om.headers["content-type"].startswith("application/openmetrics-text")
    requests = [ln for ln in om.text.splitlines() if ln.startswith("llm_requests_total{")]
    assert requests and 'tenant="globex"' in requests[0] and 'feature="ask"' in requests[0]
    assert f'trace_id="{body["trace_id"]}"' in requests[0]
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
    assert "llm_requests_total{" in plain.text and "trace_id=" not in plain.text  # no exemplars in text
