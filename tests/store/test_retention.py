"""Retention: TTL purges in batches on SQLite and PostgreSQL, stats, vacuum, the daemon job."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from watcher.config import RetentionSettings, Settings, StoreSettings
from watcher.daemon import Daemon
from watcher.store.db import Store, open_store
from watcher.store.retention import (
    count_expired,
    database_size,
    policies,
    purge,
    table_stats,
    vacuum,
)
from watcher.store.tables import (
    AlertRow,
    Call,
    EvalRunRow,
    NotificationLogRow,
    OutboxRow,
    Payload,
    PayloadAccessRow,
    Score,
    SilenceRow,
    TransitionRow,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
D = timedelta(days=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


def _fill(store: Store) -> None:
    """Write rows of every table at ages that straddle the default TTLs."""
    with store.session() as s:
        for age in (1, 10, 100, 200):  # days
            ts = NOW - age * D
            s.add(Call(trace_id=f"c{age}", ts=ts))
            s.add(Score(trace_id=f"s{age}", ts=ts, name="groundedness", value=0.9))
            s.add(Payload(trace_id=f"p{age}", ts=ts, prompt="[redacted]"))
            s.add(PayloadAccessRow(ts=ts, who="cli:ops", via="cli", trace_id=f"p{age}"))
            s.add(
                NotificationLogRow(
                    receiver="r", fingerprint=f"f{age}", kind="firing", dedup_key="k", notified_at=ts
                )
            )
            s.add(EvalRunRow(group_name="g", rule=f"R{age}", last_eval=ts))
            s.add(SilenceRow(id=f"sil{age}", matchers=[], starts_at=ts - D, ends_at=ts, created_at=ts - D))
            for status in ("sent", "dead", "pending"):
                s.add(
                    OutboxRow(
                        receiver="r",
                        fingerprint=f"f{age}",
                        dedup_key="k",
                        kind="firing",
                        created_at=ts,
                        status=status,
                        next_attempt_at=ts,
                        message={},
                    )
                )
            s.add(
                TransitionRow(fingerprint=f"a{age}", rule="R", at=ts, from_state="pending", to_state="firing")
            )
            s.add(
                AlertRow(
                    fingerprint=f"a{age}",
                    rule="R",
                    group_name="g",
                    labels={},
                    annotations={},
                    traces=[],
                    last_eval=ts,
                )
            )
        # The audit log of payload reads is kept far longer (400 days) than the payloads (7).
        s.add(PayloadAccessRow(ts=NOW - 500 * D, who="payload:ops", via="api", trace_id="p500"))
        s.commit()


def _count(store: Store, model: type, *where: sa.ColumnElement[bool]) -> int:
    table = model.__table__  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar() or 0)


def test_purge_deletes_only_expired_rows_in_batches(store: Store) -> None:
    _fill(store)
    settings = RetentionSettings(batch_size=100)
    expected = {  # ages 1, 10, 100, 200 days against the default TTLs
        "payloads": 3,
        "calls": 2,
        "scores": 1,
        "notification_log": 2,
        "outbox_sent": 2,
        "outbox_dead": 2,
        "eval_runs": 2,
        "silences": 2,
        "payload_access": 1,
        "alert_transitions": 2,  # 90 days: the alert page's history
    }
    assert count_expired(store, settings, NOW) == expected
    batches: list[tuple[str, int]] = []
    deleted = purge(store, settings, NOW, batch_size=1, on_deleted=lambda t, n: batches.append((t, n)))
    assert deleted == expected
    assert all(n == 1 for _, n in batches) and len(batches) == 19  # one row per transaction
    assert _count(store, Payload) == 1 and _count(store, Call) == 2 and _count(store, Score) == 3
    outbox = OutboxRow.__table__.c  # type: ignore[attr-defined]
    assert _count(store, OutboxRow, outbox.status == "pending") == 4  # never purged
    assert _count(store, AlertRow) == 4  # alert state belongs to the engine
    assert _count(store, TransitionRow) == 2
    assert count_expired(store, settings, NOW) == dict.fromkeys(deleted, 0)
    assert purge(store, settings, NOW) == dict.fromkeys(deleted, 0)


def test_zero_ttl_keeps_forever(store: Store) -> None:
    _fill(store)
    settings = RetentionSettings.model_validate({"calls": "0", "payloads": "0"})
    assert {p.name for p in policies(settings)} >= {"scores"}
    assert not {"calls", "payloads"} & {p.name for p in policies(settings)}
    purge(store, settings, NOW)
    assert _count(store, Call) == 4 and _count(store, Payload) == 4


def test_stats_and_vacuum(store: Store) -> None:
    _fill(store)
    stats = {s.table: s for s in table_stats(store)}
    assert stats["calls"].rows == 4
    assert stats["calls"].oldest == NOW - 200 * D and stats["calls"].newest == NOW - D
    assert stats["outbox"].rows == 12 and stats["silences"].newest == NOW - 2 * D
    assert all(s.oldest is None or s.oldest.tzinfo is not None for s in stats.values())
    before = sum(database_size(store).values())
    assert before > 0
    purge(store, RetentionSettings(), NOW)
    vacuum(store)
    assert sum(database_size(store).values()) > 0
    assert {s.table: s.rows for s in table_stats(store)}["calls"] == 2


def test_daemon_job_counts_deleted_rows(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    settings = Settings(store=StoreSettings(url=f"sqlite:///{tmp_path}/w.db"), rules=[tmp_path / "rules"])
    daemon = Daemon(settings, sources={}, receivers={}, clock=lambda: NOW)
    try:
        _fill(daemon.store)
        deleted = daemon.enforce_retention()
        assert deleted["calls"] == 2
        value = daemon.metrics.registry.get_sample_value(
            "watcher_retention_deleted_rows_total", {"table": "calls"}
        )
        assert value == 2
        jobs = {getattr(j.job_func, "args", ("",))[0] for j in _scheduled(daemon)}
        assert "retention" in jobs
    finally:
        daemon.close()


def _scheduled(daemon: Daemon) -> list:  # type: ignore[type-arg]
    daemon._schedule_jobs()
    return list(daemon._scheduler.get_jobs())
