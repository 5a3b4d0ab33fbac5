"""The nouns every part of watcher shares: labels, series, trace references, verdicts and alerts.

This module owns plain immutable data and the few pure helpers that belong to it (fingerprints,
ordering of alert states). It does not own behaviour: fetching lives in ``sources``, scoring in
``detectors``, state transitions in ``engine.alerting`` and delivery in ``notify``.

Time is always a UTC-aware ``datetime`` at the edges and a float of Unix seconds inside the
numeric paths (``Series.timestamps``), because detectors work on numpy arrays.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

FloatArray = npt.NDArray[np.float64]


def utc(ts: datetime) -> datetime:
    """Return ``ts`` as a UTC-aware datetime; naive values are taken to be UTC already."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def to_epoch(ts: datetime) -> float:
    """Convert a datetime (naive means UTC) to Unix seconds."""
    return utc(ts).timestamp()


def from_epoch(seconds: float) -> datetime:
    """Convert Unix seconds to a UTC-aware datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


_DURATION_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS = (
    timedelta(weeks=1),
    timedelta(days=1),
    timedelta(hours=1),
    timedelta(minutes=1),
    timedelta(seconds=1),
    timedelta(milliseconds=1),
)
MAX_DURATION = timedelta(weeks=520)
"""The longest duration anywhere (rules, config, silences): 10 years, far from ``datetime``'s limits."""
DURATION_PATTERN = r"^(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$"


def parse_duration(text: Any) -> timedelta:
    """Parse a Prometheus-style duration (``30s``, ``5m``, ``1h30m``, ``7d``, ``1w``) into a timedelta.

    ``0`` is accepted for "no duration". Numbers are rejected so that ``for: 10`` (seconds? minutes?)
    is an error with a hint rather than a guess. Anything longer than ``MAX_DURATION`` is a
    ``ValueError`` (never an ``OverflowError`` later, when the daemon adds it to a date).
    """
    if isinstance(text, timedelta):
        if abs(text) > MAX_DURATION:
            raise ValueError(f"duration is too long: at most {format_duration(MAX_DURATION)} (10 years)")
        return text
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"expected a duration such as 30s, 5m, 1h or 7d, got {text!r}")
    if isinstance(text, int) or text.strip() == "0":
        if text in (0, "0"):
            return timedelta(0)
        raise ValueError(f"a duration needs a unit: write {text}s, {text}m or {text}h (units: ms s m h d w)")
    s = text.strip()
    if len(s) > 40:
        raise ValueError(f"bad duration {s[:40]!r}…: write e.g. 30s, 5m, 1h30m, 7d (at most 520w)")
    match = _DURATION_RE.match(s)
    if not s or match is None or not any(match.groups()):
        raise ValueError(f"bad duration {text!r}: write e.g. 30s, 5m, 1h30m, 7d (units: ms s m h d w)")
    ms = sum(
        int(amount) * (unit // timedelta(milliseconds=1))
        for amount, unit in zip(match.groups(), _UNITS, strict=True)
        if amount
    )
    if ms > MAX_DURATION // timedelta(milliseconds=1):
        raise ValueError(
            f"duration {s} is too long: at most {format_duration(MAX_DURATION)} (10 years); "
            "a longer one cannot be added to a date"
        )
    return timedelta(milliseconds=ms)


def format_duration(td: timedelta) -> str:
    """Format a timedelta back into the shortest Prometheus-style duration string."""
    ms = int(td.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, name in ((604_800_000, "w"), (86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")):
        if ms >= unit:
            out.append(f"{ms // unit}{name}")
            ms %= unit
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}],
            "examples": ["30s", "5m", "1h", "7d"],
        }
    ),
]


_MERGE_CACHE_SIZE = 8
"""Merged label sets remembered per label set: a series is merged with its rule's labels and alertname."""


