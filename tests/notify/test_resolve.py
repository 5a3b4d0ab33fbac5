"""End to end through the engine: the resolve carries the final value and how long the alert lasted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from pydantic import SecretStr

from tests.groups import cost_group
from tests.httpreceiver import HTTPReceiver
from watcher.config import ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.core import to_epoch
from watcher.daemon import Daemon
from watcher.sources.memory import MemorySource

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)
GROUP = cost_group()


def test_resolve_carries_the_final_value_and_the_duration(
    tmp_path: Path, http_receiver: HTTPReceiver
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(yaml.safe_dump({"groups": [GROUP]}))
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path}/w.db"),
        rules=[tmp_path / "rules"],
        receivers={"hook": ReceiverSettings(type="webhook", url=SecretStr(f"{http_receiver.url}/in"))},
        route=RouteSettings(receivers=["hook"]),
    )
    d = Daemon(settings, sources={"prometheus": MemorySource()})
    src = d.sources["prometheus"]
    assert isinstance(src, MemorySource)
    values = [3.0, 42.0, 57.5, 61.0, 2.25, 2.0]
    try:
        for m, v in enumerate(values):
            src.series("CostHigh", {"tenant": "acme"}).add(to_epoch(T0 + m * M), v)
            d.run_once(T0 + m * M, drain_s=0)
    finally:
        d.store.close()
    (_, _, fire), (_, _, done) = http_receiver.requests
    assert fire["status"] == "firing" and fire["value"] == 42.0
    assert done["status"] == "resolved" and done["dedup_key"] == fire["dedup_key"]
    assert done["value"] == 2.25  # the value that ended it, not the one that started it
    assert done["starts_at"] == "2026-11-02T09:01:00Z" and done["ends_at"] == "2026-11-02T09:04:00Z"
    assert "final value 2.25" in done["body"] and "lasted 3 min" in done["body"]
    assert done["title"].startswith("[RESOLVED] CostHigh")
