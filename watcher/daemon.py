"""The daemon, the one composition root: wiring, the schedule, reload on SIGHUP, graceful stop.

This module owns wiring (store, sources, notifier, evaluators: ``make_evaluator`` is the one
place an evaluator is built), the clock, the schedule and the process lifecycle. It does not own
what one evaluation does (``engine.group``), running the jobs (``engine.jobs``: a thread pool,
a non-blocking lock per job, exceptions counted and never escaping ``run_pending()``), delivery
(``notify``), the HTTP face (``web``, which sees the daemon as ``web.view.DaemonView``) nor the
cluster (``cluster``, which sees it as ``cluster.host.Host``). All state that must survive a
restart is in the store.

``run`` first enters the cluster mode (``cluster.attach``): on SQLite a lock refuses a second
replica; on PostgreSQL the replica's leased groups are ticked by ``cluster.member`` on a shared
grid instead of by ``schedule``, and the outbox job runs only while its leases are valid.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import schedule
from sqlmodel import Session

from . import sdnotify
from .config import Settings
from .core import Alert, Labels, Verdict
from .engine.checkpoints import CheckpointStore
from .engine.group import EvalResult, GroupEvaluator
from .engine.jobs import Jobs
from .engine.sourcedown import SourceDownMonitor
from .engine.state import AlertStore, write_alerts
from .engine.storedown import StoreDownMonitor
from .errors import ConfigError, Problem, RuleFileError, StoreError
from .heap import HeapKeeper
from .notify.pipeline import Notifier
from .notify.receivers import build_receivers
from .notify.receivers.base import Receiver
from .rules.loader import LoadedRules, load_rule_files
from .rules.schema import Group
from .selfmetrics import SelfMetrics
from .sources.base import Source
from .sources.build import build_sources
from .store.db import Store, open_store
from .store.markers import StoreMarkers

if TYPE_CHECKING:
    from .cluster import Membership
    from .web.app import ServerThread

logger = logging.getLogger(__name__)

EXIT_RESERVE_S = 2.0
"""Of ``stop_timeout`` (a tenth of it, 1 s at least), kept for handing leases back, closing and the
interpreter's exit (about 1 s on a loaded machine)."""

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Return the current time, UTC-aware."""
    return datetime.now(UTC)


def refuse_emptied(old: LoadedRules, new: LoadedRules) -> None:
    """Raise ``RuleFileError`` when a rule file with rules in ``old`` is gone or has none in ``new``.

    A rule file that vanishes or comes back empty (a half-finished git checkout, a ConfigMap being
    rewritten) would drop every alert of its groups without a resolve, and page again under new
    dedup keys when it returns: a reload refuses it unless ``rules_allow_empty`` is set.
    """

    def with_rules(rules: LoadedRules) -> set[str]:
        return {str(g.file) for g in rules.groups if g.group.rules}

    had, have = with_rules(old), with_rules(new)
    files = {str(f) for f in new.files}
    groups = {g.name for g in new.groups}
    problems = [
        Problem(f, 1, 1, EMPTY if f in files else VANISHED)
        for f in sorted(had - have)
        if any(str(g.file) == f and g.name not in groups for g in old.groups)  # not merely moved
    ]
    if problems:
        raise RuleFileError(problems)


VANISHED = (
    "the rule file is gone: its groups' alerts would vanish without a resolve; restore it, or set "
    "rules_allow_empty: true to allow dropping files"
)
EMPTY = (
    "the rule file has no rules: its groups' alerts would vanish without a resolve; fix it, or set "
    "rules_allow_empty: true to allow empty files"
)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The outcome of a rule reload."""

    ok: bool
    groups: int
    error: str | None = None


