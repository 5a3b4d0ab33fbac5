"""PrometheusSource against a real Prometheus (Debian package) started by the harness in tests/prom.py.

History is backfilled with promtool (8 days at 1-minute resolution, so a 1-minute fetch needs two
range queries); exemplars come from a real prometheus_client app scraped by the real server.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import SecretStr, ValidationError

from tests.prom import PrometheusServer, free_port, poll
from watcher.config import BasicAuth, PrometheusEndpoint, Settings
from watcher.core import ExemplarLookup, Labels, Series, from_epoch
from watcher.errors import QueryError, SourceUnavailableError
from watcher.rules.schema import Rule
from watcher.sources.base import Source, step_grid
from watcher.sources.build import build_sources
from watcher.sources.prometheus import MAX_POINTS, PrometheusSource, expr_selectors

pytestmark = pytest.mark.integration

DAY = 86_400
NOW = int(time.time()) // 60 * 60
DATA_END = NOW - 4 * 3600  # backfilled samples must be older than ~3 h
DATA_START = DATA_END - 8 * DAY - 30 * 60
GAP = (DATA_END - 3 * DAY, DATA_END - 3 * DAY + 2 * 3600)  # beta has no samples in [GAP[0], GAP[1])
SECRET = "s3cr3t-T0KEN-value"


def acme_counter(t: np.ndarray | float) -> Any:
    """Return the acme counter at ``t``: the integral of a rate of 2 + sin(day phase) per second."""
    w = 2 * math.pi / DAY
    return 2 * (t - DATA_START) - (np.cos(w * np.asarray(t)) - math.cos(w * DATA_START)) / w


def beta_counter(t: np.ndarray | float) -> Any:
    """Return the beta counter at ``t``: a steady 0.5 per second."""
    return 0.5 * (np.asarray(t) - DATA_START)


def history_text() -> str:
    """Return 8 days of two counters at 1-minute resolution as OpenMetrics, beta with a 2 h gap."""
    lines = ["# HELP demo_requests Requests.", "# TYPE demo_requests counter"]
    for ts in range(DATA_START, DATA_END + 1, 60):
        lines.append(f'demo_requests_total{{tenant="acme",model="m1"}} {acme_counter(ts):.6f} {ts}')
        if not GAP[0] <= ts < GAP[1]:
            lines.append(f'demo_requests_total{{tenant="beta",model="m1"}} {beta_counter(ts):.6f} {ts}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def rule(expr: str, **kw: Any) -> Rule:
    return Rule.model_validate({"alert": "T", "expr": expr, **kw})


def source_for(url: str, **kw: Any) -> PrometheusSource:
    return PrometheusSource({"main": PrometheusEndpoint(url=url, **kw)})


def by_tenant(series: list[Series]) -> dict[str, Series]:
    return {s.labels["tenant"]: s for s in series}


@pytest.fixture(scope="module")
def history(prometheus_module_factory: Any) -> PrometheusServer:
    """Return a Prometheus holding the backfilled 8-day history."""
    return prometheus_module_factory(openmetrics=history_text())  # type: ignore[no-any-return]


@pytest.fixture
def history_source(history: PrometheusServer) -> Iterator[PrometheusSource]:
    with source_for(history.url) as src:
        yield src


# --- range queries ------------------------------------------------------------------------------


def test_rate_over_eight_days_is_chunked_and_correct(history_source: PrometheusSource) -> None:
    end = from_epoch(DATA_END)
    start = end - timedelta(days=8)
    grid = step_grid(start, end, timedelta(minutes=1))
    assert len(grid) == 11_520 > MAX_POINTS  # two range queries

    series = by_tenant(
        history_source.fetch(rule("rate(demo_requests_total[5m])"), start, end, timedelta(minutes=1))
    )

    assert set(series) == {"acme", "beta"}
    acme = series["acme"]
    assert acme.labels == Labels(tenant="acme", model="m1")  # no __name__
    np.testing.assert_array_equal(acme.timestamps, grid)
    expected = (acme_counter(grid) - acme_counter(grid - 300)) / 300
    assert not np.isnan(acme.values).any()  # in particular none at the chunk seam
    np.testing.assert_allclose(acme.values, expected, rtol=1e-4)
    assert acme.traces == ()  # no exemplars in backfilled history


def test_gaps_are_nan_on_the_grid(history_source: PrometheusSource) -> None:
    end = from_epoch(GAP[1] + 3600)
    start = from_epoch(GAP[0] - 3600)
    beta = by_tenant(
        history_source.fetch(rule("rate(demo_requests_total[5m])"), start, end, timedelta(minutes=1))
    )["beta"]
    ts, v = beta.timestamps, beta.values
    inside = (ts >= GAP[0] + 300) & (ts < GAP[1])
    outside = (ts <= GAP[0] - 60) | (ts >= GAP[1] + 300)  # windows with all their samples
    assert inside.sum() > 100 and np.isnan(v[inside]).all()
    np.testing.assert_allclose(v[outside], 0.5, rtol=1e-6)


def test_raw_selector_drops_metric_name_and_aligns_unaligned_bounds(history_source: PrometheusSource) -> None:
    start = from_epoch(DATA_END - 3600 + 17.5)
    end = from_epoch(DATA_END - 42.25)
    series = history_source.fetch(
        rule('demo_requests_total{tenant="acme"}'), start, end, timedelta(minutes=5)
    )
    assert [s.labels for s in series] == [Labels(tenant="acme", model="m1")]
    np.testing.assert_array_equal(series[0].timestamps, step_grid(start, end, timedelta(minutes=5)))
    np.testing.assert_allclose(series[0].values, acme_counter(series[0].timestamps), rtol=1e-9)


def test_empty_result_and_empty_grid(history_source: PrometheusSource) -> None:
    end = from_epoch(DATA_END)
    assert (
        history_source.fetch(
            rule("no_such_metric_total"), end - timedelta(hours=1), end, timedelta(minutes=1)
        )
        == []
    )
    assert history_source.fetch(rule("demo_requests_total"), end, end, timedelta(minutes=1)) == []


def test_syntax_error_is_a_query_error_with_prometheus_text(history: PrometheusServer) -> None:
    with source_for(history.url, bearer_token=SecretStr(SECRET)) as src:
        end = from_epoch(DATA_END)
        with pytest.raises(QueryError) as info:
            src.fetch(
                rule("sum(rate(demo_requests_total[5m])"), end - timedelta(hours=1), end, timedelta(minutes=1)
            )
    message = str(info.value)
    assert "HTTP 400" in message and "bad_data" in message and "parse error" in message
    assert "'main'" in message and SECRET not in message


def test_unknown_and_missing_endpoint_are_query_errors(history: PrometheusServer) -> None:
    end = from_epoch(DATA_END)
    cfg = PrometheusEndpoint(url=history.url)
    with PrometheusSource({"a": cfg, "b": cfg}) as src:
        with pytest.raises(QueryError, match="unknown Prometheus endpoint 'c'"):
            src.fetch(rule("up", endpoint="c"), end - timedelta(hours=1), end, timedelta(minutes=1))
        with pytest.raises(QueryError, match="names no endpoint"):
            src.fetch(rule("up"), end - timedelta(hours=1), end, timedelta(minutes=1))
        assert src.fetch(
            rule("demo_requests_total", endpoint="b"), end - timedelta(hours=1), end, timedelta(minutes=1)
        )
    with PrometheusSource({"a": cfg, "b": cfg}, default="b") as src:
        assert src.fetch(rule("demo_requests_total"), end - timedelta(hours=1), end, timedelta(minutes=1))


# --- exemplars ------------------------------------------------------------------------------------


class App:
    """A tiny app serving OpenMetrics with exemplars (prometheus_client on a free loopback port)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.cost = Counter("demo_cost_usd", "Cost.", ["tenant", "model"], registry=self.registry)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def scraped(prometheus_module_factory: Any) -> Iterator[tuple[PrometheusServer, dict[str, float]]]:
    """Return a Prometheus scraping an app whose counters carry known exemplars, once stored."""
    app = App()
    try:
        for tenant, model in (("acme", "m1"), ("acme", "m2"), ("beta", "m1")):
            app.cost.labels(tenant, model).inc(0)
        prom = prometheus_module_factory(targets=[f"127.0.0.1:{app.port}"])
        prom.wait_for("rate(demo_cost_usd_total[1m])")  # two scrapes seen
        # Keep the three exemplars inside one 1 s step: do not start right before a second ends.
        poll(lambda: time.time() % 1 < 0.7, timeout=2, what="the start of a second", interval=0.01)
        sent = time.time()
        app.cost.labels("acme", "m1").inc(3, exemplar={"trace_id": "acme-small", "span_id": "s1"})
        app.cost.labels("acme", "m2").inc(9, exemplar={"trace_id": "acme-big", "span_id": "s2"})
        app.cost.labels("beta", "m1").inc(4, exemplar={"trace_id": "beta-one", "span_id": "s3"})

        def stored() -> bool:
            body = httpx.get(
                f"{prom.url}/api/v1/query_exemplars",
                params={"query": "demo_cost_usd_total", "start": sent - 60, "end": time.time() + 60},
            ).json()
            return sum(len(g["exemplars"]) for g in body["data"]) >= 3

        poll(stored, timeout=30, what="the exemplars to be scraped")
        # The exemplars belong to the 1 s grid point after them: wait until that point exists.
        poll(lambda: time.time() > math.floor(sent) + 1, timeout=2, what="the next grid point", interval=0.01)
        yield prom, {"sent": sent}
    finally:
        app.close()


