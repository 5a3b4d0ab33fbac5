"""One replica's part in a cluster on PostgreSQL: heartbeats, held leases, ticks and the fence.

This module owns the replica's runtime: a heartbeat thread that runs one coordination cycle every
``heartbeat_interval`` (sooner when another replica's lease is about to run out, so a dead
replica's groups move as soon as its lease expires), the set of units this replica holds with
their epochs, the tick grid, and wiring the daemon's evaluation and outbox to the leases. It does
not own the SQL (``leases``), who should own what (``assign``) nor evaluation itself (``engine``).

A **unit** is a rule group, or with ``cluster.shards: N`` one of its N series shards
(``group#k/N``, ``assign``): leases, tick claims, the fence and detector checkpoints are per unit.
Each held shard has its own evaluator, which keeps only its series; the shards of a group held by
one replica share one fetch per tick (``sharedfetch``).

Safety, in order of defence:

1. **Local lease clock.** A cycle that commits at monotonic time ``t0 + x`` renewed the leases
   until (database) ``t0 + x' + ttl`` with ``x' >= x``; the replica trusts them only until
   ``t0 + ttl - safety_margin``. When that passes without a successful cycle (the database is
   unreachable) it stops evaluating and stops sending at once, before any other replica can take
   its groups.
2. **Tick claims.** Ticks sit on a grid (``floor(now / interval) · interval``); a group is
   evaluated at a tick only after a row ``(group, tick)`` was inserted while the lease was valid,
   so a tick is evaluated at most once even while a group changes hands. The claim is marked
   done in the fenced transaction of the evaluation's results; a new owner resumes after the last
   done tick, and re-claims ticks whose claim was left not done by the previous epoch.
3. **The fence.** Alert state and outbox rows of an evaluation are written in transactions that
   lock the lease row and check owner, epoch and expiry; a replica that lost its lease mid-way
   writes nothing.

A unit that arrives (or comes back) at a new epoch gets a fresh evaluator restored from the
store's alert state (its own shard's alerts), so it neither re-pages a firing alert nor forgets
it; its detectors resume from the unit's last detector checkpoint when there is a recent one, and
otherwise warm up from history on the first fetch (``engine.group``).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from .. import __version__
from ..core import Alert
from ..engine.group import GroupEvaluator
from ..engine.state import AlertStore, SessionSource, _translated, alert_to_row
from ..errors import ConfigError, LeaseLostError
from ..store.tables import AlertRow
from . import leases
from .assign import Peer, Unit, eligible, majority_hash, owner_of, owns, parse_unit, rules_hash, shard_units
from .host import Host
from .metrics import ClusterMetrics
from .sharedfetch import SharedFetch
from .sharedgroups import StoreGroupPeers

logger = logging.getLogger(__name__)

Fence = Callable[[Session], None]


REPLICA_ID_FILE = "watcher-replica-id"


def default_replica_id() -> str:
    """Return a new id ``hostname-<8 hex>``: readable in ``watcher cluster status``, unique per replica."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def persisted_replica_id(state_dir: Path) -> tuple[str, IO[str]]:
    """Return the replica id kept in ``state_dir/watcher-replica-id``, created once, and the locked file.

    The id survives restarts, so a restarted replica is the same member of the cluster (the same
    rendezvous hash, so it takes back the same groups). The file stays locked (``flock``) while the
    replica runs: a second process using the same directory would share the id, and is refused.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / REPLICA_ID_FILE
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(
            f"cluster: {path} is in use by another running replica; give each replica its own "
            "cluster.state_dir or cluster.replica_id"
        ) from None
    handle.seek(0)
    rid = handle.read().strip()
    if not rid:
        rid = default_replica_id()
        handle.seek(0)
        handle.truncate()
        handle.write(rid + "\n")
        handle.flush()
        os.fsync(handle.fileno())
        logger.info("cluster: new replica id %s saved in %s", rid, path)
    return rid[:128], handle


def catch_up_ticks(last: float | None, tick: float, interval: float, window_s: float) -> list[float]:
    """Return the grid ticks after ``last`` up to ``tick``, in order, at most ``window_s`` back from it.

    ``last`` is the group's last evaluated tick (by any replica), None if it never was: then only
    ``tick``. Ticks older than the window are skipped: a group down for long resumes at the present
    instead of replaying hours.
    """
    if last is None or last >= tick:
        return [tick]
    missed = round((tick - last) / interval) - 1  # grid ticks strictly between last and tick
    missed = max(0, min(missed, math.floor(window_s / interval + 1e-9)))
    return [tick - k * interval for k in range(missed, 0, -1)] + [tick]


class FencedAlertStore(AlertStore):
    """An ``AlertStore`` whose saves of one group's state are refused once its lease is lost."""

    def __init__(self, store: SessionSource, fence: Fence) -> None:
        super().__init__(store)
        self._fence = fence

    def save(self, changed: Any, deleted: Any) -> None:
        """Upsert and delete like ``AlertStore.save``, in a transaction that checks the lease first."""
        changed = list(changed)
        deleted = list(deleted)
        if not changed and not deleted:
            return
        from sqlmodel import col, delete

        with _translated(self._store, "saving alert state"), self._store.session() as s:
            self._fence(s)
            for alert in changed:
                s.merge(alert_to_row(alert))
            if deleted:
                s.exec(delete(AlertRow).where(col(AlertRow.fingerprint).in_(deleted)))
            s.commit()


