"""Detector checkpoints through the group evaluator: a restart resumes exactly, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from watcher.core import Series, to_epoch
from watcher.engine.checkpoints import CheckpointStore
from watcher.engine.group import GroupEvaluator
from watcher.rules.schema import Group, Rule
from watcher.sources.memory import MemorySource
from watcher.store.db import Store, open_store

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
M = timedelta(minutes=1)


class RecordingSource(MemorySource):
    """The in-memory source, noting where each fetch starts."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[datetime] = []

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        self.starts.append(start)
        return super().fetch(rule, start, end, step)


def _source() -> RecordingSource:
    src = RecordingSource()
    for i, tenant in enumerate(("acme", "globex", "initech")):
        s = src.series("Spend", {"tenant": tenant})
        for m in range(700):
            value = 10.0 + i + math.sin(m / 17.0) + (0.3 if m % 7 == 0 else 0.0)
            if tenant == "globex" and 550 <= m < 580:
                value *= 8
            s.add(to_epoch(T0 + m * M), value)
    return src


def _group(sensitivity: float = 4) -> Group:
    return Group.model_validate(
        {
            "name": "g",
            "interval": "1m",
            "rules": [
                {
                    "alert": "Spend",
                    "expr": "spend",
                    "detector": {"kind": "ewma", "halflife": "30m", "sensitivity": sensitivity},
                    "for": "2m",
                }
            ],
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/w.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


def _ev(store: Store, src: MemorySource, group: Group | None = None, **kw: Any) -> GroupEvaluator:
    return GroupEvaluator(
        group or _group(),
        {"prometheus": src},
        checkpoints=CheckpointStore(store),
        checkpoint_every=kw.pop("every", 10 * M),
        **kw,
    )


def _said(ev: GroupEvaluator) -> dict[str, str]:
    return {str(labels): repr(v) for labels, v in ev.verdicts()["Spend"].items()}


def test_a_restart_resumes_from_the_checkpoint_and_says_the_same(store: Store) -> None:
    src = _source()
    running = _ev(store, src)
    for m in range(300, 405):  # checkpoints at 300, 310, ..., 400
        running.evaluate(T0 + m * M, persist=False)
    src2 = _source()
    restarted = _ev(store, src2)
    paged = set()
    for m in range(405, 620):
        a = running.evaluate(T0 + m * M, persist=False)
        b = restarted.evaluate(T0 + m * M, persist=False)
        assert _said(restarted) == _said(running), f"minute {m}"
        assert [(x.fingerprint, x.state) for x in b.alerts] == [(x.fingerprint, x.state) for x in a.alerts]
        paged |= {(x.labels["tenant"], str(x.state)) for x in b.alerts}
    assert ("globex", "firing") in paged  # the anomaly after the restart pages, as it does without one
    # the restart fetched from the checkpoint's cursor, not the detector's whole lookback
    assert src2.starts[0] == T0 + 400 * M


def test_no_resume_from_a_changed_spec_a_stale_or_a_missing_checkpoint(store: Store) -> None:
    src = _source()
    running = _ev(store, src)
    running.evaluate(T0 + 300 * M, persist=False)
    lookback_start = T0 + 310 * M - timedelta(hours=2, minutes=2)  # ewma: 4 x halflife + 2 steps

    resumed = RecordingSource()
    resumed.data = src.data
    _ev(store, resumed).evaluate(T0 + 310 * M, persist=False)  # resumes, and checkpoints at 310
    assert resumed.starts[0] == T0 + 300 * M

    stale = RecordingSource()
    stale.data = src.data
    _ev(store, stale).evaluate(T0 + 310 * M + timedelta(hours=3), persist=False)
    assert stale.starts[0] == T0 + 310 * M + timedelta(hours=3) - timedelta(hours=2, minutes=2)

    changed = RecordingSource()
    changed.data = src.data
    _ev(store, changed, _group(sensitivity=5)).evaluate(T0 + 310 * M, persist=False)
    assert changed.starts[0] == lookback_start

    CheckpointStore(store).forget("g")
    gone = RecordingSource()
    gone.data = src.data
    _ev(store, gone).evaluate(T0 + 310 * M, persist=False)
    assert gone.starts[0] == lookback_start
