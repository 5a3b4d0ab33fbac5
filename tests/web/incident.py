"""A daemon that lived through incidents, for the status page's tests (pages, API, headless Chromium).

Rules: a PromQL comparison (``ErrorRateHigh``: ``… > 0.05``, ``for: 2m``), a threshold detector
(``LatencyHigh``: above 2 s), a rolling band (``SpendSpike``), a rolling band that is still
warming up (``SlowBaseline``: a 6-hour window over 3 hours of data) and a SQL rule over ``calls``
(``CallVolume``). The daemon is stepped minute by minute with its own clock over three hours:
acme's error rate breaks the threshold twice (an episode that resolved, and one firing now), beta's
error rate fires and is silenced, acme's latency fires and is inhibited by acme's error alert, and
acme's spend jumps in the last minutes. The clock is the scenario's, never the wall clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from watcher.config import Settings
from watcher.core import TraceRef, to_epoch
from watcher.daemon import Daemon
from watcher.notify.receivers.base import RecordingReceiver
from watcher.sources.memory import MemorySource
from watcher.sources.sql import SqlSource
from watcher.store.db import open_store
from watcher.store.tables import SilenceRow

ADMIN_TOKEN = "admin-t0ken-for-the-silence-form"
READ_TOKEN = "read-t0ken-for-the-status-page"
DB_PASSWORD = "db-pa55word-never-on-the-page"
HOOK_URL = "http://127.0.0.1:9/hooks/S3CRET-hook-path"
SECRETS = (ADMIN_TOKEN, DB_PASSWORD, HOOK_URL, "S3CRET-hook-path")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
"""The scenario's last evaluation (a fixed day: no test depends on the day it runs)."""
MINUTES = 180
FIRST_EPISODE = (100, 70)
"""acme's first error episode: from END - 100 min to END - 70 min (resolved)."""
SECOND_EPISODE_START = 20
"""acme's second error episode starts END - 20 min and is still firing at END."""

RULES = """\
groups:
  - name: llm-quality
    interval: 1m
    rules:
      - alert: ErrorRateHigh
        expr: |
          sum by (tenant) (rate(llm_errors_total[5m]))
            / sum by (tenant) (rate(llm_calls_total[5m])) > 0.05
        for: 2m
        labels: {severity: page}
        annotations: {summary: "{{ labels.tenant }} error rate {{ value | round(3) }}"}
      - alert: LatencyHigh
        expr: histogram_quantile(0.95, sum by (le, tenant) (rate(llm_latency_seconds_bucket[5m])))
        detector: {kind: threshold, above: 2}
        for: 0s
        labels: {severity: ticket}
      - alert: SpendSpike
        expr: sum by (tenant) (rate(llm_cost_usd_total[5m])) * 3600
        detector: {kind: rolling, window: 1h, sensitivity: 4, direction: up, min_points: 10}
        lookback: 3h
        for: 0s
        labels: {severity: page}
      - alert: SlowBaseline
        expr: sum by (tenant) (rate(llm_tokens_total[5m]))
        detector: {kind: rolling, window: 6h}
        lookback: 3h
        for: 0s
  - name: llm-calls
    interval: 1m
    rules:
      - alert: CallVolume
        source: calls
        query: {agg: count, window: 5m, by: [tenant], where: {model: "gpt-4o"}}
        detector: {kind: rolling, window: 1h}
        for: 5m
"""


@dataclass
class Incident:
    """The stepped daemon, its clock (a one-item list the daemon reads) and its memory source."""

    daemon: Daemon
    clock: list[datetime]
    source: MemorySource

    def fingerprint(self, rule: str, **labels: str) -> str:
        """Return the fingerprint of the alert of ``rule`` with ``labels`` (it must exist)."""
        for ev in self.daemon.evaluators.values():
            for a in ev.alerts():
                if a.rule == rule and all(a.labels.get(k) == v for k, v in labels.items()):
                    return a.fingerprint
        raise AssertionError(f"no alert {rule} {labels}")


def _series(mem: MemorySource, rule: str, labels: dict[str, str], value: Any) -> None:
    s = mem.series(rule, labels)
    end = to_epoch(END)
    for k in range(MINUTES + 60, -1, -1):
        v, traces = value(k)
        s.add(end - 60 * k, v, traces)


def make_incident(tmp_path: Path, *, read_token: bool = False, steps: int = 110) -> Incident:
    """Return the daemon after ``steps`` one-minute evaluations ending at ``END``."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "quality.yaml").write_text(RULES)
    server: dict[str, Any] = {"port": 0, "admin_token": ADMIN_TOKEN}
    if read_token:
        server["read_token"] = READ_TOKEN
    settings = Settings(
        store={"url": f"postgresql+psycopg://watcher:{DB_PASSWORD}@db.internal/watcher"},
        rules=[rules],
        receivers={"hook": {"type": "webhook", "url": HOOK_URL}},
        route={"receivers": ["hook"]},
        server=server,
        trace_url="https://tempo.example/trace/{trace_id}",
        external_url="http://watcher.example",
        notify={
            "inhibit_rules": [
                {
                    "source_matchers": ["alertname=ErrorRateHigh"],
                    "target_matchers": ["alertname=LatencyHigh"],
                    "equal": ["tenant"],
                }
            ]
        },
    )
    mem = MemorySource()
    first_from, first_to = FIRST_EPISODE

    def acme_errors(k: int) -> tuple[float, tuple[TraceRef, ...]]:
        bad = first_to < k <= first_from or k <= SECOND_EPISODE_START
        return (0.09 if bad else math.nan), ((TraceRef(TRACE, None, 0.09, None, "gpt-4o"),) if bad else ())

    _series(mem, "ErrorRateHigh", {"tenant": "acme"}, acme_errors)
    _series(mem, "ErrorRateHigh", {"tenant": "beta"}, lambda k: (0.07 if k <= 30 else math.nan, ()))
    _series(mem, "LatencyHigh", {"tenant": "acme"}, lambda k: (3.1 if k <= 10 else 1.2 + 0.1 * (k % 3), ()))
    _series(
        mem,
        "SpendSpike",
        {"tenant": "acme"},
        lambda k: (10.0 if k < 3 else 1.0 + 0.25 * ((k * 7) % 5 - 2), ()),
    )
    _series(
        mem,
        "SlowBaseline",
        {"tenant": "acme"},
        lambda k: (50.0 + (k % 7), ()) if k <= MINUTES else (math.nan, ()),
    )
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    clock = [END - timedelta(minutes=steps)]
    daemon = Daemon(
        settings,
        store=store,
        sources={"prometheus": mem, "calls": SqlSource(store), "scores": SqlSource(store)},
        receivers={"hook": RecordingReceiver("hook")},
        clock=lambda: clock[0],
    )
    silenced = False
    for k in range(steps, -1, -1):
        clock[0] = END - timedelta(minutes=k)
        if not silenced and k <= 25:  # beta's error alert is silenced before it starts
            with store.session() as s:
                s.add(
                    SilenceRow(
                        id="5f1e0c1e-0000-4000-8000-00000000be7a",
                        matchers=[{"name": "tenant", "value": "beta", "op": "="}],
                        starts_at=clock[0],
                        ends_at=clock[0] + timedelta(hours=4),
                        created_by="oncall",
                        comment="beta is migrating <b>providers</b>",
                        created_at=clock[0],
                    )
                )
                s.commit()
            silenced = True
        daemon.run_once(clock[0], drain_s=0)
    return Incident(daemon, clock, mem)
