"""A Prometheus outage under the running daemon: alerts keep their state, one "source down" page.

A real Prometheus (Debian package) is stopped by PID while an alert fires and started again on
the same port and data directory. The daemon runs for real (threads, schedule, outbox) with
``down_after: 3s`` so the test takes seconds; the loopback webhook sees every notification.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.httpreceiver import HTTPReceiver
from tests.prom import PrometheusServer, poll
from watcher.config import load_settings
from watcher.core import AlertState
from watcher.daemon import Daemon
from watcher.engine.sourcedown import ALERTNAME

pytestmark = pytest.mark.integration

RULES = {
    "groups": [
        {
            "name": "always",
            "interval": "1s",
            "rules": [
                {
                    "alert": "AlwaysFiring",
                    "expr": "vector(1)",
                    "labels": {"severity": "page"},
                    "annotations": {"summary": "a rule that always fires"},
                }
            ],
        }
    ]
}


@pytest.fixture
def daemon(prometheus: PrometheusServer, http_receiver: HTTPReceiver, tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(RULES))
    config = {
        "store": {"url": f"sqlite:///{tmp_path}/watcher.db"},
        "rules": [str(tmp_path / "rules.yaml")],
        "prometheus": {
            "main": {"url": prometheus.url, "timeout_s": 2, "down_after": "3s", "retry_backoff_max": "1s"}
        },
        "receivers": {"hook": {"type": "webhook", "url": http_receiver.url}},
        "route": {"receivers": ["hook"]},
        "notify": {"flush_interval": "1s"},
        "server": {"enabled": False},
    }
    (tmp_path / "watcher.yaml").write_text(yaml.safe_dump(config))
    d = Daemon(load_settings(tmp_path / "watcher.yaml"))
    runner = threading.Thread(target=d.run, kwargs={"install_signals": False})
    runner.start()
    try:
        yield d
    finally:
        d.request_stop()
        runner.join(timeout=30)
        d.close()


def sent(hook: HTTPReceiver) -> list[tuple[str, str]]:
    return [(b["alertname"], b["status"]) for _, _, b in hook.requests]


def evaluations(daemon: Daemon) -> float:
    """Return how often the daemon has evaluated AlwaysFiring so far, failed evaluations included."""
    names = ("watcher_rule_evaluations_total", "watcher_rule_evaluation_failures_total")
    return sum(
        sample.value
        for metric in daemon.metrics.registry.collect()
        for sample in metric.samples
        if sample.name in names and sample.labels.get("rule") == "AlwaysFiring"
    )


def let_evaluations_pass(daemon: Daemon, n: int, what: str) -> None:
    """Wait until ``n`` more evaluations ended (and, evaluations and flushes sharing one interval,
    the outbox flushed what all but the last could enqueue): room for a wrong page to show up."""
    target = evaluations(daemon) + n
    poll(lambda: evaluations(daemon) >= target, timeout=10 * n, what=f"{n} more evaluations {what}")


def test_prometheus_killed_mid_run_then_back(
    prometheus: PrometheusServer, daemon: Daemon, http_receiver: HTTPReceiver
) -> None:
    http_receiver.wait_for(1, timeout=30)
    assert sent(http_receiver) == [("AlwaysFiring", "firing")]
    (firing,) = daemon.evaluators["always"].alerts()

    prometheus.stop()
    stopped = time.monotonic()
    http_receiver.wait_for(2, timeout=30)
    took = time.monotonic() - stopped
    assert sent(http_receiver) == [("AlwaysFiring", "firing"), (ALERTNAME, "firing")]
    assert took >= 3.0  # not before down_after
    _, _, page = http_receiver.requests[1]
    assert page["labels"] == {"source": "main", "severity": "page"}
    assert "unreachable" in page["annotations"]["description"]
    (health,) = daemon.alert_store.health()
    assert health["health"] == "err" and "unreachable" in health["last_error"]
    (alert,) = daemon.evaluators["always"].alerts()
    assert alert.state is AlertState.FIRING and alert.fired_at == firing.fired_at  # untouched

    let_evaluations_pass(daemon, 3, "during the outage")  # still exactly one page, nothing resolved
    assert sent(http_receiver) == [("AlwaysFiring", "firing"), (ALERTNAME, "firing")]

    prometheus.start()
    http_receiver.wait_for(3, timeout=30)
    assert sent(http_receiver)[2] == (ALERTNAME, "resolved")
    poll(lambda: daemon.alert_store.health()[0]["health"] == "ok", timeout=10, what="rule health ok")
    let_evaluations_pass(daemon, 2, "after the recovery")  # no duplicate page of AlwaysFiring
    assert sent(http_receiver) == [("AlwaysFiring", "firing"), (ALERTNAME, "firing"), (ALERTNAME, "resolved")]
    (alert,) = daemon.evaluators["always"].alerts()
    assert alert.state is AlertState.FIRING and alert.fired_at == firing.fired_at
