"""The ingest API's new call fields (migration 9): cache writes priced at their rate, the conversation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.web.test_otlp import AUTH, client, rows, store
from watcher.instrument.pricing import price_of
from watcher.store.db import Store

__all__ = ["client", "store"]  # fixtures


def test_cache_creation_tokens_and_conversation_id(client: TestClient, store: Store) -> None:
    call = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "provider": "anthropic",
        "model": "claude-sonnet-4-20250514",
        "input_tokens": 10_000,
        "cached_tokens": 2_000,
        "cache_creation_tokens": 5_000,
        "output_tokens": 100,
        "conversation_id": "conv-42",
        "ts": "2026-05-01T12:00:00",
    }
    r = client.post("/api/v1/calls", json=call, headers=AUTH)
    assert r.status_code == 200, r.text
    [row] = rows(store, "calls")
    price = price_of("claude-sonnet-4-20250514", "anthropic")
    assert price is not None and price.cache_write > price.input
    expected = (
        3_000 * price.input + 2_000 * price.cached_input + 5_000 * price.cache_write + 100 * price.output
    )
    assert (row["cache_creation_tokens"], row["conversation_id"]) == (5_000, "conv-42")
    assert row["cost_usd"] == pytest.approx(expected / 1e6)
    bad = client.post("/api/v1/calls", json={**call, "cache_creation_tokens": -1}, headers=AUTH)
    assert bad.status_code == 422 and "cache_creation_tokens" in bad.text
