"""The Prometheus source: rules with ``source: prometheus`` evaluated on any PromQL HTTP API.

This module owns range queries through prometheus-api-client (one ``PrometheusConnect`` per
configured endpoint, with its own auth, TLS, timeout and retry policy), chunking past the
11,000-points-per-series limit, turning the result matrix into ``Series`` on the step grid, and
attaching exemplar trace IDs (``/api/v1/query_exemplars``) to the points they belong to. It does
not own the endpoint settings (``config``), the point-grid convention (``sources.base``), nor
ranking traces across points into an alert (``engine.group``).

Errors are translated here, once: HTTP 4xx and ``bad_data`` become ``QueryError`` carrying
Prometheus's own error text (408 and 429 excepted: they are transient); timeouts, connection
errors, 5xx and malformed responses become ``SourceUnavailableError``. Messages name the endpoint
and its URL without credentials, and every configured secret is masked in them besides.
A failed exemplar query never fails the fetch: it is logged and the series come back without traces.
Whenever exemplars were wanted, each series says where they were looked for and whether that
failed (``Series.exemplars``), so an alert left without trace IDs can say so (``engine.group``).
An unavailable endpoint is backed off (``_Endpoint._call``) and its status is reported by
``endpoint_status()``, which ``engine.sourcedown`` turns into one "source down" alert.

A rule with a ``rate`` detector is written ``SUCCESSES / TRIALS`` (``split_ratio``): both sides are
queried, the value is their ratio and the trials become the points' ``counts`` (the detector's
sample size); a label set with trials but no successes series has a proportion of 0.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from ..config import PrometheusEndpoint
from ..core import ExemplarLookup, FloatArray, Labels, Series, TraceRef, from_epoch, to_epoch
from ..errors import QueryError, SourceError, SourceUnavailableError
from ..redact import redact
from ..rules.schema import RateDetector, Rule, TracesSpec
from .base import step_grid
from .promjson import RangeSeries, parse_range

logger = logging.getLogger(__name__)

MAX_POINTS = 11_000
"""Prometheus refuses range queries of more points per series than this; longer ranges are chunked."""
EXEMPLAR_LEAD = timedelta(minutes=5)
"""Exemplars are fetched this far before the first point: they fed the ``rate(…[5m])`` at it."""
MAX_TRACES_PER_POINT = 50
TRACE_ID_LABELS = ("trace_id", "traceID", "traceId")
SPAN_ID_LABELS = ("span_id", "spanID", "spanId")
_TRANSIENT_4XX = frozenset({408, 429})
BACKOFF_INITIAL_S = 1.0
"""The first wait after an endpoint turned out unavailable; it doubles up to ``retry_backoff_max``."""
_REASONS = ("Connection refused", "Name or service not known", "No route to host", "Connection reset",
            "CERTIFICATE_VERIFY_FAILED", "Remote end closed connection")  # fmt: skip

# --- finding the metrics of an expression ---------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      |(?P<matchers>\{(?:"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`|[^{}"'`])*\})
      |(?P<range>\[[^\]]*\])
      |(?P<comment>\#[^\n]*)
      |(?P<number>\.?\d[\w.]*)
      |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<open>\()
      |(?P<close>\))
      |(?P<space>\s+)
      |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | {
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip


def expr_selectors(expr: str) -> list[str]:
    """Return the metric selectors of a PromQL expression, e.g. ``['x_total{tenant="a"}']``.

    Deliberately simple: an identifier is a metric name unless it is followed by ``(`` (a
    function), is a PromQL keyword or aggregation operator, or is a label name (inside ``{…}``,
    or in the list after ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``).
    Its ``{…}`` matchers are kept. Strings, ranges and comments are skipped. Selectors without a
    metric name (``{__name__=~"…"}``) are not found; name the metric in ``traces.metric`` then.
    """
    tokens = [
        (m.lastgroup or "other", m.group())
        for m in _TOKEN_RE.finditer(expr)
        if m.lastgroup not in ("space", "comment")
    ]
    found: list[str] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt_kind, nxt_text = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident":
            low = text.lower()
            if low in _LABEL_LIST_KEYWORDS and nxt_kind == "open":
                depth, i = 0, i + 1
                while i < len(tokens):
                    depth += {"open": 1, "close": -1}.get(tokens[i][0], 0)
                    if depth == 0:
                        break
                    i += 1
            elif nxt_kind != "open" and low not in _KEYWORDS:
                selector = text + (nxt_text if nxt_kind == "matchers" else "")
                if selector not in found:
                    found.append(selector)
        i += 1
    return found


def split_ratio(expr: str, alert: str = "") -> tuple[str, str]:
    """Split a ``successes / trials`` expression at its one top-level ``/``; return both sides.

    A ``rate`` detector needs the number of trials behind each point, which a ratio alone hides,
    so its ``expr`` is written as a plain division (``sum by (feature) (increase(a[5m])) / sum by
    (feature) (increase(b[5m]))``) and the source queries the two sides separately. Raises
    QueryError when there is not exactly one top-level ``/`` or it carries vector-matching modifiers.
    """
    depth = 0
    cuts: list[int] = []
    tokens = [(m.lastgroup or "other", m.group(), m.start()) for m in _TOKEN_RE.finditer(expr)]
    for kind, text, pos in tokens:
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
        elif kind == "other" and text == "/" and depth == 0:
            cuts.append(pos)
    hint = (
        f"rule {alert!r}: a rate detector on Prometheus needs `expr: SUCCESSES / TRIALS` with one "
        "top-level `/` (e.g. sum by (feature) (increase(llm_refusals_total[5m])) / sum by (feature) "
        "(increase(llm_requests_total[5m]))): the trials are the detector's sample size"
    )
    if len(cuts) != 1:
        raise QueryError(hint, source="prometheus")
    num, den = expr[: cuts[0]].strip(), expr[cuts[0] + 1 :].strip()
    first = re.match(r"[A-Za-z_]+", den)
    if not num or not den or (first is not None and first.group().lower() in _LABEL_LIST_KEYWORDS | {"bool"}):
        raise QueryError(hint + "; vector-matching modifiers are not supported there", source="prometheus")
    return num, den


def _proportion(hits: FloatArray | None, trials: FloatArray) -> FloatArray:
    """Return successes / trials; no successes series (a counter never incremented) counts as 0."""
    k = np.zeros_like(trials) if hits is None else np.where(np.isnan(hits) & (trials > 0), 0.0, hits)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(trials > 0, k / trials, math.nan)


# --- one endpoint ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """The outcome of an endpoint's latest call: up, or unavailable with the error and backoff."""

    up: bool = True
    error: str | None = None
    failures: int = 0
    """Consecutive unavailable calls."""
    retry_at: float = 0.0
    """The (monotonic) clock reading before which the endpoint is not called again."""


class _Endpoint:
    """One configured PromQL API: its client, its session and everything needed to redact."""

    def __init__(
        self, name: str, cfg: PrometheusEndpoint, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.clock = clock
        url = cfg.url.rstrip("/")
        parts = urlsplit(url)
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port is not None else "")
        self.display_url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))  # no user:password@
        headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
        secrets = [v for v in headers.values() if v]
        if cfg.bearer_token is not None:
            headers["Authorization"] = f"Bearer {cfg.bearer_token.get_secret_value()}"
            secrets.append(cfg.bearer_token.get_secret_value())
        self.auth: tuple[str, str] | None = None
        if cfg.basic_auth is not None:
            self.auth = (cfg.basic_auth.username, cfg.basic_auth.password.get_secret_value())
            secrets.append(cfg.basic_auth.password.get_secret_value())
        if parts.password:
            secrets.append(parts.password)
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.headers = headers
        self.status = EndpointStatus()
        self._lock = threading.Lock()
        self.session = requests.Session()
        self.session.verify = cfg.tls_verify
        # Deliberate retry policy (the client's default retries 5xx three times with backoff and
        # can stall a tick): only `retries` quick retries on connection errors and 502/503/504,
        # never on a read error (a slow query would only get slower; False re-raises it as a
        # timeout), and the last response is returned instead of raised so its status and error
        # text can be reported.
        retry = Retry(
            total=cfg.retries,
            connect=cfg.retries,
            read=False,
            status=cfg.retries,
            backoff_factor=0.2,
            status_forcelist=(502, 503, 504),
            raise_on_status=False,
        )
        self.client = PrometheusConnect(
            url=url,
            headers=headers or None,
            retry=retry,
            auth=self.auth,
            session=self.session,
            timeout=cfg.timeout_s,  # typed int upstream; requests takes a float
        )

    def redact(self, text: str) -> str:
        """Return ``text`` with every configured secret masked."""
        return redact(text, self.secrets, min_len=1)

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[RangeSeries]:
        """Run one range query over ``[start, end]`` (grid-aligned Unix seconds).

        The body is read straight into arrays (``promjson``), not through ``json`` into a list
        per point: the client's ``custom_query_range`` would build three Python objects a point.
        """

        def get() -> list[RangeSeries]:
            response = self.session.get(
                f"{self.client.url}/api/v1/query_range",
                params={"query": expr, "start": _num(start), "end": _num(end), "step": _num(step_s)},
                headers=self.headers or None,
                auth=self.auth,
                timeout=self.cfg.timeout_s,
            )
            if response.status_code != 200:
                # the same shape as the client's own errors, so one translation serves both
                status, content = response.status_code, response.content
                raise PrometheusApiClientException(f"HTTP Status Code {status} ({content!r})")
            # a body that is no matrix (MalformedAnswer, a ValueError) is "no usable answer"
            return parse_range(response.content)

        result: list[RangeSeries] = self._call(get)
        return result

    def query_exemplars(self, query: str, start: float, end: float) -> list[dict[str, Any]]:
        """Return the exemplar groups of ``query`` in ``[start, end]`` (``/api/v1/query_exemplars``)."""

        def get() -> Any:
            response = self.session.get(
                f"{self.client.url}/api/v1/query_exemplars",
                params={"query": query, "start": _num(start), "end": _num(end)},
                headers=self.headers or None,
                auth=self.auth,
                timeout=self.cfg.timeout_s,
            )
            if response.status_code != 200:
                # the same shape as the client's own errors, so one translation serves both
                status, content = response.status_code, response.content
                raise PrometheusApiClientException(f"HTTP Status Code {status} ({content!r})")
            return response.json().get("data") or []

        data = self._call(get)
        if not isinstance(data, list):
            raise SourceUnavailableError(self._msg("returned malformed exemplars"), source=self.name)
        return data

    def _msg(self, what: str) -> str:
        return self.redact(f"prometheus endpoint {self.name!r} ({self.display_url}) {what}")

    def _call(self, fn: Any) -> Any:
        """Run one HTTP call, record the endpoint's status, back off while it is unavailable.

        After a ``SourceUnavailableError`` the endpoint is not called again until its backoff
        (1 s, doubling up to ``retry_backoff_max``) has passed: calls in between fail at once with
        the last error, so a dead backend costs no tick a timeout. Any answer (even a 4xx) means up.
        """
        with self._lock:
            st = self.status
            wait = st.retry_at - self.clock() if st.failures else 0.0
        if wait > 0:
            raise SourceUnavailableError(
                f"{st.error} (backing off: next try in {wait:.0f}s)", source=self.name
            )
        try:
            result = self._translated(fn)
        except SourceUnavailableError as exc:
            with self._lock:
                st = self.status
                backoff = min(BACKOFF_INITIAL_S * 2**st.failures, self.cfg.retry_backoff_max.total_seconds())
                self.status = EndpointStatus(False, str(exc), st.failures + 1, self.clock() + backoff)
            raise
        except QueryError:
            self._up()
            raise
        self._up()
        return result

    def _up(self) -> None:
        with self._lock:
            self.status = EndpointStatus()

    def _translated(self, fn: Any) -> Any:
        """Run one HTTP call of the client and translate its failures into the error tree."""
        try:
            return fn()
        except PrometheusApiClientException as exc:
            status, text = _parse_client_error(str(exc))
            what = f"answered HTTP {status}: {text}" if status else f"failed: {text}"
            if status is not None and 400 <= status < 500 and status not in _TRANSIENT_4XX:
                raise QueryError(self._msg(what), source=self.name) from None
            raise SourceUnavailableError(self._msg(what), source=self.name) from None
        except requests.Timeout:
            raise SourceUnavailableError(
                self._msg(f"timed out after {self.cfg.timeout_s:g}s"), source=self.name
            ) from None
        except requests.ConnectionError as exc:
            raise SourceUnavailableError(
                self._msg(f"is unreachable: {_connection_reason(exc)}"), source=self.name
            ) from None
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SourceUnavailableError(
                self._msg(f"gave no usable answer ({type(exc).__name__})"), source=self.name
            ) from None


