"""The status page after an incident: zoomed charts, thresholds, mute badges, filters, refresh,
per-alert pages with state history, rule queries and the silence form (a real Daemon, SQLite)."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import select

from tests.web.incident import ADMIN_TOKEN, END, READ_TOKEN, SECRETS, Incident, make_incident
from watcher.core import Labels, Verdict
from watcher.notify.receivers.slack import silence_url
from watcher.store.tables import SilenceRow
from watcher.web.app import build_app
from watcher.web.charts import Threshold, _with_gaps, episode_view, episode_window, promql_threshold
from watcher.web.data import parse_filters

SAME_ORIGIN = {"Origin": "http://testserver"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    inc = make_incident(tmp_path_factory.mktemp("incident"))
    yield inc
    inc.daemon.close()


@pytest.fixture
def client(incident: Incident) -> Iterator[TestClient]:
    with TestClient(build_app(incident.daemon), raise_server_exceptions=False) as c:
        yield c


def cards(page: str) -> dict[str, str]:
    """Return the alert cards of a page by fingerprint."""
    parts = re.split(
        r'<div class="alert [^"]*" data-fingerprint="([0-9a-f]+)"', page.split('<h2 id="rules">')[0]
    )
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --- thresholds and zoom ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("sum(rate(x[5m])) > 0.5", Threshold(">", 0.5)),
        ("0.5 < sum by (a) (x)", Threshold(">", 0.5)),
        ("x >= bool 2e3", Threshold(">=", 2000.0)),
        ("(avg(x) < -1)", Threshold("<", -1.0)),
        ("a / b > 0.05", Threshold(">", 0.05)),
        ("a > b", None),
        ("x > 1 and y < 2", None),
        ("(a) + (b > 1)", None),
        ("topk(3, x > 1)", None),
        ("rate(x[5m])", None),
    ],
)
def test_promql_threshold(expr: str, want: Threshold | None) -> None:
    assert promql_threshold(expr) == want


def test_episode_window_is_the_episode_with_a_proportionate_margin() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    step = timedelta(minutes=1)
    # a one-hour incident that resolved two hours ago: an hour on each side
    start, end = now - timedelta(hours=3), now - timedelta(hours=2)
    assert episode_window(start, end, now, step) == (start - timedelta(hours=1), end + timedelta(hours=1))
    # widening multiplies the margin by four per step, never past now
    assert episode_window(start, end, now, step, widen=1) == (start - timedelta(hours=4), now)
    # a short episode still gets at least 30 minutes (or ten steps) of context
    assert episode_window(now - timedelta(minutes=3), None, now, step) == (
        now - timedelta(minutes=33),
        now,
    )
    assert episode_window(now - timedelta(minutes=3), None, now, timedelta(minutes=10))[0] == now - timedelta(
        minutes=103
    )
    # a ten-day seasonal band does not decide the span: the episode does
    first, last = episode_window(now - timedelta(hours=1), None, now, step)
    assert last - first == timedelta(hours=2)


def test_alert_chart_zooms_on_the_episode_and_widens(incident: Incident, client: TestClient) -> None:
    fp = incident.fingerprint("SpendSpike", tenant="acme")
    view = episode_view(incident.daemon, fp)
    assert view is not None
    # the spike began 2 minutes before the end: 32 minutes shown of the 3 hours kept
    assert view.end == END and view.start == END - timedelta(minutes=32)
    assert len(view.verdicts) == 33 and view.history >= 180
    wide = episode_view(incident.daemon, fp, widen=2)
    assert wide is not None and len(wide.verdicts) > 150
    narrow, wider = client.get(f"/chart/alert/{fp}.png"), client.get(f"/chart/alert/{fp}.png?widen=2")
    assert narrow.status_code == wider.status_code == 200 and narrow.content != wider.content
    with Image.open(io.BytesIO(narrow.content)) as img:
        assert img.size == (800, 300)
    assert client.get(f"/chart/alert/{fp}.png?widen=9").status_code == 400
    page = client.get(f"/alerts/{fp}").text
    assert 'id="widen" href="?widen=1"' in page and "33 of the" in page
    assert client.get(f"/alerts/{fp}?widen=x").status_code == 400


def test_chart_breaks_the_line_between_episodes() -> None:
    on = [Verdict(ts=60.0 * k, value=0.09, anomalous=True) for k in (*range(10), *range(40, 50))]
    drawn = _with_gaps(on)
    assert len(drawn) == len(on) + 1
    gap = drawn[10]
    assert gap.ts == 600.0 and math.isnan(gap.value) and not gap.anomalous and not gap.ready
    assert _with_gaps(on[:10]) == on[:10]  # a regular series is left as it is


def test_threshold_alerts_show_their_threshold_not_an_empty_band(
    client: TestClient, incident: Incident
) -> None:
    page = client.get("/").text
    assert "expected — in [—, —]" not in page and "score 0" not in page
    by_fp = cards(page)
    errors = by_fp[incident.fingerprint("ErrorRateHigh", tenant="acme")]
    assert "value <b>0.09</b>, threshold &gt; 0.05" in errors
    latency = by_fp[incident.fingerprint("LatencyHigh", tenant="acme")]
    assert "threshold &gt; 2" in latency
    spend = by_fp[incident.fingerprint("SpendSpike", tenant="acme")]
    # a one-sided band (direction: up) says so instead of printing an empty lower bound
    assert re.search(r"expected [0-9.]+ \(band up to [0-9.]+\), score [0-9.]+", spend), spend
    alerts = client.get("/api/v1/alerts").json()["data"]["alerts"]
    assert {a["rule"]: a["thresholds"] for a in alerts if a["labels"]["tenant"] == "acme"} == {
        "ErrorRateHigh": ["threshold > 0.05"],
        "LatencyHigh": ["threshold > 2"],
        "SpendSpike": [],
    }


# --- mute badges ------------------------------------------------------------------------------


def test_silenced_and_inhibited_alerts_are_marked(client: TestClient, incident: Incident) -> None:
    alerts = {
        (a["rule"], a["labels"]["tenant"]): a for a in client.get("/api/v1/alerts").json()["data"]["alerts"]
    }
    beta = alerts[("ErrorRateHigh", "beta")]
    assert beta["silencedBy"] == ["5f1e0c1e-0000-4000-8000-00000000be7a"] and beta["muted"] is True
    latency = alerts[("LatencyHigh", "acme")]
    assert latency["inhibitedBy"] == [incident.fingerprint("ErrorRateHigh", tenant="acme")]
    assert latency["inhibitedByNames"] == ["ErrorRateHigh"] and latency["muted"] is True
    acme = alerts[("ErrorRateHigh", "acme")]
    assert acme["silencedBy"] == [] and acme["inhibitedBy"] == [] and acme["muted"] is False
    page = client.get("/").text
    by_fp = cards(page)
    assert 'class="badge badge-silenced"' in by_fp[beta["fingerprint"]]
    assert 'data-muted="yes"' in page
    assert "inhibited by ErrorRateHigh" in by_fp[latency["fingerprint"]]
    assert "badge" not in by_fp[acme["fingerprint"]]
    # the silence's comment is data: escaped on the alert page
    detail = client.get(f"/alerts/{beta['fingerprint']}").text
    assert "beta is migrating &lt;b&gt;providers&lt;/b&gt;" in detail and "<b>providers" not in detail


# --- filters and refresh ----------------------------------------------------------------------


def test_label_filters_on_the_alert_list(client: TestClient, incident: Incident) -> None:
    def shown(query: str) -> set[tuple[str, str]]:
        page = client.get("/" + query)
        assert page.status_code == 200, page.text
        return set(
            re.findall(
                r'<a href="/rules/[^"]+"><b>(\w+)</b></a>\s*<span class="muted">\([^)]*\)</span> '
                r'<span class="labels">[^<]*tenant="(\w+)"',
                page.text,
            )
        )

    everything = shown("")
    assert len(everything) == 4
    assert shown("?tenant=acme") == {
        ("ErrorRateHigh", "acme"),
        ("LatencyHigh", "acme"),
        ("SpendSpike", "acme"),
    }
    assert shown("?tenant=acme&severity=page") == {("ErrorRateHigh", "acme"), ("SpendSpike", "acme")}
    assert shown('?filter=alertname=~"Error.*"') == {("ErrorRateHigh", "acme"), ("ErrorRateHigh", "beta")}
    assert shown('?filter={tenant!="acme", severity="page"}') == {("ErrorRateHigh", "beta")}
    page = client.get("/?tenant=acme").text
    assert "(3 of 4)" in page and 'id="clear-filters"' in page
    assert shown("?tenant=nobody") == set()
    assert "No firing or pending alert matches these filters." in client.get("/?tenant=nobody").text
    # bad input: 400 with the reason, escaped
    bad = client.get("/", params={"filter": 'tenant=~"(<b>"'})
    assert bad.status_code == 400 and "<b>" not in bad.text and "&lt;b&gt;" in bad.text
    assert client.get("/", params={"filter": "no operator"}).status_code == 400
    assert client.get("/", params={"1bad": "x"}).status_code == 400
    # the API takes Alertmanager's filter parameter
    api = client.get("/api/v1/alerts", params=[("filter", 'tenant="acme"'), ("filter", "severity=page")])
    assert {a["rule"] for a in api.json()["data"]["alerts"]} == {"ErrorRateHigh", "SpendSpike"}
    assert client.get("/api/v1/alerts", params={"filter": "tenant=~("}).status_code == 400


def test_parse_filters() -> None:
    got = parse_filters([("tenant", "acme"), ("filter", '{a=~"x,y", b!="q\\"r"}'), ("refresh", "30")])
    assert [str(m) for m in got] == ['tenant="acme"', 'a=~"x,y"', 'b!="q\\"r"']
    with pytest.raises(ValueError, match="bad matcher"):
        parse_filters([("filter", "=x")])


def test_auto_refresh_is_off_unless_asked(client: TestClient) -> None:
    assert 'http-equiv="refresh"' not in client.get("/").text
    page = client.get("/?refresh=30&tenant=acme").text
    assert '<meta http-equiv="refresh" content="30">' in page
    # the filter survives the refresh links, and the refresh the filter form
    assert 'href="?tenant=acme&amp;refresh=60"' in page and 'name="refresh" value="30"' in page
    for bad in ("1", "x", "99999"):
        r = client.get(f"/?refresh={bad}")
        assert r.status_code == 400 and "refresh must" in r.text


# --- per-alert page ---------------------------------------------------------------------------


def test_alert_page_has_state_history_value_traces_and_labels(client: TestClient, incident: Incident) -> None:
    fp = incident.fingerprint("ErrorRateHigh", tenant="acme")
    page = client.get(f"/alerts/{fp}")
    assert page.status_code == 200
    text = page.text
    assert 'tenant="acme"' in text and 'severity="page"' in text and "threshold &gt; 0.05" in text
    assert 'href="https://tempo.example/trace/4bf92f3577b34da6a3ce929d0e0e4736"' in text
    rows = re.findall(r'<tr class="transition" data-state="(\w+)"><td>([^<]+)</td>', text)
    # newest first: the current episode (pending 11:40, firing after for: 2m), then the first
    # episode from the notification log (pending 10:20, firing 10:22, resolved 10:50)
    assert rows == [
        ("firing", "2026-11-20 11:42:00Z"),
        ("pending", "2026-11-20 11:40:00Z"),
        ("resolved", "2026-11-20 10:50:00Z"),
        ("firing", "2026-11-20 10:22:00Z"),
        ("pending", "2026-11-20 10:20:00Z"),
    ]
    # the history comes from the transition table, with the value and band at each transition
    api = client.get(f"/api/v1/alerts/{fp}/history").json()
    assert [(h["state"], h["from"]) for h in api["data"]["history"]] == [
        ("firing", "pending"),
        ("pending", "inactive"),
        ("resolved", "firing"),
        ("firing", "pending"),
        ("pending", "inactive"),
    ]
    assert all(h["source"] == "transition" and h["value"] is not None for h in api["data"]["history"])
    assert client.get("/api/v1/alerts/" + "0" * 16 + "/history").status_code == 404
    # the page's time is the daemon's clock, not the wall clock
    assert "Rendered 2026-11-20 12:00:00Z." in text
    # the index links each card to this page
    assert f'href="/alerts/{fp}"' in client.get("/").text
    no_secrets(text)
    missing = client.get("/alerts/" + "0" * 16)
    assert missing.status_code == 404 and "no alert with fingerprint" in missing.text


def test_alert_page_of_a_resolved_alert(tmp_path: Path) -> None:
    inc = make_incident(tmp_path, steps=75)  # acme's errors: two episodes, the second firing at END
    try:
        inc.source.series("ErrorRateHigh", {"tenant": "acme"}).add(
            (END + timedelta(minutes=1)).timestamp(), float("nan")
        )
        for k in range(1, 11):  # the second episode ends
            inc.clock[0] = END + timedelta(minutes=k)
            inc.daemon.run_once(inc.clock[0], drain_s=0)
        fp = Labels({"alertname": "ErrorRateHigh", "severity": "page", "tenant": "acme"}).fingerprint
        with TestClient(build_app(inc.daemon)) as c:
            page = c.get(f"/alerts/{fp}").text
        states = re.findall(r'<tr class="transition" data-state="(\w+)">', page)
        assert states == ["resolved", "firing", "pending", "resolved", "firing", "pending"], states
        assert '<h1><span class="resolved">RESOLVED</span> ErrorRateHigh' in page
        assert "<th>resolved at</th><td>2026-11-20 12:01:00Z</td>" in page
    finally:
        inc.daemon.close()


# --- rule pages -------------------------------------------------------------------------------


def test_rule_pages_show_the_query_escaped(client: TestClient) -> None:
    promql = client.get("/rules/llm-quality/ErrorRateHigh").text
    query = re.search(r'<pre class="query" id="query">(.*?)</pre>', promql, re.S)
    assert query is not None
    want = "sum by (tenant) (rate(llm_errors_total[5m])) / sum by (tenant) (rate(llm_calls_total[5m])) > 0.05"
    assert html.unescape(query.group(1)).split() == want.split()
    assert "&gt; 0.05" in query.group(1)
    assert "threshold &gt; 0.05" in promql
    sql = client.get("/rules/llm-calls/CallVolume").text
    text = re.search(r'<pre class="query" id="query">(.*?)</pre>', sql, re.S)
    assert text is not None
    shown = html.unescape(text.group(1))
    assert shown.startswith("SELECT") and "FROM calls" in shown and "calls.model IN (" in shown
    assert "POSTCOMPILE" not in shown
    block = re.search(r'<pre class="query" id="query-block">(.*?)</pre>', sql, re.S)
    assert block is not None and "&#34;agg&#34;: &#34;count&#34;" in block.group(1)
    no_secrets(sql)


def test_rule_page_shows_warm_up_as_warm_up(client: TestClient) -> None:
    page = client.get("/rules/llm-quality/SlowBaseline").text
    assert "No data in the last seven days" not in page
    assert 'class="badge badge-maintenance warmup">warm-up: 30/30 points, 3h/6h history' in page
    # the index and the rules API say which rules are still warming up
    rules = {r["name"]: r for g in client.get("/api/v1/rules").json()["data"]["groups"] for r in g["rules"]}
    assert rules["SlowBaseline"]["warmingUp"] == 1
    assert rules["SlowBaseline"]["warmUp"] == "warming up: 180/30 points, 3h/6h history"  # 3 h of 6 h
    assert rules["SpendSpike"]["warmingUp"] == 0 and rules["SpendSpike"]["warmUp"] is None
    row = re.search(r'<tr class="rule" data-rule="SlowBaseline">(.*?)</tr>', client.get("/").text, re.S)
    assert row is not None and "warm-up: 1 series</span>" in row.group(1)


# --- the silence form -------------------------------------------------------------------------


def _silences(incident: Incident) -> list[SilenceRow]:
    with incident.daemon.store.session() as s:
        return list(s.exec(select(SilenceRow)).all())


def test_silence_form_creates_a_silence_with_the_admin_token(client: TestClient, incident: Incident) -> None:
    fp = incident.fingerprint("SpendSpike", tenant="acme")
    before = {s.id for s in _silences(incident)}
    form = {
        "matchers": 'alertname="SpendSpike"\ntenant="acme"',
        "duration": "1h",
        "comment": "known <script>alert(1)</script> backfill",
        "createdBy": "",
        "token": ADMIN_TOKEN,
    }
    r = client.post(f"/alerts/{fp}/silence", data=form, headers=SAME_ORIGIN, follow_redirects=False)
    assert r.status_code == 303, r.text
    made = [s for s in _silences(incident) if s.id not in before]
    assert len(made) == 1
    row = made[0]
    assert row.matchers == [
        {"name": "alertname", "value": "SpendSpike", "op": "="},
        {"name": "tenant", "value": "acme", "op": "="},
    ]
    assert row.created_by == "admin" and row.ends_at.replace(tzinfo=UTC) - row.starts_at.replace(
        tzinfo=UTC
    ) == timedelta(hours=1)
    assert row.starts_at.replace(tzinfo=UTC) == END  # the daemon's clock
    assert r.headers["location"] == f"/alerts/{fp}?silenced={row.id}"
    page = client.get(r.headers["location"]).text
    assert f"Silence <code>{row.id}</code> created." in page and "badge-silenced" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    no_secrets(page)
    alert = next(a for a in client.get("/api/v1/alerts").json()["data"]["alerts"] if a["fingerprint"] == fp)
    assert alert["silencedBy"] == [row.id]


@pytest.mark.parametrize(
    ("headers", "fields", "status", "reason"),
    [
        ({}, {}, 403, "says nothing about where it comes from"),
        ({"Origin": "http://evil.example"}, {}, 403, "cross-origin post"),
        ({"Origin": "null"}, {}, 403, "cross-origin post"),
        ({"Sec-Fetch-Site": "cross-site"}, {}, 403, "cross-site post"),
        ({"Referer": "http://evil.example/page"}, {}, 403, "cross-origin post"),
        ({"Origin": "https://watcher.example.evil"}, {}, 403, "cross-origin post"),
        ({"Origin": "ftp://testserver"}, {}, 403, "cross-origin post"),
        (SAME_ORIGIN, {"token": ""}, 401, "missing"),
        (SAME_ORIGIN, {"token": "wrong-token"}, 401, "bad bearer token"),
        (SAME_ORIGIN, {"duration": "soon"}, 422, "silence refused"),
        (SAME_ORIGIN, {"duration": "90d"}, 422, "at most"),
        (SAME_ORIGIN, {"matchers": ""}, 422, "silence refused"),
        (SAME_ORIGIN, {"matchers": "no operator here"}, 422, "bad matcher"),
        (SAME_ORIGIN, {"matchers": 'alertname=~".*"'}, 422, "mute (nearly) every alert"),
        (SAME_ORIGIN, {"matchers": 'tenant=~"(unclosed"'}, 422, "silence refused"),
    ],
)
def test_silence_form_refuses_bad_posts_with_a_reason(
    client: TestClient,
    incident: Incident,
    headers: dict[str, str],
    fields: dict[str, str],
    status: int,
    reason: str,
) -> None:
    fp = incident.fingerprint("SpendSpike", tenant="acme")
    before = len(_silences(incident))
    form = {"matchers": 'tenant="acme"', "duration": "1h", "comment": "", "token": ADMIN_TOKEN, **fields}
    r = client.post(f"/alerts/{fp}/silence", data=form, headers=headers, follow_redirects=False)
    assert r.status_code == status, r.text
    assert reason in html.unescape(r.text)
    assert len(_silences(incident)) == before
    no_secrets(r.text)  # the typed token is never echoed back
    if "token" not in fields and status == 422:
        assert 'name="token" autocomplete="off" required>' in r.text  # empty again


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://watcher.example"},  # external_url: behind a proxy that rewrites Host
        {"Sec-Fetch-Site": "same-origin"},
        {"Referer": "http://testserver/alerts/x"},
    ],
)
def test_silence_form_accepts_same_origin_posts(
    client: TestClient, incident: Incident, headers: dict[str, str]
) -> None:
    fp = incident.fingerprint("SpendSpike", tenant="acme")
    # matchers no other test's alert has: the module's incident is shared
    form = {"matchers": 'alertname="NoSuchAlert"', "duration": "30m", "token": ADMIN_TOKEN}
    r = client.post(f"/alerts/{fp}/silence", data=form, headers=headers, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_refused_form_tokens_are_counted(client: TestClient, incident: Incident) -> None:
    def denied() -> float:
        text = client.get("/metrics").text
        found = re.search(r'watcher_http_denied_total\{reason="bad_token",scope="admin"\} ([0-9.]+)', text)
        return float(found.group(1)) if found else 0.0

    before = denied()
    fp = incident.fingerprint("SpendSpike", tenant="acme")
    form = {"matchers": 'tenant="acme"', "duration": "1h", "token": "guess"}
    assert client.post(f"/alerts/{fp}/silence", data=form, headers=SAME_ORIGIN).status_code == 401
    assert denied() == before + 1


def test_silence_form_refuses_json_and_huge_bodies(client: TestClient, incident: Incident) -> None:
    fp = incident.fingerprint("SpendSpike", tenant="acme")
    r = client.post(f"/alerts/{fp}/silence", json={"token": ADMIN_TOKEN}, headers=SAME_ORIGIN)
    assert r.status_code == 415
    big = client.post(
        f"/alerts/{fp}/silence", content=b"comment=" + b"x" * 70_000, headers={**SAME_ORIGIN, **FORM}
    )
    assert big.status_code == 413
    bad = client.post(f"/alerts/{fp}/silence", content=b"token=\xff\xfe", headers={**SAME_ORIGIN, **FORM})
    assert bad.status_code == 400


def test_pages_need_the_read_token_and_the_form_the_admin_token(tmp_path: Path) -> None:
    inc = make_incident(tmp_path, read_token=True, steps=5)
    try:
        fp = inc.fingerprint("SpendSpike", tenant="acme")
        with TestClient(build_app(inc.daemon)) as c:
            assert c.get(f"/alerts/{fp}").status_code == 401
            basic = "Basic " + base64.b64encode(f"x:{READ_TOKEN}".encode()).decode()
            page = c.get(f"/alerts/{fp}", headers={"Authorization": basic})
            assert page.status_code == 200 and READ_TOKEN not in page.text
            form = {"matchers": 'tenant="acme"', "duration": "1h", "token": READ_TOKEN}
            r = c.post(f"/alerts/{fp}/silence", data=form, headers={**SAME_ORIGIN, "Authorization": basic})
            assert r.status_code == 403 and "server.admin_token" in r.text and READ_TOKEN not in r.text
    finally:
        inc.daemon.close()


def test_new_silence_page_takes_the_slack_button_link(client: TestClient, incident: Incident) -> None:
    link = silence_url("http://watcher.example", {"alertname": "ErrorRateHigh", "tenant": "beta"})
    assert link is not None
    parts = urlsplit(link)
    page = client.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200
    textarea = re.search(r'<textarea name="matchers"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert textarea is not None
    assert html.unescape(textarea.group(1)).splitlines() == ['alertname="ErrorRateHigh"', 'tenant="beta"']
    assert "<option selected>1h</option>" in page.text
    assert 'value="silenced from Slack: ErrorRateHigh"' in page.text
    # the alerts the silence would match are listed
    assert re.findall(r'<div class="affected" data-fingerprint="(\w+)">', page.text) == [
        incident.fingerprint("ErrorRateHigh", tenant="beta")
    ]
    form = {
        "matchers": 'alertname="ErrorRateHigh"\ntenant="beta"',
        "duration": "1h",
        "comment": "from slack",
        "token": ADMIN_TOKEN,
    }
    made = client.post("/silences/new", data=form, headers=SAME_ORIGIN, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"].startswith("/silences/new?created=")
    sid = made.headers["location"].split("=", 1)[1]
    assert sid in {s.id for s in _silences(incident)}
    assert f"Silence <code>{sid}</code> created." in client.get(made.headers["location"]).text
    refused = client.post("/silences/new", data={**form, "token": "x"}, headers=SAME_ORIGIN)
    assert refused.status_code == 401 and "bad bearer token" in refused.text
    assert client.post("/silences/new", data=form).status_code == 403  # no origin
    bad = client.get("/silences/new", params={"matcher": "<b>nonsense"})
    assert bad.status_code == 400 and "bad matcher" in bad.text and "<b>nonsense" not in bad.text
    assert 'href="/silences/new"' in client.get("/").text
