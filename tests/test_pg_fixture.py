"""The PostgreSQL test fixture: a drop blocked by a stalled client elsewhere is reported, not hung."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from tests import conftest
from tests.conftest import PG_ADMIN_URL, drop_test_database, missing_component


def test_a_drop_blocked_by_a_stalled_copy_elsewhere_times_out_and_names_the_database() -> None:
    try:
        import psycopg
    except ImportError:
        missing_component("psycopg is not installed")
    psql = "/usr/bin/psql"
    if not os.path.exists(psql):
        missing_component("psql is not installed")
    stalled, victim = (f"watcher_t_{uuid.uuid4().hex[:12]}" for _ in range(2))
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        for name in (stalled, victim):
            admin.execute(f'CREATE DATABASE "{name}"')
    # Another program's COPY TO STDOUT whose reader stalls (nobody reads the pipe): psql blocks on
    # it, stops reading its socket, and the backend blocks writing. A forced drop of any database
    # waits until every backend of the server absorbs a barrier, so it waits for this one.
    copier = subprocess.Popen(
        [
            psql,
            PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + stalled,
            "-qc",
            "COPY (SELECT generate_series(1, 100000000)) TO STDOUT",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as watch:
            deadline = time.monotonic() + 20
            while not watch.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event = 'ClientWrite'", (stalled,)
            ).fetchone():
                if time.monotonic() > deadline:
                    pytest.fail("the COPY never blocked on its stalled reader")
                time.sleep(0.05)
        before = len(conftest.UNDROPPED_DATABASES)
        t0 = time.monotonic()
        dropped = drop_test_database(psycopg, victim, timeout_ms=1_000)
        took = time.monotonic() - t0
        if dropped:
            pytest.skip("this server's forced drop does not wait for a stalled backend elsewhere")
        assert took < 10
        assert len(conftest.UNDROPPED_DATABASES) == before + 1
        assert conftest.UNDROPPED_DATABASES.pop().startswith(f"{victim}: QueryCanceled")
    finally:
        copier.kill()
        copier.communicate()
        for name in (stalled, victim):
            assert drop_test_database(psycopg, name, timeout_ms=30_000), conftest.UNDROPPED_DATABASES[-1]
