"""The SQL tables of the store, as SQLModel classes.

This module owns the table shapes and the column types (UTC-aware datetimes on every backend).
It does not own connections, pragmas or migrations (``store.db``), nor any query logic: sources,
the engine and the notifier query these tables themselves.

``table=True`` models do not validate their input; callers that take untrusted data (the ingest
API, CSV import) validate with their own models first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 15


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime that is always written and read back as UTC.

    SQLite has no time zones (values come back naive); PostgreSQL returns the session's zone.
    Both are normalised here, once, so no caller ever sees a naive datetime.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # Stored naive-in-UTC so that lexical order equals time order in SQLite.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(*, index: bool = False, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), index=index, nullable=nullable))


def _json() -> Any:
    return Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))


class Call(SQLModel, table=True):
    """One model call, written by the hooks or the ingest API."""

    __tablename__ = "calls"
    __table_args__ = (
        # contribution analysis and per-series reads filter one label value over a time range (#19)
        sa.Index("ix_calls_tenant_ts", "tenant", "ts"),
        sa.Index("ix_calls_feature_ts", "feature", "ts"),
        sa.Index("ix_calls_model_ts", "model", "ts"),
    )

    id: int | None = Field(default=None, primary_key=True)
    trace_id: str = Field(index=True, max_length=64)
    span_id: str | None = Field(default=None, max_length=32)
    ts: datetime = _ts(index=True)
    provider: str = Field(default="", max_length=64)
    model: str = Field(default="", max_length=128)
    operation: str = Field(default="chat", max_length=32)
    tenant: str = Field(default="", max_length=128)
    feature: str = Field(default="", max_length=128)
    user_id: str | None = Field(default=None, max_length=128)
    prompt_version: str | None = Field(default=None, max_length=64)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """input tokens written to the provider's cache (part of ``input_tokens``; migration 9)"""
    conversation_id: str | None = Field(default=None, max_length=128)
    """``gen_ai.conversation.id``: the session or thread the call belongs to (migration 9)"""
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    cost_known: bool = True
    ttft_s: float | None = None
    duration_s: float | None = None
    finish_reason: str | None = Field(default=None, max_length=32)
    outcome: str = Field(default="ok", max_length=16)
    """ok | error | refused | filtered"""
    error_type: str | None = Field(default=None, max_length=128)


