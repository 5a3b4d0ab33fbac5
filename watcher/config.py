"""Settings: a YAML file plus ``WATCHER_*`` environment overrides, validated once at start-up.

This module owns the shape of the configuration and its defaults. It does not own rule files
(``rules``), nor building anything from the settings.

Precedence, highest first: explicit keyword arguments, ``WATCHER_*`` environment variables
(nested with ``__``, e.g. ``WATCHER_STORE__URL``), the YAML file, the defaults. With no file and no
environment, watcher runs on SQLite at ``./watcher.db`` with the rules in ``./rules`` and prints
alerts on the console. Secrets (receiver URLs, tokens, database URLs) are ``SecretStr``: they are
masked in every repr, log line and error.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from .core import Duration
from .errors import ConfigError
from .links import HOOK_SPAN_ATTRIBUTES, check_search_url

DEFAULT_CONFIG_FILE = "watcher.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    """Where the SQL store lives."""

    url: SecretStr = Field(
        SecretStr("sqlite:///watcher.db"),
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user:pw@host/db",
    )
    busy_timeout_ms: int = Field(5000, ge=0)
    echo: bool = False
    down_after: Duration = Field(
        timedelta(minutes=2),
        description="unreachable this long → WatcherStoreDown, sent straight to the receivers (not queued)",
    )
    down_severity: str = Field("page", description="`severity` label of the WatcherStoreDown alert")
    partition: Literal["off", "day", "week", "month"] = Field(
        "off",
        description="PostgreSQL: partition calls and scores by time (retention drops whole partitions); "
        "an existing non-empty table is converted by `watcher db partition`",
    )
    partition_ahead: int = Field(3, ge=1, le=60, description="partitions kept ready past the current one")


PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PagerDutySeverity = Literal["critical", "error", "warning", "info"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _default_severity_map() -> dict[str, PagerDutySeverity]:
    return {"page": "critical", "ticket": "warning"}


def _every_day() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


_MATCHER_RE = r"^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*(.*?)\s*$"


def _check_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
    return value


def _check_matchers(matchers: list[str]) -> list[str]:
    import re

    from .regex import compile_linear

    for m in matchers:
        found = re.match(_MATCHER_RE, m, re.DOTALL)
        if found is None:
            raise ValueError(f"bad matcher {m!r}: write name=value, name!=value, name=~regex or name!~regex")
        op, value = found.groups()
        if op in ("=~", "!~"):
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            compile_linear(value)  # ValueError: a regex RE2 does not accept
    return matchers


class ReceiverSettings(_Section):
    """One named notification target."""

    type: Literal["console", "apprise", "pagerduty", "webhook", "alertmanager", "slack"] = "apprise"
    urls: list[SecretStr] = Field(default_factory=list, description="Apprise URLs (secret)")
    url: SecretStr | None = Field(
        None,
        description="webhook / Alertmanager URL, Slack incoming-webhook URL (or a proxy's), or the "
        "PagerDuty Events v2 URL override (secret)",
    )
    routing_key: SecretStr | None = Field(None, description="PagerDuty Events v2 integration key (secret)")
    secret: SecretStr | None = Field(None, description="webhook HMAC-SHA256 signing secret (secret)")
    severity_label: str = Field("severity", description="label PagerDuty severity is mapped from")
    severity_map: dict[str, PagerDutySeverity] = Field(
        default_factory=_default_severity_map,
        description="label value → PagerDuty severity (values already valid pass through)",
    )
    default_severity: PagerDutySeverity = "error"
    send_resolved: bool = True
    title_template: str | None = None
    body_template: str | None = None
    timeout_s: float = Field(10.0, gt=0)
    group_by: list[str] | None = Field(None, description="labels to group by; default notify.group_by")
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    attach_chart: bool = Field(True, description="attach the PNG chart where the channel supports files")

    @model_validator(mode="after")
    def _urls_for_apprise(self) -> ReceiverSettings:
        if self.type == "apprise" and not self.urls:
            raise ValueError("an apprise receiver needs at least one entry in `urls`")
        if self.type == "pagerduty" and self.routing_key is None:
            raise ValueError("a pagerduty receiver needs `routing_key`")
        if self.type in ("webhook", "alertmanager", "slack") and self.url is None:
            raise ValueError(f"a {self.type} receiver needs `url`")
        return self


class MaintenanceWindow(_Section):
    """A recurring weekly window in a time zone during which matching alerts are not notified."""

    name: str
    matchers: list[str] = Field(default_factory=list, description="e.g. tenant=acme, alertname=~Spend.*")
    time_zone: str = "UTC"
    weekdays: list[Weekday] = Field(default_factory=_every_day)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$", description="HH:MM; before start = next day")

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        return _check_matchers(value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value)


class InhibitRule(_Section):
    """While an alert matching ``source_matchers`` fires, mute alerts matching ``target_matchers``."""

    source_matchers: list[str]
    target_matchers: list[str]
    equal: list[str] = Field(default_factory=list, description="labels that must be equal in both")

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        return _check_matchers(value)


class HeartbeatSettings(_Section):
    """A dead-man's switch: ping ``url`` every ``interval`` so an outside system notices silence."""

    url: SecretStr
    interval: Duration = timedelta(minutes=5)
    method: Literal["GET", "POST"] = "POST"
    timeout_s: float = Field(10.0, gt=0)