def _num(x: float) -> str:
    """Format Unix seconds or a step for the HTTP API without float noise."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _parse_client_error(message: str) -> tuple[int | None, str]:
    """Return the HTTP status and Prometheus's error text from the client's exception message."""
    match = re.match(r"HTTP Status Code (\d+) \((.*)\)\Z", message, re.DOTALL)
    if match is None:
        return None, message[:300]
    status, raw = int(match.group(1)), match.group(2)
    try:
        body = ast.literal_eval(raw)
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    except (ValueError, SyntaxError):
        text = raw
    try:
        doc = json.loads(text)
    except ValueError:
        return status, " ".join(text.split())[:300] or "(empty body)"
    if isinstance(doc, dict) and doc.get("error"):
        kind = doc.get("errorType")
        return status, f"{kind}: {doc['error']}" if kind else str(doc["error"])
    return status, " ".join(text.split())[:300]


def _connection_reason(exc: requests.ConnectionError) -> str:
    """Return a short, URL-free reason for a connection failure."""
    text = str(exc)
    return next((n.lower().replace("_", " ") for n in _REASONS if n in text), type(exc).__name__)


# --- the source --------------------------------------------------------------------------------


class PrometheusSource:
    """Fetches ``source: prometheus`` rules from the endpoint each rule names (or the default)."""

    name = "prometheus"

    def __init__(
        self,
        endpoints: Mapping[str, PrometheusEndpoint],
        default: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (seconds, monotonic) times the backoff of unavailable endpoints."""
        self._endpoints = {name: _Endpoint(name, cfg, clock) for name, cfg in endpoints.items()}
        if default is None and len(self._endpoints) == 1:
            default = next(iter(self._endpoints))
        self.default = default
        sessions = [ep.session for ep in self._endpoints.values()]
        self._finalizer = weakref.finalize(self, _close_all, sessions)

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """Return the rule's series on the step grid in ``(start, end]``, with exemplar traces."""
        if rule.expr is None:
            raise QueryError(f"rule {rule.alert!r} has no `expr`", source=self.name)
        ep = self._endpoint(rule)
        grid = step_grid(start, end, step)
        if len(grid) == 0:
            return []
        counts: dict[Labels, FloatArray] = {}
        if isinstance(rule.detector, RateDetector):
            successes, trials = split_ratio(rule.expr, rule.alert)
            counts = self._range(ep, trials, grid, step)
            hits = self._range(ep, successes, grid, step)
            values = {lb: _proportion(hits.get(lb), n) for lb, n in counts.items()}
        else:
            values = self._range(ep, rule.expr, grid, step)
        if not values:
            return []
        traces: dict[Labels, tuple[tuple[TraceRef, ...], ...]] = {}
        lookup: ExemplarLookup | None = None
        if self._wants_exemplars(rule, ep):
            traces, lookup = self._exemplar_traces(rule, ep, list(values), grid, to_epoch(start))
        return [
            Series(lb, grid.copy(), arr, counts.get(lb), traces=traces.get(lb, ()), exemplars=lookup)
            for lb, arr in values.items()
        ]

    def endpoint_status(self) -> dict[str, EndpointStatus]:
        """Return each endpoint's status after its latest call (for the source-down alert)."""
        return {name: ep.status for name, ep in self._endpoints.items()}

    def close(self) -> None:
        """Close every endpoint's HTTP session."""
        self._finalizer()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers -------------------------------------------------------------------------------

    def _range(self, ep: _Endpoint, expr: str, grid: FloatArray, step: timedelta) -> dict[Labels, FloatArray]:
        """Run ``expr`` over the grid (chunked past ``MAX_POINTS``); return its series by labels."""
        step_s = step.total_seconds()
        values: dict[Labels, FloatArray] = {}
        for lo in range(0, len(grid), MAX_POINTS):
            chunk = grid[lo : lo + MAX_POINTS]
            for item in ep.query_range(expr, float(chunk[0]), float(chunk[-1]), step_s):
                self._fill(values, item, grid, step_s)
        return values

    def _endpoint(self, rule: Rule) -> _Endpoint:
        name = rule.endpoint or self.default
        if name is None:
            if not self._endpoints:
                raise QueryError("no Prometheus endpoint is configured (`prometheus:`)", source=self.name)
            raise QueryError(
                f"rule {rule.alert!r} names no endpoint and there are several "
                f"({', '.join(sorted(self._endpoints))}): set `endpoint` or default_prometheus",
                source=self.name,
            )
        ep = self._endpoints.get(name)
        if ep is None:
            known = ", ".join(sorted(self._endpoints)) or "none"
            raise QueryError(
                f"rule {rule.alert!r} names unknown Prometheus endpoint {name!r}; configured: {known}",
                source=self.name,
            )
        return ep

    @staticmethod
    def _fill(values: dict[Labels, FloatArray], item: RangeSeries, grid: FloatArray, step_s: float) -> None:
        """Lay one result series onto the grid (later chunks fill their own slots)."""
        if not len(item.timestamps):
            return
        labels = Labels(item.metric).without("__name__")
        arr = values.get(labels)
        if arr is None:
            arr = values[labels] = np.full(len(grid), math.nan)
        idx = np.rint((item.timestamps - grid[0]) / step_s).astype(np.int64)
        ok = (idx >= 0) & (idx < len(grid))
        arr[idx[ok]] = item.values[ok]

    @staticmethod
    def _wants_exemplars(rule: Rule, ep: _Endpoint) -> bool:
        return ep.cfg.exemplars and (rule.traces is None or rule.traces.from_ == "exemplars")

    def _exemplar_traces(
        self, rule: Rule, ep: _Endpoint, series: list[Labels], grid: FloatArray, start: float
    ) -> tuple[dict[Labels, tuple[tuple[TraceRef, ...], ...]], ExemplarLookup]:
        """Return per-series, per-point trace references from the exemplars of the rule's metrics.

        An exemplar goes to every series whose labels all appear, with equal values, in the
        exemplar's series labels, at the point ``i`` with ``grid[i-1] < ts <= grid[i]`` (the first
        point also takes the lead-in before it). Any failure is logged and yields no traces; the
        lookup returned alongside says which endpoint was asked and why it failed, if it did.
        """
        selectors = [rule.traces.metric] if rule.traces is not None and rule.traces.metric else []
        selectors = selectors or expr_selectors(rule.expr or "")
        if not selectors:
            return {}, ExemplarLookup(ep.name, "no metric in `expr` to ask exemplars for: set traces.metric")
        lead = EXEMPLAR_LEAD.total_seconds()
        try:
            data = ep.query_exemplars(" or ".join(selectors), start - lead, float(grid[-1]))
        except SourceError as exc:
            logger.warning("rule %s: exemplar query failed, alerting without trace IDs: %s", rule.alert, exc)
            return {}, ExemplarLookup(ep.name, f"the exemplar query failed: {exc}")
        buckets: dict[Labels, dict[int, dict[str, TraceRef]]] = {}
        for group in data:
            try:
                series_labels = {str(k): str(v) for k, v in (group.get("seriesLabels") or {}).items()}
                targets = [lb for lb in series if all(series_labels.get(k) == v for k, v in lb.items())]
                if not targets:
                    continue
                for ex in group.get("exemplars") or ():
                    ref, i = _trace_ref(ex, grid, series_labels.get("__name__"))
                    if ref is None:
                        continue
                    for lb in targets:
                        point = buckets.setdefault(lb, {}).setdefault(i, {})
                        old = point.get(ref.trace_id)
                        if old is None or _rank_key(ref, rule.traces) < _rank_key(old, rule.traces):
                            point[ref.trace_id] = ref
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                logger.warning("rule %s: skipping a malformed exemplar group: %s", rule.alert, exc)
        out: dict[Labels, tuple[tuple[TraceRef, ...], ...]] = {}
        for lb, points in buckets.items():
            per_point: list[tuple[TraceRef, ...]] = [()] * len(grid)
            for i, refs in points.items():
                ranked = sorted(refs.values(), key=lambda r: _rank_key(r, rule.traces))
                per_point[i] = tuple(ranked[:MAX_TRACES_PER_POINT])
            out[lb] = tuple(per_point)
        return out, ExemplarLookup(ep.name)


