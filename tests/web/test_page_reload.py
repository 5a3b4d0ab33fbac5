"""`watcher run` reloading a broken rule file: old rules kept, the error on /readyz and the status page."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.engine.test_daemon_process import RULE
from tests.procs import Proc


def _poll(what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
    """Return the first truthy result of ``fn`` (retried every 0.1 s), or fail saying ``what``."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = fn()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not seen within {timeout} s (last: {last!r})")


def _rules(base: str) -> list[dict[str, Any]]:
    return [r for g in httpx.get(f"{base}/api/v1/rules").json()["data"]["groups"] for r in g["rules"]]


def test_broken_reload_keeps_rules_and_reports_file_line_col(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cost.yaml").write_text(RULE.format(above=5))
    (tmp_path / "watcher.yaml").write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\nrules: ['{rules}']\n"
        "server: {host: 127.0.0.1, port: 0}\n"
    )
    proc = Proc(["run"], tmp_path)
    try:
        line = proc.wait_for("HTTP server listening on")
        port = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert port is not None, line
        base = f"http://127.0.0.1:{port.group(1)}"
        proc.wait_for("watcher running")
        _poll("a first evaluation", lambda: _rules(base)[0]["evaluations"] >= 1)

        # broken: the old rule keeps being evaluated; readyz and the page name file:line:col
        (rules / "cost.yaml").write_text(RULE.format(above=5).replace("1s", "one second"))
        proc.p.send_signal(signal.SIGHUP)
        ready = _poll(
            "the reload error on /readyz", lambda: httpx.get(f"{base}/readyz").json()["last_reload_error"]
        )
        assert 'cost.yaml:3:15: group "cost": interval: bad duration' in ready
        r = httpx.get(f"{base}/readyz")
        assert (
            r.status_code == 200
            and r.json()["ready"] is True
            and r.json()["rules"] == {"groups": 1, "rules": 1}
        )
        page = httpx.get(f"{base}/").text
        assert (
            'id="reload-error"' in page and "cost.yaml:3:15" in page and "previous rules keep running" in page
        )
        before = _rules(base)[0]["evaluations"]
        _poll("the old rule still evaluated", lambda: _rules(base)[0]["evaluations"] > before)
        assert [r["name"] for r in _rules(base)] == ["Spend"]

        # fixed and changed: picked up, the error is gone
        (rules / "cost.yaml").write_text(RULE.format(above=7).replace("alert: Spend", "alert: SpendHigh"))
        proc.p.send_signal(signal.SIGHUP)
        _poll("the changed rule", lambda: [r["name"] for r in _rules(base)] == ["SpendHigh"])
        assert httpx.get(f"{base}/readyz").json()["last_reload_error"] is None
        assert 'id="reload-error"' not in httpx.get(f"{base}/").text
        proc.wait_for("rules reloaded: 1 groups, 1 rules")

        proc.p.send_signal(signal.SIGTERM)
        assert proc.p.wait(timeout=10) == 0
    finally:
        proc.close()
