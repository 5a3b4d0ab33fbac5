"""The rule-file format as frozen pydantic models (a superset of Prometheus alerting rules).

This module owns the shape and the per-field validation of rule files. It does not own reading
YAML or mapping errors to ``file:line:col`` (``loader``), nor evaluating rules (``engine``).

A plain Prometheus alerting rule (``alert``, ``expr`` with a comparison, ``for``, ``labels``,
``annotations``) is a valid watcher rule: with no ``detector`` every series the query returns is
an active alert, as in Prometheus. watcher adds ``source`` (``prometheus``, ``calls``, ``scores``),
a ``query`` block for the SQL sources, a ``detector`` block, ``traces``, ``receivers``,
``min_value``/``max_value`` floors and a ``no_data`` policy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    model_validator,
)

from ..core import DURATION_PATTERN as DURATION_PATTERN
from ..core import MAX_DURATION as MAX_DURATION
from ..core import Duration as Duration
from ..core import format_duration as format_duration
from ..core import parse_duration as parse_duration

Direction = Literal["up", "down", "both"]
MAX_NAME = 200
"""Longest alert, group, label and receiver name."""
MAX_LABEL_VALUE = 1024
MAX_TEMPLATE = 16_384
MAX_EXPR = 65_536
LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=MAX_NAME)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\0); remove it (PostgreSQL cannot store it)")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string without NUL characters."""
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE), AfterValidator(_no_nul)]


def _clean_filters(value: dict[str, str | list[str]], info: ValidationInfo) -> dict[str, str | list[str]]:
    for name, v in value.items():
        key = f"query.{info.field_name}.{name}"
        for item in [v] if isinstance(v, str) else v:
            if "\x00" in item:
                raise ValueError(f"{key}: a value contains a NUL character (\\0); remove it")
            if len(item) > MAX_LABEL_VALUE:
                raise ValueError(f"{key}: a value is longer than {MAX_LABEL_VALUE} characters")
    return value


Filters = Annotated[dict[str, str | list[str]], AfterValidator(_clean_filters)]


class _Frozen(BaseModel):
    # NaN and infinities are refused everywhere: `above: .nan` could never fire.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


# --- detectors -------------------------------------------------------------------------------


class ThresholdDetector(_Frozen):
    """Static bounds: anomalous when the value is above ``above`` or below ``below``."""

    kind: Literal["threshold"]
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _needs_a_bound(self) -> ThresholdDetector:
        if self.above is None and self.below is None:
            raise ValueError("a threshold detector needs `above`, `below` or both")
        if self.above is not None and self.below is not None and self.below > self.above:
            raise ValueError("`below` is greater than `above`: no value could ever be normal")
        return self


_SENSITIVITY = "band half-width in (robust) standard deviations of the detector's noise model"
_SUSTAINED = (
    "opt-in: the mean of the last 8 residuals alone can flag (a modest lasting shift pages; one outlier "
    "cannot); default: that mean flags only with the point itself beyond the same critical value"
)
_MIN_SPREAD = "smallest band half-width per sigma in the series' unit, so a flat series is not brittle"


class RollingDetector(_Frozen):
    """Robust median/MAD baseline over a trailing window."""

    kind: Literal["rolling"]
    window: Duration = timedelta(days=7)
    sensitivity: float = Field(4.0, gt=0, le=100, description="band half-width in robust standard deviations")
    direction: Direction = "both"
    min_history: Duration | None = Field(
        None, description="history needed before the first verdict; default: the window, at most 1d"
    )
    min_points: int = Field(
        30, ge=3, le=1_000_000, description="points needed in the window before the first verdict"
    )
    min_spread: float = Field(
        0.0, ge=0, description="smallest band half-width in the series' unit, so a flat series is not brittle"
    )
    sustained: bool = Field(False, description=_SUSTAINED)

    @model_validator(mode="after")
    def _history_fits_window(self) -> RollingDetector:
        if self.min_history is not None and self.min_history > self.window:
            raise ValueError("`min_history` is longer than `window`: it could never be reached")
        return self


