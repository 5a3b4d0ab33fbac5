"""What the web face may read of the daemon: a typed, read-only view.

This module owns ``DaemonView``, the one Protocol every handler of ``web`` takes instead of the
daemon itself (``daemon.Daemon`` satisfies it; tests and ``watcher bench ingest`` pass smaller
objects). The view has the daemon's clock (``clock()``: the time the engine uses, so a simulated
or test clock reaches the API), its settings, store, self-metrics, the loaded rules and their
evaluators, the sources, and the monitors the status page shows. It does not own any of them, and
nothing here writes through the view: handlers that change state (silences, ingest) write to the
store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..cluster import Membership
    from ..config import Settings
    from ..engine.group import GroupEvaluator
    from ..engine.sourcedown import SourceDownMonitor
    from ..engine.state import AlertStore
    from ..rules.loader import LoadedRules
    from ..selfmetrics import SelfMetrics
    from ..sources.base import Source
    from ..store.db import Store


class DaemonView(Protocol):
    """The daemon as the web face sees it: read-only properties and its clock."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def metrics(self) -> SelfMetrics: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def rules(self) -> LoadedRules | None: ...

    @property
    def last_reload_error(self) -> str | None: ...

    @property
    def evaluators(self) -> Mapping[str, GroupEvaluator]: ...

    @property
    def sources(self) -> Mapping[str, Source]: ...

    @property
    def alert_store(self) -> AlertStore | None: ...

    @property
    def source_down(self) -> SourceDownMonitor | None: ...

    @property
    def cluster(self) -> Membership | None: ...