class CostDigestSettings(_Section):
    """``notify.cost_digest``: a daily message per receiver with spend vs budget, top models and forecasts.

    The budgets are those of the loaded ``budget`` rules (docs/budgets.md); the digest goes through
    the outbox like an alert (retried in order, dead-lettered after ``notify.max_age``).
    """

    receivers: list[str] = Field(min_length=1, description="receivers that get the digest")
    at: str = Field("08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time, daily")
    time_zone: str = "UTC"
    window: Duration = Field(timedelta(days=1), description="span of the spend total and top models")
    top_models: int = Field(5, ge=0, le=50, description="models listed by spend over `window`")
    top_keys: int = Field(10, ge=1, le=200, description="budget lines per budget rule, biggest share first")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value)

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("`window` must be positive")
        return value


class RouteRule(_Section):
    """Send alerts whose labels match to ``receivers``."""

    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    receivers: list[str]
    continue_: bool = Field(False, alias="continue")
    group_by: list[str] | None = Field(
        None, description="overrides the receiver's / notify.group_by for alerts this route sends"
    )
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None

    @field_validator("match_re")
    @classmethod
    def _linear(cls, value: dict[str, str]) -> dict[str, str]:
        from .regex import compile_linear

        for pattern in value.values():
            compile_linear(pattern)  # ValueError → a config error naming the pattern
        return value