class EwmaDetector(_Frozen):
    """Fast adaptive baseline: robust (Huber-clipped) exponentially weighted mean and spread."""

    kind: Literal["ewma"]
    halflife: Duration = Field(timedelta(hours=1), description="half-life of the level")
    scale_halflife: Duration = Field(timedelta(days=1), description="half-life of the spread")
    sensitivity: float = Field(4.0, gt=0, le=100, description=_SENSITIVITY)
    direction: Direction = "both"
    min_points: int = Field(30, ge=3, le=1_000_000, description="points needed before the first verdict")
    min_spread: float = Field(0.0, ge=0, description=_MIN_SPREAD)
    shift_after: Duration | None = Field(
        timedelta(hours=1), description="adopt a new level after this long outside the band; null: never"
    )
    sustained: bool = Field(False, description=_SUSTAINED)

    @model_validator(mode="after")
    def _positive(self) -> EwmaDetector:
        if self.halflife <= timedelta(0) or self.scale_halflife <= timedelta(0):
            raise ValueError("`halflife` and `scale_halflife` must be positive")
        return self


class SeasonalDetector(_Frozen):
    """Daily/weekly profile fitted rarely on downsampled history; level and spread tracked per point."""

    kind: Literal["seasonal"]
    seasons: list[Duration] | None = Field(
        None, description="season lengths, e.g. [1d, 1w]; null: detect 1d and 1w from the data"
    )
    history: Duration = Field(timedelta(days=21), description="downsampled history kept for fitting")
    refit: Duration = Field(timedelta(hours=6), description="refit the profile this often (data time)")
    resolution: Duration | None = Field(
        None, description="bucket width of the downsampled history; default: shortest season / 96"
    )
    min_history: Duration | None = Field(
        None, description="history before the first verdict; default: 2 x the shortest season (2d: detected)"
    )
    halflife: Duration = Field(timedelta(hours=2), description="half-life of the deseasonalised level")
    scale_halflife: Duration = Field(timedelta(days=3), description="half-life of each hour's spread")
    sensitivity: float = Field(4.0, gt=0, le=100, description=_SENSITIVITY)
    direction: Direction = "both"
    min_spread: float = Field(0.0, ge=0, description=_MIN_SPREAD)
    shift_after: Duration | None = Field(
        timedelta(hours=1), description="adopt a new level after this long outside the band; null: never"
    )
    sustained: bool = Field(False, description=_SUSTAINED)

    @model_validator(mode="after")
    def _consistent(self) -> SeasonalDetector:
        if self.seasons is not None:
            if not self.seasons or any(s <= timedelta(0) for s in self.seasons):
                raise ValueError("`seasons` needs at least one positive duration (or null to detect)")
            if min(self.seasons) * 2 > self.history:
                raise ValueError("`history` must hold at least two cycles of the shortest season")
        for name in ("history", "refit", "halflife", "scale_halflife"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"`{name}` must be positive")
        if self.resolution is not None and self.resolution <= timedelta(0):
            raise ValueError("`resolution` must be positive")
        if self.min_history is not None and self.min_history > self.history:
            raise ValueError("`min_history` is longer than `history`: it could never be reached")
        return self


class RateDetector(_Frozen):
    """Proportions (refusal, error, thumbs-down rate) judged on successes/trials, beta-binomial."""

    kind: Literal["rate"]
    halflife: Duration = Field(timedelta(days=1), description="half-life of the baseline rate")
    sensitivity: float = Field(4.0, gt=0, le=100, description="one-sided tail probability as a normal z")
    direction: Direction = "up"
    min_count: float = Field(
        10.0, ge=1, le=1e12, description="trials a point needs before it can be anomalous"
    )
    min_delta: float = Field(0.01, ge=0, le=1, description="smallest absolute change of the rate that pages")
    min_trials: float = Field(
        200.0, ge=1, le=1e12, description="baseline trials needed before the first verdict"
    )
    sustained: bool = Field(
        False,
        description=(
            "opt-in: the last 16 points are also pooled and tested (each clipped at 3 sd), so a rise "
            "too small for any one point's trials pages once enough trials add up"
        ),
    )


class AutoDetector(_Frozen):
    """The untuned default: rate for proportions with counts, else seasonal with detected seasons."""

    kind: Literal["auto"]
    sensitivity: float = Field(4.0, gt=0, le=100, description=_SENSITIVITY)
    direction: Direction = "both"
    min_spread: float = Field(0.0, ge=0, description=_MIN_SPREAD)
    history: Duration = Field(timedelta(days=21), description="history kept for the seasonal fit")
    sustained: bool = Field(False, description=_SUSTAINED)

    @model_validator(mode="after")
    def _two_days(self) -> AutoDetector:
        if self.history < timedelta(days=2):
            raise ValueError("`history` must be at least 2d: a daily season needs two cycles to be detected")
        return self


