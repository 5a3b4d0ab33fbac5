"""Shared fixtures: real components (PostgreSQL, local HTTP receivers) and their skip/fail policy.

Integration tests skip with a reason when a component is absent, and fail instead when
WATCHER_REQUIRE_INTEGRATION=1 (set by .ci/run), so a green CI always means they ran.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

REQUIRE_INTEGRATION = os.environ.get("WATCHER_REQUIRE_INTEGRATION") == "1"
PG_ADMIN_URL = os.environ.get("WATCHER_TEST_PG", "postgresql://127.0.0.1:5432/test")


def missing_component(reason: str) -> None:
    """Skip the test (or fail it, when integration is required) because a component is absent."""
    if REQUIRE_INTEGRATION:
        pytest.fail(f"required integration component missing: {reason}")
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """Return a SQLAlchemy URL to a fresh, empty PostgreSQL database; dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        missing_component("psycopg is not installed")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing_component(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}".splitlines()[0])
    name = f"watcher_t_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin2:
            admin2.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