class RouteSettings(_Section):
    """Label-based routing for rules that name no receivers."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receivers: list[str] = Field(default_factory=lambda: ["console"], description="default receivers")
    routes: list[RouteRule] = Field(default_factory=list)


class NotifySettings(_Section):
    """Timing of notifications and of the outbox."""

    repeat_interval: Duration = timedelta(hours=4)
    resolved_retention: Duration = timedelta(minutes=15)
    retry_initial: Duration = timedelta(seconds=5)
    retry_max: Duration = timedelta(minutes=5)
    max_age: Duration = timedelta(hours=24)
    flush_interval: Duration = timedelta(seconds=5)
    top_traces: int = Field(5, ge=0, le=50)
    group_by: list[str] | None = Field(None, description="labels to group by; default: every label")
    group_wait: Duration = timedelta(0)
    group_interval: Duration = timedelta(0)
    delivery_failure_receivers: list[str] = Field(
        default_factory=list,
        description="receivers told when a notification is dead-lettered or a receiver keeps failing",
    )
    delivery_failure_after: int = Field(
        3, ge=1, description="consecutive failed attempts after which a receiver counts as failing"
    )
    delivery_failure_for: Duration = Field(
        timedelta(minutes=10), description="…or failing for this long (since its first failed attempt)"
    )
    max_silence: Duration = Field(
        timedelta(days=30), description="longest silence `watcher silence add` and the API accept"
    )
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    heartbeat: HeartbeatSettings | None = None
    cost_digest: CostDigestSettings | None = None
    delivery_workers: int = Field(
        8, ge=1, le=64, description="outbox sends at once (other alerts or receivers; one alert's in order)"
    )
    delivery_per_receiver: int = Field(
        4, ge=1, le=64, description="outbox sends at once to one receiver (a slow one leaves the rest free)"
    )


class ServerSettings(_Section):
    """The daemon's HTTP server."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    ingest_token: SecretStr | None = Field(
        None,
        description="bearer token for POST /api/v1/calls|scores|feedback (scope ingest); "
        "unset: the ingest API answers 403 (secret)",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="bearer token for writes: POST/DELETE /api/v1/silences (scope admin, also reads); "
        "unset: those writes answer 403 (secret)",
    )
    read_token: SecretStr | None = Field(
        None,
        description="when set, required (bearer, or basic auth with the token as password) for the status "
        "page, its charts and GET /api/v1/alerts|rules|silences (scope read); unset: reads are open (secret)",
    )
    payload_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="name → bearer token allowed to read captured prompts/responses (scope payload_read); "
        "every read is audited under the name; none: payloads are never served (secret)",
    )
    slack_signing_secret: SecretStr | None = Field(
        None,
        description="your Slack app's signing secret: Slack messages get Real incident / False alarm "
        "buttons and POST /api/v1/slack/interactions records the clicks (requests signed with it); "
        "unset: no buttons, the route answers 403 (secret)",
    )
    chart_url_ttl: Duration = Field(
        timedelta(days=7),
        gt=timedelta(0),
        description="with read_token set, chart links in Slack messages carry a signature (a key derived "
        "from read_token) valid this long after the evaluation the message is about; expired: 403",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest ingest request body (413 above)")
    max_batch: int = Field(1000, ge=1, le=100_000, description="most items in one ingest request (413 above)")
    ingest_max_future: Duration = Field(
        timedelta(minutes=10),
        description="ingest refuses (422) a `ts` further ahead of the server clock than this; "
        "older than the table's retention is refused too",
    )

    @field_validator("payload_tokens")
    @classmethod
    def _token_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        import re

        for name, token in value.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
                raise ValueError(
                    f"payload token name {name[:70]!r}: use 1-64 letters, digits, _ . @ - "
                    "(the name is the audit log's who)"
                )
            if len(token.get_secret_value()) < 16:
                raise ValueError(f"payload token {name!r} is shorter than 16 characters")
        return value


class BasicAuth(_Section):
    """HTTP basic authentication for a Prometheus endpoint."""

    username: str = Field(min_length=1)
    password: SecretStr


class PrometheusEndpoint(_Section):
    """One PromQL API (Prometheus, Thanos, Mimir, VictoriaMetrics) that rules can query by name."""

    url: str = Field(description="base URL of the PromQL API, e.g. http://prometheus:9090 (no /api/v1)")
    bearer_token: SecretStr | None = Field(None, description="sent as `Authorization: Bearer …` (secret)")
    basic_auth: BasicAuth | None = None
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra HTTP headers, e.g. X-Scope-OrgID for Mimir (values secret)"
    )
    tls_verify: bool | str = Field(True, description="verify TLS certificates; a string is a CA bundle path")
    timeout_s: float = Field(10.0, gt=0, description="per-request timeout")
    retries: int = Field(0, ge=0, le=10, description="retries on connection errors and 502/503/504")
    exemplars: bool = Field(True, description="query /api/v1/query_exemplars for trace IDs")
    retry_backoff_max: Duration = Field(
        timedelta(seconds=30), description="longest wait between calls while the endpoint is unavailable"
    )
    down_after: Duration = Field(
        timedelta(minutes=5), description="unavailable this long → one WatcherSourceDown alert"
    )
    down_severity: str = Field("page", description="`severity` label of the WatcherSourceDown alert")

    @field_validator("tls_verify", mode="before")
    @classmethod
    def _bool_words(cls, value: Any) -> Any:
        # From the environment every value is a string; "false" must not become a CA path.
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        return value

    @model_validator(mode="after")
    def _valid(self) -> PrometheusEndpoint:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("`url` must start with http:// or https://")
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("set `bearer_token` or `basic_auth`, not both")
        return self


