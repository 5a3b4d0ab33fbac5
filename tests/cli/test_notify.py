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
    assert main(["notify", "dead-letters", "--config", config]) == 2  # a read-only command: no store yet
    assert "no store at" in capsys.readouterr().err
    settings = load_settings(config)
    open_store(settings.store.url.get_secret_value()).close()
    assert main(["notify", "dead-letters", "--config", config]) == 0
    assert "no dead letters" in capsys.readouterr().out
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


def test_notify_test_resolved_closes_its_own_test_incident(
    tmp_path: Path, http_receiver: HTTPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21: the resolve carried another dedup key, so the PagerDuty test incident stayed open."""
    config = str(_config(tmp_path, http_receiver.url))
    http_receiver.set_statuses([202])
    assert main(["notify", "test", "pd", "--config", config]) == 0
    assert main(["notify", "test", "pd", "--resolved", "--config", config]) == 0
    assert main(["notify", "test", "pd", "--config", config]) == 0  # a later run: the same incident
    (_, _, trigger), (_, _, resolve), (_, _, again) = http_receiver.requests
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == again["dedup_key"]
    config2 = tmp_path / "other.yaml"
    config2.write_text(Path(config).read_text().replace("pd:", "pd2:").replace("[pd]", "[pd2]"))
    assert main(["notify", "test", "pd2", "--config", str(config2)]) == 0
    assert http_receiver.requests[-1][2]["dedup_key"] != trigger["dedup_key"]  # one per receiver


def test_notify_test_slack_posts_block_kit_to_the_configured_endpoint(
    tmp_path: Path, http_receiver: HTTPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.notify.test_slack import assert_block_kit

    config = tmp_path / "watcher.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        "external_url: http://watcher.test\npublic_url: https://watcher.example.com\n"
        f"receivers:\n  chat: {{type: slack, url: '{http_receiver.url}/proxy/slack/T1/B2/S3cr3tHook'}}\n"
        "route: {receivers: [chat]}\n"
    )
    assert main(["notify", "test", "chat", "--config", str(config)]) == 0
    assert main(["notify", "test", "chat", "--resolved", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "chat: accepted firing test notification — HTTP 200: ok" in out
    assert_no_secret(out, ["S3cr3tHook"])
    (path, _, firing_doc), (_, _, resolved_doc) = http_receiver.requests
    assert path == "/proxy/slack/T1/B2/S3cr3tHook"
    for doc in (firing_doc, resolved_doc):
        assert_block_kit(doc)
    assert firing_doc["text"].startswith(":red_circle: [FIRING] WatcherTestNotification")
    assert resolved_doc["text"].startswith(":large_green_circle: [RESOLVED] WatcherTestNotification")
    images = [b["image_url"] for b in firing_doc["blocks"] if b["type"] == "image"]
    assert images and images[0].startswith("https://watcher.example.com/chart/alert/")
