"""Running several replicas: rule groups shared through PostgreSQL, SQLite kept to one replica.

``attach(daemon)`` is called by ``watcher run`` before the loop starts. On SQLite it takes the
single-replica lock (``sqlitelock``); on PostgreSQL (``cluster.enabled: auto`` or ``on``) it joins
the cluster (``member``): heartbeats, leases per rule group, tick claims, the fence, and outbox
claims with ``FOR UPDATE SKIP LOCKED``. See docs/scaling.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import make_url

from ..errors import ConfigError
from .host import Host


class Membership(Protocol):
    """What the daemon needs from its cluster mode."""

    schedules_groups: bool

    def tick(self) -> None: ...

    def active(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...


def attach(daemon: Host) -> Membership | None:
    """Enter the cluster mode the store and ``settings.cluster`` call for; return it (None: none)."""
    mode = daemon.settings.cluster.enabled
    if daemon.store.dialect == "sqlite":
        if mode == "on":
            raise ConfigError("cluster.enabled: on needs a PostgreSQL store; SQLite runs a single replica")
        database = make_url(daemon.settings.store.url.get_secret_value()).database or ""
        if database in ("", ":memory:"):
            return None
        from .sqlitelock import SingleReplicaLock

        return SingleReplicaLock.acquire(Path(database).expanduser().resolve())
    if mode == "off":
        return None
    from .member import ClusterMember

    return ClusterMember(daemon).start()


__all__ = ["Membership", "attach"]
