"""The tick loop's jobs: each run on a thread pool behind its own non-blocking lock.

This module owns dispatching a job (a group evaluation, the outbox flush, the store check, …): a
tick only *dispatches* work to a ``ThreadPoolExecutor``; each job has a non-blocking lock, so a
slow job skips a tick (counted in ``watcher_missed_ticks_total``) instead of piling up; every job
is wrapped so an exception is logged and counted (``watcher_job_exceptions_total``) and never
escapes ``schedule.run_pending()`` (see the field notes on ``schedule``). It does not own what
the jobs do nor when they are due (``daemon``: the schedule and the loop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ..selfmetrics import SelfMetrics

logger = logging.getLogger("watcher.daemon")


class Jobs:
    """The pool the loop's jobs run on, one lock per job name."""

    def __init__(self, metrics: SelfMetrics) -> None:
        self.metrics = metrics
        self._executor: ThreadPoolExecutor | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._running: set[Future[None]] = set()

    @property
    def started(self) -> bool:
        """Tell whether the pool is running (between ``start`` and ``shutdown``)."""
        return self._executor is not None

    def start(self, max_workers: int) -> None:
        """Start the pool with ``max_workers`` threads."""
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="watcher")

    def busy(self, job: str) -> bool:
        """Tell whether a run of ``job`` is still going (a dispatch now would be refused)."""
        lock = self._locks.get(job)
        return lock is not None and lock.locked()

    def dispatch(self, job: str, fn: Callable[[], object]) -> bool:
        """Run ``fn`` on the pool unless the previous run of ``job`` is still going; return whether it was."""
        lock = self._locks.setdefault(job, threading.Lock())
        if not lock.acquire(blocking=False):
            self.metrics.missed_ticks.labels(job).inc()
            logger.warning("job %s still running: tick skipped", job)
            return False

        def run() -> None:
            try:
                fn()
            except Exception:
                self.metrics.job_exceptions.labels(job).inc()
                logger.exception("job %s failed", job)
            finally:
                lock.release()

        try:
            assert self._executor is not None
            fut = self._executor.submit(run)
        except RuntimeError:  # the pool is shutting down
            lock.release()
            return False
        self._running.add(fut)
        fut.add_done_callback(self._running.discard)
        return True

    def shutdown(self, timeout_s: float) -> int:
        """Cancel queued jobs, wait up to ``timeout_s`` for running ones; return how many still run."""
        assert self._executor is not None
        self._executor.shutdown(wait=False, cancel_futures=True)
        _, late = wait(list(self._running), timeout=max(0.0, timeout_s))
        self._executor = None
        return len(late)
