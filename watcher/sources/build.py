"""The sources a configuration asks for, keyed by the rule ``source`` each one serves.

This module owns turning settings into ``Source`` objects (the SQL source over the store for
``calls`` and ``scores``; the Prometheus source when an endpoint is configured), for the daemon
and for the offline tools (``backtest``). It does not own fetching (each source's module).
"""

from __future__ import annotations

from ..config import Settings
from ..store.db import Store
from .base import Source
from .sql import SqlSource


def build_sources(settings: Settings, store: Store) -> dict[str, Source]:
    """Return the sources the settings configure, keyed by the rule ``source`` they serve."""
    from .prometheus import PrometheusSource

    sql = SqlSource(store)
    sources: dict[str, Source] = {"calls": sql, "scores": sql}
    if settings.prometheus:
        sources["prometheus"] = PrometheusSource(settings.prometheus, settings.default_prometheus)
    return sources
