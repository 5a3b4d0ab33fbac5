"""The heartbeat pings its URL, reports refusals and never leaks the URL."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.notify.secrets import assert_no_secret
from watcher.config import HeartbeatSettings
from watcher.notify.heartbeat import Heartbeat


def test_heartbeat_pings_and_counts_failures(
    http_receiver: HTTPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    beat = Heartbeat(HeartbeatSettings(url=SecretStr(f"{http_receiver.url}/ping/Ch3ckUuidS3cret")))
    assert beat.ping() is True
    http_receiver.set_statuses([503])
    assert beat.ping() is False and beat.failures == 1
    assert [p for p, _, _ in http_receiver.requests] == ["/ping/Ch3ckUuidS3cret"] * 2
    closed = Heartbeat(
        HeartbeatSettings(url=SecretStr("http://127.0.0.1:9/ping/Ch3ckUuidS3cret"), timeout_s=1)
    )
    assert closed.ping() is False
    assert "heartbeat" in caplog.text
    assert_no_secret(caplog.text, ["Ch3ckUuidS3cret"])


def test_the_running_daemon_pings_its_heartbeat(tmp_path: Any, http_receiver: HTTPReceiver) -> None:
    import threading
    from datetime import timedelta

    from watcher.config import (
        NotifySettings,
        ReceiverSettings,
        RouteSettings,
        ServerSettings,
        Settings,
        StoreSettings,
    )
    from watcher.daemon import Daemon
    from watcher.sources.memory import MemorySource

    (tmp_path / "rules").mkdir()
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/w.db"),
        rules=[tmp_path / "rules"],
        server=ServerSettings(enabled=False),
        receivers={"console": ReceiverSettings(type="console")},
        route=RouteSettings(receivers=["console"]),
        notify=NotifySettings(
            heartbeat=HeartbeatSettings(
                url=SecretStr(f"{http_receiver.url}/ping/Ch3ckUuidS3cret"), interval=timedelta(seconds=1)
            )
        ),
    )
    d = Daemon(settings, sources={"prometheus": MemorySource()})
    t = threading.Thread(target=d.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    try:
        (path, _, body), *_ = http_receiver.wait_for(2, timeout=20)
    finally:
        d.request_stop()
        t.join(20)
    assert not t.is_alive()
    assert path == "/ping/Ch3ckUuidS3cret" and body == "watcher ok"
    d.store.close()
