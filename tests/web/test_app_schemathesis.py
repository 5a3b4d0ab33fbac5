"""Property-based run of the server against its own OpenAPI document: zero 5xx (bounded examples)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.web import test_page as test_status
from watcher.web.app import build_app

schemathesis = pytest.importorskip("schemathesis")
checks = pytest.importorskip("schemathesis.checks")

TOKEN = test_status.TOKEN


def make_app() -> Any:
    """Return the app of a real Daemon with a firing alert, on a SQLite store in a folder removed at exit."""
    tmp = Path(tempfile.mkdtemp(prefix="watcher-st-"))
    atexit.register(shutil.rmtree, tmp, True)
    daemon, _, _ = test_status.make_daemon(tmp, test_status.NOW)
    atexit.register(daemon.close)
    daemon.run_once(test_status.NOW, drain_s=0)
    return build_app(daemon)


# OTLP/HTTP's binary encoding: random bytes, which are mostly not a valid ExportTraceServiceRequest.
schemathesis.openapi.media_type("application/x-protobuf", st.binary(max_size=512))

schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


# The one-value parametrize gives each operation's item its own node ID: on pytest 9.2 the items
# of `schema.parametrize()` alone all share `test_no_server_errors`, and pytest-xdist (the README's
# `-n 2`) runs only one item per node ID, so 10 of the 11 operations went untested.
@schema.parametrize()
@pytest.mark.parametrize("auth", ["bearer"])
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, auth: str) -> None:
    token = test_status.ADMIN_TOKEN if case.path.startswith("/api/v1/silences") else TOKEN
    bearer = auth == "bearer" and case.path.startswith(("/api/", "/v1/"))
    headers = {"Authorization": f"Bearer {token}"} if bearer else {}
    case.call_and_validate(headers=headers, checks=[checks.not_a_server_error])