class Labels(Mapping[str, str]):
    """An immutable, hashable, sorted label set with a stable fingerprint.

    Equality and hashing ignore insertion order, so ``Labels(a="1", b="2") == Labels(b="2", a="1")``.
    """

    __slots__ = ("_fingerprint", "_items", "_merged")

    def __init__(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]] = (), /, **kw: Any) -> None:
        pairs = dict(items)
        pairs.update(kw)
        self._items: tuple[tuple[str, str], ...] = tuple(sorted((str(k), str(v)) for k, v in pairs.items()))
        self._fingerprint: str | None = None
        self._merged: dict[tuple[tuple[str, str], ...], Labels] | None = None

    @property
    def fingerprint(self) -> str:
        """Return a stable 16-hex-digit identity of this label set (same across processes)."""
        if self._fingerprint is None:  # computed once, on first use: most label sets never need it
            digest = hashlib.sha256("\x1f".join(f"{k}\x1e{v}" for k, v in self._items).encode()).hexdigest()
            self._fingerprint = digest[:16]
        return self._fingerprint

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Return the ``(name, value)`` pairs, sorted by name: ``tuple(self.items())``, without the walk."""
        return self._items

    def merge(self, other: Mapping[str, Any]) -> Labels:
        """Return a new label set with ``other`` laid over this one (cached: evaluation repeats merges)."""
        key = tuple((str(k), str(v)) for k, v in other.items())
        cache = self._merged
        if cache is None:
            cache = self._merged = {}
        merged = cache.get(key)
        if merged is not None:
            return merged
        merged = Labels({**dict(self._items), **dict(key)})
        if len(cache) < _MERGE_CACHE_SIZE:
            cache[key] = merged
        return merged

    def without(self, *names: str) -> Labels:
        """Return a new label set without the given names."""
        return Labels({k: v for k, v in self._items if k not in names})

    def __getitem__(self, key: str) -> str:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == {str(k): str(v) for k, v in other.items()}
        return NotImplemented

    def __repr__(self) -> str:
        inner = ", ".join(f'{k}="{v}"' for k, v in self._items)
        return "{" + inner + "}"


@dataclass(frozen=True, slots=True)
class TraceRef:
    """A pointer to one offending trace: the ID plus what made it stand out."""

    trace_id: str
    span_id: str | None = None
    value: float | None = None
    """The per-trace quantity the ranking used (cost in USD, TTFT in seconds, score value …)."""
    ts: datetime | None = None
    note: str | None = None
    """Short human context, e.g. ``"refused"`` or ``"gpt-4o · acme"``."""


@dataclass(frozen=True, slots=True)
class ExemplarLookup:
    """Where a source looked for a series' trace IDs in exemplars, and why it failed if it did.

    A series carries one only when its rule wants exemplar traces and the source asked for them, so
    an alert left without trace IDs can say where none came from (and a rule whose traces are off,
    or come from rows, never claims "no exemplars").
    """

    endpoint: str
    """The name of the configured endpoint that was asked."""
    error: str | None = None
    """Why the lookup failed (the query failed, or there was no metric to ask for); None if it ran."""


@dataclass(frozen=True, slots=True)
class Series:
    """One labelled time series as a source returns it.

    ``timestamps`` are Unix seconds, strictly increasing. ``values`` may hold NaN for a step with no
    data. ``counts`` is the number of observations behind each point (calls, scores), used by
    sample-size-aware detectors and ``min_count``; ``None`` when the source cannot know it.
    ``traces[i]`` are the trace references behind point ``i`` (possibly empty), best offenders first;
    a source may hand a lazy sequence that builds them only for the points asked for (an alert's).
    ``exemplars`` says where the source looked for them in exemplars (None: it did not look).
    """

    labels: Labels
    timestamps: FloatArray
    values: FloatArray
    counts: FloatArray | None = None
    traces: Sequence[tuple[TraceRef, ...]] = ()
    exemplars: ExemplarLookup | None = None

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.values):
            raise ValueError("timestamps and values differ in length")
        if self.counts is not None and len(self.counts) != len(self.values):
            raise ValueError("counts and values differ in length")
        if self.traces and len(self.traces) != len(self.values):
            raise ValueError("traces and values differ in length")

    def __len__(self) -> int:
        return len(self.values)

    def traces_at(self, i: int) -> tuple[TraceRef, ...]:
        """Return the trace references behind point ``i`` (empty when the source has none)."""
        return self.traces[i] if self.traces else ()

    def after(self, epoch: float) -> Series:
        """Return the points strictly later than ``epoch`` (Unix seconds)."""
        idx = int(np.searchsorted(self.timestamps, epoch, side="right"))
        return replace(
            self,
            timestamps=self.timestamps[idx:],
            values=self.values[idx:],
            counts=None if self.counts is None else self.counts[idx:],
            traces=self.traces[idx:] if self.traces else (),
        )


@dataclass(frozen=True, slots=True)
class Band:
    """The expected value of a point and the band around it that is not anomalous (NaN: unknown)."""

    expected: float = math.nan
    lower: float = math.nan
    upper: float = math.nan

    @property
    def known(self) -> bool:
        """Tell whether both edges of the band are numbers."""
        return not (math.isnan(self.lower) or math.isnan(self.upper))

    def contains(self, value: float) -> bool:
        """Tell whether ``value`` lies inside the band (edges included); an unknown band contains all."""
        return not self.known or self.lower <= value <= self.upper


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a detector says about one point.

    ``ready`` is False while the detector warms up (not enough history) or the point has no value;
    then ``anomalous`` is False and the band may be NaN. ``score`` is in [0, 1]: how far outside
    the expected band the value lies, comparable across detectors (0 = typical, →1 = extreme).
    """

    ts: float
    value: float
    expected: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    score: float = 0.0
    anomalous: bool = False
    ready: bool = True
    reason: str = ""
    """Why the verdict is not ready (``"warming up: 3/30 points"``, ``"no data"``), else empty."""
    surprise: float = 0.0
    """``-log10`` of the tail probability of the deviation on the watched side, under the detector's
    calibrated noise model: unbounded, comparable across series and kinds (0 = typical, 4.5 = the
    default sensitivity's flag level); what "top anomalies" and alert ordering rank by."""
    note: str = ""
    """A detector's own sentence about the point (``budget``: the exhaustion forecast), else empty;
    an alert carries it as the ``forecast`` annotation and templates read it as ``note``."""
    detail: str = ""
    """What a ready verdict found, in words, when the numbers above do not say it (``drift``: the
    medians and shares below a threshold before and after); the engine adds it to an alert."""

    @property
    def band(self) -> Band:
        """Return the expected value and band of this verdict."""
        return Band(self.expected, self.lower, self.upper)


class AlertState(enum.IntEnum):
    """Alert states, ordered so that the worst state of a rule is ``max()``."""

    INACTIVE = 0
    PENDING = 1
    FIRING = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Alert:
    """The state of one alert: one rule and one label set, at one evaluation.

    ``inactive`` with ``resolved_at`` set means "resolved, kept a while so the resolve can be
    re-sent". Values are those of the latest evaluation that had data.
    """

    rule: str
    group: str
    labels: Labels
    state: AlertState
    active_at: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_eval: datetime | None = None
    keep_firing_since: datetime | None = None
    value: float = math.nan
    expected: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    score: float = 0.0
    annotations: Mapping[str, str] = field(default_factory=dict)
    traces: tuple[TraceRef, ...] = ()
    surprise: float = 0.0
    """-log10 of the tail probability of the latest value with data (``Verdict.surprise``)."""

    @property
    def band(self) -> Band:
        """Return the expected value and band of the latest evaluation that had data."""
        return Band(self.expected, self.lower, self.upper)

    @property
    def fingerprint(self) -> str:
        """Return the identity of this alert: rule name and labels, stable across restarts."""
        return self.labels.merge({"alertname": self.rule}).fingerprint

    @property
    def resolved(self) -> bool:
        """Tell whether the alert has fired and since resolved."""
        return self.state is AlertState.INACTIVE and self.resolved_at is not None


# --- the one Alert <-> dict codec (store, outbox, web) ---------------------------------------------


def iso(ts: datetime | None) -> str | None:
    """Return ``ts`` as an RFC 3339 UTC timestamp (``…Z``), or None."""
    return utc(ts).isoformat().replace("+00:00", "Z") if ts is not None else None


def parse_iso(text: Any) -> datetime | None:
    """Parse what ``iso`` wrote (a trailing ``Z`` is accepted) into a UTC-aware datetime; empty: None."""
    return utc(datetime.fromisoformat(str(text).replace("Z", "+00:00"))) if text else None


def json_num(x: float | None) -> float | None:
    """Return ``x`` for JSON: None when it is missing or not finite (JSON has no NaN)."""
    return None if x is None or not math.isfinite(x) else float(x)


def num_or_nan(x: Any) -> float:
    """Return the float stored by ``json_num`` (None is NaN)."""
    return math.nan if x is None else float(x)


def trace_to_dict(t: TraceRef) -> dict[str, Any]:
    """Return one trace reference as a JSON-ready dict."""
    return {
        "trace_id": t.trace_id,
        "span_id": t.span_id,
        "value": json_num(t.value),
        "ts": iso(t.ts),
        "note": t.note,
    }


def trace_from_dict(d: Mapping[str, Any]) -> TraceRef:
    """Return the trace reference ``trace_to_dict`` wrote."""
    return TraceRef(
        trace_id=str(d["trace_id"]),
        span_id=d.get("span_id"),
        value=d.get("value"),
        ts=parse_iso(d.get("ts")),
        note=d.get("note"),
    )


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """Return ``alert`` as a JSON-ready dict holding every field (``alert_from_dict`` reverses it)."""
    return {
        "rule": alert.rule,
        "group": alert.group,
        "labels": dict(alert.labels),
        "state": int(alert.state),
        "active_at": iso(alert.active_at),
        "fired_at": iso(alert.fired_at),
        "resolved_at": iso(alert.resolved_at),
        "last_eval": iso(alert.last_eval),
        "keep_firing_since": iso(alert.keep_firing_since),
        "value": json_num(alert.value),
        "expected": json_num(alert.expected),
        "lower": json_num(alert.lower),
        "upper": json_num(alert.upper),
        "score": json_num(alert.score),
        "surprise": json_num(alert.surprise),
        "annotations": dict(alert.annotations),
        "traces": [trace_to_dict(t) for t in alert.traces],
    }


def alert_from_dict(d: Mapping[str, Any]) -> Alert:
    """Return the alert ``alert_to_dict`` wrote (missing optional fields take their defaults)."""
    return Alert(
        rule=str(d["rule"]),
        group=str(d["group"]),
        labels=Labels(d.get("labels") or {}),
        state=AlertState(int(d["state"])),
        active_at=parse_iso(d.get("active_at")),
        fired_at=parse_iso(d.get("fired_at")),
        resolved_at=parse_iso(d.get("resolved_at")),
        last_eval=parse_iso(d.get("last_eval")),
        keep_firing_since=parse_iso(d.get("keep_firing_since")),
        value=num_or_nan(d.get("value")),
        expected=num_or_nan(d.get("expected")),
        lower=num_or_nan(d.get("lower")),
        upper=num_or_nan(d.get("upper")),
        score=float(d["score"]) if d.get("score") is not None else 0.0,
        surprise=float(d["surprise"]) if d.get("surprise") is not None else 0.0,
        annotations={str(k): str(v) for k, v in (d.get("annotations") or {}).items()},
        traces=tuple(trace_from_dict(t) for t in d.get("traces") or []),
    )


class NotificationKind(enum.StrEnum):
    """Whether a notification announces a firing or a resolved alert."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class TraceLink:
    """One of an alert's top traces with its deep link (the configured ``trace_url`` filled in)."""

    trace: TraceRef
    url: str


@dataclass(frozen=True, slots=True)
class Listed:
    """One alert as a notification lists it: whether it fires, its rule's page, its top traces' links."""

    alert: Alert
    kind: NotificationKind
    rule_url: str = ""
    traces: tuple[TraceLink, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupRef:
    """The group a grouped receiver's message is about: its notification-log key and its labels."""

    key: str
    labels: Labels


@dataclass(frozen=True, slots=True)
class Notice:
    """What a notice about watcher itself (a message given up, a receiver failing) adds to its alert.

    Its structured form differs from an alert's: ``value`` stands for what the notice counts (the
    failed attempts of a failing receiver, or None), ``score`` is null, there is no ``surprise``,
    and a dead-letter notice names the outbox row given up (``dead_outbox_id``).
    """

    value: float | None = None
    dead_outbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A rendered message for one receiver about one alert or one group of alerts, ready for the outbox.

    Everything a receiver needs is typed here: ``alert`` is the lead alert (the first listed),
    ``listed`` every alert the message is about with its rule page and trace links (one for an
    ungrouped receiver), ``group`` the group of a grouped receiver's message, ``notification_id`` the
    ID fixed when the outbox took the message (empty before).
    """

    receiver: str
    kind: NotificationKind
    dedup_key: str
    """Stable across re-sends of the same alert episode (PagerDuty dedup_key, webhook ID)."""
    title: str
    body: str
    alert: Alert
    links: tuple[tuple[str, str], ...] = ()
    """(text, url) pairs: trace deep links first, then the rule on the status page."""
    listed: tuple[Listed, ...] = ()
    """The alerts the message lists, firing then resolved, the lead (``alert``) first; empty: just it."""
    group: GroupRef | None = None
    notification_id: str = ""
    notice: Notice | None = None

    @property
    def lead(self) -> Listed:
        """Return the lead alert as the message lists it (without links when nothing is listed)."""
        return self.listed[0] if self.listed else Listed(self.alert, self.kind)

    @property
    def items(self) -> tuple[Listed, ...]:
        """Return every alert the message lists (the lead alone when ``listed`` is empty)."""
        return self.listed or (self.lead,)

    @property
    def rule_url(self) -> str:
        """Return the lead alert's rule page on the status page ("" without one)."""
        return self.lead.rule_url

    @property
    def message_id(self) -> str:
        """Return the ID a consumer de-duplicates on: ``notification_id``, else the dedup key."""
        return self.notification_id or self.dedup_key