class Daemon:
    """The long-running evaluator: owns the store, the rule groups and the notifier."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        sources: Mapping[str, Source] | None = None,
        receivers: Mapping[str, Receiver] | None = None,
        metrics: SelfMetrics | None = None,
        clock: Clock = utcnow,
        rules: LoadedRules | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or SelfMetrics()
        # Rules first: a missing or invalid rules folder must not leave an empty database behind.
        loaded = rules if rules is not None else self._load_rules()
        self.store = store or open_store(
            settings.store.url.get_secret_value(), busy_timeout_ms=settings.store.busy_timeout_ms
        )
        self.alert_store = AlertStore(self.store)
        self.checkpoints = CheckpointStore(self.store)
        self.sources = dict(sources) if sources is not None else build_sources(settings, self.store)
        self.notifier = Notifier(
            self.store,
            settings,
            receivers if receivers is not None else build_receivers(settings),
            rule_url=self.rule_url,
            metrics=self.metrics,
            history=self.alert_history,
        )
        self.source_down = SourceDownMonitor(
            settings.prometheus, resolved_retention=settings.notify.resolved_retention
        )
        self.store_down = StoreDownMonitor(
            settings, self.notifier.receivers, rule_url=self.rule_url, store_name=self.store.url_display
        )
        self.rules = loaded
        self.evaluators: dict[str, GroupEvaluator] = {}
        self._install(self.rules)
        self.last_reload_error: str | None = None
        self.jobs = Jobs(self.metrics)
        self.http: ServerThread | None = None
        """The running HTTP server (``web.app.ServerThread``; its ``port`` is the bound one), if any."""
        self._group_jobs: dict[str, tuple[GroupEvaluator, schedule.Job]] = {}
        self._scheduled = False
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._partition_warned: set[str] = set()
        self.heap = HeapKeeper()
        self._scheduler = schedule.Scheduler()
        self.cluster: Membership | None = None
        """``cluster.Membership`` while running: the SQLite lock, or this replica's leases (PostgreSQL)."""

    # --- rules -------------------------------------------------------------------------------

    def _load_rules(self) -> LoadedRules:
        return load_rule_files(self.settings.rules, known_receivers=set(self.settings.receivers))

    def _install(self, rules: LoadedRules) -> None:
        """Build evaluators for ``rules``, keeping the state of groups that did not change."""
        persisted: dict[str, list[Alert]] = {}
        for alert in self.alert_store.load():
            persisted.setdefault(alert.group, []).append(alert)
        new: dict[str, GroupEvaluator] = {}
        orphans: list[str] = []
        for lg in rules.groups:
            old = self.evaluators.get(lg.group.name)
            if old is not None and old.group == lg.group:
                new[lg.group.name] = old
                continue
            ev = self.make_evaluator(lg.group, self.alert_store)
            orphans += ev.restore(persisted.get(lg.group.name, []))
            new[lg.group.name] = ev
        gone = set(persisted) - set(new)
        orphans += [a.fingerprint for g in gone for a in persisted[g]]
        if self.settings.cluster.enabled != "off" and self.store.dialect == "postgresql":
            orphans = []  # replicas share the store: the majority prunes (cluster.member), not any starter
        self.alert_store.save([], orphans)
        self.evaluators = new
        self.metrics.signals.retain(new)
        self.rules = rules

    def make_evaluator(
        self,
        group: Group,
        alert_store: AlertStore,
        *,
        sources: Mapping[str, Source] | None = None,
        shard: Callable[[Labels], bool] | None = None,
        checkpoint_key: str | None = None,
    ) -> GroupEvaluator:
        """Return a new evaluator of ``group`` wired as every evaluator of this daemon is.

        A cluster shard passes its ``shard`` predicate, its ``checkpoint_key`` and ``sources``
        that share one fetch among the shards of a group this replica holds.
        """
        return GroupEvaluator(
            group,
            sources if sources is not None else self.sources,
            shard=shard,
            checkpoint_key=checkpoint_key,
            alert_store=alert_store,
            resolved_retention=self.settings.notify.resolved_retention,
            metrics=self.metrics,
            trace_search_url=self.settings.trace_search_url,
            trace_search_labels=self.settings.trace_search_labels,
            checkpoints=self.checkpoints,
            checkpoint_every=self.settings.checkpoint_interval,
            markers=StoreMarkers(self.store),
        )

    def reload(self) -> ReloadResult:
        """Re-read the rule files; on any problem keep the running rules and say why."""
        try:
            rules = self._load_rules()
            if not self.settings.rules_allow_empty:
                refuse_emptied(self.rules, rules)
        except RuleFileError as exc:
            self.last_reload_error = str(exc)
            self.metrics.reloads.labels("error").inc()
            logger.error("rule reload failed, keeping the previous rules:\n%s", exc)
            return ReloadResult(False, len(self.evaluators), str(exc))
        self._install(rules)
        self.last_reload_error = None
        self.metrics.reloads.labels("ok").inc()
        logger.info("rules reloaded: %d groups, %d rules", len(rules.groups), rules.rule_count)
        if self._scheduled:
            for name in self._sync_group_jobs():  # a new group is evaluated at once, as at start
                if self.jobs.started:
                    self.dispatch(f"group:{name}", functools.partial(self.evaluate_group, name))
        return ReloadResult(True, len(self.evaluators))

    def rule_url(self, group: str, rule: str) -> str:
        """Return the status-page link of one rule."""
        return (
            f"{self.settings.external_url.rstrip('/')}/rules/{quote(group, safe='')}/{quote(rule, safe='')}"
        )

    # --- work ----------------------------------------------------------------------------------

    def evaluate_group(
        self,
        name: str,
        now: datetime | None = None,
        *,
        fence: Any = None,
        evaluator: GroupEvaluator | None = None,
        speaks_for_sources: bool | None = None,
    ) -> EvalResult:
        """Evaluate one group at ``now`` (default: the clock) and enqueue its notifications.

        A cluster shard passes its own ``evaluator`` and whether it ``speaks_for_sources`` (the
        source-down alerts, paged by one unit of the cluster only).
        """
        ev = evaluator if evaluator is not None else self.evaluators[name]
        at = now or self.clock()
        result = ev.evaluate(at, persist=False)
        self.metrics.signals.set(name, ev.verdicts())
        self.metrics.last_evaluation.labels(name).set(at.timestamp())
        # one alert per unavailable endpoint that some rule still queries
        down = self.source_down.update(self.sources, at, self._endpoints_in_use())
        if speaks_for_sources is None:
            speaks_for_sources = fence is None or name == min(self.evaluators)
        if not speaks_for_sources:
            # replicas: every one tracks the endpoints, but only the holder of the first group's
            # lease speaks for them, so an outage seen by all replicas pages once
            down = []

        def state(session: Session) -> None:
            write_alerts(session, result.changed, result.deleted)

        # alert state, notification log and outbox rows: one transaction (a crash between a
        # transition and its message would lose the message, e.g. a resolve, for ever)
        n = self.notifier.submit([*result.notify, *down], at, fence=fence, state=state)
        ev.saved(result)
        self.alert_store.record_health(result.health)
        if n:
            logger.info("group %s: %d notification(s) enqueued", name, n)
        self.heap.settle(at)
        return result

    def _endpoints_in_use(self) -> set[str]:
        """Return the Prometheus endpoints the loaded rules query (``endpoint``, else the default)."""
        default = getattr(self.sources.get("prometheus"), "default", None)
        used: set[str] = set()
        for lg in self.rules.groups:
            for rule in lg.group.rules:
                name = rule.endpoint or default
                if rule.source == "prometheus" and isinstance(name, str):
                    used.add(name)
        return used

    def enforce_retention(self, now: datetime | None = None) -> dict[str, int]:
        """Delete the rows past their retention, in batches; return the rows deleted per table.

        With ``store.partition`` on PostgreSQL, first make the partitions ahead of the clock;
        expired partitions are dropped whole (``store.partitions``).
        """
        from .store.retention import purge

        def count(table: str, n: int) -> None:
            self.metrics.retention_deleted.labels(table).inc(n)

        at = now or self.clock()
        self.maintain_partitions(at)
        return purge(self.store, self.settings.retention, at, on_deleted=count)

    def maintain_partitions(self, now: datetime) -> list[str]:
        """Keep ``calls``/``scores`` partitions ready (``store.partition``); return the partitions made.

        An empty table is converted at once; a table with rows is left as it is, with a warning
        naming ``watcher db partition`` (converting copies every row: an operator's decision).
        A failure is logged, never raised: rows still land in the default partition.
        """
        interval = self.settings.store.partition
        if interval == "off" or self.store.dialect != "postgresql":
            return []
        from .store import partitions as parts

        made: list[str] = []
        try:
            split = set(parts.partitioned_tables(self.store))
            for table in parts.TABLES:
                if table not in split:
                    with self.store.engine.connect() as conn:
                        empty = conn.exec_driver_sql(f"SELECT NOT EXISTS (SELECT 1 FROM {table})").scalar()
                    if not empty:
                        if table not in self._partition_warned:
                            self._partition_warned.add(table)
                            logger.warning(
                                "store.partition is %s but %s holds rows and is not partitioned: "
                                "run `watcher db partition` to convert it",
                                interval,
                                table,
                            )
                        continue
                    parts.convert(self.store, table, interval, now, ahead=self.settings.store.partition_ahead)
                    made += [p.name for p in parts.partitions(self.store, table) if p.lo is not None]
                made += [
                    p.name
                    for p in parts.ensure(
                        self.store,
                        table,
                        interval,
                        now,
                        ahead=self.settings.store.partition_ahead,
                        keep=getattr(self.settings.retention, table),
                    )
                ]
        except StoreError as exc:
            logger.warning("partitions not maintained: %s", exc)
        return made

    def flush(self, now: datetime | None = None) -> Any:
        """Send whatever is due in the outbox."""
        result = self.notifier.flush(now or self.clock())
        self.metrics.outbox_depth.set(self.notifier.pending_count())
        self.notifier.export_dead_letters()
        return result

    def alert_history(self, alert: Alert) -> list[Verdict]:
        """Return the recent verdicts of ``alert``'s series (empty if its group or rule is gone)."""
        ev = self.evaluators.get(alert.group)
        return ev.history(alert.rule, alert.labels) if ev is not None else []

    def check_store(self, now: datetime | None = None) -> bool:
        """Ping the store; after ``store.down_after`` unreachable, tell the receivers directly.

        Returns whether the store answered. See ``storedown``: ``WatcherStoreDown`` and its resolve
        bypass the outbox, which lives in the store.
        """
        try:
            self.store.ping()
        except StoreError as exc:
            self.store_down.update(False, now or self.clock(), str(exc))
            return False
        self.store_down.update(True, now or self.clock())
        return True

    def evaluating(self) -> bool:
        """Tell whether evaluation runs: the store answers and (replicas) this one's leases are valid."""
        return self.store_down.up and self._active()

    def beat(self, heartbeat: Any, now: datetime | None = None) -> bool:
        """Ping the heartbeat only while evaluation runs (checking the store first); return whether sent.

        A daemon that cannot evaluate must fall silent, so the outside dead-man's switch fires.
        """
        self.check_store(now)
        if not self.evaluating():
            logger.warning("heartbeat withheld: evaluation is stopped (store unreachable or leases lost)")
            return False
        return bool(heartbeat.ping())

    def cost_digest(self, now: datetime | None = None) -> list[str]:
        """Queue the cost digest for the receivers it is due for (``notify.cost_digest``); return them.

        Never raises: a failed digest is logged and tried again at the next check.
        """
        settings = self.settings.notify.cost_digest
        if settings is None or not self.evaluating():
            return []
        from .notify.costdigest import budget_rules, enqueue_due

        rules = budget_rules(ev.group for ev in self.evaluators.values())
        try:
            return enqueue_due(self.store, rules, now or self.clock(), settings)
        except Exception as exc:  # the next check retries; a digest must not stop the daemon
            logger.warning("cost digest not queued: %s", self.store.redact(str(exc)))
            return []

    def _active(self) -> bool:
        """Tell whether this replica may touch the outbox (False once its cluster leases ran out)."""
        return self.cluster is None or self.cluster.active()

    def _flush_if_active(self) -> None:
        """Run the outbox job unless this replica's leases ran out (it cannot reach the store)."""
        if self._active():
            self.flush()

    def drain(self, deadline_s: float = 30.0, *, now: datetime | None = None) -> int:
        """Flush the outbox until nothing is pending or ``deadline_s`` passes; return what is left.

        With ``now`` (a virtual clock) retries are not waited for: one flush at ``now``.
        """
        end = time.monotonic() + deadline_s
        while True:
            self.flush(now)
            left = int(self.notifier.pending_count())
            if (
                left == 0
                or now is not None
                or time.monotonic() >= end
                or not self.notifier.outbox.can_start()
            ):
                return left  # (the stop budget holds no more sends: waiting would only delay the stop)
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def run_once(self, now: datetime | None = None, *, drain_s: float = 30.0) -> list[EvalResult]:
        """Evaluate every group once at ``now``, then flush the outbox."""
        results = [self.evaluate_group(name, now or self.clock()) for name in list(self.evaluators)]
        self.drain(drain_s, now=now)
        return results

    # --- the loop ------------------------------------------------------------------------------

    def busy(self, job: str) -> bool:
        """Tell whether a run of ``job`` is still going on the pool."""
        return self.jobs.busy(job)

    def dispatch(self, job: str, fn: Callable[[], object]) -> bool:
        """Run ``fn`` on the pool unless the previous run of ``job`` is still going; return whether it was."""
        return self.jobs.dispatch(job, fn)

    def _schedule_jobs(self) -> None:
        """Create the schedule: one job per group, the outbox, heartbeat and retention jobs."""
        self._scheduler.clear()
        self._group_jobs.clear()
        self._scheduled = True
        self._sync_group_jobs()
        flush_s = max(1, int(self.settings.notify.flush_interval.total_seconds()))
        self._scheduler.every(flush_s).seconds.do(self.dispatch, "outbox", self._flush_if_active)
        down_s = self.settings.store.down_after.total_seconds()
        check_s = max(1, int(min(15.0, down_s / 4)))
        self._scheduler.every(check_s).seconds.do(self.dispatch, "store", self.check_store)
        if self.settings.notify.heartbeat is not None:  # dead-man's switch, see notify.heartbeat
            from .notify.heartbeat import Heartbeat

            beat = Heartbeat(self.settings.notify.heartbeat)
            beat_s = max(1, int(self.settings.notify.heartbeat.interval.total_seconds()))
            self._scheduler.every(beat_s).seconds.do(
                self.dispatch, "heartbeat", functools.partial(self.beat, beat)
            )
        if self.settings.notify.cost_digest is not None:  # see notify.costdigest
            self._scheduler.every(60).seconds.do(self.dispatch, "cost-digest", self.cost_digest)
        keep_s = max(60, int(self.settings.retention.interval.total_seconds()))
        self._scheduler.every(keep_s).seconds.do(self.dispatch, "retention", self.enforce_retention)

    def _sync_group_jobs(self) -> list[str]:
        """Bring the group jobs in line with the evaluators; return the groups that are new.

        An unchanged group (the same evaluator) keeps its job, so its phase and state: a reload,
        however often, never delays an evaluation. A changed group gets a job on its new interval
        in the same phase: its next run comes one (new) interval after its last one (at once if
        that is past). A group gone loses its job.
        """
        if self.cluster is not None and self.cluster.schedules_groups:
            return []  # replicas tick their leased groups on a shared grid (cluster.member)
        fresh: list[str] = []
        now = datetime.now()
        for name, ev in self.evaluators.items():
            old = self._group_jobs.get(name)
            if old is not None and old[0] is ev:
                continue
            secs = max(1, int(ev.group.interval.total_seconds()))
            job = self._scheduler.every(secs).seconds.do(
                self.dispatch, f"group:{name}", functools.partial(self.evaluate_group, name)
            )
            if old is None:
                fresh.append(name)
            else:
                old_job = old[1]
                self._scheduler.cancel_job(old_job)
                assert old_job.next_run is not None
                last = old_job.last_run or old_job.next_run - timedelta(seconds=old_job.interval)
                job.next_run = max(now, last + timedelta(seconds=secs))
            self._group_jobs[name] = (ev, job)
        for name in [n for n in self._group_jobs if n not in self.evaluators]:
            self._scheduler.cancel_job(self._group_jobs.pop(name)[1])
        return fresh

    def next_evaluations(self) -> dict[str, datetime]:
        """Return each scheduled group's next run (naive local time, as ``schedule`` keeps it)."""
        return {name: job.next_run for name, (_, job) in self._group_jobs.items() if job.next_run is not None}

    def request_reload(self, *_: Any) -> None:
        """Ask the loop to reload the rules (safe to call from a signal handler)."""
        self._reload_requested.set()

    def request_stop(self, *_: Any) -> None:
        """Ask the loop to stop (safe to call from a signal handler)."""
        self._stop.set()

    def run(self, *, install_signals: bool = True, ready: Callable[[], None] | None = None) -> None:
        """Run until stopped: evaluate every group now and then on its interval."""
        if install_signals:
            self._install_signals()
        from .cluster import attach

        http = self.http = self._start_server()  # first: a port in use fails the start
        try:
            self.cluster = attach(self)  # SQLite: refuse a second replica; PostgreSQL: join the cluster
        except BaseException:
            if http is not None:
                http.stop(timeout=5.0)
            raise
        self.jobs.start(self.settings.max_workers)
        watchdog_s = sdnotify.watchdog_interval()  # WatchdogSec= in the unit: ping at half of it
        next_ping = 0.0
        try:
            self._schedule_jobs()
            self.dispatch("retention", functools.partial(self.maintain_partitions, self.clock()))
            replicated = self.cluster is not None and self.cluster.schedules_groups
            initial: list[str] = [] if replicated else list(self.evaluators)
            for name in initial:
                self.dispatch(f"group:{name}", functools.partial(self.evaluate_group, name))
            if ready is not None:
                ready()
            logger.info("watcher running: %d groups", len(self.evaluators))
            while not self._stop.is_set():
                if watchdog_s is not None and time.monotonic() >= next_ping:
                    sdnotify.watchdog()  # from this loop, so a hung loop stops the pings
                    next_ping = time.monotonic() + watchdog_s
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self.reload()
                try:
                    if self.cluster is not None:
                        self.cluster.tick()
                    self._scheduler.run_pending()
                except Exception:  # dispatch never raises; this is a last guard against a hot loop
                    logger.exception("scheduler tick failed")
                self._stop.wait(0.2)
        finally:
            self._shutdown(http)

    def _shutdown(self, http: Any) -> None:
        """Stop within ``stop_timeout``: finish in-flight jobs, drain the outbox, hand leases back.

        No send is started that could not finish within the budget (``Outbox.stop_by``); what is
        not sent stays queued for the next start.
        """
        budget = self.settings.stop_timeout.total_seconds()
        end = time.monotonic() + budget
        reserve = min(EXIT_RESERVE_S, max(1.0, budget / 10))
        logger.info("stopping (within %.0fs): finishing in-flight evaluations and sends", budget)
        self.notifier.outbox.stop_by(end - reserve)  # for the leases, closing and the exit
        if http is not None:
            http.stop(timeout=min(5.0, budget / 4))
        late = self.jobs.shutdown(end - reserve - time.monotonic())
        left = 0
        if late:
            logger.warning("stop budget spent with %d job(s) still running", late)
        elif self._active():  # a replica whose leases ran out leaves the outbox to the others
            left = self.drain(deadline_s=max(0.0, end - reserve - time.monotonic()))
        if left:
            logger.warning("%d notification(s) left in the outbox; they are sent at the next start", left)
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        logger.info("stopped %.1fs into the %.0fs stop budget", budget - (end - time.monotonic()), budget)

    def _start_server(self) -> Any:
        """Start the HTTP server when enabled; raise ``ConfigError`` when it cannot listen.

        A daemon without its HTTP server has no status page, no ``/healthz`` and no ingest: its
        health checks would fail later and obscurely, so a port in use fails the start instead.
        """
        cfg = self.settings.server
        if not cfg.enabled:
            return None
        from .web.app import PortInUseError, ServerThread, build_app

        try:
            return ServerThread(build_app(self), cfg.host, cfg.port).start()
        except PortInUseError as exc:
            raise ConfigError(
                f"server: cannot listen on {cfg.host}:{cfg.port} ({exc.reason}): stop the other "
                "process, or set server.port (0 picks a free port) or server.enabled: false"
            ) from None
        except RuntimeError as exc:
            raise ConfigError(f"server: {exc}") from None

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def close(self) -> None:
        """Stop the outbox's sending threads; release the sources' connections and the store."""
        self.notifier.close()
        for source in {id(s): s for s in self.sources.values()}.values():
            close = getattr(source, "close", None)
            if callable(close):
                close()
        self.store.close()
        self.heap.release()
