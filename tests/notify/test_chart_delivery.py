"""Charts reach the receivers that take files: the engine's history → snapshot → PNG attachment."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from sqlmodel import select

from tests.groups import cost_group
from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0 as F0
from tests.notify.factory import SqliteStore, firing, make_settings
from watcher.config import ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.core import Verdict, to_epoch
from watcher.daemon import Daemon
from watcher.notify.charts import chart_snapshot, snapshot_png
from watcher.notify.pipeline import Notifier
from watcher.sources.memory import MemorySource
from watcher.store.tables import OutboxRow

PNG = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)
GROUP = cost_group(labels={"severity": "page"})


def _daemon(tmp_path: Path, src: MemorySource, rs: ReceiverSettings) -> Daemon:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yaml").write_text(yaml.safe_dump({"groups": [GROUP]}))
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/w.db"),
        rules=[tmp_path / "rules"],
        receivers={"hook": rs},
        route=RouteSettings(receivers=["hook"]),
        external_url="http://watcher.test",
    )
    return Daemon(settings, sources={"prometheus": src})


def _run_incident(d: Daemon, src: MemorySource) -> None:
    series = src.series("CostHigh", {"tenant": "acme"})
    for m in range(12):
        series.add(to_epoch(T0 + m * M), 50.0 if m >= 8 else 2.0 + m / 10)
        d.run_once(T0 + m * M, drain_s=0)


def _json_url(http_receiver: HTTPReceiver) -> SecretStr:
    return SecretStr(f"json://127.0.0.1:{http_receiver.port}/alerts")


def test_daemon_attaches_the_series_chart_over_apprise(tmp_path: Path, http_receiver: HTTPReceiver) -> None:
    src = MemorySource()
    d = _daemon(tmp_path, src, ReceiverSettings(type="apprise", urls=[_json_url(http_receiver)], timeout_s=3))
    try:
        _run_incident(d, src)
        ((path, _headers, body),) = http_receiver.requests
        assert path == "/alerts" and "[FIRING] CostHigh" in body["title"]
        (att,) = body["attachments"]
        assert att["filename"] == "chart.png" and att["mimetype"] == "image/png"
        png = base64.b64decode(att["base64"])
        assert png.startswith(PNG) and int.from_bytes(png[16:20], "big") == 800
        # The snapshot stored with the outbox row is the series the engine saw, anomalous span included.
        with d.store.session() as s:
            (row,) = s.exec(select(OutboxRow)).all()
        chart = (row.message or {})["chart"]
        # Fired (no `for`) on the first anomalous point: the chart ends there, the history before it normal.
        assert chart["value"][-2:] == [2.7, 50.0] and chart["anomalous"][-1] is True
        assert not any(chart["anomalous"][:-1]) and chart["title"].startswith("CostHigh {")
        assert chart["ts"][-1] == to_epoch(T0 + 8 * M)
        get = d.metrics.registry.get_sample_value
        assert get("watcher_notifications_enqueued_total", {"receiver": "hook"}) == 1
        assert get("watcher_notifications_sent_total", {"receiver": "hook"}) == 1
    finally:
        d.store.close()


def test_no_chart_when_the_receiver_opts_out(tmp_path: Path, http_receiver: HTTPReceiver) -> None:
    src = MemorySource()
    rs = ReceiverSettings(type="apprise", urls=[_json_url(http_receiver)], timeout_s=3, attach_chart=False)
    d = _daemon(tmp_path, src, rs)
    try:
        _run_incident(d, src)
        ((_, _, body),) = http_receiver.requests
        assert "[FIRING] CostHigh" in body["title"] and body["attachments"] == []
    finally:
        d.store.close()


def test_a_broken_chart_never_stops_the_notification(store: SqliteStore, http_receiver: HTTPReceiver) -> None:
    def broken(_: Any) -> list[Verdict]:
        raise RuntimeError("history exploded")

    rs = ReceiverSettings(type="apprise", urls=[_json_url(http_receiver)], timeout_s=3)
    settings = make_settings(receivers={"hook": rs}, route=RouteSettings(receivers=["hook"]))
    notifier = Notifier(store, settings, history=broken)
    notifier.submit([(firing(), [])], F0)
    # A snapshot that cannot be drawn (corrupted row) is sent without the picture, too.
    bad = {"ts": [1.0, 2.0], "value": [1.0], "expected": [], "lower": [], "upper": [], "anomalous": []}
    assert snapshot_png(bad) is None
    with store.session() as s:
        (row,) = s.exec(select(OutboxRow)).all()
        assert "chart" not in (row.message or {})
        row.message = {**(row.message or {}), "chart": bad}
        s.add(row)
        s.commit()
    assert notifier.flush(F0).sent == 1
    ((_, _, body),) = http_receiver.requests
    assert "[FIRING] SpendAnomaly" in body["title"] and body["attachments"] == []


def test_chart_snapshot_keeps_ready_points_and_json_safe_band() -> None:
    vs = [
        Verdict(ts=0.0, value=float("nan"), ready=False, reason="no data"),
        Verdict(ts=60.0, value=1.0),  # a threshold: no band
        Verdict(ts=120.0, value=5.0, expected=1.0, lower=0.5, upper=2.0, anomalous=True),
    ]
    snap = chart_snapshot(vs, title="t")
    assert snap is not None and snap["ts"] == [60.0, 120.0] and snap["lower"] == [None, 0.5]
    json.dumps(snap, allow_nan=False)  # storable in PostgreSQL JSON
    png = snapshot_png(snap)
    assert png is not None and png.startswith(PNG)
    assert chart_snapshot(vs[:2]) is None  # one ready point is not a chart


class _SlackAPI:
    """A Slack Web API stand-in (bot mode): chat.postMessage, then the external file upload."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.upload_error: str | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.calls.append((self.path, raw))
                port = owner.server.server_address[1]
                if self.path.startswith("/api/chat.postMessage"):
                    reply: dict[str, Any] = {"ok": True, "channel": "C123", "ts": "1.0"}
                elif self.path.startswith("/api/files.getUploadURLExternal") and owner.upload_error:
                    reply = {"ok": False, "error": owner.upload_error}
                elif self.path.startswith("/api/files.getUploadURLExternal"):
                    reply = {"ok": True, "file_id": "F1", "upload_url": f"http://127.0.0.1:{port}/upload/F1"}
                elif self.path.startswith("/api/files.completeUploadExternal"):
                    reply = {"ok": True, "files": [{"id": "F1", "title": "chart.png"}]}
                else:
                    reply = {"ok": True}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )


