"""``watcher notify test RECEIVER``: a realistic sample, and the receiver's actual answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.httpreceiver import HTTPReceiver
from tests.notify.secrets import assert_no_secret
from watcher.cli import main


def _config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "watcher.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        f"receivers:\n  pd: {{type: pagerduty, routing_key: Rk5ecretRk5ecret, url: '{url}'}}\n"
        "route: {receivers: [pd]}\n"
    )
    return config


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        (202, 0, "accepted firing test notification — HTTP 202"),
        (400, 1, "FAILED (client_error, not retryable)"),
    ],
)
def test_notify_test_reports_the_answer(
    tmp_path: Path,
    http_receiver: HTTPReceiver,
    capsys: pytest.CaptureFixture[str],
    status: int,
    code: int,
    text: str,
) -> None:
    http_receiver.set_statuses([status])
    assert main(["notify", "test", "pd", "--config", str(_config(tmp_path, http_receiver.url))]) == code
    out = capsys.readouterr()
    assert text in out.out
    assert_no_secret(out.out + out.err, ["Rk5ecretRk5ecret"])
    (_, _, body) = http_receiver.requests[0]
    assert body["payload"]["class"] == "WatcherTestNotification" and body["links"][0]["href"].endswith(
        "e4736"
    )


def test_notify_test_unknown_receiver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notify", "test", "nope", "--config", str(_config(tmp_path, "http://127.0.0.1:9"))]) == 1
    assert "no receiver 'nope'; configured: pd" in capsys.readouterr().err
