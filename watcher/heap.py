"""Keeping Python's cyclic collector off the daemon's long-lived heap.

This module owns one policy: after an evaluation, what survived it (detectors, verdict rings,
alert state: most of the process at thousands of series) is moved out of the collector's
generations (``gc.freeze``), so the full collections that allocation triggers no longer walk it
at every tick; once per ``every`` of the daemon's clock everything is unfrozen and collected
(cyclic garbage frozen meanwhile is freed then). Young objects are collected as usual. Measured in
docs/benchmarks.md ("The daemon end to end"): without it the collector's full passes were about a
third of a steady tick at 2,000 series and grow with the heap.

It does not own when evaluations run (``daemon``). The collector is process-wide: one keeper per
process is enough, and ``release`` undoes the freeze (a daemon that closes).
"""

from __future__ import annotations

import gc
import threading
from datetime import datetime, timedelta

FULL_EVERY = timedelta(hours=1)
"""How often (daemon clock) the frozen heap is unfrozen and collected in full."""


class HeapKeeper:
    """Freezes the heap after each evaluation; collects it in full once per ``every``."""

    def __init__(self, every: timedelta = FULL_EVERY) -> None:
        self.every = every
        self.full_at: datetime | None = None
        self._lock = threading.Lock()

    def settle(self, now: datetime) -> bool:
        """Call after an evaluation at ``now``; return whether this call collected in full."""
        with self._lock:
            full = self.full_at is None or not (timedelta(0) <= now - self.full_at < self.every)
            if full:
                gc.unfreeze()
                gc.collect()
                self.full_at = now
            else:
                gc.collect(1)  # the young generations: what this evaluation left behind
            gc.freeze()
            return full

    def release(self) -> None:
        """Give the frozen objects back to the collector (and collect them on its next full pass)."""
        with self._lock:
            gc.unfreeze()
            self.full_at = None


__all__ = ["FULL_EVERY", "HeapKeeper"]
