"""What the cluster code may use of the daemon: a small typed interface.

This module owns ``Host``, the Protocol ``cluster.attach`` and ``ClusterMember`` take instead of
the daemon (``daemon.Daemon`` satisfies it): its settings, store, self-metrics, the loaded rules
and their evaluators, the notifier's outbox, and five actions (dispatch a job to the daemon's
pool, tell whether a job is still running, evaluate a group, build an evaluator with the daemon's
wiring, load stored alerts). It does not own any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config import Settings
    from ..core import Labels
    from ..engine.group import EvalResult, GroupEvaluator
    from ..engine.state import AlertStore
    from ..notify.pipeline import Notifier
    from ..rules.loader import LoadedRules
    from ..rules.schema import Group
    from ..selfmetrics import SelfMetrics
    from ..sources.base import Source
    from ..store.db import Store


class Host(Protocol):
    """The daemon as the cluster sees it."""

    settings: Settings
    store: Store
    metrics: SelfMetrics
    rules: LoadedRules
    notifier: Notifier
    evaluators: dict[str, GroupEvaluator]
    sources: dict[str, Source]
    alert_store: AlertStore

    def dispatch(self, job: str, fn: Callable[[], object]) -> bool:
        """Run ``fn`` on the daemon's pool unless the job ``job`` is still running; say if it was."""
        ...

    def busy(self, job: str) -> bool:
        """Tell whether a run of the job ``job`` is still going (``dispatch`` would refuse it now)."""
        ...

    def evaluate_group(
        self,
        name: str,
        now: datetime | None = None,
        *,
        fence: Any = None,
        evaluator: GroupEvaluator | None = None,
        speaks_for_sources: bool | None = None,
    ) -> EvalResult:
        """Evaluate one rule group (or a shard of it, ``evaluator``) at ``now`` (None: the daemon's clock)."""
        ...

    def make_evaluator(
        self,
        group: Group,
        alert_store: AlertStore,
        *,
        sources: Mapping[str, Source] | None = None,
        shard: Callable[[Labels], bool] | None = None,
        checkpoint_key: str | None = None,
    ) -> GroupEvaluator:
        """Return a new evaluator of ``group`` with the daemon's wiring, saving through ``alert_store``."""
        ...