class ClusterMember:
    """This process as one replica of a cluster sharing rule groups through PostgreSQL."""

    schedules_groups = True
    """The daemon leaves group ticks to ``tick()`` instead of its own schedule."""

    def __init__(self, daemon: Host, *, now: Callable[[], float] = time.time) -> None:
        cfg = daemon.settings.cluster
        self.daemon = daemon
        self.store = daemon.store
        self.ttl: timedelta = cfg.lease_ttl
        self.heartbeat_s = float((cfg.heartbeat_interval or cfg.lease_ttl / 3).total_seconds())
        self.margin_s = float((cfg.safety_margin or cfg.lease_ttl / 5).total_seconds())
        self.claim_for: timedelta = cfg.outbox_claim or max(cfg.lease_ttl * 2, timedelta(seconds=30))
        self.keep_evaluations: timedelta = cfg.evaluation_log_retention
        self.catch_up_s = float(
            (cfg.catch_up if cfg.catch_up is not None else cfg.lease_ttl * 2).total_seconds()
        )
        self.shards: int = cfg.shards
        self._id_file: IO[str] | None = None
        rid = cfg.replica_id
        if not rid:
            rid, self._id_file = persisted_replica_id(cfg.state_dir or Path.cwd())
        self.me = leases.Me(
            replica_id=rid,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=datetime.now(UTC),
        )
        self.metrics = ClusterMetrics.of(daemon.metrics.registry)
        self._now = now
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._valid_until = -math.inf
        self._peers: list[Peer] = []
        self._mismatch = False
        self._rules_hash = ""
        self._last_error: str | None = None
        self._last_tick: dict[str, float] = {}
        self._resume: dict[str, tuple[float | None, float]] = {}
        """Groups just gained: the last tick any replica evaluated (None: never), to catch up from, and
        when they were gained (the catch-up window counts back from then, so a new owner too busy to
        start at once still reaches the ticks the takeover missed)."""
        self._built: dict[str, tuple[int, GroupEvaluator, GroupEvaluator]] = {}
        """Unit → (epoch, its evaluator, the daemon's evaluator of the group it was built from)."""
        self._shared: dict[str, dict[str, SharedFetch]] = {}
        """Group → its sources, sharing one fetch among the group's shards held here."""
        self._stats: dict[str, tuple[int, float]] = {}
        """Unit → (series, seconds) of its last evaluation here, reported at the next heartbeat."""
        self._cycles = 0
        self._expired_logged = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def replica_id(self) -> str:
        """Return this replica's id."""
        return self.me.replica_id

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> ClusterMember:
        """Run a first cycle, share the outbox, and start heartbeating in the background."""
        self.daemon.notifier.outbox.share(self.replica_id, self.claim_for, self.valid)
        self.daemon.notifier.peers = StoreGroupPeers()
        self.cycle()
        self._thread = threading.Thread(target=self._loop, name="watcher-cluster", daemon=True)
        self._thread.start()
        logger.info(
            "cluster: replica %s joined (lease_ttl %ss, heartbeat every %.1fs)",
            self.replica_id,
            self.ttl.total_seconds(),
            self.heartbeat_s,
        )
        return self

    def stop(self) -> None:
        """Stop heartbeating and hand the held groups back (their leases expire now)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            held = list(self._held)
            self._held.clear()
            self._valid_until = -math.inf
        if held:
            try:
                with self.store.engine.begin() as conn:
                    leases.release(conn, held, self.replica_id)
                logger.info("cluster: released %d group(s) on shutdown", len(held))
            except SQLAlchemyError as exc:
                logger.warning(
                    "cluster: could not release leases (they expire by themselves): %s", self._describe(exc)
                )
        if self._id_file is not None:
            self._id_file.close()  # releases the lock on the replica id file
            self._id_file = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.cycle()
            self._wake.wait(wait)
            self._wake.clear()

    # --- one coordination cycle ------------------------------------------------------------------

    def cycle(self) -> float:
        """Heartbeat, acquire/renew/release leases; return the seconds until the next cycle."""
        t0 = time.monotonic()
        groups = [lg.group.name for lg in self.daemon.rules.groups]
        units = [u for g in groups for u in shard_units(g, self.shards)]
        rhash = self._hash()
        self._cycles += 1
        try:
            with self.store.engine.begin() as conn:
                peers = leases.heartbeat(conn, self.me, rhash, self.ttl)
                replicas = eligible(peers)
                mismatch = self.replica_id not in replicas
                wanted = [] if mismatch else [u for u in units if owner_of(u, replicas) == self.replica_id]
                before = leases.read_leases(conn)
                with self._lock:
                    had = dict(self._held)
                held: dict[str, int] = {}
                for g in wanted:
                    epoch = leases.acquire(conn, g, self.replica_id, self.ttl, fresh=g not in had)
                    if epoch is not None:
                        held[g] = epoch
                gained = [g for g, e in held.items() if had.get(g) != e]
                last = leases.last_ticks(conn, gained)  # where the previous owner stopped
                mine = [
                    lv.group
                    for lv in before
                    if lv.owner == self.replica_id and lv.valid and lv.group not in held
                ]
                released = leases.release(conn, mine, self.replica_id)
                with self._lock:
                    stats = {u: st for u, st in self._stats.items() if u in held}
                leases.report(conn, self.replica_id, held, stats)
                pruned = 0
                if not mismatch and self.replica_id == min(replicas) and self._cycles % 10 == 1:
                    pruned = leases.prune_alerts(conn, groups)  # alerts of groups the rules dropped
                if self._cycles % 100 == 1:
                    leases.housekeeping(conn, self.ttl, self.keep_evaluations)
        except SQLAlchemyError as exc:
            self._failed(exc)
            left = self._valid_until - time.monotonic()
            # while leases are still valid, retry soon enough to renew them; afterwards, calmly
            return max(0.2, min(self.heartbeat_s, left) / 2 if left > 0 else self.heartbeat_s / 2)
        self._apply(t0, held, peers, mismatch, rhash, released, {g: last.get(g) for g in gained})
        if pruned:
            logger.info("cluster: deleted %d stored alert(s) of rule groups no longer configured", pruned)
        wait = self.heartbeat_s
        for lv in before:  # wake just after another replica's lease runs out: if it died, take over now
            if lv.owner != self.replica_id and lv.valid:
                wait = min(wait, lv.expires_in_s + 0.05)
        return max(0.05, wait - (time.monotonic() - t0))

    def _apply(
        self,
        t0: float,
        held: dict[str, int],
        peers: list[Peer],
        mismatch: bool,
        rhash: str,
        released: list[str],
        resume: dict[str, float | None],
    ) -> None:
        with self._lock:
            before = dict(self._held)
            self._held = held
            self._valid_until = t0 + self.ttl.total_seconds() - self.margin_s
            self._peers = peers
            was_mismatch, self._mismatch = self._mismatch, mismatch
            self._rules_hash = rhash
            self._last_error = None
            self._expired_logged = False
        lost = [g for g in before if g not in held]
        gained = [g for g, e in held.items() if before.get(g) != e]
        for g in [*lost, *(g for g in gained if g in before)]:  # gone, or back at a new epoch: rebuild
            self._forget(g)
        for g in gained:
            self._resume[g] = (resume.get(g), self._now())
        if gained:
            logger.info("cluster: %s now holds group(s) %s", self.replica_id, ", ".join(sorted(gained)))
        if lost or released:
            logger.info(
                "cluster: %s gave up group(s) %s", self.replica_id, ", ".join(sorted({*lost, *released}))
            )
        if mismatch and not was_mismatch:
            logger.error(
                "cluster: this replica's rules (hash %s) differ from the majority's (%s): it takes no groups "
                "until it runs the same rule files",
                rhash,
                majority_hash(peers),
            )
        self.metrics.leases_held.set(len(held))
        self.metrics.replicas.set(len(peers))
        self.metrics.rules_hash_mismatch.set(1 if mismatch else 0)

    def _hash(self) -> str:
        """Return the hash replicas must agree on: the rules, and the shard count when sharding."""
        groups: list[object] = [lg.group for lg in self.daemon.rules.groups]
        if self.shards > 1:
            groups.append({"cluster.shards": self.shards})
        return rules_hash(groups)

    def _failed(self, exc: BaseException) -> None:
        message = self._describe(exc)
        self.metrics.heartbeat_failures.inc()
        with self._lock:
            first = self._last_error is None
            self._last_error = message
        if first:
            logger.warning("cluster: heartbeat failed, leases not renewed: %s", message)

    def _describe(self, exc: BaseException) -> str:
        err = self.store.error("cluster heartbeat", exc)
        return str(err)

    def _forget(self, name: str) -> None:
        """Drop what this replica knows about unit ``name`` in memory (its new owner has the store)."""
        self._built.pop(name, None)
        self._last_tick.pop(name, None)
        self._resume.pop(name, None)
        with self._lock:
            self._stats.pop(name, None)
        unit = parse_unit(name)
        if unit.shards > 1:
            keep = owns(unit)
            self.daemon.notifier.forget_group(unit.group, lambda a: keep(a.labels))
        else:
            self.daemon.notifier.forget_group(name)

    # --- what the daemon asks --------------------------------------------------------------------

    def valid(self) -> bool:
        """Tell whether this replica's leases are still valid by its own clock (with the margin)."""
        return not self._stop.is_set() and time.monotonic() < self._valid_until

    def active(self) -> bool:
        """Tell whether this replica may deliver and drain the outbox (its leases are valid)."""
        return self.valid()

    def held(self) -> dict[str, int]:
        """Return the groups held now, with their epochs (empty once the local lease clock ran out)."""
        with self._lock:
            return dict(self._held) if time.monotonic() < self._valid_until else {}

    def tick(self) -> None:
        """Dispatch the evaluation of every held group whose next grid tick has come (daemon loop)."""
        if not self.valid():
            self._expire()
            return
        now = self._now()
        for name, epoch in self.held().items():
            ev = self.daemon.evaluators.get(parse_unit(name).group)
            if ev is None:
                continue
            interval = max(1.0, ev.group.interval.total_seconds())
            tick = math.floor(now / interval) * interval
            last = self._last_tick.get(name)
            resuming = name in self._resume
            if resuming:
                done, gained = self._resume[name]
                window = self.catch_up_s + max(0.0, tick - gained) if self.catch_up_s > 0 else 0.0
                ticks = catch_up_ticks(done, tick, interval, window)
            elif last is not None and last >= tick:
                continue
            else:
                ticks = [tick]
            job = f"group:{name}"
            if self.daemon.busy(job):
                continue  # still evaluating (it overran its interval): decided when it is done
            if self.daemon.dispatch(job, functools.partial(self._run, name, epoch, ticks)):
                self._resume.pop(name, None)  # a catch-up refused (the job is busy) is retried next tick
                if last is not None and not resuming and tick - last > interval * 1.5:
                    # an evaluation that overran its interval: like Prometheus, the ticks it overran
                    # are skipped, not queued (a group slower than its interval would fall behind
                    # for ever), and counted once each
                    self.daemon.metrics.missed_ticks.labels(job).inc(round((tick - last) / interval) - 1)
                self._last_tick[name] = tick

    def _run(self, name: str, epoch: int, ticks: list[float]) -> None:
        """Evaluate ``name`` at ``ticks`` in order, each at its own time (the last one is the current)."""
        if len(ticks) > 1:
            self.metrics.catch_up_ticks.inc(len(ticks) - 1)
            logger.info(
                "cluster: group %s: catching up %d missed tick(s) from %s",
                name,
                len(ticks) - 1,
                datetime.fromtimestamp(ticks[0], UTC).isoformat(),
            )
        for t in ticks:
            if not self.evaluate(name, epoch, t):
                return

    def _expire(self) -> None:
        with self._lock:
            if not self._held or self._expired_logged:
                return
            lost = list(self._held)
            self._held.clear()
            self._expired_logged = True
            error = self._last_error
        for g in lost:
            self._forget(g)
        self.metrics.leases_held.set(0)
        self.metrics.leases_lost.inc(len(lost))
        logger.error(
            "cluster: leases expired without renewal (%s): stopped evaluating %d group(s) and sending",
            error or "no successful heartbeat",
            len(lost),
        )

    def evaluate(self, name: str, epoch: int, tick: float) -> bool:
        """Claim ``(name, tick)`` and, if this replica won it under a valid lease, evaluate the group.

        Return False when the lease is gone (nothing more to evaluate for this epoch).
        """
        if not self.valid() or self.held().get(name) != epoch:
            return False
        at = datetime.fromtimestamp(tick, UTC)
        try:
            with self.store.engine.begin() as conn:
                won = leases.claim_tick(conn, name, at, self.replica_id, epoch)
        except SQLAlchemyError as exc:
            raise self.store.error("claiming a tick", exc) from None
        if not won:
            self.metrics.tick_conflicts.inc()
            return True
        unit = parse_unit(name)
        ev = self._evaluator(unit, epoch, self._fence(name, epoch))
        first = shard_units(min(self.daemon.evaluators), self.shards)[0] if self.daemon.evaluators else name
        t0 = time.perf_counter()
        try:
            # the results and the claim's done flag commit in one fenced transaction
            result = self.daemon.evaluate_group(
                unit.group,
                at,
                fence=self._fence(name, epoch, done=at),
                evaluator=ev,
                speaks_for_sources=name == first,  # one unit of the cluster pages source outages
            )
        except LeaseLostError as exc:
            # the claim stays not done: the group's next epoch re-claims and evaluates this tick
            self.metrics.leases_lost.inc()
            logger.warning("cluster: evaluation of %s at %s discarded: %s", name, at.isoformat(), exc)
            self._built.pop(name, None)
            return False
        self.metrics.evaluations.inc()
        with self._lock:
            self._stats[name] = (sum(h.series for h in result.health), time.perf_counter() - t0)
        return True

    def _fence(self, name: str, epoch: int, done: datetime | None = None) -> Fence:
        """Return the fence of ``name`` at ``epoch``; with ``done``, it also marks that tick's claim done."""

        def fence(session: Session) -> None:
            if not self.valid():
                raise LeaseLostError(f"rule group {name}: lease ran out by the local clock")
            leases.check_fence(session, name, self.replica_id, epoch)
            if done is not None:
                leases.mark_done(session, name, done, self.replica_id, epoch)

        return fence

    def _evaluator(self, unit: Unit, epoch: int, fence: Fence) -> GroupEvaluator:
        """Return the evaluator of ``unit`` at ``epoch``: a fresh one restored from the store on arrival.

        A whole group's evaluator replaces the daemon's (the status page reads it); a shard's is
        kept here, sees only its series and alerts, and checkpoints its detectors under its name.
        """
        d = self.daemon
        current = d.evaluators[unit.group]
        built = self._built.get(unit.name)
        if built is not None and built[0] == epoch and built[2] is current:
            return built[1]
        fenced = FencedAlertStore(d.store, self._fence(unit.name, epoch))
        stored: list[Alert] = d.alert_store.load(unit.group)
        if unit.shards > 1:
            keep = owns(unit)
            stored = [a for a in stored if keep(a.labels)]
            shared = self._shared.setdefault(unit.group, {})
            for name, src in d.sources.items():
                if name not in shared or shared[name].inner is not src:
                    shared[name] = SharedFetch(src)
            ev = d.make_evaluator(current.group, fenced, sources=shared, shard=keep, checkpoint_key=unit.name)
        else:
            ev = d.make_evaluator(current.group, fenced)
        orphans = ev.restore(stored)  # alerts of rules the group no longer has
        if orphans:
            fenced.save([], orphans)
        if unit.shards == 1:
            d.evaluators[unit.group] = ev
        self._built[unit.name] = (epoch, ev, d.evaluators[unit.group])
        firing = sum(1 for a in stored if a.state.name == "FIRING")
        logger.info(
            "cluster: %s taken at epoch %d, %d alert(s) restored (%d firing)",
            unit.name,
            epoch,
            len(stored),
            firing,
        )
        return ev

    # --- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return this replica's view for ``/readyz`` (no secrets)."""
        with self._lock:
            peers = list(self._peers)
            return {
                "mode": "postgresql",
                "replica_id": self.replica_id,
                "rules_hash": self._rules_hash,
                "majority_rules_hash": majority_hash(peers),
                "rules_hash_mismatch": self._mismatch,
                "replicas_live": len(peers),
                "groups_held": sorted(self._held) if time.monotonic() < self._valid_until else [],
                "shards": self.shards,
                "series": sum(n for n, _ in self._stats.values()),
                "lease_valid_for_s": round(max(0.0, self._valid_until - time.monotonic()), 3)
                if self._valid_until > -math.inf
                else 0.0,
                "last_error": self._last_error,
            }
