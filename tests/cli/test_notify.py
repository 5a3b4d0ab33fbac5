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


def test_notify_dead_letters_lists_and_requeues(
    tmp_path: Path, http_receiver: HTTPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.notify.factory import T0, firing
    from watcher.config import load_settings
    from watcher.notify.pipeline import Notifier
    from watcher.store.db import open_store

    http_receiver.set_statuses([400])
    config = str(_config(tmp_path, http_receiver.url))
    assert main(["notify", "dead-letters", "--config", config]) == 0
    assert "no dead letters" in capsys.readouterr().out
    settings = load_settings(config)
    store = open_store(settings.store.url.get_secret_value())
    try:
        notifier = Notifier(store, settings)
        notifier.submit([(firing(), [])], T0)
        assert notifier.flush(T0).dead == 1
    finally:
        store.close()
    assert main(["notify", "dead-letters", "--config", config, "--receiver", "pd"]) == 0
    out = capsys.readouterr().out
    assert "pd  client_error after 1 attempt(s)  [FIRING] SpendAnomaly" in out and "error=400" in out
    assert_no_secret(out, ["Rk5ecretRk5ecret"])
    row_id = out.split()[0]
    assert main(["notify", "dead-letters", "--config", config, "--requeue", row_id]) == 0
    assert main(["notify", "dead-letters", "--config", config, "--requeue", row_id]) == 1
    out = capsys.readouterr()
    assert "queued again" in out.out and f"no dead letter with id {row_id}" in out.err
    assert main(["notify", "dead-letters", "--config", config]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters"


def test_watcher_check_never_prints_a_receiver_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules").mkdir()
    config = tmp_path / "watcher.yaml"
    config.write_text(
        "receivers:\n"
        "  pd: {type: pagerduty, routing_key: Rk5ecretRk5ecretXX, severity_map: {page: bogus}}\n"
        "  hook: {type: webhook, url: 'https://h00k.example/Wh5ecretPath?token=T0kenXyzXyz',"
        " secret: HmacS3cr3tXX, timeoutt: 3}\n"
        "  slack: {type: apprise, colour: red,"
        " urls: ['slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#c']}\n"
        "  am: {type: alertmanager, url: 'http://u:AmPa55w0rdXX@127.0.0.1:9093', group_wait: soon}\n"
    )
    code = main(["check", "--config", str(config), str(tmp_path / "rules")])
    out = capsys.readouterr()
    assert code != 0
    for field in ("severity_map", "timeoutt", "colour", "group_wait"):
        assert field in out.out + out.err  # every problem is reported…
    assert_no_secret(  # …and no secret with it
        out.out + out.err,
        [
            "Rk5ecretRk5ecretXX",
            "Wh5ecretPath",
            "T0kenXyzXyz",
            "HmacS3cr3tXX",
            "TIiajkdnlazkcOXrIdevi7FQ",
            "AmPa55w0rdXX",
        ],
    )


def test_notify_test_attaches_a_sample_chart_where_files_go(
    tmp_path: Path, http_receiver: HTTPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64

    config = tmp_path / "watcher.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        f"receivers:\n  j: {{type: apprise, urls: ['json://127.0.0.1:{http_receiver.port}/n']}}\n"
        "route: {receivers: [j]}\n"
    )
    assert main(["notify", "test", "j", "--config", str(config)]) == 0
    assert "j: accepted firing test notification with a chart" in capsys.readouterr().out
    (_, _, body) = http_receiver.requests[0]
    (att,) = body["attachments"]
    assert base64.b64decode(att["base64"]).startswith(b"\x89PNG") and att["filename"] == "chart.png"
    assert "value $12.34/h (expected $1.20/h" in body["message"]
