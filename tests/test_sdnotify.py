"""sd_notify: the readiness datagram, in-process and from a real ``watcher run``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher import sdnotify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:  # AF_UNIX paths are limited to 108 bytes
        path = Path("/tmp") / f"watcher-notify-{uuid.uuid4().hex[:8]}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def test_no_socket_is_a_no_op() -> None:
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "/nonexistent/x.sock"}) is False


def test_ready_datagram(notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready("3 groups")
    fields = sock.recv(4096).decode().split("\n")
    assert fields == ["READY=1", "STATUS=3 groups", f"MAINPID={os.getpid()}"]


def test_abstract_socket() -> None:
    name = f"watcher-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert sdnotify.notify("STATUS=a\nb", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STATUS=a b"


def test_daemon_sends_ready_and_logs_json(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "groups:\n  - name: cost\n    interval: 1s\n    rules:\n      - alert: Spend\n        source: calls\n"
        "        query: {agg: sum, field: cost_usd, window: 5m, by: [tenant]}\n"
        "        detector: {kind: threshold, above: 5}\n"
    )
    (tmp_path / "watcher.yaml").write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\nrules: ['{rules}']\nserver: {{enabled: false}}\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": path, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        fields = dict(f.split("=", 1) for f in sock.recv(4096).decode().split("\n"))
        assert fields["READY"] == "1"
        assert fields["MAINPID"] == str(proc.pid)
        assert "1 rule group" in fields["STATUS"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    docs = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(d["msg"].startswith("watcher running") for d in docs), err
    assert all({"ts", "level", "logger", "msg"} <= set(d) for d in docs)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected


def test_daemon_pings_the_watchdog(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "groups:\n  - name: cost\n    interval: 1s\n    rules:\n      - alert: Spend\n        source: calls\n"
        "        query: {agg: sum, field: cost_usd, window: 5m, by: [tenant]}\n"
        "        detector: {kind: threshold, above: 5}\n"
    )
    (tmp_path / "watcher.yaml").write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\nrules: ['{rules}']\nserver: {{enabled: false}}\n"
    )
    env = {
        **os.environ,
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "400000",  # WatchdogSec=0.4s: a ping every 0.2 s
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = []
        while sum(m == "WATCHDOG=1" for m in messages) < 3:
            messages.append(sock.recv(4096).decode())  # the fixture's 30 s timeout fails a silent daemon
        assert messages[0].startswith("READY=1")  # pings start once the daemon is up
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