def fetch_now(src: PrometheusSource, r: Rule) -> dict[str, Series]:
    end = datetime.now(UTC)
    return by_tenant(src.fetch(r, end - timedelta(seconds=30), end, timedelta(seconds=1)))


def traces_of(series: Series) -> list[tuple[int, list[str]]]:
    return [(i, [t.trace_id for t in refs]) for i, refs in enumerate(series.traces) if refs]


def test_exemplars_attach_to_the_right_series_and_point(scraped: Any) -> None:
    prom, info = scraped
    with source_for(prom.url) as src:
        series = fetch_now(src, rule("sum by (tenant) (rate(demo_cost_usd_total[1m]))"))
    acme, beta = series["acme"], series["beta"]
    [(i, ids)] = traces_of(acme)
    assert ids == ["acme-big", "acme-small"]  # value_desc by default
    big, small = acme.traces[i]
    assert (big.span_id, big.value, small.value) == ("s2", 9.0, 3.0)
    assert big.ts is not None and abs(big.ts.timestamp() - info["sent"]) < 1
    assert acme.timestamps[i - 1] < big.ts.timestamp() <= acme.timestamps[i]
    assert big.note == "demo_cost_usd_total"
    assert [ids for _, ids in traces_of(beta)] == [["beta-one"]]
    assert len(acme.traces) == len(acme.values)


