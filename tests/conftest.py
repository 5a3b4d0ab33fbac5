"""Shared fixtures: real components (PostgreSQL, local HTTP receivers) and their skip/fail policy.

Integration tests skip with a reason when a component is absent, and fail instead when
WATCHER_REQUIRE_INTEGRATION=1 (set by .ci/run), so a green CI always means they ran.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

REQUIRE_INTEGRATION = os.environ.get("WATCHER_REQUIRE_INTEGRATION") == "1"
PG_ADMIN_URL = os.environ.get("WATCHER_TEST_PG", "postgresql://127.0.0.1:5432/test")


def missing_component(reason: str) -> NoReturn:
    """Skip the test (or fail it, when integration is required) because a component is absent."""
    if REQUIRE_INTEGRATION:
        pytest.fail(f"required integration component missing: {reason}")
    pytest.skip(reason)


PG_ADMIN_TIMEOUT_MS = 30_000
"""How long an admin statement (CREATE/DROP DATABASE) may wait: a drop ``WITH (FORCE)`` waits for
every backend of the server, so one stalled client elsewhere would otherwise hang the suite."""

UNDROPPED_DATABASES: list[str] = []
"""Test databases whose drop timed out; named at the end of the run (``pytest_terminal_summary``)."""


def _pg_admin(psycopg: Any, timeout_ms: int = PG_ADMIN_TIMEOUT_MS) -> Any:
    return psycopg.connect(
        PG_ADMIN_URL,
        autocommit=True,
        connect_timeout=3,
        options=f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """Return a SQLAlchemy URL to a fresh, empty PostgreSQL database; dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        missing_component("psycopg is not installed")
    try:
        admin = _pg_admin(psycopg)
    except psycopg.OperationalError as exc:
        missing_component(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}".splitlines()[0])
    name = f"watcher_t_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name
    finally:
        drop_test_database(psycopg, name)


def drop_test_database(psycopg: Any, name: str, timeout_ms: int = PG_ADMIN_TIMEOUT_MS) -> bool:
    """Drop ``name``; a drop that times out (another client of the server is stalled) is noted, not hung."""
    try:
        with _pg_admin(psycopg, timeout_ms) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable, psycopg.OperationalError) as exc:
        UNDROPPED_DATABASES.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return False
    return True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse two tests with one node ID: pytest-xdist (``-n 2``) would run one and drop the others."""
    counts = Counter(item.nodeid for item in items)
    if shared := sorted(nodeid for nodeid, n in counts.items() if n > 1):
        raise pytest.UsageError(f"several tests share a node ID (give them distinct names or ids): {shared}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Hand this xdist worker's undropped databases to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["undropped_databases"] = list(UNDROPPED_DATABASES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Collect an xdist worker's undropped databases (``pytest -n``), for ``pytest_terminal_summary``."""
    UNDROPPED_DATABASES.extend(getattr(node, "workeroutput", {}).get("undropped_databases", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the test databases that could not be dropped within the admin statement timeout."""
    if UNDROPPED_DATABASES:
        terminalreporter.section("PostgreSQL test databases not dropped")
        terminalreporter.write_line(
            f"DROP DATABASE ... WITH (FORCE) did not finish within {PG_ADMIN_TIMEOUT_MS / 1000:.0f} s "
            "(another client of the server is stalled?); drop them by hand:"
        )
        for line in UNDROPPED_DATABASES:
            terminalreporter.write_line(f"  {line}")


from tests.httpreceiver import HTTPReceiver  # noqa: E402


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    """Return a running loopback ``HTTPReceiver`` (answers 200; see ``set_statuses``)."""
    with HTTPReceiver() as receiver:
        yield receiver


# --- Prometheus and Alertmanager (Debian packages), see tests/prom.py ---------------------------

from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.prom import (  # noqa: E402
    ALERTMANAGER_BIN,
    PROMETHEUS_BIN,
    PROMTOOL_BIN,
    AlertmanagerServer,
    PrometheusServer,
)

PrometheusFactory = Callable[..., PrometheusServer]


def _prometheus_factory(root: Path) -> Iterator[PrometheusFactory]:
    for binary in (PROMETHEUS_BIN, PROMTOOL_BIN):
        if not binary.is_file():
            missing_component(f"{binary} not found (apt-get install prometheus)")
    servers: list[PrometheusServer] = []

    def make(
        *,
        targets: Sequence[str] = (),
        openmetrics: str | None = None,
        start: bool = True,
        exemplars: bool = True,
        scrape_interval: str = "1s",
    ) -> PrometheusServer:
        server = PrometheusServer(
            root / f"prom{len(servers)}",
            targets=targets,
            exemplars=exemplars,
            scrape_interval=scrape_interval,
        )
        servers.append(server)
        if openmetrics is not None:
            server.backfill(openmetrics)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[PrometheusFactory]:
    """Return ``make(targets=…, openmetrics=…, start=True, exemplars=True, scrape_interval="1s")``.

    It builds real Prometheus servers. Each gets its own data dir and free loopback port;
    ``openmetrics`` history is backfilled before start; ``exemplars=False`` runs it without
    exemplar storage; ``scrape_interval`` scrapes the targets faster. All are stopped by PID at
    teardown.
    """
    yield from _prometheus_factory(tmp_path)


@pytest.fixture(scope="module")
def prometheus_module_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """Return the same factory as ``prometheus_factory``, with servers shared by one test module."""
    yield from _prometheus_factory(tmp_path_factory.mktemp("prometheus"))


@pytest.fixture
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    """Return a running, empty Prometheus with exemplar storage and no scrape targets."""
    return prometheus_factory()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[AlertmanagerServer]:
    """Return a running Alertmanager (clustering off, a catch-all receiver that sends nothing)."""
    if not ALERTMANAGER_BIN.is_file():
        missing_component(f"{ALERTMANAGER_BIN} not found (apt-get install prometheus-alertmanager)")
    with AlertmanagerServer(tmp_path / "alertmanager") as server:
        yield server
