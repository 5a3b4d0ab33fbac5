"""The background writer that moves hook rows (calls, scores) into the store in batches.

This module owns the bounded queue, the one daemon thread that drains it and the bulk inserts
(SQLAlchemy Core ``insert(table)`` with a list of dicts, one transaction per batch). It never
blocks and never raises into the caller: a full queue drops the row and counts it, a failed
insert is logged and counted and its rows are lost. It does not own the engine (``store.db``
builds it, with its pragmas) nor the shape of the rows (``hooks`` builds them).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

log = logging.getLogger(__name__)

_FLUSH: Final = object()
_STOP: Final = object()
_IDLE_WAIT_S: Final = 1.0

_Item = tuple[sa.Table, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class WriterStats:
    """A snapshot of a writer's counters."""

    submitted: int
    written: int
    dropped: int
    """Rows refused because the queue was full or the writer closed."""
    lost: int
    """Rows accepted but not written because their batch failed."""
    errors: int
    """Failed batches (each logged)."""
    pending: int


def _engine_of(engine_or_store: Any) -> sa.Engine:
    """Return the engine of a ``Store``-like object (``.engine``) or the engine itself."""
    engine = getattr(engine_or_store, "engine", engine_or_store)
    if not isinstance(engine, sa.Engine):
        raise TypeError(f"expected an Engine or an object with .engine, got {type(engine_or_store)!r}")
    return engine


class StoreWriter:
    """Insert rows into the store from one background thread, in batches.

    ``submit`` is safe from any thread and costs a queue put. ``flush`` waits until every row
    accepted so far is written (or failed); ``close`` flushes, stops the thread and is idempotent.
    """

    def __init__(
        self,
        engine_or_store: Any,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_queue: int = 100_000,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or flush_interval_s < 0:
            raise ValueError("batch_size and max_queue must be >= 1, flush_interval_s >= 0")
        self._engine = _engine_of(engine_or_store)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=max_queue)
        self._statements: dict[sa.Table, sa.Insert] = {}
        self._cond = threading.Condition()
        self._pending = 0
        self._submitted = 0
        self._written = 0
        self._dropped = 0
        self._lost = 0
        self._errors = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="watcher-store-writer", daemon=True)
        self._thread.start()
        # A weak reference, so that registering for exit does not keep the writer alive.
        ref = weakref.ref(self)

        def _at_exit() -> None:
            writer = ref()
            if writer is not None:
                writer.close(timeout=2.0)

        self._at_exit = _at_exit
        atexit.register(_at_exit)

    # -- caller side -------------------------------------------------------------------------

    def submit(self, table: sa.Table, row: Mapping[str, Any]) -> bool:
        """Queue one row for ``table``; return False (and count a drop) when full or closed.

        Rows of one table written in one batch must have the same keys (executemany).
        """
        with self._cond:
            if self._closed:
                self._dropped += 1
                return False
            self._pending += 1
            self._submitted += 1
        try:
            self._queue.put_nowait((table, row))
        except queue.Full:
            with self._cond:
                self._pending -= 1
                self._submitted -= 1
                self._dropped += 1
                self._cond.notify_all()
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted row is written or failed; return False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # when full, the thread is busy with full batches anyway
            self._queue.put_nowait(_FLUSH)
        with self._cond:
            while self._pending > 0:
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush what is queued, stop the thread and refuse new rows; return False on timeout."""
        with self._cond:
            already = self._closed
            self._closed = True
        atexit.unregister(self._at_exit)
        if not already:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                log.warning("store writer: queue still full at close; %d rows may be lost", self._pending)
                return False
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("store writer: not finished within %ss; %d rows may be lost", timeout, self._pending)
            return False
        return True

    def stats(self) -> WriterStats:
        """Return a snapshot of the counters."""
        with self._cond:
            return WriterStats(
                submitted=self._submitted,
                written=self._written,
                dropped=self._dropped,
                lost=self._lost,
                errors=self._errors,
                pending=self._pending,
            )

    @property
    def dropped(self) -> int:
        """Return how many rows were refused (queue full or writer closed)."""
        return self._dropped

    @property
    def errors(self) -> int:
        """Return how many batches failed to insert."""
        return self._errors

    @property
    def written(self) -> int:
        """Return how many rows were inserted."""
        return self._written

    @property
    def closed(self) -> bool:
        """Tell whether ``close`` was called."""
        return self._closed

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=_IDLE_WAIT_S)
            except queue.Empty:
                continue
            batch: list[_Item] = []
            deadline = time.monotonic() + self._flush_interval_s
            while True:
                if item is _STOP:
                    stop = True
                    break
                if item is _FLUSH:
                    break
                batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= self._batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
            if batch:
                self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        by_table: dict[sa.Table, list[Mapping[str, Any]]] = {}
        for table, row in batch:
            by_table.setdefault(table, []).append(row)
        ok = False
        try:
            with self._engine.begin() as conn:
                for table, rows in by_table.items():
                    conn.execute(self._insert(table), rows)
            ok = True
        except Exception as exc:  # the store is down, locked or rejects a row: count, never raise
            with self._cond:
                self._errors += 1
                errors = self._errors
            if errors <= 3 or errors % 100 == 0:
                log.warning(
                    "store writer: batch of %d rows failed (%s: %s); %d failed batches so far",
                    len(batch), type(exc).__name__, str(exc).splitlines()[0][:200], errors,
                )
        finally:
            with self._cond:
                if ok:
                    self._written += len(batch)
                else:
                    self._lost += len(batch)
                self._pending -= len(batch)
                self._cond.notify_all()

    def _insert(self, table: sa.Table) -> sa.Insert:
        stmt = self._statements.get(table)
        if stmt is None:
            stmt = self._statements[table] = sa.insert(table)
        return stmt