def test_exemplar_order_selector_and_opt_out(scraped: Any) -> None:
    prom, _ = scraped
    expr = "sum by (tenant) (rate(demo_cost_usd_total[1m]))"
    with source_for(prom.url) as src:
        asc = fetch_now(src, rule(expr, traces={"from": "exemplars", "order": "value_asc"}))
        assert [ids for _, ids in traces_of(asc["acme"])] == [["acme-small", "acme-big"]]
        only_beta = fetch_now(
            src, rule(expr, traces={"from": "exemplars", "metric": 'demo_cost_usd_total{tenant="beta"}'})
        )
        assert traces_of(only_beta["acme"]) == [] and traces_of(only_beta["beta"])
        assert fetch_now(src, rule(expr, traces={"from": "none"}))["acme"].traces == ()
    with source_for(prom.url, exemplars=False) as src:
        assert fetch_now(src, rule(expr))["acme"].traces == ()


def test_total_over_all_series_gets_every_exemplar(scraped: Any) -> None:
    prom, _ = scraped
    with source_for(prom.url) as src:
        end = datetime.now(UTC)
        [total] = src.fetch(
            rule("sum(rate(demo_cost_usd_total[1m]))"), end - timedelta(seconds=30), end, timedelta(seconds=1)
        )
    assert total.labels == Labels()
    assert [ids for _, ids in traces_of(total)] == [["acme-big", "beta-one", "acme-small"]]


