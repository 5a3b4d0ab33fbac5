"""The status page in headless Chromium (Debian ``chromium``): a running Daemon's firing alert and its chart.

The page marks each chart ``data-rendered="yes"`` with its ``naturalWidth`` once the browser has
decoded it; ``--dump-dom`` returns the DOM after the load event, so the test reads what the browser
actually drew. The screenshot is kept under ``$WATCHER_TEST_ARTIFACTS/status-page/`` when that is
set, else under ``test-artifacts/`` (ignored by git), and its path printed.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import missing_component
from tests.web.test_page import SECRETS, make_daemon
from watcher.daemon import Daemon

ARTIFACTS = (
    Path(os.environ["WATCHER_TEST_ARTIFACTS"]) / "status-page"
    if os.environ.get("WATCHER_TEST_ARTIFACTS")
    else Path(__file__).resolve().parents[2] / "test-artifacts"
)


@pytest.fixture
def chromium() -> str:
    """Return the Chromium binary (skip, or fail under WATCHER_REQUIRE_INTEGRATION=1, without one)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    missing_component("chromium not found (apt-get install chromium)")
    raise AssertionError("unreachable")


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    """Return a running Daemon (its HTTP server on a free port) with a firing alert, and its base URL."""
    daemon, _, _ = make_daemon(tmp_path, datetime.now(UTC))
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 30
        base = None
        while time.monotonic() < end:
            http = getattr(daemon, "http", None)
            if http is not None:
                base = f"http://127.0.0.1:{http.port}"
                alerts = httpx.get(f"{base}/api/v1/alerts", params={"state": "firing"}).json()["data"][
                    "alerts"
                ]
                if alerts:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the daemon did not fire the scenario's alert within 30 s")
        assert base is not None
        yield daemon, base
    finally:
        daemon.request_stop()
        thread.join(30)
        daemon.close()


def test_status_page_in_headless_chromium(chromium: str, running: tuple[Daemon, str], tmp_path: Path) -> None:
    _daemon, base = running
    dom = _browser(chromium, tmp_path / "profile-dom", "--dump-dom", f"{base}/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # the firing alert of the scenario is on the page, with its trace link
    cards = re.findall(
        r'<div class="alert alert-firing"[^>]*data-state="firing"[^>]*>(.*?)<img([^>]*)>', html, re.S
    )
    assert len(cards) == 1, html[:3000]
    body, img = cards[0]
    assert 'tenant="acme"' in body and "SpendSpike" in body and "https://tempo.example/trace/" in body
    # ... and the browser decoded its chart
    assert 'data-rendered="yes"' in img and 'data-natural-width="800"' in img, img
    for secret in SECRETS:
        assert secret not in html
    src = re.search(r'src="([^"]+)"', img)
    assert src is not None
    png = httpx.get(base + src.group(1))
    with Image.open(io.BytesIO(png.content)) as chart:
        assert chart.format == "PNG" and chart.size == (800, 300)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    r = _browser(
        chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1600", f"{base}/"
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as img_file:
        assert img_file.size == (1280, 1600)
        # not a blank page: the screenshot has many distinct colours (text, the chart's band and lines)
        assert len(img_file.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
    print(f"status page screenshot: {shot}")

    rule = _browser(chromium, tmp_path / "profile-rule", "--dump-dom", f"{base}/rules/llm-cost/SpendSpike")
    assert rule.returncode == 0, rule.stderr[-2000:]
    seven_day = re.findall(r'<img[^>]*src="/chart/rule/llm-cost/SpendSpike/\d+\.png"[^>]*>', rule.stdout)
    assert len(seven_day) == 2 and all('data-rendered="yes"' in t for t in seven_day), seven_day
    rule_shot = ARTIFACTS / "rule-page.png"
    r = _browser(
        chromium,
        tmp_path / "profile-rule-shot",
        f"--screenshot={rule_shot}",
        "--window-size=1280,1400",
        f"{base}/rules/llm-cost/SpendSpike",
    )
    assert r.returncode == 0 and rule_shot.is_file(), r.stderr[-2000:]
    print(f"rule page screenshot: {rule_shot}")