def _trace_ref(ex: Mapping[str, Any], grid: FloatArray, metric: str | None) -> tuple[TraceRef | None, int]:
    """Return the trace reference of one exemplar and the grid index it belongs to."""
    labels = ex.get("labels") or {}
    trace_id = next((labels[k] for k in TRACE_ID_LABELS if labels.get(k)), None)
    ts = float(ex["timestamp"])
    i = int(np.searchsorted(grid, ts, side="left"))
    if trace_id is None or i >= len(grid):
        return None, i
    span_id = next((labels[k] for k in SPAN_ID_LABELS if labels.get(k)), None)
    value = float(ex["value"]) if ex.get("value") is not None else None
    return TraceRef(str(trace_id), span_id, value, from_epoch(ts), note=metric), i


def _rank_key(ref: TraceRef, spec: TracesSpec | None) -> tuple[float, float]:
    """Return a sort key: best offender first, in the order the rule asks for."""
    order = spec.order if spec is not None else "value_desc"
    ts = ref.ts.timestamp() if ref.ts is not None else -math.inf
    value = ref.value if ref.value is not None and not math.isnan(ref.value) else None
    if order == "recent":
        return (-ts, 0.0)
    if value is None:
        return (math.inf, -ts)
    return (-value if order == "value_desc" else value, -ts)


def _close_all(sessions: list[requests.Session]) -> None:
    """Close HTTP sessions (also run when a source is garbage-collected unclosed)."""
    for session in sessions:
        session.close()