def test_failed_exemplar_query_does_not_fail_the_fetch(
    scraped: Any, caplog: pytest.LogCaptureFixture
) -> None:
    prom, _ = scraped
    with source_for(prom.url, bearer_token=SecretStr(SECRET)) as src, caplog.at_level(logging.WARNING):
        series = fetch_now(
            src,
            rule(
                "sum by (tenant) (rate(demo_cost_usd_total[1m]))",
                traces={"from": "exemplars", "metric": "demo_cost_usd_total{"},
            ),
        )
    assert set(series) == {"acme", "beta"} and series["acme"].traces == ()
    assert "exemplar query failed" in caplog.text and "HTTP 400" in caplog.text and SECRET not in caplog.text
    lookup = series["acme"].exemplars
    assert lookup is not None and lookup.endpoint == "main" and SECRET not in (lookup.error or "")
    error = lookup.error or ""
    assert error.startswith("the exemplar query failed: ") and "HTTP 400" in error


def test_series_say_where_exemplars_were_looked_for(scraped: Any) -> None:
    prom, _ = scraped
    expr = "sum by (tenant) (rate(demo_cost_usd_total[1m]))"
    with source_for(prom.url) as src:
        assert fetch_now(src, rule(expr))["acme"].exemplars == ExemplarLookup("main")
        assert fetch_now(src, rule(expr, traces={"from": "none"}))["acme"].exemplars is None
        [total] = src.fetch(rule("vector(1)"), datetime.now(UTC) - timedelta(seconds=5), datetime.now(UTC),
                            timedelta(seconds=1))  # fmt: skip
        assert total.exemplars is not None and "set traces.metric" in (total.exemplars.error or "")
    with source_for(prom.url, exemplars=False) as src:
        assert fetch_now(src, rule(expr))["acme"].exemplars is None


@pytest.mark.parametrize(
    ("expr", "selectors"),
    [
        ("rate(llm_cost_usd_total[5m])", ["llm_cost_usd_total"]),
        (
            'sum by (tenant, model) (rate(x_total{tenant="a", b =~ "c}"}[5m] offset 1h))',
            ['x_total{tenant="a", b =~ "c}"}'],
        ),
        (
            "sum(rate(a_total[5m])) without (job) / on (tenant) group_left (model) sum(b_total)",
            ["a_total", "b_total"],
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(ttft_bucket[5m]))) > 2 and up == 1",
            ["ttft_bucket", "up"],
        ),
        ("SUM BY (x) (y) # a comment naming z_total", ["y"]),
        ('label_replace(m, "dst", "$1", "src", "(.*)") or vector(1)', ["m"]),
        ('{__name__="hidden"}', []),
    ],
)
def test_expr_selectors(expr: str, selectors: list[str]) -> None:
    assert expr_selectors(expr) == selectors


# --- failures ---------------------------------------------------------------------------------------

SECRET_CONFIGS = [
    {"bearer_token": SecretStr(SECRET)},
    {"basic_auth": BasicAuth(username="bob", password=SecretStr(SECRET))},
    {"headers": {"X-Scope-OrgID": SecretStr(SECRET)}},
]


