"""Release markers and pager feedback over HTTP and the CLI, on a real Daemon with a SQLite store.

A prompt rollout (v42 on gpt-4o) raises the refusal rate of feature chat: the marker is posted to
``/api/v1/annotations``, the alert explains itself (API, status page, message), the on-call marks
it, and the export is an incidents file ``watcher backtest`` reads.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from tests.engine.test_contribution import refusal_incident
from watcher.cli import main
from watcher.config import Settings
from watcher.daemon import Daemon
from watcher.notify.charts import MARKER_COLOUR, render_chart
from watcher.notify.receivers.base import RecordingReceiver
from watcher.store.db import open_store
from watcher.web.app import build_app

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
INGEST = "ingest-t0ken-for-why-tests"
ADMIN = "admin-t0ken-for-why-tests"
READ = "read-t0ken-for-why-tests"
RULES = """\
groups:
  - name: quality
    interval: 1m
    rules:
      - alert: RefusalRateHigh
        source: calls
        query: {agg: ratio, match: {outcome: refused}, window: 15m, by: [feature]}
        detector: {kind: threshold, above: 0.06}
        for: 3m
        annotations: {summary: "refusals of {{ labels.feature }}"}
        receivers: [hook]
"""


def marker_pixels(png: bytes) -> int:
    """Count the pixels of a chart drawn in the release-marker colour."""
    with Image.open(io.BytesIO(png)) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
    want = np.array([int(MARKER_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want) < 30).all(axis=-1).sum())


def test_release_markers_are_drawn_on_charts() -> None:
    ts = [60.0 * i for i in range(60)]
    values = [1.0 + (i % 5) / 10 for i in range(60)]
    plain = render_chart(ts, values)
    marked = render_chart(ts, values, markers=[(60.0 * 30, "deploy api-v2.3"), (1e9, "outside")])
    assert plain is not None and marked is not None
    assert marker_pixels(plain) == 0 and marker_pixels(marked) > 10


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "quality.yaml").write_text(RULES)
    db = tmp_path / "w.db"
    config = tmp_path / "watcher.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{db}"}, "rules": [str(rules)]}))
    settings = Settings(
        store={"url": f"sqlite:///{db}"},
        rules=[rules],
        receivers={"hook": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}},
        route={"receivers": ["hook"]},
        server={"port": 0, "ingest_token": INGEST, "admin_token": ADMIN, "read_token": READ},
        external_url="http://watcher.example",
    )
    store = open_store(f"sqlite:///{db}")
    # 24 calls a minute: at 6 the alerts fire 3 minutes in, too few v42 calls to stand out of noise
    refusal_incident(store, onset=T0, end=T0 + 40 * M, per_minute=24)
    sim = {"now": T0 - 10 * M}
    hook = RecordingReceiver("hook")
    daemon = Daemon(settings, store=store, receivers={"hook": hook}, clock=lambda: sim["now"])
    with TestClient(build_app(daemon), raise_server_exceptions=False) as client:
        yield {"daemon": daemon, "client": client, "sim": sim, "hook": hook, "config": config, "rules": rules}
    daemon.close()


def _run(world: dict[str, Any], until: datetime) -> None:
    daemon, sim = world["daemon"], world["sim"]
    t = sim["now"]
    while t <= until:
        sim["now"] = t
        for name in list(daemon.evaluators):
            daemon.evaluate_group(name, t)
        daemon.flush(t)
        t += M


def test_a_marker_an_explained_alert_and_the_on_calls_verdict(world: dict[str, Any], tmp_path: Path) -> None:
    client: TestClient = world["client"]
    _run(world, T0 - 5 * M)
    world["sim"]["now"] = T0 - 3 * M
    body = {"kind": "prompt_version", "text": "v42", "labels": {"prompt_version": "v42", "model": "gpt-4o"}}
    got = client.post("/api/v1/annotations", json=body)
    assert got.status_code == 401, got.text
    assert client.post("/api/v1/annotations", json=body, headers=_auth(READ)).status_code == 403
    got = client.post("/api/v1/annotations", json=body, headers=_auth(INGEST))  # a CI pipeline's token
    assert got.status_code == 200, got.text
    marker = got.json()["data"]["annotation"]
    assert marker["time"] == "2026-11-02T11:57:00Z" and marker["created_by"] == "ingest"
    assert marker["rebaseline_s"] == 0.0  # annotate only: a bad rollout must still page

    _run(world, T0 + 30 * M)
    alerts = client.get("/api/v1/alerts", headers=_auth(READ)).json()["data"]["alerts"]
    firing = [a for a in alerts if a["state"] == "firing"]
    assert firing
    chat = next(a for a in firing if a["labels"]["feature"] == "chat")
    why, release = chat["annotations"]["explanation"], chat["annotations"]["release"]
    assert why.startswith("rate of outcome=refused +") and "from prompt_version=v42 on model=gpt-4o" in why
    assert release.startswith("started ") and "after prompt version v42 (2026-11-02 11:57 UTC)" in release
    page = client.get("/", headers=_auth(READ)).text
    assert "<b>why:</b>" in page and "prompt_version=v42 on model=gpt-4o" in page
    # the card's feedback form posts the verdict with a token typed into it (no ambient credential)
    assert f'<form class="feedback" data-fingerprint="{chat["fingerprint"]}"' in page
    assert 'fetch("/api/v1/alerts/feedback"' in page and 'name="token"' in page
    sent = [n for n in world["hook"].sent if n.alert.labels.get("feature") == "chat"]
    assert (
        sent and "Why: rate of outcome=refused" in sent[0].body and "after prompt version v42" in sent[0].body
    )

    png = client.get(f"/chart/alert/{chat['fingerprint']}.png", headers=_auth(READ))
    assert png.status_code == 200 and marker_pixels(png.content) > 10  # the marker is drawn on the chart

    listed = client.get("/api/v1/annotations", headers=_auth(READ)).json()["data"]["annotations"]
    assert [m["text"] for m in listed] == ["v42"]

    # the on-call's verdict
    mark = {"fingerprint": chat["fingerprint"], "verdict": "real", "note": "v42 rolled back"}
    assert client.post("/api/v1/alerts/feedback", json=mark, headers=_auth(INGEST)).status_code == 403
    got = client.post("/api/v1/alerts/feedback", json=mark, headers=_auth(ADMIN))
    assert got.status_code == 200, got.text
    assert got.json()["data"]["feedback"]["verdict"] == "real"
    got = client.post("/api/v1/alerts/feedback", json={**mark, "verdict": "false"}, headers=_auth(ADMIN))
    assert got.json()["data"]["feedback"]["verdict"] == "false"  # a second verdict replaces the first
    rows = client.get("/api/v1/alerts/feedback", headers=_auth(READ)).json()["data"]["feedback"]
    assert (
        len(rows) == 1 and rows[0]["alertname"] == "RefusalRateHigh" and rows[0]["note"] == "v42 rolled back"
    )
    doc = client.get("/api/v1/alerts/feedback?format=incidents", headers=_auth(READ)).json()["data"]
    (inc,) = doc["incidents"]
    assert (
        inc["expect"] == "quiet" and inc["alert"] == "RefusalRateHigh" and inc["labels"]["feature"] == "chat"
    )

    # the export feeds a backtest, where the false alarm is a window the rule must stay quiet in
    out = tmp_path / "incidents.yaml"
    assert main(["feedback", "export", "-c", str(world["config"]), "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == doc["incidents"]
    report = tmp_path / "bt.json"
    argv = ["backtest", str(world["rules"]), "-c", str(world["config"]), "--incidents", str(out)]
    argv += ["--from", (T0 - 5 * M).isoformat(), "--to", (T0 + 30 * M).isoformat(), "--json", str(report)]
    assert main(argv) == 0
    bt = json.loads(report.read_text())
    assert bt["quiet"] == [{"id": inc["id"], "fired_again": True}]
    (episode,) = [e for e in bt["rules"][0]["episodes"] if e["labels"]["feature"] == "chat"]
    assert "from prompt_version=v42 on model=gpt-4o" in episode["explanation"]
    assert episode["release"] and "after prompt version v42" in episode["release"]  # markers honoured


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "rollback"},
        {"kind": "deploy", "labels": {"bad name": "x"}},
        {"kind": "deploy", "rebaseline": "forever"},
        {"kind": "deploy", "rebaseline": "3d"},
        {"kind": "deploy", "extra": 1},
        {"kind": "deploy", "time": "yesterday"},
        {"kind": "deploy", "text": "x" * 600},
        {"kind": "deploy", "time": "2030-01-01T00:00:00Z"},
    ],
)
def test_bad_markers_are_a_422(world: dict[str, Any], body: dict[str, Any]) -> None:
    got = world["client"].post("/api/v1/annotations", json=body, headers=_auth(ADMIN))
    assert got.status_code == 422, got.text


@pytest.mark.parametrize(
    "body",
    [
        {"fingerprint": "zz", "verdict": "real"},
        {"fingerprint": "0123456789abcdef", "verdict": "maybe"},
        {
            "fingerprint": "0123456789abcdef",
            "verdict": "real",
            "alertname": "X",
            "startsAt": "2026-11-02T12:00:00Z",
        },
    ],
)
def test_bad_feedback_is_a_4xx(world: dict[str, Any], body: dict[str, Any]) -> None:
    got = world["client"].post("/api/v1/alerts/feedback", json=body, headers=_auth(ADMIN))
    assert got.status_code in (404, 422), got.text
    unknown = {"fingerprint": "0123456789abcdef", "verdict": "real"}
    assert (
        world["client"].post("/api/v1/alerts/feedback", json=unknown, headers=_auth(ADMIN)).status_code == 404
    )


def test_the_cli_annotates_and_marks(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(world["config"])
    argv = [
        "annotate",
        "deploy",
        "api",
        "v2.3",
        "-l",
        "feature=chat",
        "--at",
        "2026-11-02T11:58:00Z",
        "-c",
        cfg,
    ]
    assert main([*argv, "--rebaseline", "20m"]) == 0
    assert "release marker 1: deploy api v2.3 at 2026-11-02 11:58:00Z, re-baselining for 0:20:00" in (
        capsys.readouterr().out
    )
    assert main(["annotate", "deploy", "-l", "nonsense", "-c", cfg]) == 1
    assert "use name=value" in capsys.readouterr().err
    assert main(["annotate", "deploy", "--rebaseline", "2y", "-c", cfg]) == 1
    assert main(["annotate", "list", "--from", "2026-11-01T00:00:00Z", "--json", "-c", cfg]) == 0
    (m,) = json.loads(capsys.readouterr().out)
    assert m["labels"] == {"feature": "chat"} and m["rebaseline_s"] == 1200

    _run(world, T0 + 30 * M)
    # the marker re-baselines nothing here (threshold rules have no level to move) but is cited
    assert main(["feedback", "mark", "RefusalRateHigh", "false", "-l", "feature=nope", "-c", cfg]) == 1
    assert "no alert 'RefusalRateHigh' in the store" in capsys.readouterr().err
    assert (
        main(
            ["feedback", "mark", "RefusalRateHigh", "real", "-l", "feature=chat", "--note", "v42", "-c", cfg]
        )
        == 0
    )
    assert "marked a real incident" in capsys.readouterr().out
    assert main(["feedback", "mark", "Gone", "false", "--start", "2026-11-01T10:00:00Z", "-c", cfg]) == 0
    assert main(["feedback", "list", "-c", cfg]) == 0
    listed = capsys.readouterr().out
    assert "real   RefusalRateHigh" in listed and "false  Gone" in listed
    assert main(["feedback", "mark", "Nope", "real", "-c", cfg]) == 1
