"""Quality signals about a trace: ``record_score`` and ``record_feedback``.

This module owns validating a score, queueing its ``scores`` row (batched, off the caller's
thread, by the writer), observing ``llm_eval_score`` and, when asked, adding a
``gen_ai.evaluation.result`` event to the current span. Bad input is logged, counted and dropped,
never raised. It does not own choosing which calls to score (``evaluation``).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

from opentelemetry import trace

from . import attributes as attr
from . import hooks
from .hooks import _SCORES, _clip, _note_error

SCORE_SOURCES: Final = frozenset({"judge", "heuristic", "human", "feedback", "retrieval"})
EVAL_ERROR: Final = "eval.error"
"""The score name of a failed evaluation (``record_eval_error``): value 1.0, label the error's type."""


def _event(trace_id: str, name: str, value: float, label: str | None, comment: str | None) -> None:
    """Add a ``gen_ai.evaluation.result`` event to the current span when it belongs to the trace."""
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if not span.is_recording() or f"{ctx.trace_id:032x}" != trace_id:
        return
    values: dict[str, Any] = {attr.GEN_AI_EVALUATION_NAME: name, attr.GEN_AI_EVALUATION_SCORE_VALUE: value}
    if label:
        values[attr.GEN_AI_EVALUATION_SCORE_LABEL] = label
    if comment:
        values[attr.GEN_AI_EVALUATION_EXPLANATION] = comment[:1000]
    span.add_event(attr.GEN_AI_EVALUATION_RESULT, values)


def record_score(
    trace_id: str,
    name: str,
    value: float,
    *,
    label: str | None = None,
    source: str = "judge",
    evaluator: str | None = None,
    tenant: str = "",
    feature: str = "",
    model: str = "",
    comment: str | None = None,
    ts: datetime | None = None,
) -> bool:
    """Queue one ``scores`` row about a trace; return whether it was queued (never raise).

    Bad input (empty trace or name, non-finite value, unknown source) is logged, counted and dropped.
    The ``llm_eval_score`` histogram is observed even without a store.
    """
    try:
        state = hooks._state
        if not isinstance(trace_id, str) or not trace_id.strip():
            _note_error(f"record_score: bad trace_id {trace_id!r}")
            return False
        if not isinstance(name, str) or not name.strip():
            _note_error(f"record_score: bad name {name!r}")
            return False
        number = float(value)
        if not math.isfinite(number):
            _note_error(f"record_score: non-finite value for {name!r}")
            return False
        if source not in SCORE_SOURCES:
            _note_error(f"record_score: unknown source {source!r} (expected one of {sorted(SCORE_SOURCES)})")
            return False
        trace_id = trace_id.strip()
        metrics = state.metrics()
        if metrics is not None:
            try:
                metrics.observe_score(
                    name,
                    source,
                    number,
                    {"tenant": str(tenant), "feature": str(feature)},
                    trace_id if len(trace_id) <= 64 else None,
                )
            except Exception as exc:
                _note_error("score metrics", exc)
        if state.evaluation_events:
            _event(trace_id, name, number, label, comment)
        if state.writer is None:
            return False
        row = {
            "trace_id": trace_id,
            "ts": ts or state.clock(),
            "name": name,
            "value": number,
            "label": label,
            "source": source,
            "evaluator": evaluator,
            "tenant": str(tenant),
            "feature": str(feature),
            "model": str(model),
            "eval_run": None,
            "comment": comment,
        }
        return state.writer.submit(_SCORES, _clip("scores", row))
    except Exception as exc:
        _note_error("record_score", exc)
        return False


def record_eval_error(
    trace_id: str,
    evaluator: str,
    error: BaseException | str,
    *,
    source: str = "judge",
    tenant: str = "",
    feature: str = "",
    model: str = "",
    ts: datetime | None = None,
) -> bool:
    """Queue the ``scores`` row of a failed evaluation of a trace; return whether it was queued.

    The row is named ``eval.error`` (value 1.0), with ``evaluator`` the judge that failed and
    ``label`` the error's type (``TimeoutError``, ``RateLimitError``) — never its message, which
    may quote the prompt. Quality rules read their own score names and never see these rows; the
    judge error rate is ``eval.error`` rows out of all of the judge's rows (rules/llm-store.yaml).
    """
    try:
        kind = error if isinstance(error, str) else type(error).__name__
        return record_score(
            trace_id,
            EVAL_ERROR,
            1.0,
            label=str(kind)[:128] or "error",
            source=source,
            evaluator=evaluator,
            tenant=tenant,
            feature=feature,
            model=model,
            ts=ts,
        )
    except Exception as exc:
        _note_error("record_eval_error", exc)
        return False


def record_feedback(trace_id: str, positive: bool, *, comment: str | None = None, **labels: Any) -> bool:
    """Queue a user's thumbs up/down about a trace: score "feedback" 1.0/0.0, source "feedback".

    ``labels`` are passed to ``record_score`` (tenant, feature, model, evaluator, label, ts). A
    negative rating is offered to the online evaluator (it always scores such traces).
    """
    try:
        if not isinstance(positive, bool):
            _note_error(f"record_feedback: positive must be a bool, got {type(positive).__name__}")
            return False
        labels.setdefault("label", "positive" if positive else "negative")
        queued = record_score(
            trace_id, "feedback", 1.0 if positive else 0.0, source="feedback", comment=comment, **labels
        )
        observer = hooks._state.observer
        feedback = getattr(observer, "on_feedback", None)
        if not positive and callable(feedback):
            feedback(trace_id)
        return queued
    except Exception as exc:
        _note_error("record_feedback", exc)
        return False