class BurnWindow(_Frozen):
    """One multi-window burn-rate condition: both windows spend ``burn`` times the even rate or more."""

    long: Duration = Field(description="the window the burn rate is measured over, e.g. 1h")
    short: Duration = Field(description="the window that stops the alert once spending stops, e.g. 5m")
    burn: float = Field(gt=0, le=10_000, description="multiple of the period's even rate, e.g. 14.4")

    @model_validator(mode="after")
    def _ordered(self) -> BurnWindow:
        if self.short <= timedelta(0) or self.long <= timedelta(0):
            raise ValueError("burn windows must be positive")
        if self.short > self.long:
            raise ValueError("`short` is longer than `long`; the short window is the quick reset")
        return self


_DEFAULT_BURN = (
    BurnWindow(long=timedelta(hours=1), short=timedelta(minutes=5), burn=14.4),
    BurnWindow(long=timedelta(hours=6), short=timedelta(minutes=30), burn=6.0),
)


class BudgetDetector(_Frozen):
    """A spend budget per period: multi-window burn-rate alerts and an exhaustion forecast.

    The query's points are the spend of each step (``agg: sum``, ``window`` equal to the step), so
    the detector adds up the period's spend (calendar day or month, UTC) and the spend of each burn
    window. ``amounts`` gives some series their own budget, keyed by the value of the query's first
    ``by`` label; every other series (and the ``(other)`` series of a top-N guard) has ``amount``.
    """

    kind: Literal["budget"]
    period: Literal["day", "month"] = "month"
    amount: float = Field(gt=0, le=1e15, description="budget per period, in the summed field's unit")
    amounts: dict[
        Annotated[str, Field(max_length=MAX_LABEL_VALUE)], Annotated[float, Field(gt=0, le=1e15)]
    ] = Field(default_factory=dict, description="per-series budgets, keyed by the first `by` label's value")
    windows: list[BurnWindow] = Field(
        default_factory=lambda: list(_DEFAULT_BURN),
        min_length=1,
        max_length=8,
        description="burn-rate conditions; default: 1h & 5m > 14.4x, 6h & 30m > 6x (as the Prometheus pack)",
    )
    require: Literal["any", "all"] = Field(
        "any", description="`any`: one condition firing pages (SRE workbook); `all`: every one must"
    )
    unit: str = Field("$", max_length=8, description="currency sign in the forecast text (`$`, `€`, ``)")

    @model_validator(mode="after")
    def _fits_period(self) -> BudgetDetector:
        longest = timedelta(days=1) if self.period == "day" else timedelta(days=28)
        if any(w.long > longest for w in self.windows):
            raise ValueError(f"a burn window is longer than the shortest {self.period}")
        return self

    def amount_for(self, key: str | None) -> float:
        """Return the budget of the series whose first ``by`` label is ``key``."""
        return self.amounts.get(key, self.amount) if key is not None else self.amount


class DriftDetector(_Frozen):
    """Distribution shift: a two-sample Kolmogorov–Smirnov test, recent window against a reference."""

    kind: Literal["drift"]
    reference: Duration = Field(timedelta(days=7), description="reference window, just before `recent`")
    recent: Duration = Field(timedelta(hours=2), description="recent window, compared with the reference")
    sensitivity: float = Field(
        4.0, gt=0, le=100, description="flag when the test's p-value is below the normal tail of this z"
    )
    direction: Direction = Field("down", description="down: recent values smaller; up: larger; both")
    min_points: int = Field(
        12, ge=3, le=1_000_000, description="points each window needs before the first verdict"
    )
    min_shift: float = Field(
        0.0, ge=0, description="smallest change of the median that flags, in the series' unit"
    )
    below: float | None = Field(
        None, description="also report the share of points below this value, before and after"
    )

    @model_validator(mode="after")
    def _windows(self) -> DriftDetector:
        if self.reference <= timedelta(0) or self.recent <= timedelta(0):
            raise ValueError("`reference` and `recent` must be positive")
        return self


