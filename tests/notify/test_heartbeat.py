"""The heartbeat pings its URL, reports refusals and never leaks the URL."""

from __future__ import annotations

import logging

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