@pytest.mark.parametrize("secret_cfg", SECRET_CONFIGS, ids=["bearer", "basic", "header"])
def test_closed_port_is_unavailable_without_secrets(secret_cfg: dict[str, Any]) -> None:
    port = free_port()
    end = datetime.now(UTC)
    with (
        source_for(f"http://127.0.0.1:{port}", timeout_s=2, **secret_cfg) as src,
        pytest.raises(SourceUnavailableError) as info,
    ):
        src.fetch(rule("up"), end - timedelta(minutes=5), end, timedelta(minutes=1))
    text = f"{info.value}|{info.value!r}|{info.value.__cause__!r}|{info.value.__context__!r}"
    assert "connection refused" in text and f"127.0.0.1:{port}" in text
    assert SECRET not in text


def test_password_in_url_is_never_shown() -> None:
    end = datetime.now(UTC)
    with (
        source_for(f"http://bob:{SECRET}@127.0.0.1:{free_port()}") as src,
        pytest.raises(SourceUnavailableError) as info,
    ):
        src.fetch(rule("up"), end - timedelta(minutes=5), end, timedelta(minutes=1))
    assert SECRET not in str(info.value) and "bob" not in str(info.value)


def test_timeout_is_unavailable() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        end = datetime.now(UTC)
        with source_for(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.3) as src:
            started = time.monotonic()
            with pytest.raises(SourceUnavailableError, match=r"timed out after 0\.3s"):
                src.fetch(rule("up"), end - timedelta(minutes=5), end, timedelta(minutes=1))
    assert time.monotonic() - started < 3  # not retried with backoff


@pytest.mark.parametrize(
    ("statuses", "retries", "requests", "error"),
    [
        ([503], 0, 1, SourceUnavailableError),
        ([502, 502, 503], 2, 3, SourceUnavailableError),
        ([429], 0, 1, SourceUnavailableError),
        ([401], 0, 1, QueryError),
    ],
)
def test_http_status_mapping_and_retries(
    http_receiver: Any, statuses: list[int], retries: int, requests: int, error: type[Exception]
) -> None:
    http_receiver.set_statuses(statuses)
    end = datetime.now(UTC)
    with (
        source_for(
            http_receiver.url,
            retries=retries,
            bearer_token=SecretStr(SECRET),
            headers={"X-Scope-OrgID": SecretStr("tenant-1")},
        ) as src,
        pytest.raises(error, match=f"HTTP {statuses[-1]}") as info,
    ):
        src.fetch(rule("up"), end - timedelta(minutes=5), end, timedelta(minutes=1))
    got = http_receiver.requests
    assert len(got) == requests and SECRET not in str(info.value)
    path, headers, _ = got[0]
    assert path.startswith("/api/v1/query_range?") and headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["X-Scope-OrgID"] == "tenant-1"


def test_prometheus_stopped_mid_test_then_back(prometheus: PrometheusServer) -> None:
    r = rule("up")
    with source_for(prometheus.url, bearer_token=SecretStr(SECRET)) as src:
        end = datetime.now(UTC)
        assert src.fetch(r, end - timedelta(minutes=5), end, timedelta(minutes=1)) == []
        prometheus.stop()
        with pytest.raises(SourceUnavailableError, match="unreachable") as info:
            src.fetch(r, end - timedelta(minutes=5), end, timedelta(minutes=1))
        assert SECRET not in str(info.value)
        (status,) = src.endpoint_status().values()
        assert not status.up and status.failures == 1 and "unreachable" in (status.error or "")
        prometheus.start()

        def fetched() -> bool:
            try:
                return src.fetch(r, end - timedelta(minutes=5), end, timedelta(minutes=1)) == []
            except SourceUnavailableError as exc:  # until the 1 s backoff has passed
                assert "backing off" in str(exc)
                return False

        poll(fetched, timeout=10, what="the source to call Prometheus again")
        assert src.endpoint_status()["main"].up