class RetentionSettings(_Section):
    """How long rows are kept (``0`` keeps them forever); enforced in batches by the daemon."""

    payloads: Duration = Field(
        timedelta(days=7), description="redacted prompts/responses (short; apart from calls and scores)"
    )
    payload_access: Duration = Field(
        timedelta(days=400), description="the audit log of payload reads (who, when, which trace)"
    )
    calls: Duration = timedelta(days=90)
    scores: Duration = timedelta(days=180)
    notification_log: Duration = Field(timedelta(days=90), description="dedup entries not touched since")
    outbox_sent: Duration = Field(timedelta(days=14), description="delivered notifications")
    outbox_dead: Duration = Field(timedelta(days=30), description="dead letters")
    eval_runs: Duration = Field(timedelta(days=30), description="health rows of rules not evaluated since")
    silences: Duration = Field(timedelta(days=30), description="silences expired this long ago")
    alert_transitions: Duration = Field(
        timedelta(days=90), description="alert state history (the alert page and its API)"
    )
    interval: Duration = Field(timedelta(hours=1), description="how often the retention job runs")
    batch_size: int = Field(5000, ge=100, le=1_000_000, description="rows deleted per transaction")


class ClusterSettings(_Section):
    """Several replicas sharing rule groups through PostgreSQL (see docs/scaling.md)."""

    enabled: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on when the store is PostgreSQL; SQLite always runs one replica"
    )
    replica_id: str | None = Field(
        None,
        max_length=128,
        description="default: the id kept in state_dir/watcher-replica-id (created once: hostname-random)",
    )
    state_dir: Path | None = Field(
        None, description="where the persisted replica id lives; default the working directory"
    )
    shards: int = Field(
        1,
        ge=1,
        le=4096,
        description="series shards per rule group: each group's series are split by a hash of their "
        "labels into this many units, leased separately (1: whole groups)",
    )
    catch_up: Duration | None = Field(
        None,
        description="a group's new owner evaluates the ticks missed up to this far back; default "
        "2 × lease_ttl; 0s disables",
    )
    lease_ttl: Duration = Field(timedelta(seconds=15), description="a dead replica's groups move after this")
    heartbeat_interval: Duration | None = Field(None, description="default: lease_ttl / 3")
    safety_margin: Duration | None = Field(
        None, description="stop this long before a lease runs out by the local clock; default lease_ttl / 5"
    )
    outbox_claim: Duration | None = Field(
        None, description="how long a sender owns claimed outbox rows; default max(2 × lease_ttl, 30s)"
    )
    evaluation_log_retention: Duration = Field(
        timedelta(days=1), description="how long the per-tick rows of cluster_evaluations are kept"
    )

    @model_validator(mode="after")
    def _sane(self) -> ClusterSettings:
        if self.lease_ttl < timedelta(seconds=1):
            raise ValueError("lease_ttl must be at least 1s")
        if self.heartbeat_interval is not None and self.heartbeat_interval * 2 > self.lease_ttl:
            raise ValueError("heartbeat_interval must be at most half of lease_ttl")
        if self.safety_margin is not None and self.safety_margin * 2 > self.lease_ttl:
            raise ValueError("safety_margin must be at most half of lease_ttl")
        return self