DetectorSpec = Annotated[
    ThresholdDetector
    | RollingDetector
    | EwmaDetector
    | SeasonalDetector
    | RateDetector
    | AutoDetector
    | BudgetDetector
    | DriftDetector,
    Field(discriminator="kind"),
]
DETECTOR_KINDS = ("threshold", "rolling", "ewma", "seasonal", "rate", "auto", "budget", "drift")


# --- queries for the SQL sources ---------------------------------------------------------------

CallField = Literal[
    "cost_usd",
    "ttft_s",
    "duration_s",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
]
CallLabel = Literal[
    "provider",
    "model",
    "operation",
    "tenant",
    "feature",
    "prompt_version",
    "outcome",
    "error_type",
    "finish_reason",
]
ScoreLabel = Literal["name", "label", "source", "evaluator", "tenant", "feature", "model"]
GUARDED_LABELS = ("user_id",)
"""Calls columns of unbounded cardinality: ``by`` takes them only behind a top-N guard (``top``)."""
OTHER = "(other)"
"""The label value of the series the top-N guard folds every smaller group into."""
ScoreField = Literal["lag_s"]
"""What a scores rule may aggregate instead of the score value: ``lag_s``, the seconds from the
newest call of the scored trace to the score (how late the judge is)."""
ALL_SCORES = "*"
"""``query.score: "*"``: every score name (e.g. a judge error rate over all of a judge's scores)."""
Agg = Literal["count", "sum", "mean", "min", "max", "quantile", "ratio"]


class TopN(_Frozen):
    """The cardinality guard of a high-cardinality ``by`` label (``user_id``).

    The ``n`` biggest values (by the summed field, else by rows) over ``over`` before a fetch's last
    point get their own series; the rows of every other value (and of none) fold into one
    ``(other)`` series. The ranking runs in the database, once per fetch.
    """

    n: int = Field(ge=1, le=1000, description="values with their own series")
    over: Duration = Field(timedelta(days=1), description="ranking window before the fetch's last point")

    @model_validator(mode="after")
    def _positive(self) -> TopN:
        if self.over <= timedelta(0):
            raise ValueError("`top.over` must be positive")
        return self


class SqlQuery(_Frozen):
    """An aggregate over the ``calls`` or ``scores`` table, evaluated every ``step`` over ``window``.

    Each point at time t aggregates the rows with ``t - window < ts <= t``:
    ``count`` rows, ``sum``/``mean``/``min``/``max``/``quantile`` of ``field`` (calls) or of the
    score value (scores), or ``ratio`` = rows matching ``match`` / all rows (refusal rate, error
    rate, thumbs-down rate). ``per`` rescales sums and counts to a rate (``per: 1h`` → per hour).
    """

    agg: Agg
    field: CallField | ScoreField | None = None
    score: str | None = Field(
        None, min_length=1, description='score name (scores source only); "*": every score name'
    )
    missing_score: str | None = Field(
        None,
        min_length=1,
        description="ratio of calls: count the calls without a score of this name as matches (calls only)",
    )
    quantile: float | None = Field(None, gt=0, lt=1)
    where: Filters = Field(default_factory=dict, description="row filters, label → value(s)")
    match: Filters = Field(default_factory=dict, description="numerator filter for ratio")
    below: float | None = Field(None, description="ratio of scores: count values below this as matches")
    by: list[str] = Field(default_factory=list)
    window: Duration = timedelta(minutes=5)
    step: Duration | None = Field(None, description="spacing of points; default: the group interval")
    per: Duration | None = None
    min_count: int = Field(
        0, ge=0, le=2**31 - 1, description="points backed by fewer rows have no value (no verdict)"
    )
    top: TopN | None = Field(None, description="top-N guard for a high-cardinality `by` label (user_id)")

    @model_validator(mode="after")
    def _consistent(self) -> SqlQuery:
        if self.agg == "quantile" and self.quantile is None:
            raise ValueError("agg: quantile needs `quantile` (e.g. 0.95)")
        if self.agg != "quantile" and self.quantile is not None:
            raise ValueError("`quantile` is only used with agg: quantile")
        if self.agg == "ratio" and not self.match and self.below is None and self.missing_score is None:
            raise ValueError("agg: ratio needs `match` (e.g. {outcome: refused}), `below` or `missing_score`")
        if self.agg != "ratio" and (self.match or self.below is not None or self.missing_score is not None):
            raise ValueError("`match`, `below` and `missing_score` are only used with agg: ratio")
        if self.per is not None and self.agg not in ("sum", "count"):
            raise ValueError("`per` rescales sums and counts only")
        if self.window.total_seconds() <= 0:
            raise ValueError("`window` must be positive")
        if self.step is not None and self.step.total_seconds() <= 0:
            raise ValueError("`step` must be positive")
        return self