class Score(SQLModel, table=True):
    """One quality signal about a trace: a judge score, a heuristic, a human label or feedback."""

    __tablename__ = "scores"
    __table_args__ = (sa.Index("ix_scores_name_feature_ts", "name", "feature", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    trace_id: str = Field(index=True, max_length=64)
    ts: datetime = _ts(index=True)
    name: str = Field(index=True, max_length=128)
    value: float
    label: str | None = Field(default=None, max_length=128)
    source: str = Field(default="judge", max_length=16)
    """judge | heuristic | human | feedback | retrieval (signals of a retrieval step)"""
    evaluator: str | None = Field(default=None, max_length=128)
    tenant: str = Field(default="", max_length=128)
    feature: str = Field(default="", max_length=128)
    model: str = Field(default="", max_length=128)
    eval_run: str | None = Field(default=None, index=True, max_length=128)
    comment: str | None = None


class Payload(SQLModel, table=True):
    """The redacted prompt and response of a trace, kept apart so it can expire on its own."""

    __tablename__ = "payloads"

    id: int | None = Field(default=None, primary_key=True)
    trace_id: str = Field(index=True, max_length=64)
    ts: datetime = _ts(index=True)
    prompt: str | None = None
    response: str | None = None


class PayloadAccessRow(SQLModel, table=True):
    """One read of captured payloads: who, when, which trace. The audit log of scope ``payload_read``."""

    __tablename__ = "payload_access"

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = _ts(index=True)
    """the reader's clock: the daemon's for the API, the command's for ``watcher payloads show``"""
    who: str = Field(max_length=128)
    """``payload:<token name>`` (API) or ``cli:<OS user>``"""
    via: str = Field(max_length=16)
    """api | cli"""
    trace_id: str = Field(index=True, max_length=64)
    rows: int = 0
    """payload rows returned (0: nothing captured, or already expired)"""
    client: str | None = Field(default=None, max_length=64)
    """the API client's address"""


class AlertRow(SQLModel, table=True):
    """The persisted state of one alert (rule + labels), restored at start-up."""

    __tablename__ = "alerts"

    fingerprint: str = Field(primary_key=True, max_length=32)
    rule: str = Field(index=True, max_length=256)
    group_name: str = Field(index=True, max_length=256)
    labels: dict[str, str] = _json()
    state: int = 0
    active_at: datetime | None = _ts(nullable=True)
    fired_at: datetime | None = _ts(nullable=True)
    resolved_at: datetime | None = _ts(nullable=True)
    last_eval: datetime | None = _ts(nullable=True)
    keep_firing_since: datetime | None = _ts(nullable=True)
    value: float | None = None
    expected: float | None = None
    lower: float | None = None
    upper: float | None = None
    score: float | None = None
    annotations: dict[str, str] = _json()
    traces: list[dict[str, Any]] = _json()
    surprise: float | None = None


class TransitionRow(SQLModel, table=True):
    """One alert state transition (pending, firing, resolved), written with the state it leads to.

    Rows are appended in the transaction that upserts the alert, so the history never disagrees
    with the state; a transition written twice (a retried commit, two replicas) is kept once.
    """

    __tablename__ = "alert_transitions"
    __table_args__ = (sa.UniqueConstraint("fingerprint", "at", "to_state", name="uq_transition"),)

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True, max_length=32)
    rule: str = Field(max_length=256)
    group_name: str = Field(default="", max_length=256)
    at: datetime = _ts(index=True)
    from_state: str = Field(max_length=16)
    """inactive | pending | firing"""
    to_state: str = Field(max_length=16)
    """pending | firing | resolved"""
    episode_start: datetime | None = _ts(nullable=True)
    value: float | None = None
    expected: float | None = None
    lower: float | None = None
    upper: float | None = None


class NotificationLogRow(SQLModel, table=True):
    """What each receiver was last told about each alert; dedup reads it."""

    __tablename__ = "notification_log"
    __table_args__ = (sa.Index("ix_notification_log_dedup", "receiver", "dedup_key"),)
    """The alerts a receiver was told about under one group dedup key (``cluster.sharedgroups``)."""

    receiver: str = Field(primary_key=True, max_length=128)
    fingerprint: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=16)
    """firing | resolved"""
    dedup_key: str = Field(max_length=64)
    notified_at: datetime = _ts()
    episode_start: datetime | None = _ts(nullable=True)
    count: int = 0


class OutboxRow(SQLModel, table=True):
    """A rendered notification waiting for (or done with) delivery."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_key", "receiver", "fingerprint", "status", "id"),)
    """Per-key order: "is an older row of this receiver × fingerprint still pending?" (``outbox``)."""

    id: int | None = Field(default=None, primary_key=True)
    receiver: str = Field(index=True, max_length=128)
    fingerprint: str = Field(max_length=32)
    dedup_key: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    created_at: datetime = _ts()
    status: str = Field(default="pending", index=True, max_length=16)
    """pending | sent | dead"""
    attempts: int = 0
    next_attempt_at: datetime = _ts(index=True)
    last_error: str | None = None
    last_reason: str | None = Field(default=None, max_length=32)
    sent_at: datetime | None = _ts(nullable=True)
    message: dict[str, Any] = _json()
    """title, body, links and the structured alert payload"""
    claimed_by: str | None = Field(default=None, max_length=128)
    """the replica that claimed the row for delivery (PostgreSQL replicas, ``FOR UPDATE SKIP LOCKED``)"""
    claimed_until: datetime | None = _ts(nullable=True)
    """other replicas leave the row alone until then; a killed sender's claim simply runs out"""


class SilenceRow(SQLModel, table=True):
    """A silence: alerts whose labels match every matcher are not notified between start and end."""

    __tablename__ = "silences"

    id: str = Field(primary_key=True, max_length=36)
    matchers: list[dict[str, str]] = _json()
    """[{"name": ..., "value": ..., "op": "=|!=|=~|!~"}]"""
    starts_at: datetime = _ts()
    ends_at: datetime = _ts(index=True)
    created_by: str = Field(default="", max_length=128)
    comment: str = ""
    created_at: datetime = _ts()


