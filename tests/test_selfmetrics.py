"""Self-metrics: the expected band of every evaluated series, exported as gauges."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from watcher.config import Settings, StoreSettings
from watcher.core import Labels, Verdict, to_epoch
from watcher.daemon import Daemon
from watcher.selfmetrics import SelfMetrics
from watcher.sources.memory import MemorySource

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
GROUP = {
    "name": "g",
    "interval": "1m",
    "rules": [
        {
            "alert": "CostHigh",
            "expr": "sum by (tenant) (rate(llm_cost_usd_total[5m]))",
            "detector": {"kind": "threshold", "above": 10},
        }
    ],
}


def test_daemon_exports_signal_band_per_series(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(yaml.safe_dump({"groups": [GROUP]}))
    settings = Settings(store=StoreSettings(url=f"sqlite:///{tmp_path}/w.db"), rules=[rules])
    src = MemorySource()
    for tenant, value in (("acme", 3.0), ("globex", 12.5)):
        src.series("CostHigh", {"tenant": tenant}).add(to_epoch(T0), value)
    daemon = Daemon(settings, sources={"prometheus": src}, receivers={"console": _Null()})
    try:
        daemon.run_once(T0, drain_s=0)
        get = daemon.metrics.registry.get_sample_value
        for tenant, value in (("acme", 3.0), ("globex", 12.5)):
            labels = {"group": "g", "rule": "CostHigh", "tenant": tenant}
            assert get("watcher_signal_value", labels) == value
            assert get("watcher_signal_upper", labels) == 10.0
            assert get("watcher_signal_lower", labels) is None  # unbounded: left out, not NaN
        assert get("watcher_signal_score", {"group": "g", "rule": "CostHigh", "tenant": "globex"}) > 0
        assert get("watcher_group_last_evaluation_timestamp_seconds", {"group": "g"}) == T0.timestamp()
        # a reload that drops the group drops its signals
        (rules / "r.yaml").write_text(yaml.safe_dump({"groups": [dict(GROUP, name="h")]}))
        assert daemon.reload().ok
        assert get("watcher_signal_value", {"group": "g", "rule": "CostHigh", "tenant": "acme"}) is None
    finally:
        daemon.close()


def test_clashing_series_labels_are_exported_prefixed() -> None:
    m = SelfMetrics()
    m.signals.set("g", {"R": {Labels(group="blue", tenant="a"): Verdict(ts=0, value=1.0, expected=0.5)}})
    text = generate_latest(m.registry).decode()
    assert 'watcher_signal_value{exported_group="blue",group="g",rule="R",tenant="a"} 1.0' in text
    assert 'watcher_signal_expected{exported_group="blue",group="g",rule="R",tenant="a"} 0.5' in text
    m.signals.retain(["other"])
    assert "watcher_signal_value{" not in generate_latest(m.registry).decode()


class _Null:
    name = "console"

    def send(self, n: object) -> None:
        pass
