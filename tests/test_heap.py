"""``HeapKeeper``: the long-lived heap is frozen after each evaluation and collected in full hourly."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

from watcher.heap import HeapKeeper

T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freezes_after_each_evaluation_and_collects_in_full_once_per_interval() -> None:
    keeper = HeapKeeper(timedelta(hours=1))
    try:
        assert keeper.settle(T0) is True and gc.get_freeze_count() > 0
        assert keeper.settle(T0 + timedelta(minutes=59)) is False
        assert keeper.settle(T0 + timedelta(minutes=61)) is True
        assert keeper.settle(T0) is True  # a clock that went back collects in full too
    finally:
        keeper.release()
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_frozen_meanwhile_is_freed_by_the_next_full_pass() -> None:
    import weakref

    keeper = HeapKeeper(timedelta(hours=1))
    try:
        keeper.settle(T0)
        junk = _Cycle()
        ref = weakref.ref(junk)
        gc.freeze()  # as if it had been frozen by an evaluation before becoming garbage
        del junk
        keeper.settle(T0 + timedelta(minutes=1))
        assert ref() is not None  # frozen: only a full pass frees it
        keeper.settle(T0 + timedelta(hours=1))
        assert ref() is None
    finally:
        keeper.release()