class Settings(BaseSettings):
    """Every setting of watcher. See the module docstring for precedence and defaults."""

    model_config = SettingsConfigDict(
        env_prefix="WATCHER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )
    yaml_path: ClassVar[Path | None] = None

    store: StoreSettings = StoreSettings()
    rules: list[Path] = Field(default_factory=lambda: [Path("rules")], description="rule files or folders")
    rules_allow_empty: bool = Field(
        False,
        description="let a reload drop a rule file or leave one without rules (every alert of its groups "
        "then vanishes without a resolve); by default such a reload fails and the running rules stay",
    )
    trace_url: str = Field(
        "http://localhost:16686/trace/{trace_id}",
        description="deep link to one trace; {trace_id} is replaced (Jaeger default, see docs)",
    )
    trace_search_url: str | None = Field(
        None,
        description="trace UI search over a time range, linked when an alert has no exemplar trace IDs: "
        "{start}/{end} (also _ms, _us, _iso) and {labels}/{labels_json} are filled in (docs/prometheus.md)",
    )
    trace_search_labels: dict[str, str] = Field(
        default_factory=lambda: dict(HOOK_SPAN_ATTRIBUTES),
        description="metric label name → the trace UI's attribute name in {labels}/{labels_json} "
        '("" leaves the label out; {} keeps the metric names); default: the names watcher\'s hooks use',
    )
    external_url: str = Field("http://localhost:9464", description="where the status page is reachable")
    public_url: str | None = Field(
        None,
        description="the status page's address as chat services see it (https://…): Slack messages show "
        "the alert's chart from {public_url}/chart/alert/{fingerprint}.png; unset: no image (Slack "
        "refuses a whole message whose image it cannot fetch)",
    )
    receivers: dict[str, ReceiverSettings] = Field(
        default_factory=lambda: {"console": ReceiverSettings(type="console")}
    )
    route: RouteSettings = RouteSettings()
    notify: NotifySettings = NotifySettings()
    server: ServerSettings = ServerSettings()
    prometheus: dict[str, PrometheusEndpoint] = Field(
        default_factory=dict, description="named PromQL endpoints; a rule picks one with `endpoint`"
    )
    default_prometheus: str | None = Field(
        None, description="endpoint for rules that name none; default: the only one, if exactly one"
    )
    checkpoint_interval: Duration | None = Field(
        timedelta(minutes=10),
        description="write each rule's detector state to the store this often (data time), so a restart "
        "or a takeover resumes from it instead of replaying history; null: never",
    )
    max_workers: int = Field(4, ge=1, le=64)
    stop_timeout: Duration = Field(
        timedelta(seconds=20),
        description="SIGTERM: in-flight work and the outbox drain end within this; keep it below systemd's "
        "TimeoutStopSec (30s in the shipped unit); what is not sent stays queued for the next start",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: readable on a terminal, JSON lines otherwise (journald, containers)"
    )
    retention: RetentionSettings = RetentionSettings()
    cluster: ClusterSettings = ClusterSettings()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or any(c in value for c in " <>|\"'`"):
            raise ValueError("public_url must be an absolute http(s) URL, e.g. https://watcher.example.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _receivers_exist(self) -> Settings:
        known = set(self.receivers)
        named = set(self.route.receivers) | {r for route in self.route.routes for r in route.receivers}
        unknown = sorted(named - known)
        if unknown:
            raise ValueError(
                f"route names unknown receiver(s) {', '.join(unknown)}; defined: {', '.join(sorted(known))}"
            )
        failure = sorted(set(self.notify.delivery_failure_receivers) - known)
        if failure:
            names = ", ".join(failure)
            raise ValueError(f"notify.delivery_failure_receivers names unknown receiver(s) {names}")
        digest = self.notify.cost_digest
        stray = sorted(set(digest.receivers) - known) if digest is not None else []
        if stray:
            raise ValueError(f"notify.cost_digest.receivers names unknown receiver(s) {', '.join(stray)}")
        if "{trace_id}" not in self.trace_url:
            raise ValueError("trace_url must contain {trace_id}")
        return self

    @field_validator("trace_search_url")
    @classmethod
    def _search_placeholders(cls, value: str | None) -> str | None:
        return None if value is None else check_search_url(value)

    @model_validator(mode="after")
    def _default_prometheus_exists(self) -> Settings:
        if self.default_prometheus is not None and self.default_prometheus not in self.prometheus:
            known = ", ".join(sorted(self.prometheus)) or "none"
            raise ValueError(
                f"default_prometheus names unknown endpoint {self.default_prometheus!r}; defined: {known}"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cls.yaml_path))
        return tuple(sources)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``./watcher.yaml`` if present) and the environment.

    Raises ConfigError with one problem per line, each at ``file:line:col`` when it comes from the
    file, worded like rule-file problems ("did you mean", what to write); secrets are never echoed.
    """
    yaml_path: Path | None = None
    if path is not None:
        yaml_path = Path(path)
        if not yaml_path.is_file():
            raise ConfigError(f"{yaml_path}: config file not found")
    elif Path(DEFAULT_CONFIG_FILE).is_file():
        yaml_path = Path(DEFAULT_CONFIG_FILE)
    located: Any = None
    if yaml_path is not None:
        located = _read_config_yaml(yaml_path)
    bound: type[Settings] = type("Settings", (Settings,), {"yaml_path": yaml_path, "__module__": __name__})
    try:
        return bound(**overrides)
    except ValidationError as exc:
        raise ConfigError(_config_problems(exc, yaml_path, located)) from None


def _read_config_yaml(yaml_path: Path) -> Any:
    """Parse the config file with positions; raise ConfigError at file:line:col for bad YAML."""
    from .rules.loader import TOO_DEEP, parse_yaml, yaml_problem
    from .rules.problems import Locator

    name = str(yaml_path)
    try:
        text = yaml_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}:1:1: the file is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the file: {exc.strerror or exc}") from None
    try:
        root, data, duplicates = parse_yaml(text)
    except yaml.YAMLError as exc:
        problem = str(yaml_problem(name, text, exc))
        raise ConfigError(problem.replace("malformed YAML", "invalid YAML")) from None
    except RecursionError:
        raise ConfigError(f"{name}:1:1: {TOO_DEEP.replace('malformed', 'invalid')}") from None
    if root is None:
        return None
    if not isinstance(data, dict):
        line, col = root.start_mark.line + 1, root.start_mark.column + 1
        raise ConfigError(f"{name}:{line}:{col}: the config must be a mapping of settings (key: value)")
    if duplicates:
        lines = [f"{name}:{k.start_mark.line + 1}:{k.start_mark.column + 1}: {m}" for _, k, m in duplicates]
        raise ConfigError("\n".join(lines))
    return Locator(name, root, data, Settings)


def _config_problems(exc: ValidationError, yaml_path: Path | None, locator: Any) -> str:
    """Return one line per problem: at file:line:col for the file's values, by name for the rest."""
    from .rules.problems import translate_errors

    errors = exc.errors(include_url=False)
    in_file = [e for e in errors if locator is not None and locator.found(tuple(e["loc"]))]
    elsewhere = [e for e in errors if not (locator is not None and locator.found(tuple(e["loc"])))]
    problems = sorted(translate_errors(in_file, locator), key=lambda p: (p.line, p.col)) if in_file else []
    lines = [str(p) for p in problems]
    source = "settings (environment or defaults)" if yaml_path is not None else "settings"
    for err in elsewhere:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def shipped_rules_dir() -> Path:
    """Return the folder of the rule pack shipped with watcher (installed or in a source checkout)."""
    installed = Path(__file__).parent / "_shipped_rules"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "rules"


def shipped_prometheus_rules_dir() -> Path:
    """Return the folder of the opt-in Prometheus rule pack shipped with watcher (docs/prometheus.md)."""
    installed = Path(__file__).parent / "_shipped_rules_prometheus"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "rules-prometheus"
