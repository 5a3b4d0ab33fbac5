"""The status page, its charts and the alerts/rules/silences API, on a real Daemon with a firing alert."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import select

from watcher.config import Settings
from watcher.core import Labels, TraceRef, to_epoch
from watcher.daemon import Daemon
from watcher.errors import SourceUnavailableError
from watcher.notify.receivers.base import RecordingReceiver
from watcher.notify.silences import active_silences, is_silenced
from watcher.sources.memory import MemorySource
from watcher.store.db import open_store
from watcher.store.tables import OutboxRow
from watcher.web.app import build_app
from watcher.web.charts import coarse_step, find_rule, rule_series

TOKEN = "api-t0ken-for-status-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_TOKEN = "admin-t0ken-for-silence-writes"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DB_PASSWORD = "db-pa55word-never-shown"
HOOK_URL = "http://127.0.0.1:9/hooks/T0PSECRET-webhook-path"
HMAC_SECRET = "hmac-signing-secret-xyz"
SECRETS = (TOKEN, ADMIN_TOKEN, DB_PASSWORD, HOOK_URL, "T0PSECRET-webhook-path", HMAC_SECRET)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

RULES = """\
groups:
  - name: llm-cost
    interval: 1m
    rules:
      - alert: SpendSpike
        expr: sum by (tenant) (rate(llm_cost_usd_total[5m])) * 3600
        detector: {kind: rolling, window: 1h, sensitivity: 4, direction: up, min_points: 10}
        lookback: 3h
        for: 0s
        labels: {severity: page}
        annotations: {summary: "{{ labels.tenant }} spends {{ value | round(2) }} USD/h"}
        receivers: [hook]
"""


def scenario(tmp_path: Path, end: datetime) -> tuple[Settings, MemorySource]:
    """Return settings (with secrets in them) and a source where tenant acme's spend jumps at ``end``."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cost.yaml").write_text(RULES)
    settings = Settings(
        store={"url": f"postgresql+psycopg://watcher:{DB_PASSWORD}@db.internal/watcher"},
        rules=[rules],
        receivers={"hook": {"type": "webhook", "url": HOOK_URL, "secret": HMAC_SECRET}},
        route={"receivers": ["hook"]},
        server={"port": 0, "ingest_token": TOKEN, "admin_token": ADMIN_TOKEN},
        trace_url="https://tempo.example/trace/{trace_id}",
        external_url="http://watcher.example",
    )
    mem = MemorySource()
    acme = mem.series("SpendSpike", {"tenant": "acme"})
    beta = mem.series("SpendSpike", {"tenant": "beta"})
    t_end = math.floor(to_epoch(end) / 60) * 60
    for k in range(180, -1, -1):
        t = t_end - 60 * k
        wiggle = 0.25 * ((k * 7) % 5 - 2)
        spike = k < 3
        acme.add(
            t,
            10.0 if spike else 1.0 + wiggle,
            (TraceRef(TRACE, None, 0.42, None, "gpt-4o"),) if spike else (),
        )
        beta.add(t, 2.0 + wiggle)
    return settings, mem


def make_daemon(
    tmp_path: Path, end: datetime, store_url: str | None = None
) -> tuple[Daemon, MemorySource, RecordingReceiver]:
    """Return a Daemon (SQLite store unless ``store_url``), its memory source and a recording ``hook``."""
    settings, mem = scenario(tmp_path, end)
    hook = RecordingReceiver("hook")
    store = open_store(store_url or f"sqlite:///{tmp_path}/w.db")
    daemon = Daemon(
        settings, store=store, sources={"prometheus": mem}, receivers={"hook": hook}, clock=lambda: end
    )
    return daemon, mem, hook


