"""Crash safety: ``watcher run`` SIGKILLed between enqueue and send, and between send and mark-sent.

The process is held at the exact point by the test-only hook ``WATCHER_TEST_PAUSE_AT``
(``watcher.notify.faults``) and killed by the test with SIGKILL; a second ``watcher run --once``
must deliver everything, and a redelivery must carry the same webhook ``notification_id`` and
PagerDuty ``dedup_key`` (at-least-once, idempotent for the receiver).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.httpreceiver import HTTPReceiver
from watcher.store.db import open_store
from watcher.store.tables import Call

ROOT = Path(__file__).resolve().parents[2]
RULE = """\
groups:
  - name: cost
    interval: 1m
    rules:
      - alert: Spend
        source: calls
        query: {agg: sum, field: cost_usd, window: 5m, by: [tenant]}
        detector: {kind: threshold, above: 5}
        labels: {severity: page}
"""


def _setup(tmp_path: Path, receiver: HTTPReceiver, order: str = "hook, pd") -> Path:
    db = tmp_path / "w.db"
    store = open_store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    with store.session() as s:
        for i in range(3):
            s.add(
                Call(
                    trace_id=f"{i:032x}", ts=now - timedelta(seconds=70 + 30 * i), tenant="acme", cost_usd=4.0
                )
            )
        s.commit()
    store.close()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "cost.yaml").write_text(RULE)
    config = tmp_path / "watcher.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{db}'}}\n"
        f"rules: ['{tmp_path / 'rules'}']\n"
        "server: {enabled: false}\n"
        "receivers:\n"
        f"  hook: {{type: webhook, url: '{receiver.url}/hook', secret: s3cr3t}}\n"
        f"  pd: {{type: pagerduty, routing_key: rk0123456789, url: '{receiver.url}/pd'}}\n"
        f"route: {{receivers: [{order}]}}\n"
        # one send at a time, so "the receiver accepted one message and the process died" is exact
        # (by default the two receivers are sent to concurrently)
        "notify: {delivery_workers: 1}\n"
    )
    return config


def _run(config: Path, pause_at: str | None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WATCHER_TEST_PAUSE_AT", None)
    if pause_at:
        env["WATCHER_TEST_PAUSE_AT"] = pause_at
    return subprocess.Popen(
        [sys.executable, "-m", "watcher", "run", "--once", "--drain-timeout", "5", "--config", str(config)],
        cwd=config.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _kill_when_paused(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> None:
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    end = time.monotonic() + timeout
    while not seen.wait(0.1) and t.is_alive() and time.monotonic() < end:
        pass
    ok = seen.is_set()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    t.join(5)
    assert proc.stdout is not None
    proc.stdout.close()
    assert ok, "process never reached the checkpoint:\n" + "".join(lines)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize(("pause_at", "hook_requests"), [("enqueue", 1), ("send", 2)])
def test_sigkill_then_restart_delivers_with_the_same_ids(
    tmp_path: Path, http_receiver: HTTPReceiver, pause_at: str, hook_requests: int
) -> None:
    config = _setup(tmp_path, http_receiver)
    _kill_when_paused(_run(config, pause_at), f"WATCHER_TEST_PAUSED {pause_at}")
    before = len(http_receiver.requests)
    assert before == (1 if pause_at == "send" else 0)  # the kill landed after the send, before mark-sent

    again = _run(config, None)
    err, _ = again.communicate(timeout=60)
    assert again.returncode == 0, err
    time.sleep(0.1)
    reqs = http_receiver.requests
    hook = [body for path, _, body in reqs if path == "/hook"]
    pd = [body for path, _, body in reqs if path == "/pd"]
    assert len(hook) == hook_requests and len(pd) == 1
    assert len({b["notification_id"] for b in hook}) == 1  # a redelivery, recognisable as such
    assert hook[0]["alertname"] == "Spend" and hook[0]["labels"]["tenant"] == "acme"
    assert pd[0]["event_action"] == "trigger" and pd[0]["dedup_key"] == hook[0]["dedup_key"]
    assert "0 notification(s) still pending" in err or "still pending" not in err


def test_sigkill_after_the_pagerduty_send_redelivers_the_same_event(
    tmp_path: Path, http_receiver: HTTPReceiver
) -> None:
    config = _setup(tmp_path, http_receiver, order="pd, hook")  # PagerDuty is sent first
    _kill_when_paused(_run(config, "send"), "WATCHER_TEST_PAUSED send")
    assert [path for path, _, _ in http_receiver.requests] == ["/pd"]

    again = _run(config, None)
    err, _ = again.communicate(timeout=60)
    assert again.returncode == 0, err
    reqs = http_receiver.requests
    pd = [body for path, _, body in reqs if path == "/pd"]
    hook = [body for path, _, body in reqs if path == "/hook"]
    assert len(pd) == 2 and len(hook) == 1
    # The redelivered event is the same event: PagerDuty's dedup_key folds it into the open incident.
    assert pd[0] == pd[1] and pd[0]["event_action"] == "trigger"
    assert pd[0]["dedup_key"] == hook[0]["dedup_key"]
