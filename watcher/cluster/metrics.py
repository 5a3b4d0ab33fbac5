"""The cluster's self-metrics, registered once per registry beside ``selfmetrics.SelfMetrics``.

This module owns the names of the ``watcher_cluster_*`` metrics. It does not own when they change
(``member``) nor serving them (``web.app``).
"""

from __future__ import annotations

import threading
import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge


class ClusterMetrics:
    """Leases held, replicas seen, rule-set agreement, lost leases and tick claims."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, ClusterMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.leases_held = Gauge(
            "watcher_cluster_leases_held", "Rule groups this replica holds a lease on.", registry=r
        )
        self.replicas = Gauge(
            "watcher_cluster_replicas", "Live replicas this replica sees (itself included).", registry=r
        )
        self.rules_hash_mismatch = Gauge(
            "watcher_cluster_rules_hash_mismatch",
            "1 when this replica's rule files differ from the majority's (it then takes no groups).",
            registry=r,
        )
        self.leases_lost = Counter(
            "watcher_cluster_leases_lost", "Leases lost before being released (expiry, takeover).", registry=r
        )
        self.heartbeat_failures = Counter(
            "watcher_cluster_heartbeat_failures",
            "Heartbeat cycles that could not reach the store.",
            registry=r,
        )
        self.evaluations = Counter(
            "watcher_cluster_evaluations", "Group evaluations done under a won tick claim.", registry=r
        )
        self.catch_up_ticks = Counter(
            "watcher_cluster_catch_up_ticks",
            "Missed ticks evaluated by a group's new owner (takeover, give-back, restart).",
            registry=r,
        )
        self.tick_conflicts = Counter(
            "watcher_cluster_tick_conflicts",
            "Tick claims lost (the tick was taken, or the lease gone).",
            registry=r,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> ClusterMetrics:
        """Return the metrics registered on ``registry``, creating them the first time."""
        with cls._lock:
            found = cls._by_registry.get(registry)
            if found is None:
                found = cls._by_registry[registry] = cls(registry)
            return found
