"""Serving the application's LLM metrics: a WSGI app, an ASGI app and a one-line HTTP server.

This module owns ``metrics_app`` (mount it at ``/metrics`` in any WSGI framework),
``metrics_asgi_app`` (the same for ASGI: FastAPI, Starlette, Django's ASGI) and
``start_metrics_server`` (a background HTTP server on loopback by default). All negotiate the
format from the Accept header: the OpenMetrics exposition, which carries the trace exemplars, is
served when Prometheus asks for it (its default scrape). It does not own the metrics (``metrics``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # prometheus_client is imported when serving, not with the hooks
    from prometheus_client import CollectorRegistry


def metrics_app(registry: CollectorRegistry | None = None) -> Any:
    """Return a WSGI app serving ``registry`` (default: the global one) in text or OpenMetrics format."""
    from prometheus_client import REGISTRY, make_wsgi_app

    return make_wsgi_app(registry or REGISTRY)


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """Return an ASGI app serving ``registry`` (default: the global one) in text or OpenMetrics format.

    Mount it in FastAPI or Starlette: ``app.mount("/metrics", metrics_asgi_app())``.
    """
    from prometheus_client import REGISTRY, make_asgi_app

    return make_asgi_app(registry or REGISTRY)


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Any:
    """Serve ``registry`` on ``addr:port`` from a daemon thread; return the server (``.shutdown()``).

    ``port=0`` picks a free port: read it from ``server.server_port``.
    """
    from prometheus_client import REGISTRY, start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry or REGISTRY)
    return server
