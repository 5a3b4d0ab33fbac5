"""An ASGI (FastAPI) application instrumented with ``watcher.instrument``, serving its own metrics.

``GET /ask?q=…&tenant=…`` answers through the wrapped OpenAI client (one trace per request, the
call's metrics labelled with tenant and feature); ``/metrics`` is mounted from
``instrument.metrics_asgi_app`` and serves the Prometheus text format, or OpenMetrics with trace-ID
exemplars when the scraper asks for it (Prometheus does by default). Scrape ``/metrics/`` (the
mount answers ``/metrics`` with a redirect, which Prometheus follows).

    pip install -e '.[examples]'
    python examples/fastapi_app.py --port 8001          # the local stub model server, no key
    OPENAI_BASE_URL=… OPENAI_API_KEY=… python examples/fastapi_app.py
    curl 'http://127.0.0.1:8001/ask?q=hello&tenant=acme'
    curl -H 'Accept: application/openmetrics-text' http://127.0.0.1:8001/metrics/
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from watcher import instrument


def create_app(client: Any, registry: CollectorRegistry | None = None, model: str = "gpt-4o-mini") -> FastAPI:
    """Return the app: ``/ask`` through ``client`` (already instrumented), ``/metrics`` from ``registry``."""
    app = FastAPI(title="watcher example")
    app.mount("/metrics", instrument.metrics_asgi_app(registry))

    @app.get("/ask")
    def ask(q: str, tenant: str = "acme") -> dict[str, str]:
        with instrument.span("ask", tenant=tenant) as root:
            with instrument.attribution(tenant=tenant, feature="ask"):
                response = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": q}], temperature=0.2
                )
            trace_id = f"{root.get_span_context().trace_id:032x}"
        return {"answer": response.choices[0].message.content or "", "trace_id": trace_id}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the app with uvicorn until Ctrl-C."""
    import openai
    import uvicorn
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from watcher.bench.stub import StubServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    trace.set_tracer_provider(TracerProvider())  # your exporter (OTLP …) goes here
    registry = CollectorRegistry()
    instrument.configure(None, registry=registry)  # metrics and spans; pass a store for `calls` rows
    with contextlib.ExitStack() as stack:
        if os.environ.get("OPENAI_BASE_URL"):
            client = openai.OpenAI()
        else:
            stub = stack.enter_context(StubServer(first_chunk_delay_s=0.05))
            client = openai.OpenAI(base_url=stub.base_url, api_key="sk-stub", max_retries=0)
        instrument.instrument_openai(stack.enter_context(client))
        uvicorn.run(create_app(client, registry), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