def test_unavailable_endpoint_is_backed_off_not_hammered(http_receiver: Any) -> None:
    clock = [1000.0]
    http_receiver.set_statuses([503, 503, 200])
    end = datetime.now(UTC)
    ep = {"main": PrometheusEndpoint(url=http_receiver.url, retry_backoff_max=timedelta(seconds=3))}
    with PrometheusSource(ep, clock=lambda: clock[0]) as src:

        def fetch() -> list[Series]:
            return src.fetch(rule("up"), end - timedelta(minutes=5), end, timedelta(minutes=1))

        waits = []
        for _ in range(2):  # two real failures: backoff 1 s, then 2 s
            with pytest.raises(SourceUnavailableError, match="HTTP 503"):
                fetch()
            waits.append(src.endpoint_status()["main"].retry_at - clock[0])
            with pytest.raises(SourceUnavailableError, match=r"HTTP 503.*backing off: next try in"):
                fetch()  # no request: the endpoint is not called during its backoff
            clock[0] += waits[-1]
        assert waits == [1.0, 2.0] and len(http_receiver.requests) == 2
        assert src.endpoint_status()["main"].failures == 2
        http_receiver.set_statuses([200])
        with pytest.raises(SourceUnavailableError, match=r"malformed|no usable"):  # 200 "ok" is no JSON
            fetch()
        assert len(http_receiver.requests) == 3
        assert src.endpoint_status()["main"].retry_at - clock[0] == 3.0  # 4 s, capped at the max


# --- configuration and wiring --------------------------------------------------------------------


def test_settings_and_build_sources(tmp_path: Any) -> None:
    settings = Settings(
        store={"url": f"sqlite:///{tmp_path}/w.db"},  # type: ignore[arg-type]
        prometheus={"main": {"url": "http://127.0.0.1:9", "bearer_token": SECRET}},  # type: ignore[dict-item]
    )
    assert SECRET not in repr(settings)
    from watcher.store.db import open_store

    store = open_store(settings.store.url.get_secret_value())
    try:
        sources = build_sources(settings, store)
        prom = sources["prometheus"]
        assert isinstance(prom, PrometheusSource) and isinstance(prom, Source) and prom.default == "main"
        prom.close()
    finally:
        store.close()
    with pytest.raises(ValidationError, match="unknown endpoint 'other'"):
        Settings(prometheus={"main": {"url": "http://x:9090"}}, default_prometheus="other")  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="not both"):
        PrometheusEndpoint(
            url="http://x",
            bearer_token=SecretStr("a"),
            basic_auth=BasicAuth(username="u", password=SecretStr("p")),
        )
    with pytest.raises(ValidationError, match="http"):
        PrometheusEndpoint(url="x:9090")
    # from the environment every value is a string: "false" is not a CA bundle path
    assert PrometheusEndpoint(url="http://x", tls_verify="false").tls_verify is False
    assert PrometheusEndpoint(url="http://x", tls_verify="/etc/ca.pem").tls_verify == "/etc/ca.pem"


# --- the harness ------------------------------------------------------------------------------------


def test_alertmanager_harness_starts_and_answers(alertmanager: Any) -> None:
    status = httpx.get(f"{alertmanager.url}/api/v2/status", timeout=5).json()
    assert status["cluster"]["status"] == "disabled" and "version" in status["versionInfo"]
    pid_was_running = alertmanager.running
    alertmanager.stop()
    assert pid_was_running and not alertmanager.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{alertmanager.url}/api/v2/status", timeout=1)


def test_answers_read_into_arrays_equal_the_json_reading(history: PrometheusServer) -> None:
    """A real Prometheus answer, read by ``promjson`` and by ``json``, gives the same numbers."""
    from watcher.sources.promjson import parse_range

    params = {
        "query": "rate(demo_requests_total[5m]) * 1.1",
        "start": str(DATA_END - DAY),
        "end": str(DATA_END),
        "step": "60",
    }
    raw = httpx.get(f"{history.url}/api/v1/query_range", params=params, timeout=30).content
    got = parse_range(raw)
    want = json.loads(raw)["data"]["result"]
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert g.metric == w["metric"]
        assert g.timestamps.tolist() == [float(p[0]) for p in w["values"]]
        assert g.values.tobytes() == np.array([float(p[1]) for p in w["values"]]).tobytes()
    assert sum(len(g.values) for g in got) > 2 * 1400  # beta's gap leaves it a little short