class EvalRunRow(SQLModel, table=True):
    """The health of each rule at its last evaluation."""

    __tablename__ = "eval_runs"

    group_name: str = Field(primary_key=True, max_length=256)
    rule: str = Field(primary_key=True, max_length=256)
    last_eval: datetime | None = _ts(nullable=True)
    duration_s: float = 0.0
    health: str = Field(default="unknown", max_length=16)
    """ok | err | unknown"""
    last_error: str | None = None
    evaluations: int = 0
    failures: int = 0
    series: int = 0


class DetectorStateRow(SQLModel, table=True):
    """The checkpointed detector state of one series of one rule (``engine.checkpoints``)."""

    __tablename__ = "detector_state"

    group_name: str = Field(primary_key=True, max_length=256)
    rule: str = Field(primary_key=True, max_length=256)
    fingerprint: str = Field(primary_key=True, max_length=32)
    """The series' own labels' fingerprint (before the rule's labels are laid over)."""
    labels: dict[str, str] = _json()
    spec: str = Field(max_length=64)
    """Digest of the rule's detector and step: a changed rule does not resume an old state."""
    version: str = Field(max_length=64)
    """``detectors.checkpoint.code_version()`` of the code that wrote it."""
    cursor: float
    """The rule's fetch cursor when written (Unix seconds): the resumed rule fetches after it."""
    last_seen: float
    state: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class SchemaVersionRow(SQLModel, table=True):
    """The schema version the database was migrated to."""

    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int
    migrated_at: datetime = _ts()


class ReplicaRow(SQLModel, table=True):
    """One ``watcher run`` process of a cluster on PostgreSQL, as its heartbeats describe it."""

    __tablename__ = "cluster_replicas"

    replica_id: str = Field(primary_key=True, max_length=128)
    host: str = Field(default="", max_length=255)
    pid: int = 0
    version: str = Field(default="", max_length=64)
    rules_hash: str = Field(default="", max_length=64)
    started_at: datetime = _ts()
    heartbeat_at: datetime = _ts(index=True)
    """set from the database clock, so replicas' clocks never have to agree"""


class LeaseRow(SQLModel, table=True):
    """Who evaluates one rule group until when; ``epoch`` grows with every change of hands."""

    __tablename__ = "cluster_leases"

    group_name: str = Field(primary_key=True, max_length=256)
    owner: str = Field(max_length=128)
    epoch: int = 1
    """the fencing token: writes of a group's evaluation check owner, epoch and expiry"""
    acquired_at: datetime = _ts()
    expires_at: datetime = _ts()
    series: int | None = None
    """series in the holder's last evaluation of the unit (migration 12)"""
    tick_s: float | None = None
    """seconds the holder's last evaluation of the unit took (migration 12)"""


class EvaluationRow(SQLModel, table=True):
    """One evaluation of one group at one tick; the primary key makes each tick happen once."""

    __tablename__ = "cluster_evaluations"

    group_name: str = Field(primary_key=True, max_length=256)
    tick: datetime = Field(sa_column=sa.Column(UTCDateTime(), primary_key=True))
    replica_id: str = Field(max_length=128)
    epoch: int = 0
    claimed_at: datetime = _ts()
    done: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.text("TRUE"))
    )
    """set in the transaction that commits the evaluation's results; a claim that is not done does
    not count as evaluated and is re-claimable by the group's next lease epoch (migration 6)"""


class MarkerRow(SQLModel, table=True):
    """A release marker: a deploy, a prompt version or a model switch, with the labels it touches."""

    __tablename__ = "release_markers"

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = _ts(index=True)
    """when the change happened"""
    kind: str = Field(max_length=32)
    """deploy | prompt_version | model_switch"""
    text: str = Field(default="", max_length=512)
    labels: dict[str, str] = _json()
    grace_s: float = 0.0
    """how long after ``ts`` matching series re-baseline instead of alerting (0: only annotate)"""
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = _ts()


class FeedbackRow(SQLModel, table=True):
    """The on-call's verdict on one alert episode: a real incident or a false alarm."""

    __tablename__ = "alert_feedback"
    __table_args__ = (sa.UniqueConstraint("fingerprint", "episode_start", name="uq_feedback_episode"),)

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True, max_length=32)
    rule: str = Field(max_length=256)
    group_name: str = Field(default="", max_length=256)
    labels: dict[str, str] = _json()
    episode_start: datetime = _ts()
    episode_end: datetime | None = _ts(nullable=True)
    verdict: str = Field(max_length=16)
    """real | false"""
    note: str = ""
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = _ts(index=True)
