"""The background writer that moves hook rows (calls, scores) into the store in batches.

This module owns the bounded buffer, the one daemon thread that drains it and the bulk inserts
(SQLAlchemy Core ``insert(table)`` with a list of dicts, one transaction per batch). The thread
is woken once per batch (first row, full batch, flush, close), not per row: a wake-up per row
costs the caller a thread switch. It never
blocks and never raises into the caller: a full queue drops the row and counts it, a failed
insert is logged and counted and its rows are lost. It does not own the engine (``store.db``
builds it, with its pragmas) nor the shape of the rows (``hooks`` builds them).

SQLAlchemy and the store's tables are imported when a writer is created, not with this module:
an application that configures no store never loads the ORM (``import watcher.instrument`` stays
light). Rows name their table (``"calls"``, ``"scores"``, ``"payloads"``) or pass it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)

_IDLE_WAIT_S: Final = 1.0

_Item = tuple["sa.Table | str", Mapping[str, Any] | Callable[[], Mapping[str, Any]]]


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
    import sqlalchemy as sa

    engine = getattr(engine_or_store, "engine", engine_or_store)
    if not isinstance(engine, sa.Engine):
        raise TypeError(f"expected an Engine or an object with .engine, got {type(engine_or_store)!r}")
    return engine


class StoreWriter:
    """Insert rows into the store from one background thread, in batches.

    ``submit`` is safe from any thread and costs a lock and an append. ``flush`` waits until every
    row accepted so far is written (or failed); ``close`` flushes, stops the thread and is
    idempotent. A row waits at most ``flush_interval_s`` (or until ``batch_size`` rows are queued).
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
        from ..store.tables import Call, Payload, Score  # the ORM loads with the first store, not before

        tables = {m.__tablename__: m.__table__ for m in (Call, Score, Payload)}  # type: ignore[union-attr]
        self._tables: dict[str, sa.Table] = {str(k): v for k, v in tables.items()}
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_queue = max_queue
        self._buffer: deque[_Item] = deque()
        self._statements: dict[sa.Table | str, sa.Insert] = {}
        self._cond = threading.Condition()
        self._pending = 0
        self._submitted = 0
        self._written = 0
        self._dropped = 0
        self._lost = 0
        self._errors = 0
        self._closed = False
        self._flush_requested = False
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

    def submit(self, table: sa.Table | str, row: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> bool:
        """Queue one row for ``table`` (a table or its name); return False (and count a drop) when full.

        ``row`` may be a function returning it, called on the writer's thread (a failure there
        counts the row as lost). Rows of one table in one batch must have the same keys.
        """
        with self._cond:
            buffer = self._buffer
            if self._closed or len(buffer) >= self._max_queue:
                self._dropped += 1
                return False
            buffer.append((table, row))
            self._pending += 1
            self._submitted += 1
            n = len(buffer)
            if n == 1 or n == self._batch_size:
                self._cond.notify()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted row is written or failed; return False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._pending > 0:
                self._flush_requested = True
                self._cond.notify_all()
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
            self._closed = True
            self._cond.notify_all()
        atexit.unregister(self._at_exit)
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
        cond, buffer = self._cond, self._buffer
        while True:
            with cond:
                while not buffer and not self._closed:
                    self._flush_requested = False  # nothing left to hurry
                    cond.wait(_IDLE_WAIT_S)
                # Collect a batch: until it is full, its first row is flush_interval_s old, or hurried.
                deadline = time.monotonic() + self._flush_interval_s
                while len(buffer) < self._batch_size and not (self._closed or self._flush_requested):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                batch = [buffer.popleft() for _ in range(min(len(buffer), self._batch_size))]
                done = self._closed and not buffer
            if batch:
                self._write(batch)
            if done:
                return

    def _write(self, batch: list[_Item]) -> None:
        by_table: dict[sa.Table | str, list[Mapping[str, Any]]] = {}
        unbuilt = 0
        for table, row in batch:
            if callable(row):  # built here rather than on the caller's thread
                try:
                    row = row()
                except Exception as exc:
                    unbuilt += 1
                    log.warning("store writer: a row could not be built (%s: %s)", type(exc).__name__, exc)
                    continue
            by_table.setdefault(table, []).append(row)
        n = len(batch) - unbuilt
        ok = False
        try:
            if by_table:
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
                    n,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200],
                    errors,
                )
        finally:
            with self._cond:
                if unbuilt:
                    self._errors += 1
                    self._lost += unbuilt
                if ok:
                    self._written += n
                else:
                    self._lost += n
                self._pending -= len(batch)
                self._cond.notify_all()

    def _insert(self, table: sa.Table | str) -> sa.Insert:
        stmt = self._statements.get(table)
        if stmt is None:
            import sqlalchemy as sa

            target = self._tables[table] if isinstance(table, str) else table
            stmt = self._statements[table] = sa.insert(target)
        return stmt
