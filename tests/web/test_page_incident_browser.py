"""The status page after an incident, in headless Chromium (Debian ``chromium``, DevTools over a pipe).

Each feature is looked at in the browser, with a screenshot kept as a test artifact: under
``$WATCHER_TEST_ARTIFACTS/status-page/`` when that is set, else under pytest's temporary directory
(``…/pytest-of-<user>/pytest-<n>/artifacts0/``); the paths are printed (``pytest -s``).
Features: the alert list with mute badges and threshold text, label filters, auto-refresh, the
per-alert page with its zoomed chart (and widened), state history, the rule pages with their query
and warm-up, and the silence form submitted by the browser itself (same origin: created; from
another origin: refused).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from PIL import Image
from sqlmodel import select

from tests.conftest import missing_component
from tests.web.cdp import Browser
from tests.web.incident import ADMIN_TOKEN, SECRETS, Incident, make_incident
from watcher.notify.receivers.slack import silence_url
from watcher.store.tables import SilenceRow
from watcher.web.app import ServerThread, build_app


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return where screenshots go: ``$WATCHER_TEST_ARTIFACTS/status-page`` or a pytest temp dir."""
    configured = os.environ.get("WATCHER_TEST_ARTIFACTS")
    if configured:
        out = Path(configured) / "status-page"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Return the Chromium binary (skip, or fail under WATCHER_REQUIRE_INTEGRATION=1, without one)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    missing_component("chromium not found (apt-get install chromium)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Incident, str]]:
    """Return the incident's daemon and the base URL of its HTTP server (a free loopback port)."""
    inc = make_incident(tmp_path_factory.mktemp("incident-browser"))
    server = ServerThread(build_app(inc.daemon), port=0).start()
    try:
        yield inc, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        inc.daemon.close()


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


def shot(browser: Browser, artifacts: Path, name: str) -> Path:
    """Save a screenshot of the current page and check it is not blank."""
    path = browser.screenshot(artifacts / name)
    with Image.open(path) as img:
        assert img.size[0] == 1280
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # text, chart, badges
    print(f"screenshot: {path}")
    return path


def page_text(browser: Browser) -> str:
    html = browser.js("document.documentElement.outerHTML")
    assert isinstance(html, str)
    for secret in SECRETS:
        assert secret not in html
    return html


def charts(browser: Browser) -> list[dict[str, Any]]:
    """Return each chart image of the page: its src, whether it was decoded, its natural width."""
    found = browser.js(
        "[...document.querySelectorAll('img.chart')].map(i => ({src: i.getAttribute('src'),"
        " rendered: i.dataset.rendered, width: i.naturalWidth}))"
    )
    assert isinstance(found, list)
    return found


def test_alert_list_badges_filters_and_refresh(
    browser: Browser, served: tuple[Incident, str], artifacts: Path
) -> None:
    inc, base = served
    browser.open(f"{base}/")
    cards = browser.js(
        "[...document.querySelectorAll('div.alert')].map(d => ({fp: d.dataset.fingerprint,"
        " muted: d.dataset.muted, badges: [...d.querySelectorAll('.badge')].map(b => b.textContent.trim()),"
        " text: d.innerText}))"
    )
    by_fp = {c["fp"]: c for c in cards}
    assert len(by_fp) == 4
    beta = by_fp[inc.fingerprint("ErrorRateHigh", tenant="beta")]
    assert beta["muted"] == "yes" and beta["badges"] == ["silenced"]
    latency = by_fp[inc.fingerprint("LatencyHigh", tenant="acme")]
    assert latency["badges"] == ["inhibited by ErrorRateHigh"] and "threshold > 2" in latency["text"]
    acme = by_fp[inc.fingerprint("ErrorRateHigh", tenant="acme")]
    assert acme["badges"] == [] and "threshold > 0.05" in acme["text"] and "[—, —]" not in acme["text"]
    assert all(c["rendered"] == "yes" and c["width"] == 800 for c in charts(browser))
    page_text(browser)
    shot(browser, artifacts, "alerts.png")

    # filter with the form, as a user would: type Alertmanager matchers and apply
    browser.submit(
        "document.querySelector('form.filters input[name=filter]').value ="
        ' \'tenant="acme", severity=~"page"\';'
        "document.querySelector('form.filters').submit()"
    )
    assert browser.js("location.search").startswith("?filter=")
    shown = browser.js("[...document.querySelectorAll('div.alert')].map(d => d.dataset.fingerprint)")
    assert set(shown) == {
        inc.fingerprint("ErrorRateHigh", tenant="acme"),
        inc.fingerprint("SpendSpike", tenant="acme"),
    }
    assert "(2 of 4)" in browser.js("document.getElementById('alerts').textContent")
    shot(browser, artifacts, "alerts-filtered.png")

    # plain label parameters filter too, and auto-refresh reloads the page by itself
    browser.open(f"{base}/?tenant=beta&refresh=5")
    assert browser.js("document.querySelectorAll('div.alert').length") == 1
    first = browser.js("performance.timeOrigin")
    browser.events.clear()
    browser.wait_event("Page.loadEventFired", timeout=30)  # the meta refresh fired
    assert browser.js("performance.timeOrigin") > first
    assert browser.js("location.search") == "?tenant=beta&refresh=5"


def test_alert_page_zoom_history_and_rule_pages(
    browser: Browser, served: tuple[Incident, str], artifacts: Path
) -> None:
    inc, base = served
    fp = inc.fingerprint("ErrorRateHigh", tenant="acme")
    browser.open(f"{base}/")
    browser.submit(f"document.querySelector('div.alert[data-fingerprint=\"{fp}\"] a.alert-link').click()")
    assert browser.js("location.pathname") == f"/alerts/{fp}"
    (chart,) = charts(browser)
    assert chart["rendered"] == "yes" and chart["width"] == 800
    window = browser.js("document.getElementById('window').textContent")
    assert "2026-11-20 11:10:00Z – 2026-11-20 12:00:00Z" in window
    states = browser.js("[...document.querySelectorAll('tr.transition')].map(r => r.dataset.state)")
    assert states == ["firing", "pending", "resolved", "firing", "pending"]
    assert (
        browser.js("document.getElementById('value').textContent").strip() == "value 0.09, threshold > 0.05"
    )
    page_text(browser)
    shot(browser, artifacts, "alert-page.png")

    browser.submit("document.getElementById('widen').click()")
    assert browser.js("location.search") == "?widen=1"
    (wide,) = charts(browser)
    assert wide["rendered"] == "yes" and wide["src"].endswith("?widen=1")
    assert "2026-11-20 09:40:00Z – 2026-11-20 12:00:00Z" in browser.js(
        "document.getElementById('window').textContent"
    )
    shot(browser, artifacts, "alert-page-widened.png")

    spend = inc.fingerprint("SpendSpike", tenant="acme")
    browser.open(f"{base}/alerts/{spend}")
    assert charts(browser)[0]["rendered"] == "yes"
    shot(browser, artifacts, "alert-page-band.png")

    browser.open(f"{base}/rules/llm-calls/CallVolume")
    sql = browser.js("document.getElementById('query').textContent")
    assert sql.startswith("SELECT") and "FROM calls" in sql
    shot(browser, artifacts, "rule-page-sql.png")
    browser.open(f"{base}/rules/llm-quality/ErrorRateHigh")
    assert "> 0.05" in browser.js("document.getElementById('query').textContent")
    assert all(c["rendered"] == "yes" for c in charts(browser))
    shot(browser, artifacts, "rule-page-promql.png")
    browser.open(f"{base}/rules/llm-quality/SlowBaseline")
    assert (
        browser.js("document.querySelector('.warmup').textContent") == "warm-up: 30/30 points, 3h/6h history"
    )
    shot(browser, artifacts, "rule-page-warm-up.png")


def _silences(inc: Incident) -> list[SilenceRow]:
    with inc.daemon.store.session() as s:
        return list(s.exec(select(SilenceRow)).all())


def test_silence_from_the_page(
    browser: Browser, served: tuple[Incident, str], artifacts: Path, chromium: str
) -> None:
    inc, base = served
    fp = inc.fingerprint("SpendSpike", tenant="acme")
    before = {s.id for s in _silences(inc)}

    # a wrong token: refused with the reason, the token not echoed back
    browser.open(f"{base}/alerts/{fp}")
    browser.submit(
        "document.querySelector('form.silence input[name=token]').value = 'not-the-token';"
        "document.querySelector('form.silence').submit()"
    )
    assert "bad bearer token" in browser.js("document.getElementById('error').textContent")
    assert browser.js("document.querySelector('form.silence input[name=token]').value") == ""
    assert {s.id for s in _silences(inc)} == before
    shot(browser, artifacts, "silence-refused.png")

    # the admin token: the silence is created for the alert's labels and the alert is marked
    browser.submit(
        "document.querySelector('form.silence textarea[name=matchers]').value ="
        ' \'alertname="SpendSpike"\\ntenant="acme"\';'
        "document.querySelector('form.silence select[name=duration]').value = '4h';"
        "document.querySelector('form.silence input[name=comment]').value = 'deploy <b>42</b>';"
        f"document.querySelector('form.silence input[name=token]').value = '{ADMIN_TOKEN}';"
        "document.querySelector('form.silence').submit()"
    )
    made = [s for s in _silences(inc) if s.id not in before]
    assert len(made) == 1 and made[0].comment == "deploy <b>42</b>"
    assert browser.js("location.search") == f"?silenced={made[0].id}"
    assert (
        browser.js("document.getElementById('silence-created').textContent")
        == f"Silence {made[0].id} created."
    )
    assert browser.js("[...document.querySelectorAll('h1 .badge')].map(b => b.textContent)") == ["silenced"]
    assert "deploy <b>42</b>" in browser.js("document.getElementById('muted').textContent")  # shown as text
    page_text(browser)
    shot(browser, artifacts, "silence-created.png")

    # the link behind Slack's "Silence" button opens the form prefilled, with the alerts it matches
    link = silence_url(base, {"alertname": "LatencyHigh", "tenant": "acme"})
    assert link is not None
    browser.open(link)
    assert browser.js("document.querySelector('textarea[name=matchers]').value") == (
        'alertname="LatencyHigh"\ntenant="acme"'
    )
    assert browser.js("document.querySelectorAll('div.affected').length") == 1
    shot(browser, artifacts, "silence-new-from-slack.png")
    browser.submit(
        f"document.querySelector('form.silence input[name=token]').value = '{ADMIN_TOKEN}';"
        "document.querySelector('form.silence').submit()"
    )
    assert browser.js("location.pathname") == "/silences/new"
    assert browser.js("document.getElementById('silence-created').textContent").startswith("Silence ")
    assert len([s for s in _silences(inc) if s.id not in before]) == 2

    # another origin's page posting the same form is refused: the browser sends its Origin
    attacker = FastAPI()
    form = (
        f'<form id="f" method="post" action="{base}/alerts/{fp}/silence">'
        '<input name="matchers" value="tenant=&quot;acme&quot;"><input name="duration" value="1h">'
        f'<input name="token" value="{ADMIN_TOKEN}"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )

    @attacker.get("/")
    def evil() -> HTMLResponse:
        return HTMLResponse(form)

    other = ServerThread(attacker, port=0).start()
    try:
        count = len(_silences(inc))
        browser.events.clear()
        browser.call("Page.navigate", session=True, url=f"http://127.0.0.1:{other.port}/")
        browser.wait_event("Page.loadEventFired")  # the attacker's page
        deadline = time.monotonic() + 30
        while browser.js("location.port") != base.rsplit(":", 1)[1] and time.monotonic() < deadline:
            browser.wait_event("Page.loadEventFired", timeout=30)  # the form's answer
        assert "cross-origin post" in browser.js("document.getElementById('error').textContent")
        assert len(_silences(inc)) == count
        shot(browser, artifacts, "silence-cross-origin.png")
    finally:
        other.stop()