# --- traces ---------------------------------------------------------------------------------


class TracesSpec(_Frozen):
    """How to find the offending trace IDs of an alert."""

    from_: Literal["exemplars", "rows", "none"] = Field("rows", alias="from")
    metric: str | None = Field(None, description="exemplar metric (Prometheus source)")
    top: int = Field(5, ge=1, le=50)
    order: Literal["value_desc", "value_asc", "recent"] = "value_desc"


# --- rules and groups -------------------------------------------------------------------------


NO_TRACES = TracesSpec.model_validate({"from": "none"})
"""Traces off: what a tool that needs only values (a chart, a backtest) asks a source for."""


class Rule(_Frozen):
    """One alerting rule. See the module docstring for what watcher adds to Prometheus's format."""

    alert: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=MAX_NAME, description="alert name")
    source: Literal["prometheus", "calls", "scores"] = "prometheus"
    endpoint: str | None = Field(None, description="named Prometheus endpoint from the config")
    expr: Text | None = Field(None, min_length=1, max_length=MAX_EXPR)
    query: SqlQuery | None = None
    detector: DetectorSpec | None = None
    min_value: float | None = Field(None, description="never alert on a value below this")
    max_value: float | None = Field(None, description="never alert on a value above this")
    for_: Duration = Field(timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    lookback: Duration | None = Field(None, description="history fetched at start-up; default from detector")
    no_data: Literal["ok", "keep_state", "alert"] = "keep_state"
    labels: dict[LabelName, LabelValue] = Field(default_factory=dict)
    annotations: dict[LabelName, Annotated[Text, Field(max_length=MAX_TEMPLATE)]] = Field(
        default_factory=dict
    )
    traces: TracesSpec | None = None
    receivers: list[Annotated[str, Field(max_length=MAX_NAME)]] = Field(default_factory=list)
    evaluation_delay: Duration = Field(
        timedelta(0),
        description="evaluate the window ending this long before each tick, so late rows (a slow "
        "judge's scores) are in it; calls and scores rules only",
    )

    @model_validator(mode="after")
    def _source_fits(self) -> Rule:
        if self.source == "prometheus":
            if self.expr is None:
                raise ValueError("a prometheus rule needs `expr` (a PromQL expression)")
            if self.query is not None:
                raise ValueError("`query` is for source: calls or scores; a prometheus rule uses `expr`")
            if self.traces is not None and self.traces.from_ == "rows":
                raise ValueError("traces from: rows needs source: calls or scores; use from: exemplars")
        else:
            if self.query is None:
                raise ValueError(f"source: {self.source} needs a `query` block (agg, window, by …)")
            if self.expr is not None:
                raise ValueError(f"`expr` is PromQL; source: {self.source} uses a `query` block")
            if self.detector is None:
                raise ValueError(f"source: {self.source} needs a `detector` (e.g. {{kind: rolling}})")
            if self.traces is not None and self.traces.from_ == "exemplars":
                raise ValueError("traces from: exemplars needs source: prometheus; use from: rows")
            columns = get_args(ScoreLabel) if self.source == "scores" else get_args(CallLabel)
            guarded = sorted(set(self.query.by) & set(GUARDED_LABELS)) if self.source == "calls" else []
            if guarded and self.query.top is None:
                raise ValueError(
                    f"by: {guarded[0]} makes one series per {guarded[0]} (unbounded); add the top-N guard "
                    "`top: {n: 20}` to the query: the 20 biggest get their own series, the rest one (other)"
                )
            if self.query.top is not None and not guarded:
                raise ValueError(
                    f"`top` guards a high-cardinality `by` label ({', '.join(GUARDED_LABELS)}) "
                    "of source: calls; drop it or add the label to `by`"
                )
            unknown = sorted({*self.query.by, *self.query.where, *self.query.match} - {*columns, *guarded})
            if unknown:
                raise ValueError(
                    f"unknown {self.source} column(s) {', '.join(unknown)} in by/where/match; "
                    f"known: {', '.join(columns)}"
                )
            if self.source == "scores":
                if self.query.score is None:
                    raise ValueError("source: scores needs `query.score` (the score name)")
                if self.query.field is not None and self.query.field not in get_args(ScoreField):
                    raise ValueError(
                        "`query.field` over scores can only be lag_s (the judge's delay); "
                        "scores otherwise aggregate their value"
                    )
                if self.query.missing_score is not None:
                    raise ValueError("`missing_score` is for source: calls (the share of calls not scored)")
            else:
                if self.query.score is not None:
                    raise ValueError("`query.score` is for source: scores")
                if self.query.field is not None and self.query.field in get_args(ScoreField):
                    raise ValueError(f"`field: {self.query.field}` is for source: scores")
                if self.query.agg in ("sum", "mean", "min", "max", "quantile") and self.query.field is None:
                    raise ValueError(f"agg: {self.query.agg} over calls needs `field` (e.g. cost_usd)")
                if self.query.below is not None:
                    raise ValueError("`below` is for ratios of scores")
        if isinstance(self.detector, BudgetDetector):
            self._budget_fits(self.detector)
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError("`min_value` is greater than `max_value`: the rule could never fire")
        if self.keep_firing_for.total_seconds() < 0 or self.for_.total_seconds() < 0:
            raise ValueError("durations cannot be negative")
        if self.evaluation_delay.total_seconds() < 0:
            raise ValueError("`evaluation_delay` cannot be negative")
        if self.evaluation_delay.total_seconds() > 0 and self.source == "prometheus":
            raise ValueError(
                "`evaluation_delay` is for source: calls or scores (PromQL has its own offset modifier)"
            )
        return self

    def _budget_fits(self, det: BudgetDetector) -> None:
        """Check that a budget rule's points are each step's spend (see ``BudgetDetector``)."""
        q = self.query
        if self.source != "calls" or q is None:
            raise ValueError(
                "a budget detector needs source: calls (e.g. query: {agg: sum, field: cost_usd})"
            )
        if q.agg not in ("sum", "count") or q.per is not None:
            raise ValueError(
                "a budget detector needs `agg: sum` (or count) without `per`: the spend of each step"
            )
        if q.step is not None and q.step != q.window:
            raise ValueError(
                "a budget detector needs `query.window` equal to `query.step`: each row counted once"
            )
        if 86_400 % q.window.total_seconds():
            raise ValueError("a budget detector needs a `query.window` that divides a day (e.g. 5m, 15m, 1h)")
        for w in det.windows:
            for d in (w.long, w.short):
                if d.total_seconds() % q.window.total_seconds():
                    raise ValueError(
                        f"burn window {format_duration(d)} is not a multiple of query.window "
                        f"{format_duration(q.window)}"
                    )


class Group(_Frozen):
    """A named set of rules evaluated together every ``interval``."""

    name: Text = Field(min_length=1, max_length=MAX_NAME)
    interval: Duration = timedelta(minutes=1)
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _positive_interval(self) -> Group:
        if self.interval.total_seconds() <= 0:
            raise ValueError("`interval` must be positive")
        for rule in self.rules:
            q = rule.query
            budget = isinstance(rule.detector, BudgetDetector)
            if budget and q is not None and q.step is None and q.window != self.interval:
                raise ValueError(
                    f"rule {rule.alert}: a budget detector needs `query.window` equal to the group "
                    f"interval ({format_duration(self.interval)}) or to `query.step`: each row counted once"
                )
        return self


class RuleFile(_Frozen):
    """The top level of a rule file."""

    groups: list[Group] = Field(default_factory=list)


def json_schema() -> dict[str, Any]:
    """Return the JSON schema of a rule file, for editors and CI linters."""
    schema = RuleFile.model_json_schema(by_alias=True)
    _durations_as_written(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "watcher rule file"
    return schema


def _durations_as_written(node: Any) -> None:
    """Rewrite ISO-8601 duration defaults (pydantic's rendering) into the rule-file notation."""
    if isinstance(node, dict):
        default = node.get("default")
        if isinstance(default, str) and default.startswith("P"):
            node["default"] = format_duration(TypeAdapter(timedelta).validate_python(default))
        for value in node.values():
            _durations_as_written(value)
    elif isinstance(node, list):
        for value in node:
            _durations_as_written(value)
