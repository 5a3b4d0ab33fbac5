"""Hooks for applications: trace, meter and record model calls and quality scores.

This package owns what runs inside the application's process: ``llm_call`` around each model
call (an OpenTelemetry span, Prometheus metrics with trace exemplars, a ``calls`` row),
``record_score``/``record_feedback`` (``scores`` rows) and the background ``StoreWriter``. It
never blocks or breaks the application. It imports nothing from the engine, notify, rules,
sources or detectors (a test checks), so an application pulls in none of the daemon.
"""

from __future__ import annotations

from .hooks import configure, llm_call, record_feedback, record_score, reset
from .record import CallRecord
from .writer import StoreWriter

__all__ = [
    "CallRecord",
    "StoreWriter",
    "configure",
    "llm_call",
    "record_feedback",
    "record_score",
    "reset",
]
