"""The daemon's own Prometheus metrics, on an injectable registry.

This module owns the names and label sets of watcher's self-metrics. It does not own serving them
(``server``) nor the application metrics the hooks emit (``instrument``). Tests pass a fresh
``CollectorRegistry`` so counts never leak between tests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import __version__


class SelfMetrics:
    """Every metric the daemon exports about itself."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge("watcher_build_info", "Build information.", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        self.rule_evaluations = Counter(
            "watcher_rule_evaluations", "Rule evaluations.", ["group", "rule"], registry=r
        )
        self.rule_failures = Counter(
            "watcher_rule_evaluation_failures", "Failed rule evaluations.", ["group", "rule", "reason"], registry=r
        )
        self.group_duration = Histogram(
            "watcher_group_evaluation_duration_seconds",
            "Time to evaluate one rule group.",
            ["group"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.missed_ticks = Counter(
            "watcher_missed_ticks", "Ticks skipped because the previous run was still going.", ["job"], registry=r
        )
        self.job_exceptions = Counter(
            "watcher_job_exceptions", "Unexpected exceptions caught around scheduled jobs.", ["job"], registry=r
        )
        self.alerts = Gauge("watcher_alerts", "Alerts by state.", ["group", "rule", "state"], registry=r)
        self.notifications_enqueued = Counter(
            "watcher_notifications_enqueued", "Notifications written to the outbox.", ["receiver"], registry=r
        )
        self.notifications_sent = Counter(
            "watcher_notifications_sent", "Notifications delivered.", ["receiver"], registry=r
        )
        self.notifications_failed = Counter(
            "watcher_notifications_failed", "Failed delivery attempts.", ["receiver", "reason"], registry=r
        )
        self.outbox_depth = Gauge("watcher_outbox_pending", "Notifications waiting in the outbox.", registry=r)
        self.reloads = Counter("watcher_rule_reloads", "Rule reloads.", ["result"], registry=r)
