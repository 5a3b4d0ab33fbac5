"""What the application tells the hooks about one model call: the ``CallRecord``.

This module owns the record's fields, the outcome rule (error > refused > ok), the cost fallback
to the price table and the shape of the ``calls`` row built from it. It does not own spans,
metrics or the writer (``hooks``). Values the application sets are coerced leniently when the
row is built: a bad token count becomes 0, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .pricing import cost_usd as priced_cost


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _seconds(value: Any) -> float | None:
    if type(value) is float and math.isfinite(value):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class CallRecord:
    """One model call as the application fills it in inside ``llm_call``.

    Set what the response tells you: ``response_model``, ``input_tokens``, ``output_tokens``,
    ``cached_tokens`` (cache reads), ``cache_creation_tokens`` (cache writes; both are part of
    ``input_tokens``), ``reasoning_tokens``, ``finish_reason``, ``response_id``, ``refused``;
    ``conversation_id`` (``gen_ai.conversation.id``) ties the calls of one session;
    call ``first_token()`` when the first content arrives (or set ``ttft_s``); set ``cost_usd`` to
    override the price table and ``duration_s`` to override the measured duration.
    ``trace_id``/``span_id`` are read-only hex strings, valid from the start of the call. The
    record is final once the ``with`` block has exited: the ``calls`` row is built from it later,
    on the writer's thread.

    For payload capture and online evaluation set ``prompt``, ``response`` and ``context`` (the
    retrieved passages); ``input_messages``/``output_messages`` (the conventions' structure, roles
    and tool calls) go on the span, redacted, when content capture is on; ``flagged`` and
    ``confidence`` steer the evaluation sampler; ``labels`` holds values for configured extra
    metric labels beyond tenant and feature.
    """

    __slots__ = (
        "_cost",
        "_final",
        "_price",
        "_span_id",
        "_start_mark",
        "_timer",
        "_trace_id",
        "_ts",
        "cache_creation_tokens",
        "cached_tokens",
        "confidence",
        "context",
        "conversation_id",
        "duration_s",
        "error_type",
        "feature",
        "finish_reason",
        "flagged",
        "input_messages",
        "input_tokens",
        "labels",
        "model",
        "operation",
        "outcome",
        "output_messages",
        "output_tokens",
        "prompt",
        "prompt_version",
        "provider",
        "reasoning_tokens",
        "refused",
        "response",
        "response_id",
        "response_model",
        "tenant",
        "tokens_estimated",
        "ttft_s",
        "user_id",
    )

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        operation: str,
        tenant: str,
        feature: str,
        user_id: str | None,
        prompt_version: str | None,
        trace_id: str,
        span_id: str,
        ts: datetime | float,
        timer: Callable[[], float],
        conversation_id: str | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.operation = operation
        self.tenant = tenant
        self.feature = feature
        self.user_id = user_id
        self.prompt_version = prompt_version
        self._ts = ts  # when the call started, by the hooks' clock: the row's ts (epoch s until read)
        self.response_model: str | None = None
        self.input_tokens: int = 0
        self.output_tokens: int = 0
        self.cached_tokens: int = 0
        self.cache_creation_tokens: int = 0
        self.reasoning_tokens: int = 0
        self.conversation_id = conversation_id
        self.tokens_estimated = False
        self.finish_reason: str | None = None
        self.response_id: str | None = None
        self.refused = False
        self.ttft_s: float | None = None
        self.duration_s: float | None = None
        self.error_type: str | None = None
        self.outcome = "ok"  # ok | error | refused; final once the with block has exited
        self.labels: dict[str, str] = {}
        self.prompt: str | None = None
        self.response: str | None = None
        self.context: list[str] | None = None
        self.input_messages: list[dict[str, Any]] | None = None
        self.output_messages: list[dict[str, Any]] | None = None
        self.flagged = False
        self.confidence: float | None = None
        self._cost: float | None = None
        self._price: tuple[float, bool] | None = None  # the table's answer, kept once stop() ran
        self._final = False
        self._trace_id = trace_id
        self._span_id = span_id
        self._timer = timer
        self._start_mark = timer()

    @property
    def ts(self) -> datetime:
        """Return when the call started (UTC-aware): the ``calls`` row's timestamp."""
        ts = self._ts
        if not isinstance(ts, datetime):  # epoch seconds: built on first read, off the hot path
            ts = self._ts = datetime.fromtimestamp(ts, UTC)
        return ts

    @ts.setter
    def ts(self, value: datetime) -> None:
        self._ts = value

    @property
    def trace_id(self) -> str:
        """Return the 32-hex-digit trace ID (the span's, or one of our own without tracing)."""
        return self._trace_id

    @property
    def span_id(self) -> str:
        """Return the 16-hex-digit span ID."""
        return self._span_id

    @property
    def cost_usd(self) -> float:
        """Return the cost set by the application, else the price table's (0 for unknown models)."""
        if self._cost is not None:
            return self._cost
        return self._priced()[0]

    @cost_usd.setter
    def cost_usd(self, value: float) -> None:
        self._cost = value

    @property
    def cost_known(self) -> bool:
        """Tell whether the cost is known: set by the application, or the model has a price."""
        return self._cost is not None or self._priced()[1]

    def label_values(self) -> dict[str, str]:
        """Return the values of the metric labels: tenant, feature and the extra ``labels``."""
        values = {str(k): str(v) for k, v in self.labels.items()}
        values.update(tenant=self.tenant, feature=self.feature)
        return values

    def first_token(self) -> None:
        """Mark the time to first token as now (only the first call counts)."""
        if self.ttft_s is None:
            self.ttft_s = self._timer() - self._start_mark

    def mark_end(self) -> None:
        """Measure the duration as of now, unless it is set already."""
        if self.duration_s is None:
            self.duration_s = self._timer() - self._start_mark

    def stop(self, *, error: BaseException | None = None) -> None:
        """Close the record: measure the duration unless set, and settle the outcome."""
        self.mark_end()
        if error is not None:
            self.outcome = "error"
            self.error_type = type(error).__name__
        elif self.refused or self.finish_reason == "content_filter":
            self.outcome = "refused"
        else:
            self.outcome = "ok"
        # Normalise what the application set, so that metrics and the row agree (the common
        # case, plain non-negative ints, finite floats and strings, costs a type check).
        if not _is_count(self.input_tokens):
            self.input_tokens = _count(self.input_tokens)
        if not _is_count(self.output_tokens):
            self.output_tokens = _count(self.output_tokens)
        if not _is_count(self.cached_tokens):
            self.cached_tokens = _count(self.cached_tokens)
        if not _is_count(self.reasoning_tokens):
            self.reasoning_tokens = _count(self.reasoning_tokens)
        if not _is_count(self.cache_creation_tokens):
            self.cache_creation_tokens = _count(self.cache_creation_tokens)
        if self.conversation_id is not None and type(self.conversation_id) is not str:
            self.conversation_id = str(self.conversation_id)
        if self.ttft_s is not None:
            self.ttft_s = _seconds(self.ttft_s)
        self.duration_s = _seconds(self.duration_s)
        if self._cost is not None:
            self._cost = _seconds(self._cost) or 0.0
        if self.finish_reason is not None and type(self.finish_reason) is not str:
            self.finish_reason = str(self.finish_reason)
        if self.response_id is not None and type(self.response_id) is not str:
            self.response_id = str(self.response_id)
        if self.response_model is not None and type(self.response_model) is not str:
            self.response_model = str(self.response_model)
        # Priced on first use after this (the finisher's thread: the span, metrics and row), not
        # here: a directly used llm_call stops on the caller's thread, and the first price loads
        # the maintained table.
        self._price = None
        self._final = True

    def row(self) -> dict[str, Any]:
        """Return the ``calls`` row of this call (every column but ``id``)."""
        cost, known = (self._cost, True) if self._cost is not None else self._priced()
        return {
            "trace_id": self._trace_id,
            "span_id": self._span_id,
            "ts": self.ts,
            "provider": self.provider,
            "model": self.model,
            "operation": self.operation,
            "tenant": self.tenant,
            "feature": self.feature,
            "user_id": None if self.user_id is None else str(self.user_id),
            "prompt_version": None if self.prompt_version is None else str(self.prompt_version),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "conversation_id": self.conversation_id,
            "tokens_estimated": bool(self.tokens_estimated),
            "cost_usd": cost,
            "cost_known": known,
            "ttft_s": self.ttft_s,
            "duration_s": self.duration_s,
            "finish_reason": self.finish_reason,
            "outcome": self.outcome,
            "error_type": self.error_type,
        }

    def _priced(self) -> tuple[float, bool]:
        if self._price is not None:
            return self._price
        model = self.response_model or self.model
        inp, out, cached, write = (
            v if _is_count(v) else _count(v)
            for v in (self.input_tokens, self.output_tokens, self.cached_tokens, self.cache_creation_tokens)
        )
        cost, known = priced_cost(model, inp, out, cached, write, provider=self.provider, at=self.ts)
        if not known and model != self.model:
            cost, known = priced_cost(self.model, inp, out, cached, write, provider=self.provider, at=self.ts)
        if self._final:
            self._price = (cost, known)
        return cost, known

    def __repr__(self) -> str:
        return (
            f"CallRecord({self.operation} {self.model}, trace_id={self._trace_id}, "
            f"outcome={self.outcome}, tokens={self.input_tokens}/{self.output_tokens})"
        )
