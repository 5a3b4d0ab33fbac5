"""Property-based run of the server against its own OpenAPI document: zero 5xx (bounded examples)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from watcher.config import ServerSettings
from watcher.selfmetrics import SelfMetrics
from watcher.server import build_app
from watcher.store.db import open_store

schemathesis = pytest.importorskip("schemathesis")
checks = pytest.importorskip("schemathesis.checks")

TOKEN = "schemathesis-token"


def make_app() -> Any:
    """Return the app on a fresh SQLite store in a temporary folder removed at exit."""
    tmp = Path(tempfile.mkdtemp(prefix="watcher-st-"))
    atexit.register(shutil.rmtree, tmp, True)
    store = open_store(f"sqlite:///{tmp}/st.db")
    atexit.register(store.close)
    server = SimpleNamespace(server=ServerSettings(ingest_token=SecretStr(TOKEN), max_batch=50))
    return build_app(
        SimpleNamespace(
            store=store,
            settings=server,
            metrics=SelfMetrics(),
            rules=SimpleNamespace(groups=[], rule_count=0),
            last_reload_error=None,
        )
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.path.startswith("/api/") else {}
    case.call_and_validate(headers=headers, checks=[checks.not_a_server_error])
