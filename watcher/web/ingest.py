"""Ingest for non-Python applications: the request models and the bulk insert behind ``/api/v1``.

This module owns what a client may send (``CallIn``, ``ScoreIn``, ``FeedbackIn``: strict pydantic
models, separate from the SQLModel tables, whose bounds match the columns so that a valid item
always inserts), turning items into rows, and writing one request's rows in one transaction
(all or nothing: the client gets 200 only when every row is committed). It does not own HTTP
(``app``): auth, size limits and status codes, nor its benchmark (``bench.ingest``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, cast

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..store.tables import Call, Score

CALLS: Final = cast(sa.Table, Call.__table__)  # type: ignore[attr-defined]
SCORES: Final = cast(sa.Table, Score.__table__)  # type: ignore[attr-defined]
MAX_COUNT: Final = 2**31 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise ValueError("timestamp out of range once converted to UTC") from None


def _iso_text(value: Any) -> Any:
    # The schema says an ISO-8601 string; pydantic's lax mode would also take a number (Unix time).
    if not isinstance(value, str | datetime):
        raise ValueError("expected an ISO-8601 timestamp string")
    return value


# Strings bounded like their columns and free of NUL characters (PostgreSQL rejects them).
Str32 = Annotated[str, Field(max_length=32), AfterValidator(_no_nul)]
Str64 = Annotated[str, Field(max_length=64), AfterValidator(_no_nul)]
Str128 = Annotated[str, Field(max_length=128), AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_nul)]
Comment = Annotated[str, Field(max_length=4000), AfterValidator(_no_nul)]
TraceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_.:-]+$")]
# Numbers and booleans are strict: the OpenAPI schema says number/integer/boolean, so `false`,
# "3" or 2.0 for a count are refused as the schema refuses them (lax mode took them).
Timestamp = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]
Seconds = Annotated[float, Field(ge=0, le=86_400 * 7, allow_inf_nan=False, strict=True)]
Flag = Annotated[bool, Field(strict=True)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CallIn(_In):
    """One model call, as the hooks would have recorded it."""

    trace_id: TraceId
    span_id: Str32 | None = None
    ts: Timestamp | None = Field(None, description="call start, ISO-8601 (default: now); naive means UTC")
    provider: Str64 = ""
    model: Str128 = ""
    operation: Str32 = "chat"
    tenant: Str128 = ""
    feature: Str128 = ""
    user_id: Str128 | None = None
    prompt_version: Str64 | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cached_tokens: Count = 0
    reasoning_tokens: Count = 0
    cache_creation_tokens: Count = Field(0, description="input tokens written to the provider's cache")
    conversation_id: Str128 | None = None
    tokens_estimated: Flag = False
    cost_usd: float | None = Field(
        None,
        ge=0,
        le=1e6,
        allow_inf_nan=False,
        strict=True,
        description="default: from the pricing table (0 and cost_known=false if unknown)",
    )
    ttft_s: Seconds | None = None
    duration_s: Seconds | None = None
    finish_reason: Str32 | None = None
    outcome: Literal["ok", "error", "refused", "filtered"] = "ok"
    error_type: Str128 | None = None


class ScoreIn(_In):
    """One quality score about a trace."""

    trace_id: TraceId
    name: Name
    value: float = Field(ge=-1e12, le=1e12, allow_inf_nan=False, strict=True)
    ts: Timestamp | None = None
    label: Str128 | None = None
    source: Literal["judge", "heuristic", "human", "feedback", "retrieval"] = "judge"
    evaluator: Str128 | None = None
    tenant: Str128 = ""
    feature: Str128 = ""
    model: Str128 = ""
    eval_run: Str128 | None = None
    comment: Comment | None = None


class FeedbackIn(_In):
    """A user's thumbs up/down about a trace (stored as score "feedback" 1/0)."""

    trace_id: TraceId
    positive: Flag
    ts: Timestamp | None = None
    comment: Comment | None = None
    tenant: Str128 = ""
    feature: Str128 = ""
    model: Str128 = ""


class Accepted(BaseModel):
    """The answer to a successful ingest: how many rows were committed."""

    accepted: int


def time_problems(
    items: Sequence[CallIn | ScoreIn | FeedbackIn],
    now: datetime,
    *,
    max_future: timedelta,
    max_age: timedelta | None,
    retention_setting: str,
) -> list[dict[str, Any]]:
    """Return a 422 problem for each item whose ``ts`` is too far ahead of ``now`` or too old.

    Too far ahead: more than ``max_future`` (``server.ingest_max_future``, clock skew allowed); a row
    dated in the future would sit beyond every window and never be deleted by retention. Too old:
    beyond ``max_age`` (the table's retention; None keeps rows forever), retention would delete it at
    once. ``loc`` follows the validation errors: ``["body", i, "ts"]`` (no index for one object).
    """
    out: list[dict[str, Any]] = []
    single = len(items) == 1
    for i, item in enumerate(items):
        ts = item.ts
        if ts is None:
            continue
        loc: list[str | int] = ["body", "ts"] if single else ["body", i, "ts"]
        if ts > now + max_future:
            ahead = ts - now
            out.append(
                {
                    "loc": loc,
                    "msg": f"timestamp is {_human(ahead)} in the future (server clock {now.isoformat()}); "
                    f"at most {_human(max_future)} ahead is accepted (server.ingest_max_future)",
                    "type": "timestamp_in_future",
                }
            )
        elif max_age is not None and ts < now - max_age:
            out.append(
                {
                    "loc": loc,
                    "msg": f"timestamp is older than the retention of this table ({_human(max_age)}, "
                    f"{retention_setting}): it would be deleted at once",
                    "type": "timestamp_too_old",
                }
            )
    return out


def _human(d: timedelta) -> str:
    from ..core import format_duration

    return format_duration(timedelta(seconds=int(d.total_seconds())))


def call_row(item: CallIn, now: datetime) -> dict[str, Any]:
    """Return the ``calls`` row of ``item``; a missing cost comes from the pricing table."""
    from ..instrument.pricing import cost_usd

    row = item.model_dump()
    row["ts"] = item.ts or now
    if item.cost_usd is None:
        row["cost_usd"], row["cost_known"] = cost_usd(
            item.model,
            item.input_tokens,
            item.output_tokens,
            item.cached_tokens,
            item.cache_creation_tokens,
            provider=item.provider,
            at=row["ts"],
        )
    else:
        row["cost_known"] = True
    return row


def score_row(item: ScoreIn, now: datetime) -> dict[str, Any]:
    """Return the ``scores`` row of ``item``."""
    row = item.model_dump()
    row["ts"] = item.ts or now
    return row


def feedback_row(item: FeedbackIn, now: datetime) -> dict[str, Any]:
    """Return the ``scores`` row of a feedback item."""
    return {
        "trace_id": item.trace_id,
        "ts": item.ts or now,
        "name": "feedback",
        "value": 1.0 if item.positive else 0.0,
        "label": "positive" if item.positive else "negative",
        "source": "feedback",
        "evaluator": None,
        "tenant": item.tenant,
        "feature": item.feature,
        "model": item.model,
        "eval_run": None,
        "comment": item.comment,
    }


def insert_rows(engine: sa.Engine, table: sa.Table, rows: Sequence[dict[str, Any]]) -> int:
    """Insert ``rows`` in one transaction and return how many; raise SQLAlchemyError on failure."""
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(table), list(rows))
    return len(rows)
