"""The bodies receivers POST stay byte for byte what they were (a public face), old outbox rows too.

``data/golden_bodies.json`` holds what the webhook, PagerDuty, Alertmanager and Slack endpoints
received (and what the console printed) for one alert, a superseded episode, a group, a group of
one and the delivery-failure notices, captured before the receivers read typed notifications;
``data/outbox_v1.json`` the outbox rows that version stored, which must still be delivered the same.

Rows queued before an upgrade keep the text they were rendered with: the webhook, which posts the
stored title and body, sends them as the version that queued them did (``data/golden_hook_v1.json``,
before issue 21 reworded elapsed times: "(for 25m)" became "firing for 25 min (since …)"); the
receivers that build their message from the stored alert (Slack, console) use today's words.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.httpreceiver import HTTPReceiver
from tests.notify.factory import T0, SqliteStore
from tests.notify.golden import BODIES, NAMES, OUTBOX_V1, PATHS, run, settings_for
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers import build_receiver
from watcher.notify.receivers.console import ConsoleReceiver
from watcher.store.tables import OutboxRow

GOLDEN: dict[str, dict[str, list[Any]]] = json.loads(BODIES.read_text())
OLD_ROWS: dict[str, list[dict[str, Any]]] = json.loads(OUTBOX_V1.read_text())
OLD_HOOK: dict[str, list[Any]] = json.loads((BODIES.parent / "golden_hook_v1.json").read_text())


def _diff(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> None:
    assert set(got) == set(want)
    for receiver in want:
        assert len(got[receiver]) == len(want[receiver]), receiver
        for i, (g, w) in enumerate(zip(got[receiver], want[receiver], strict=True)):
            assert g == w, (receiver, i)


@pytest.mark.parametrize("name", NAMES)
def test_bodies_are_unchanged(name: str, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    with HTTPReceiver() as http:
        got, _ = run(name, http, store)
    store.engine.dispose()
    _diff(got, GOLDEN[name])


@pytest.mark.parametrize("name", NAMES)
def test_rows_stored_by_the_previous_version_send_the_same_bodies(name: str, tmp_path: Path) -> None:
    """A row queued before an upgrade (title, body, links and the payload dict) is sent unchanged."""
    import io

    store = SqliteStore(tmp_path / "t.db")
    with HTTPReceiver() as http:
        with store.session() as s:
            for i, m in enumerate(OLD_ROWS[name]):
                assert "payload" in m  # the old shape: the structured form as a dict
                s.add(
                    OutboxRow(
                        receiver=m["receiver"],
                        fingerprint="one-key",  # strictly in the order queued
                        dedup_key=m["dedup_key"],
                        kind=m["kind"],
                        created_at=T0,
                        status="pending",
                        attempts=0,
                        next_attempt_at=T0,
                        message=m,
                        id=i + 1,
                    )
                )
            s.commit()
        settings = settings_for(http.url)
        receivers = {
            k: build_receiver(k, rs, settings) for k, rs in settings.receivers.items() if k != "console"
        }
        buf = io.StringIO()
        receivers["console"] = ConsoleReceiver("console", stream=buf)
        notifier = Notifier(store, settings, receivers)
        assert notifier.flush(T0).sent == len(OLD_ROWS[name])
        notifier.close()
        got: dict[str, list[Any]] = {k: [] for k in PATHS}
        by_path = {p: k for k, p in PATHS.items()}
        for (path, headers, _), raw in zip(http.requests, http.raw_bodies, strict=True):
            entry: dict[str, Any] = {"body": raw.decode()}
            if "X-Watcher-Notification-Id" in headers:
                entry["id"] = headers["X-Watcher-Notification-Id"]
            got[by_path[path]].append(entry)
    got["console"] = [block for block in buf.getvalue().split("\n\n") if block.strip()]
    store.engine.dispose()
    _diff(got, {**GOLDEN[name], "hook": OLD_HOOK[name]})
