"""The daemon's own Prometheus metrics, on an injectable registry.

This module owns the names and label sets of watcher's self-metrics. It does not own serving them
(``web.app``) nor the application metrics the hooks emit (``instrument``). Tests pass a fresh
``CollectorRegistry`` so counts never leak between tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from . import __version__
from .core import Labels, Verdict

SIGNAL_FIELDS = ("value", "expected", "lower", "upper", "score")
"""``watcher_signal_<field>``: the latest verdict of every evaluated series, for Grafana bands."""


class SignalGauges(Collector):
    """The latest value and expected band of every evaluated series, labelled by group, rule and
    the series' own labels (a series label that clashes with ``group``/``rule`` becomes
    ``exported_group``/``exported_rule``, as Prometheus does). Non-finite numbers are left out."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._lock = threading.Lock()
        self._by_group: dict[str, dict[str, dict[Labels, Verdict]]] = {}
        if registry is not None:
            registry.register(self)

    def set(self, group: str, verdicts: Mapping[str, Mapping[Labels, Verdict]]) -> None:
        """Replace the verdicts of ``group`` (rule → series labels → latest verdict)."""
        snapshot = {rule: dict(series) for rule, series in verdicts.items()}
        with self._lock:
            self._by_group[group] = snapshot

    def retain(self, groups: Iterable[str]) -> None:
        """Forget every group not in ``groups`` (after a reload removed some)."""
        keep = set(groups)
        with self._lock:
            for name in [g for g in self._by_group if g not in keep]:
                del self._by_group[name]

    def describe(self) -> Iterable[Metric]:
        """Return no description, so registering never triggers a collect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield one gauge family per field of ``SIGNAL_FIELDS``."""
        with self._lock:
            rows = [
                (g, r, labels, v)
                for g, rules in self._by_group.items()
                for r, series in rules.items()
                for labels, v in series.items()
            ]
        help_text = {
            "value": "Latest observed value of an evaluated series.",
            "expected": "Expected value (baseline) of an evaluated series.",
            "lower": "Lower bound of the expected band of an evaluated series.",
            "upper": "Upper bound of the expected band of an evaluated series.",
            "score": "Anomaly score in [0, 1] of the latest point of an evaluated series.",
        }
        for name in SIGNAL_FIELDS:
            family = Metric(f"watcher_signal_{name}", help_text[name], "gauge")
            for group, rule, labels, verdict in rows:
                number = float(getattr(verdict, name))
                if not math.isfinite(number):
                    continue
                own = {("exported_" + k if k in ("group", "rule") else k): v for k, v in labels.items()}
                family.add_sample(family.name, {"group": group, "rule": rule, **own}, number)
            yield family


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
            "watcher_rule_evaluation_failures",
            "Failed rule evaluations.",
            ["group", "rule", "reason"],
            registry=r,
        )
        self.group_duration = Histogram(
            "watcher_group_evaluation_duration_seconds",
            "Time to evaluate one rule group.",
            ["group"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.missed_ticks = Counter(
            "watcher_missed_ticks",
            "Ticks skipped because the previous run was still going.",
            ["job"],
            registry=r,
        )
        self.job_exceptions = Counter(
            "watcher_job_exceptions",
            "Unexpected exceptions caught around scheduled jobs.",
            ["job"],
            registry=r,
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
        self.outbox_depth = Gauge(
            "watcher_outbox_pending", "Notifications waiting in the outbox.", registry=r
        )
        self.notifications_dead = Counter(
            "watcher_notifications_dead_lettered",
            "Notifications given up (dead-lettered).",
            ["receiver", "reason"],
            registry=r,
        )
        self.outbox_dead = Gauge(
            "watcher_outbox_dead",
            "Dead letters in the outbox (until retention removes them).",
            ["receiver"],
            registry=r,
        )
        self.receiver_failures = Gauge(
            "watcher_receiver_consecutive_failures",
            "Failed delivery attempts in a row per receiver (0 after a delivery).",
            ["receiver"],
            registry=r,
        )
        self.reloads = Counter("watcher_rule_reloads", "Rule reloads.", ["result"], registry=r)
        self.signals = SignalGauges(r)
        self.last_evaluation = Gauge(
            "watcher_group_last_evaluation_timestamp_seconds",
            "When each rule group was last evaluated (Unix time).",
            ["group"],
            registry=r,
        )
        self.retention_deleted = Counter(
            "watcher_retention_deleted_rows", "Rows deleted by the retention job.", ["table"], registry=r
        )
        self.source_query_duration = Histogram(
            "watcher_source_query_duration_seconds",
            "Time of one source query (a rule's fetch), by source.",
            ["source"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.source_query_errors = Counter(
            "watcher_source_query_errors",
            "Failed source queries, by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.detector_fit_duration = Histogram(
            "watcher_detector_fit_duration_seconds",
            "Time a detector takes to take in a fetch's new points (update_many), by detector kind.",
            ["kind"],
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "watcher_outbox_oldest_age_seconds",
            "Age of the oldest notification waiting in the outbox.",
            registry=r,
        )
