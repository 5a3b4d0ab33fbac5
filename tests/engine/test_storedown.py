"""``WatcherStoreDown``: the store unreachable for ``down_after`` pages the receivers directly, the
resolve follows when it answers again, and the heartbeat falls silent meanwhile.

The outage is real: the SQLite database's folder is moved away (a volume unmounted) and the
daemon's pooled connections are dropped, so every new connection fails.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from watcher.config import HeartbeatSettings, ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.daemon import Daemon
from watcher.notify.heartbeat import Heartbeat
from watcher.sources.memory import MemorySource

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def test_store_down_pages_directly_then_resolves_and_the_heartbeat_stops(
    tmp_path: Path, http_receiver: HTTPReceiver
) -> None:
    data = tmp_path / "data"
    (tmp_path / "rules").mkdir()
    settings = Settings(
        store=StoreSettings(url=SecretStr(f"sqlite:///{data}/w.db"), down_after=2 * M),
        rules=[tmp_path / "rules"],
        server={"enabled": False},
        receivers={
            "hook": ReceiverSettings(type="webhook", url=SecretStr(f"{http_receiver.url}/hook")),
            "chat": ReceiverSettings(type="webhook", url=SecretStr(f"{http_receiver.url}/chat")),
        },
        route=RouteSettings(receivers=["hook", "chat"]),
    )
    d = Daemon(settings, sources={"prometheus": MemorySource()})
    beat = Heartbeat(HeartbeatSettings(url=SecretStr(f"{http_receiver.url}/ping")))

    def paths() -> list[str]:
        return [p for p, _, _ in http_receiver.requests]

    try:
        assert d.check_store(T0) and d.beat(beat, T0)
        data.rename(tmp_path / "away")
        d.store.engine.dispose()
        assert not d.check_store(T0 + M / 2)
        assert not d.check_store(T0 + M) and not d.beat(beat, T0 + M)  # no evaluation: no heartbeat
        assert paths() == ["/ping"]  # not yet down for down_after

        http_receiver.set_statuses([500, 200])  # the first receiver told fails once
        d.check_store(T0 + 2 * M + M / 2)
        d.check_store(T0 + 3 * M)  # tried again; the other one is not told twice
        d.check_store(T0 + 4 * M)
        sent = [(p, b["status"]) for p, _, b in http_receiver.requests[1:]]
        assert sorted(sent) == [("/chat", "firing"), ("/chat", "firing"), ("/hook", "firing")]
        firing = http_receiver.requests[-1][2]
        assert firing["alertname"] == "WatcherStoreDown" and firing["labels"] == {"severity": "page"}
        assert "unreachable since 2026-11-02 09:00:30Z" in firing["body"]

        (tmp_path / "away").rename(data)
        assert d.check_store(T0 + 5 * M) and d.beat(beat, T0 + 5 * M)
        resolves = [
            b for _, _, b in http_receiver.requests if isinstance(b, dict) and b["status"] == "resolved"
        ]
        assert sorted(b["receiver"] for b in resolves) == ["chat", "hook"]
        assert {b["dedup_key"] for b in resolves} == {firing["dedup_key"]}
        assert paths()[-1] == "/ping"
        d.check_store(T0 + 6 * M)
        assert len(http_receiver.requests) == 7  # the episode is over: nothing more
    finally:
        d.close()
