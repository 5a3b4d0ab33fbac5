"""Hooks for applications: trace, meter and record model calls and quality scores.

This package owns what runs inside the application's process: ``llm_call`` around each model
call (an OpenTelemetry span, Prometheus metrics with trace exemplars, a ``calls`` row, a redacted
``payloads`` row when capture is on), ``span`` for the application's other steps (tool calls)
and ``retrieval`` for RAG retrieval steps (documents, relevance scores) under the same trace, the
OpenAI and Anthropic client wrappers, PII redaction, ``record_score``/``record_feedback``
(``scores`` rows), online evaluation and the background ``StoreWriter``. Vendor SDKs are never
imported (``bench`` imports ``openai`` when run). It never blocks or breaks the application. It
imports nothing from the engine, notify, rules, sources or detectors (a test checks), so an
application pulls in none of the daemon.
"""

from __future__ import annotations

from .call import llm_call
from .evaluation import OnlineEvaluator, Sampler
from .exposition import metrics_app, metrics_asgi_app, start_metrics_server
from .hooks import configure, flush, reset
from .record import CallRecord
from .redact import Redactor
from .retrieval import Retrieval, retrieval
from .scores import record_eval_error, record_feedback, record_score
from .spans import span
from .wrap import attribution
from .wrap_anthropic import instrument_anthropic, uninstrument_anthropic
from .wrap_openai import instrument_openai, uninstrument_openai
from .writer import StoreWriter

__all__ = [
    "CallRecord",
    "OnlineEvaluator",
    "Redactor",
    "Retrieval",
    "Sampler",
    "StoreWriter",
    "attribution",
    "configure",
    "flush",
    "instrument_anthropic",
    "instrument_openai",
    "llm_call",
    "metrics_app",
    "metrics_asgi_app",
    "record_eval_error",
    "record_feedback",
    "record_score",
    "reset",
    "retrieval",
    "span",
    "start_metrics_server",
    "uninstrument_anthropic",
    "uninstrument_openai",
]
