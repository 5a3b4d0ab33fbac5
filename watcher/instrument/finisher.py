"""The background thread that finishes model calls after the application has its response.

This module owns the bounded queue of finished calls and the one daemon thread that drains it:
what a call costs beyond making its span current and measuring its times (the SDK span's start
when it is deferred, its attributes and end, Prometheus observations with their exemplars, the
``calls`` and ``payloads`` rows, redaction, the online evaluator) runs here, not on the caller's
thread. The caller pays one append to a
deque, with no lock and no wake-up: the thread polls the queue every ``interval_s`` while
calls arrive and backs off to ``idle_s`` when none do. A full queue drops the call and counts
it. ``flush`` wakes the thread and waits for what was queued so far; the hooks call it before
a reconfiguration and at exit. It does not know what finishing a call means (``call`` hands it
a function) nor own the store writer (``writer``).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Final

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S: Final = 0.02
DEFAULT_IDLE_S: Final = 0.5
DEFAULT_MAX_QUEUE: Final = 100_000
_SLICE_S: Final = 0.0002
_BACKLOG: Final = 1_000


@dataclass(frozen=True, slots=True)
class FinisherStats:
    """A snapshot of the finisher's counters."""

    submitted: int
    finished: int
    dropped: int
    """Calls refused because the queue was full: no span end, metrics or row for them."""
    errors: int
    """Finishing functions that raised past their own guards (each is logged)."""
    pending: int


class Finisher:
    """Run the queued functions on one background thread, in submission order."""

    def __init__(
        self,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        idle_s: float = DEFAULT_IDLE_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        if max_queue < 1 or interval_s <= 0 or idle_s < interval_s:
            raise ValueError("max_queue must be >= 1 and 0 < interval_s <= idle_s")
        self.interval_s = interval_s
        self.idle_s = idle_s
        self.max_queue = max_queue
        self._init()

    def _init(self) -> None:
        self._queue: deque[Callable[[], None] | _Marker] = deque()
        # deque.append/popleft and next(count) are atomic under the GIL: the caller takes no lock.
        self._submitted = itertools.count(1)
        self._dropped = itertools.count(1)
        self._n_submitted = 0  # the last values drawn from the counters above
        self._n_dropped = 0
        self._finished = 0
        self._errors = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> bool:
        """Queue ``fn``; return False (and count a drop) when the queue is full."""
        queue = self._queue
        if len(queue) < self.max_queue:
            queue.append(fn)
            self._n_submitted = next(self._submitted)
            if self._thread is None:
                self._ensure_thread()
            return True
        dropped = self._n_dropped = next(self._dropped)
        if dropped == 1 or dropped % 10_000 == 0:
            log.warning(
                "watcher hooks: the finishing queue is full (%d calls); %d calls dropped so far",
                self.max_queue,
                dropped,
            )
        return False

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every function queued so far has run; return False on timeout."""
        if threading.current_thread() is self._thread:
            return False  # a finishing function cannot wait for its own queue
        if not self._queue and self._finished >= self._n_submitted:
            return True  # (an empty queue alone is not enough: the thread may be running the last one)
        marker = _Marker()  # FIFO: when the thread reaches it, everything before it has run
        self._queue.append(marker)
        self._ensure_thread()
        self._wake.set()
        return marker.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish what is queued and stop the thread (a later ``submit`` starts it again)."""
        done = self.flush(timeout)
        thread = self._thread
        if thread is not None:
            self._closed = True
            self._wake.set()
            thread.join(timeout)
            self._closed = False
        return done

    def stats(self) -> FinisherStats:
        """Return a snapshot of the counters."""
        submitted, finished = self._n_submitted, self._finished
        return FinisherStats(
            submitted=submitted,
            finished=finished,
            dropped=self._n_dropped,
            errors=self._errors,
            pending=max(0, submitted - finished),
        )

    # -- the thread ----------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="watcher-hooks-finisher", daemon=True)
                self._thread.start()

    def _after_fork(self) -> None:
        # The child inherits the queue but neither the thread nor usable locks. The queued calls
        # are the parent's to finish: finished here too they would be counted twice.
        self._init()

    def _run(self) -> None:
        queue, popleft = self._queue, self._queue.popleft
        wait = self.interval_s
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            if self._closed and not queue:
                return
            if not queue:
                wait = self.idle_s  # nothing came: poll less often until something does
                continue
            wait = self.interval_s
            slice_end = perf_counter() + _SLICE_S
            for _ in range(len(queue)):  # what is queued now; later calls wait for the next round
                if perf_counter() > slice_end and len(queue) < _BACKLOG:
                    # Hand the GIL back now and then: an application thread waiting for it waits
                    # for a slice of this work, not for the interpreter's 5 ms switch interval.
                    # Not with a backlog: then the thread takes its fair share, or calls drop.
                    time.sleep(0)
                    slice_end = perf_counter() + _SLICE_S
                fn = popleft()
                if isinstance(fn, _Marker):
                    fn.set()
                    continue
                try:
                    fn()
                except Exception as exc:  # the functions count their own failures; this is a last guard
                    self._errors += 1
                    if self._errors <= 3:
                        log.warning(
                            "watcher hooks: finishing a call failed (%s: %s)", type(exc).__name__, exc
                        )
                self._finished += 1


class _Marker(threading.Event):
    """A place in the queue that ``flush`` waits for."""


FINISHER = Finisher()
"""The process-wide finisher of the hooks."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FINISHER._after_fork)


def _at_exit() -> None:
    FINISHER.flush(timeout=2.0)


def register_at_exit() -> None:
    """(Re-)register the exit flush so that it runs before the exit handlers registered so far.

    ``atexit`` runs handlers in reverse order: registered after a store writer, the flush hands
    the last calls' rows to the writer before the writer's own exit handler closes it.
    """
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)


register_at_exit()