NOW = datetime(2026, 11, 20, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d, _, _ = make_daemon(tmp_path, NOW)
    d.run_once(NOW, drain_s=0)
    yield d
    d.close()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[TestClient]:
    with TestClient(build_app(daemon), raise_server_exceptions=False) as c:
        yield c


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


def test_page_shows_firing_alert_with_band_chart_and_traces(client: TestClient, daemon: Daemon) -> None:
    with daemon.store.session() as s:
        s.add(
            OutboxRow(
                receiver="hook",
                fingerprint="f" * 32,
                dedup_key="d" * 32,
                kind="firing",
                created_at=NOW,
                status="dead",
                attempts=7,
                next_attempt_at=NOW,
                last_error="HTTP 500 from the receiver",
                last_reason="server_error",
                message={"title": "[FIRING] GroundednessDrop"},
            )
        )
        s.commit()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    # the firing alert, with value, band and its trace link built from settings.trace_url
    assert html.count('data-state="firing"') == 1
    assert 'tenant="acme"' in html and "acme spends 10.0 USD/h" in html
    assert f"https://tempo.example/trace/{TRACE}" in html
    fp = Labels({"tenant": "acme", "severity": "page", "alertname": "SpendSpike"}).fingerprint
    assert f'src="/chart/alert/{fp}.png"' in html
    # rule group health, recent notification (sent to hook) and the dead letter
    assert 'data-rule="SpendSpike"' in html and '<td class="ok">ok</td>' in html
    assert "[FIRING]" in html and "sent" in html
    assert "GroundednessDrop" in html and "server_error" in html and "HTTP 500 from the receiver" in html
    chart = client.get(f"/chart/alert/{fp}.png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert png_size(chart.content) == (800, 300)
    assert client.get(f"/chart/alert/{'0' * 32}.png").status_code == 404


def test_chart_data_is_the_series_history_with_band_and_anomaly(daemon: Daemon) -> None:
    alert = next(a for a in daemon.evaluators["llm-cost"].alerts() if a.labels["tenant"] == "acme")
    hist = daemon.evaluators["llm-cost"].history("SpendSpike", alert.labels)
    assert len(hist) > 100
    assert hist[-1].anomalous and hist[-1].value == 10.0 and hist[-1].upper < 10.0
    assert not any(v.anomalous for v in hist[:-3])


def test_no_secret_reaches_the_page_or_the_api(client: TestClient, daemon: Daemon) -> None:
    # an error message that would leak (as a careless driver or receiver might): masked everywhere
    daemon.last_reload_error = f"cost.yaml:3:5: cannot reach {HOOK_URL} (password {DB_PASSWORD})"
    bodies = {
        path: client.get(path).text
        for path in (
            "/",
            "/rules/llm-cost/SpendSpike",
            "/api/v1/rules",
            "/api/v1/alerts",
            "/readyz",
            "/api/v1/silences",
        )
    }
    for path, body in bodies.items():
        for secret in SECRETS:
            assert secret not in body, (path, secret)
    assert "[redacted]" in bodies["/"] and "cost.yaml:3:5" in bodies["/"]
    assert "[redacted]" in bodies["/readyz"] and "[redacted]" in bodies["/api/v1/rules"]


def test_rule_page_has_a_seven_day_chart_per_series(client: TestClient, daemon: Daemon) -> None:
    page = client.get("/rules/llm-cost/SpendSpike")
    assert page.status_code == 200
    assert 'src="/chart/rule/llm-cost/SpendSpike/0.png"' in page.text
    assert 'src="/chart/rule/llm-cost/SpendSpike/1.png"' in page.text
    assert "rolling" in page.text and "Last 7 days" in page.text
    png = client.get("/chart/rule/llm-cost/SpendSpike/0.png")
    assert png.status_code == 200 and png_size(png.content) == (800, 300)
    assert client.get("/chart/rule/llm-cost/SpendSpike/2.png").status_code == 404
    assert client.get("/rules/llm-cost/Nope").status_code == 404


def test_seven_day_series_uses_a_coarse_step_and_the_rules_detector(daemon: Daemon) -> None:
    found = find_rule(daemon, "llm-cost", "SpendSpike")
    assert found is not None
    group, rule = found
    assert coarse_step(rule, group) == timedelta(minutes=3)  # the 1h window must hold 2 × min_points
    assert coarse_step(rule.model_copy(update={"detector": None}), group) == timedelta(minutes=10)
    series = rule_series(daemon, group, rule, NOW)
    acme = next(s for s in series if s.labels["tenant"] == "acme")
    ts = [v.ts for v in acme.verdicts]
    assert all(b - a == 180 for a, b in itertools.pairwise(ts))
    assert ts[0] >= to_epoch(NOW - timedelta(days=7))
    assert any(math.isfinite(v.upper) for v in acme.verdicts)
    assert series[0].labels["tenant"] == "acme" and acme.anomalous_points >= 1  # the spike sorts first


def test_api_alerts_and_rules(client: TestClient) -> None:
    body = client.get("/api/v1/alerts").json()
    assert body["status"] == "success"
    (alert,) = body["data"]["alerts"]
    assert alert["labels"] == {"alertname": "SpendSpike", "tenant": "acme", "severity": "page"}
    assert alert["state"] == "firing" and alert["value"] == 10.0
    assert alert["expected"] < alert["upper"] < 10.0 and "lower" in alert  # direction: up, no finite lower
    assert alert["activeAt"] == alert["firingAt"] == "2026-11-20T12:00:30Z"
    assert alert["annotations"] == {"summary": "acme spends 10.0 USD/h"}
    assert alert["traces"][0]["url"] == f"https://tempo.example/trace/{TRACE}"
    assert client.get("/api/v1/alerts", params={"state": "pending"}).json()["data"]["alerts"] == []
    rules = client.get("/api/v1/rules").json()["data"]
    (group,) = rules["groups"]
    assert group["name"] == "llm-cost" and group["health"] == "ok"
    (rule,) = group["rules"]
    assert rule["health"] == "ok" and rule["lastError"] is None and rule["firing"] == 1
    assert rule["lastEvaluation"] == "2026-11-20T12:00:30Z" and rule["series"] == 2


def test_failed_query_shows_on_page_api_and_metrics(client: TestClient, daemon: Daemon) -> None:
    mem = daemon.sources["prometheus"]
    assert isinstance(mem, MemorySource)
    mem.fail_with = SourceUnavailableError(
        "prometheus at http://prom:9090: connection refused", source="prometheus"
    )
    daemon.run_once(NOW + timedelta(minutes=1), drain_s=0)
    (rule,) = client.get("/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert rule["health"] == "err" and "connection refused" in rule["lastError"]
    assert rule["firing"] == 1  # a failed query never resolves an alert
    assert "connection refused" in client.get("/").text
    metrics = client.get("/metrics").text
    assert (
        'watcher_source_query_errors_total{reason="SourceUnavailableError",source="prometheus"} 1.0'
        in metrics
    )
    assert 'watcher_source_query_duration_seconds_count{source="prometheus"} 2.0' in metrics
    assert 'watcher_detector_fit_duration_seconds_count{kind="rolling"} 2.0' in metrics  # 2 series, 1 fetch


def test_outbox_gauges_are_computed_at_scrape_time(client: TestClient, daemon: Daemon) -> None:
    created = NOW - timedelta(minutes=10)
    with daemon.store.session() as s:
        for _ in range(3):
            s.add(
                OutboxRow(
                    receiver="hook",
                    fingerprint="f" * 32,
                    dedup_key="d" * 32,
                    kind="firing",
                    created_at=created,
                    status="pending",
                    next_attempt_at=created + timedelta(days=1),
                    message={"title": "x"},
                )
            )
        s.commit()
    metrics = client.get("/metrics").text
    assert "watcher_outbox_pending 3.0" in metrics
    (age_line,) = [ln for ln in metrics.splitlines() if ln.startswith("watcher_outbox_oldest_age_seconds ")]
    assert 600 <= float(age_line.split()[1]) < 3600


def _ids(client: TestClient, **params: Any) -> set[str]:
    return {s["id"] for s in client.get("/api/v1/silences", params=params).json()["data"]["silences"]}


def test_silence_api_create_list_mute_and_expire(client: TestClient, daemon: Daemon) -> None:
    body = {
        "matchers": ['tenant=~"ac.*"', {"name": "severity", "value": "page", "op": "="}],
        "duration": "2h",
        "createdBy": "oncall@example",
        "comment": "deploying a fix",
    }
    assert client.post("/api/v1/silences", json=body).status_code == 401
    assert (
        client.post("/api/v1/silences", json=body, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    r = client.post("/api/v1/silences", json=body, headers=ADMIN_AUTH)
    assert r.status_code == 200, r.text
    made = r.json()["data"]["silence"]
    assert made["matchers"] == [
        {"name": "tenant", "value": "ac.*", "op": "=~"},
        {"name": "severity", "value": "page", "op": "="},
    ]
    assert made["state"] == "active" and made["createdBy"] == "oncall@example"
    assert _ids(client) == {made["id"]}
    # the muting stage reads the same row: acme is silenced, beta is not
    now = NOW
    with daemon.store.session() as s:
        rows = active_silences(s, now)
    assert (
        is_silenced({"alertname": "SpendSpike", "tenant": "acme", "severity": "page"}, rows, now) is not None
    )
    assert is_silenced({"alertname": "SpendSpike", "tenant": "beta", "severity": "page"}, rows, now) is None
    assert "deploying a fix" in client.get("/").text
    # expire over HTTP
    assert client.delete(f"/api/v1/silences/{made['id']}").status_code == 401
    gone = client.delete(f"/api/v1/silences/{made['id']}", headers=ADMIN_AUTH)
    assert gone.status_code == 200 and gone.json()["data"]["silence"]["state"] == "expired"
    assert _ids(client) == set() and _ids(client, include_expired="true") == {made["id"]}
    assert client.delete("/api/v1/silences/no-such-id", headers=ADMIN_AUTH).status_code == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"matchers": []}, "at least 1"),
        ({"matchers": ["tenant=~(unclosed"]}, "regular expression"),
        ({"matchers": [{"name": "tenant", "value": "(", "op": "=~"}]}, "regular expression"),
        ({"matchers": [{"name": "bad name", "value": "x"}]}, "pattern"),
        ({"matchers": ["no operator"]}, "bad matcher"),
        ({"matchers": ["a=b"], "duration": "-5m"}, "duration"),
        ({"matchers": ["a=b"], "duration": "1h", "endsAt": "2030-01-01T00:00:00Z"}, "not both"),
        ({"matchers": ["a=b"], "endsAt": "2001-01-01T00:00:00Z"}, "in the past"),
        (
            {"matchers": ["a=b"], "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z"},
            "after",
        ),
        ({"matchers": ["a=b"], "duration": "1000d"}, "at most"),
        ({"matchers": ["a=b"], "colour": "red"}, "colour"),
        ({"matchers": ["a=b"], "comment": "a\x00b"}, "NUL"),
    ],
)
def test_silence_api_rejects_bad_bodies(
    client: TestClient, daemon: Daemon, body: dict[str, Any], reason: str
) -> None:
    r = client.post("/api/v1/silences", json=body, headers=ADMIN_AUTH)
    assert r.status_code == 422, r.text
    assert reason.lower() in r.text.lower(), r.text
    with daemon.store.session() as s:
        from watcher.store.tables import SilenceRow

        assert list(s.exec(select(SilenceRow)).all()) == []


def test_rule_page_shows_why_history_is_missing(client: TestClient, daemon: Daemon) -> None:
    mem = daemon.sources["prometheus"]
    assert isinstance(mem, MemorySource)
    mem.fail_with = SourceUnavailableError("prometheus at http://prom:9090: timed out", source="prometheus")
    page = client.get("/rules/llm-cost/SpendSpike")
    assert page.status_code == 200
    assert "History unavailable" in page.text and "timed out" in page.text
    assert "/chart/rule/llm-cost/SpendSpike/0.png" not in page.text
    assert client.get("/chart/rule/llm-cost/SpendSpike/0.png").status_code == 503


def test_page_renders_with_the_store_down(
    client: TestClient, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise sqlalchemy.exc.OperationalError("select", {}, Exception("database is locked"))

    monkeypatch.setattr(daemon.store, "session", broken)
    page = client.get("/")
    assert page.status_code == 200
    assert "reading silences failed" in page.text and "reading the outbox failed" in page.text
    assert 'data-state="firing"' in page.text  # alerts come from the evaluators, not the store
    assert client.get("/api/v1/silences").status_code == 503
    # the alerts API still answers, saying what it could not tell
    api = client.get("/api/v1/alerts")
    assert api.status_code == 200 and api.json()["data"]["alerts"]
    assert api.json()["warnings"] == ["the store is unavailable: silencedBy/inhibitedBy are missing"]
    fp = api.json()["data"]["alerts"][0]["fingerprint"]
    detail = client.get(f"/alerts/{fp}")
    assert detail.status_code == 200 and "reading the state history failed" in detail.text


def test_alert_chart_is_redrawn_only_when_the_series_moves(client: TestClient, daemon: Daemon) -> None:
    (alert,) = client.get("/api/v1/alerts").json()["data"]["alerts"]
    url = f"/chart/alert/{alert['fingerprint']}.png"
    first = client.get(url).content
    assert client.get(url).content == first
    hist = daemon.evaluators["llm-cost"].history("SpendSpike", Labels(alert["labels"]))
    daemon.run_once(NOW + timedelta(minutes=1), drain_s=0)  # one more verdict (the value is carried on)
    moved = daemon.evaluators["llm-cost"].history("SpendSpike", Labels(alert["labels"]))
    assert moved[-1].ts == hist[-1].ts + 60
    again = client.get(url).content
    assert again != first and png_size(again) == (800, 300)


def test_status_and_silences_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    daemon, _, _ = make_daemon(tmp_path, NOW, store_url=pg_url)
    try:
        daemon.run_once(NOW, drain_s=0)
        old = NOW - timedelta(minutes=5)
        with daemon.store.session() as s:
            s.add(
                OutboxRow(
                    receiver="hook",
                    fingerprint="f" * 32,
                    dedup_key="d" * 32,
                    kind="firing",
                    created_at=old,
                    status="pending",
                    next_attempt_at=old + timedelta(days=1),
                    message={"title": "waiting"},
                )
            )
            s.commit()
        with TestClient(build_app(daemon)) as c:
            made = c.post(
                "/api/v1/silences", json={"matchers": ["tenant=~a.*"], "duration": "1h"}, headers=ADMIN_AUTH
            )
            assert made.status_code == 200, made.text
            sid = made.json()["data"]["silence"]["id"]
            html = c.get("/").text
            assert 'data-state="firing"' in html and "tenant=~&#34;a.*&#34;" in html and "waiting" in html
            rule = c.get("/api/v1/rules").json()["data"]["groups"][0]["rules"][0]
            assert rule["health"] == "ok" and rule["lastEvaluation"] == "2026-11-20T12:00:30Z"
            age = [
                ln for ln in c.get("/metrics").text.splitlines() if ln.startswith("watcher_outbox_oldest_age")
            ]
            assert 300 <= float(age[0].split()[1]) < 3600
            assert (
                c.delete(f"/api/v1/silences/{sid}", headers=ADMIN_AUTH).json()["data"]["silence"]["state"]
                == "expired"
            )
    finally:
        daemon.close()


class _ClusterView:
    """A replica's ``cluster.status()`` as ``cluster.member.Membership`` returns it."""

    def __init__(self, mismatch: bool) -> None:
        self.mismatch = mismatch

    def status(self) -> dict[str, Any]:
        return {
            "mode": "postgresql",
            "replica_id": "watcher-1",
            "rules_hash": "aaaa1111",
            "majority_rules_hash": "bbbb2222",
            "rules_hash_mismatch": self.mismatch,
            "replicas_live": 3,
            "groups_held": [],
            "lease_valid_for_s": 0.0,
            "last_error": None,
        }


@pytest.mark.parametrize("mismatch", [True, False])
def test_page_shows_a_rules_hash_mismatch(
    client: TestClient, daemon: Daemon, monkeypatch: pytest.MonkeyPatch, mismatch: bool
) -> None:
    monkeypatch.setattr(daemon, "cluster", _ClusterView(mismatch), raising=False)
    html = client.get("/").text
    assert 'id="cluster"' in html and "watcher-1" in html and "3 live replica(s)" in html
    assert ('id="rules-hash-mismatch"' in html) is mismatch
    assert ("aaaa1111" in html and "bbbb2222" in html) is mismatch


def test_page_renders_in_single_replica_mode(
    client: TestClient, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    class _Lock:
        def status(self) -> dict[str, Any]:
            return {"mode": "sqlite-single-replica", "lock": "/tmp/w.lock"}

    monkeypatch.setattr(daemon, "cluster", _Lock(), raising=False)
    resp = client.get("/")
    assert resp.status_code == 200 and 'id="cluster"' not in resp.text


class _DownSource:
    """A source whose one Prometheus endpoint stopped answering (``endpoint_status`` as Prometheus's)."""

    def endpoint_status(self) -> dict[str, Any]:
        from watcher.sources.prometheus import EndpointStatus

        return {"main": EndpointStatus(up=False, error="connection refused", failures=4)}


def test_source_down_alert_and_endpoint_status_on_page_and_api(
    client: TestClient, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.config import PrometheusEndpoint
    from watcher.engine.sourcedown import SourceDownMonitor

    monitor = SourceDownMonitor({"main": PrometheusEndpoint(url="http://prom.test:9090", down_after="1m")})
    sources = {**daemon.sources, "down": _DownSource()}
    monitor.update(sources, NOW)
    monitor.update(sources, NOW + timedelta(minutes=2))
    monkeypatch.setattr(daemon, "source_down", monitor)
    monkeypatch.setattr(daemon, "sources", sources)
    html = client.get("/").text
    assert 'data-endpoint="main"' in html and "connection refused" in html
    assert "WatcherSourceDown" in html
    # it belongs to no rule group: no link to a rule page nor a chart that cannot exist
    assert "/rules/watcher/WatcherSourceDown" not in html
    card = html[html.index("<b>WatcherSourceDown</b>") :].split("</div>\n</div>")[0]
    assert "/chart/alert/" not in card
    alerts = client.get("/api/v1/alerts").json()["data"]["alerts"]
    down = [a for a in alerts if a["rule"] == "WatcherSourceDown"]
    assert len(down) == 1 and down[0]["state"] == "firing" and down[0]["labels"]["source"] == "main"


def test_alert_without_exemplars_shows_the_note_and_the_search_link(tmp_path: Path) -> None:
    from markupsafe import escape

    from watcher.core import ExemplarLookup

    settings, mem = scenario(tmp_path, NOW)
    search = "https://tempo.example/search?from={start_ms}&to={end_ms}&q={labels}"
    settings = settings.model_copy(update={"trace_search_url": search})
    acme = mem.series("SpendSpike", {"tenant": "acme"})
    acme.traces = [() for _ in acme.traces]  # a Prometheus without exemplar storage
    mem.exemplars = ExemplarLookup("main")
    daemon = Daemon(
        settings,
        store=open_store(f"sqlite:///{tmp_path}/w.db"),
        sources={"prometheus": mem},
        receivers={"hook": RecordingReceiver("hook")},
        clock=lambda: NOW,
    )
    try:
        daemon.run_once(NOW, drain_s=0)
        with TestClient(build_app(daemon), raise_server_exceptions=False) as client:
            html = client.get("/").text
            (alert,) = client.get("/api/v1/alerts").json()["data"]["alerts"]
    finally:
        daemon.close()
    # from the first anomalous point (11:59) less one step, to the evaluation at 12:00:30
    note = "no exemplars from Prometheus endpoint 'main' for 2026-11-20 11:58:00–12:00:30 UTC"
    start, end = int(to_epoch(NOW - timedelta(seconds=150))), int(to_epoch(NOW))
    link = f"https://tempo.example/search?from={start}000&to={end}000&q=watcher.tenant%3D%22acme%22"
    assert alert["traces"] == []
    notes = {"summary": "acme spends 10.0 USD/h", "no_exemplars": note, "trace_search": link}
    assert alert["annotations"] == notes
    assert str(escape(note)) in html
    assert f'<a class="trace-search" href="{escape(link)}" rel="noreferrer">' in html


def test_a_group_name_with_a_slash_and_a_space_has_its_rule_page_and_charts(tmp_path: Path) -> None:
    d, _, _ = make_daemon(tmp_path, NOW)
    (tmp_path / "rules" / "cost.yaml").write_text(RULES.replace("name: llm-cost", "name: team/llm cost"))
    assert d.reload().ok
    d.run_once(NOW, drain_s=0)
    try:
        link = d.rule_url("team/llm cost", "SpendSpike")
        assert link == "http://watcher.example/rules/team%2Fllm%20cost/SpendSpike"
        with TestClient(build_app(d), raise_server_exceptions=False) as c:
            page = c.get(link.removeprefix("http://watcher.example"))
            assert page.status_code == 200 and "SpendSpike" in page.text
            assert 'href="/rules/team/llm%20cost/SpendSpike"' in c.get("/").text
            assert c.get("/rules/team/llm%20cost/SpendSpike").status_code == 200
            png = c.get("/chart/rule/team%2Fllm%20cost/SpendSpike/0.png")
            assert png.status_code == 200 and png_size(png.content) == (800, 300)
            assert c.get("/rules/team%2Fllm%20cost/Nope").status_code == 404
    finally:
        d.close()


def test_alerts_are_listed_firing_first_then_most_surprising_first() -> None:
    from types import SimpleNamespace

    from watcher.core import Alert, AlertState, Labels
    from watcher.web.data import active_alerts

    def alert(tenant: str, state: AlertState, surprise: float) -> Alert:
        return Alert("SpendSpike", "llm-cost", Labels({"tenant": tenant}), state, surprise=surprise)

    held = [
        alert("a", AlertState.PENDING, 40.0),
        alert("b", AlertState.FIRING, 5.2),
        alert("c", AlertState.FIRING, 812.0),  # far beyond where score saturates at 1.0
        alert("d", AlertState.FIRING, math.nan),  # no data since it fired
        alert("e", AlertState.FIRING, 9.7),
    ]
    daemon = SimpleNamespace(evaluators={"llm-cost": SimpleNamespace(alerts=lambda: held)}, settings=None)
    listed = active_alerts(daemon)
    assert [a["labels"]["tenant"] for a in listed] == ["c", "e", "b", "d", "a"]
    assert listed[0]["surprise"] == 812.0