@pytest.fixture
def slack_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SlackAPI]:
    from apprise.plugins.slack import NotifySlack

    api = _SlackAPI()
    api.thread.start()
    monkeypatch.setattr(NotifySlack, "api_url", f"http://127.0.0.1:{api.server.server_address[1]}/api/{{}}")
    monkeypatch.setattr(NotifySlack, "request_rate_per_sec", 0)  # Apprise waits 1.2 s between Slack calls
    yield api
    api.server.shutdown()
    api.server.server_close()


BOT_URL = "slack://xoxb-1234-1234-4ddbc191d40ee098cbaae6f3523ada2d/#llm-alerts"


HISTORY = [
    Verdict(
        ts=to_epoch(F0) + 60 * i,
        value=1.0 if i < 8 else 9.0,
        expected=1.0,
        lower=0.5,
        upper=2.0,
        anomalous=i >= 8,
    )
    for i in range(10)
]


def _slack_bot_notifier(store: SqliteStore) -> Notifier:
    rs = ReceiverSettings(type="apprise", urls=[SecretStr(BOT_URL)], timeout_s=3)
    settings = make_settings(receivers={"slack": rs}, route=RouteSettings(receivers=["slack"]))
    return Notifier(store, settings, history=lambda alert: HISTORY)


def test_slack_bot_mode_uploads_the_chart(store: SqliteStore, slack_api: _SlackAPI) -> None:
    notifier = _slack_bot_notifier(store)
    notifier.submit([(firing(), [])], F0)
    assert notifier.flush(F0).sent == 1
    paths = [p.split("?")[0] for p, _ in slack_api.calls]
    assert paths == [
        "/api/chat.postMessage",  # the message, on its own: its fate decides the delivery
        "/api/chat.postMessage",  # then the chart, best effort
        "/api/files.getUploadURLExternal",
        "/upload/F1",
        "/api/files.completeUploadExternal",
    ]
    message = json.loads(slack_api.calls[0][1])
    assert "[FIRING] SpendAnomaly" in json.dumps(message) and message["channel"] == "#llm-alerts"
    assert "Chart: [FIRING] SpendAnomaly" in json.dumps(json.loads(slack_api.calls[1][1]))
    assert PNG in slack_api.calls[3][1]  # the PNG itself went up (multipart body)
    assert "filename=chart.png" in slack_api.calls[2][0]


def test_a_refused_slack_upload_neither_fails_nor_repeats_the_page(
    store: SqliteStore, slack_api: _SlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    slack_api.upload_error = "missing_scope"  # a bot token without files:write
    notifier = _slack_bot_notifier(store)
    notifier.submit([(firing(), [])], F0)
    assert notifier.flush(F0).sent == 1
    assert notifier.flush(F0 + timedelta(minutes=5)).pending == 0  # nothing left to retry
    posts = [p for p, _ in slack_api.calls if p.startswith("/api/chat.postMessage")]
    assert len(posts) == 2  # the page once, the chart caption once: no re-post
    assert "chart not attached" in caplog.text


def test_chart_snapshot_is_bounded_for_the_outbox() -> None:
    from watcher.notify.charts import MAX_POINTS

    vs = [Verdict(ts=60.0 * i, value=1 / 3 + i, expected=1.0, lower=0.5, upper=2.0) for i in range(2000)]
    snap = chart_snapshot(vs)
    assert snap is not None and len(snap["ts"]) == MAX_POINTS and snap["ts"][-1] == 60.0 * 1999
    assert snap["value"][-1] == 1999.33  # 6 significant digits
    assert len(json.dumps(snap)) < 50_000


def test_a_message_refused_with_its_chart_goes_again_without_it(
    store: SqliteStore, http_receiver: HTTPReceiver
) -> None:
    http_receiver.set_statuses([413, 200])  # e.g. a proxy's body size limit
    rs = ReceiverSettings(type="apprise", urls=[_json_url(http_receiver)], timeout_s=3)
    settings = make_settings(receivers={"hook": rs}, route=RouteSettings(receivers=["hook"]))
    notifier = Notifier(store, settings, history=lambda alert: HISTORY)
    notifier.submit([(firing(), [])], F0)
    assert notifier.flush(F0).sent == 1
    (_, _, first), (_, _, second) = http_receiver.requests
    assert len(first["attachments"]) == 1 and second["attachments"] == []
    assert first["title"] == second["title"]
