"""Fetching and scoring a replay's rules in worker processes (``watcher backtest --jobs N``).

This module owns the parallel side of a batch replay, in two kinds of tasks: fetching one chunk
of a fetch set (``prefetch``: a rule, or the SQL rules that read the same rows) and scoring one
rule's whole-range series (``batch.plan_rule``). The parent joins the chunks, keeps the series in
its cache and sends each rule's series to a scoring task as soon as they are complete; the plans
come back compactly, each series' verdicts as columns (``VerdictColumns``), not one pickled object
per point. It does not own the replay (``replay``: the evaluator, episodes and trace fetches stay
in the parent, so the result does not depend on ``jobs``), the scoring (``batch``) nor any source.

A source takes part when it can be rebuilt in another process: it offers ``portable()``, returning
a picklable zero-argument callable that opens an equivalent source there, or None when it cannot
(an in-memory SQLite store). Rules on other sources, and rules whose fetch failed in a worker, are
fetched and scored in the parent as with ``jobs=1`` (so a failure is reported exactly as there).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

from ..core import Series, Verdict, to_epoch
from ..engine.group import rule_lookback, rule_step
from ..errors import WatcherError
from ..rules.schema import Group, Rule
from ..sources.base import Source
from .batch import RulePlan, SeriesPlan, data_ticks, fallback_plan, plan_rule, slice_starts
from .cache import group_ticks
from .prefetch import Assembly, FetchSet

if TYPE_CHECKING:
    from .cache import CachedSource

_FIELDS = fields(Verdict)
_FLOATS = tuple(f.name for f in _FIELDS if f.type == "float")
_BOOLS = tuple(f.name for f in _FIELDS if f.type == "bool")
_STRS = tuple(f.name for f in _FIELDS if f.type == "str")
_OTHERS = tuple(f.name for f in _FIELDS if f.name not in {*_FLOATS, *_BOOLS, *_STRS})


def default_jobs(units: int) -> int:
    """Return the number of worker processes ``--jobs`` defaults to: one per CPU, at most one per unit."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, units))


class VerdictColumns(Sequence[Verdict]):
    """The verdicts of one series held as columns (one array per ``Verdict`` field).

    Indexing builds the ``Verdict`` on demand, equal field by field to the one encoded: the replay
    reads only the few verdicts of the ticks it evaluates, so most are never built.
    """

    def __init__(self, verdicts: Sequence[Verdict]) -> None:
        n = len(verdicts)
        self._n = n
        self._cols: dict[str, Any] = {}
        for name in _FLOATS:
            self._cols[name] = np.fromiter(map(attrgetter(name), verdicts), np.float64, n)
        for name in _BOOLS:
            self._cols[name] = np.fromiter(map(attrgetter(name), verdicts), np.bool_, n)
        for name in _STRS:  # few distinct texts (the warm-up reasons): codes into a table
            table: dict[str, int] = {}
            codes = [table.setdefault(text, len(table)) for text in map(attrgetter(name), verdicts)]
            self._cols[name] = (np.array(codes, dtype=np.int32), tuple(table))
        for name in _OTHERS:
            self._cols[name] = list(map(attrgetter(name), verdicts))

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Verdict: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Verdict]: ...

    def __getitem__(self, i: int | slice) -> Verdict | Sequence[Verdict]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        cols = self._cols
        kw: dict[str, Any] = {name: float(cols[name][i]) for name in _FLOATS}
        kw.update((name, bool(cols[name][i])) for name in _BOOLS)
        for name in _STRS:
            codes, table = cols[name]
            kw[name] = table[int(codes[i])]
        kw.update((name, cols[name][i]) for name in _OTHERS)
        return Verdict(**kw)

    def __iter__(self) -> Iterator[Verdict]:
        return (self[k] for k in range(self._n))


class _Latest(Sequence["Verdict | None"]):
    """Per group tick, the verdict of the tick's newest point: an index into the verdicts, -1 for None."""

    def __init__(self, verdicts: Sequence[Verdict], index: npt.NDArray[np.int64]) -> None:
        self._verdicts, self._index = verdicts, index

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> Verdict | None: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Verdict | None]: ...

    def __getitem__(self, i: int | slice) -> Verdict | Sequence[Verdict | None] | None:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        at = int(self._index[i])
        return None if at < 0 else self._verdicts[at]

    def __iter__(self) -> Iterator[Verdict | None]:
        return (self[k] for k in range(len(self)))


def _latest_index(sp: SeriesPlan) -> npt.NDArray[np.int64]:
    """Return where each tick's newest verdict sits in ``sp.verdicts`` (-1: none)."""
    where = {id(v): k for k, v in enumerate(sp.verdicts)}
    return np.array([-1 if v is None else where[id(v)] for v in sp.latest], dtype=np.int64)


def _compact(plan: RulePlan) -> RulePlan:
    """Return ``plan`` with its verdicts as columns (what crosses the process boundary)."""
    out = RulePlan(plan.rule, plan.interesting, precomputed=plan.precomputed)
    for sp in plan.series:
        cols = VerdictColumns(sp.verdicts)
        out.series.append(SeriesPlan(sp.labels, sp.timestamps, cols, _Latest(cols, _latest_index(sp))))
    return out


_SOURCES: dict[Any, Source] = {}
"""The sources a worker process has opened, by the recipe that built them (one each per process)."""


def fetch_chunk(
    recipe: Callable[[], Source], fs: FetchSet, k: int
) -> tuple[list[list[Series] | None] | None, float]:
    """Fetch chunk ``k`` of a fetch set (in a worker); return it (None if it failed) and the CPU time."""
    c0 = time.process_time()
    try:
        src = _SOURCES.get(recipe)
        if src is None:
            src = _SOURCES[recipe] = recipe()
        got: list[list[Series] | None] | None = fs.fetch_chunk(src, k)
    except Exception:  # the parent fetches the set's rules itself and reports the failure per rule
        got = None
    return got, time.process_time() - c0


def score_rule(
    group: Group, rule: Rule, series: list[Series], start: datetime, end: datetime
) -> tuple[RulePlan | None, float]:
    """Score a rule's whole-range series (in a worker); return the compact plan (None: the scoring
    failed, the evaluator runs live detectors) and the CPU time."""
    c0 = time.process_time()
    ticks = data_ticks(
        rule, np.array([to_epoch(t) for t in group_ticks(group, start, end)], dtype=np.float64)
    )
    step_s = rule_step(rule, group).total_seconds()
    starts = slice_starts(ticks, step_s, rule_lookback(rule, group).total_seconds())
    try:
        plan: RulePlan | None = _compact(plan_rule(rule, series, ticks, starts, step_s))
    except WatcherError:
        plan = None
    return plan, time.process_time() - c0


@dataclass
class _SetJob:
    """One fetch set being fetched by the workers, and the rules waiting for it."""

    cache: CachedSource
    fs: FetchSet
    chunks: list[Future[tuple[list[list[Series] | None] | None, float]]]
    rules: list[tuple[Group, Rule]]
    state: str = "fetching"
    """``fetching``, ``done`` (kept in the cache, scoring submitted) or ``failed``."""


@dataclass
class Workers:
    """The fetch and scoring tasks of one replay on a process pool, collected per rule."""

    pool: ProcessPoolExecutor
    start: datetime
    end: datetime
    jobs: list[_SetJob] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=lambda: {"fetch": 0.0, "score": 0.0})
    """CPU seconds the workers spent per phase, for the tasks collected so far."""
    _job_of: dict[int, _SetJob] = field(default_factory=dict)
    _scoring: dict[int, Future[tuple[RulePlan | None, float]]] = field(default_factory=dict)

    def submit(
        self, cache: CachedSource, recipe: Callable[[], Source], fs: FetchSet, rules: list[tuple[Group, Rule]]
    ) -> None:
        """Submit the chunks of one fetch set; ``rules`` are scored once it is complete."""
        chunks = [self.pool.submit(fetch_chunk, recipe, fs, k) for k in range(fs.n_chunks)]
        job = _SetJob(cache, fs, chunks, rules)
        self.jobs.append(job)
        for _, rule in rules:
            self._job_of[id(rule)] = job

    def has(self, rule: Rule) -> bool:
        """Tell whether ``rule`` is fetched and scored by the workers."""
        return id(rule) in self._job_of

    def plan(self, rule: Rule, n_ticks: int) -> RulePlan | None:
        """Wait for ``rule``'s plan; None when the workers could not make it (its fetch failed, or
        a worker died): the parent then fetches (if still needed) and scores the rule itself."""
        job = self._job_of[id(rule)]
        while job.state == "fetching":
            self._wait_any()
        if job.state == "failed":
            return None
        fut = self._scoring[id(rule)]
        while not fut.done():
            self._wait_any(fut)
        try:
            got, cpu = fut.result()
        except BrokenExecutor:  # a worker died (killed, out of memory): score it here instead
            return None
        self.cpu["score"] += cpu
        if got is None:  # the scoring failed: the evaluator runs real detectors (and reports why)
            return fallback_plan(rule, n_ticks)
        got.rule = rule  # the parent's own rule object rather than the worker's copy
        return got

    def _wait_any(self, *also: Future[Any]) -> None:
        """Wait until some task ends; move every fetch set whose chunks are all in to scoring."""
        pending: list[Future[Any]] = [*also]
        for job in self.jobs:
            if job.state == "fetching":
                pending += [f for f in job.chunks if not f.done()]
        if pending:
            wait(pending, return_when=FIRST_COMPLETED)
        for job in self.jobs:
            if job.state == "fetching" and all(f.done() for f in job.chunks):
                self._finish(job)

    def _finish(self, job: _SetJob) -> None:
        """Join a fetched set into the cache and submit the scoring of its rules."""
        try:
            got = [f.result() for f in job.chunks]
        except BrokenExecutor:  # a worker died (killed, out of memory): fetch the rules here instead
            job.state = "failed"
            return
        self.cpu["fetch"] += sum(cpu for _, cpu in got)
        if any(chunk is None for chunk, _ in got):
            job.state = "failed"
            return
        joined = Assembly(job.fs, self.end)
        for chunk, _ in got:
            assert chunk is not None
            joined.add(chunk)
        job.cache.keep(job.fs, joined.series())
        job.chunks = []  # the chunks' series are no longer needed here
        job.state = "done"
        for group, rule in job.rules:
            series = job.cache.prefetch(rule, group).series
            self._scoring[id(rule)] = self.pool.submit(score_rule, group, rule, series, self.start, self.end)

    def close(self) -> None:
        """Stop the pool, waiting for running tasks (a failed replay leaves no stray process)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def start_workers(
    caches: dict[str, CachedSource], groups: Sequence[Group], start: datetime, end: datetime, jobs: int | None
) -> Workers | None:
    """Start fetching and scoring in worker processes the rules whose source can be opened in one.

    Return None when there is nothing to share out or only one process would run (``jobs``
    None: one per CPU, at most one per task).
    """
    todo: list[tuple[CachedSource, Callable[[], Source], FetchSet, list[tuple[Group, Rule]]]] = []
    for name, cache in caches.items():
        portable = getattr(cache.inner, "portable", None)
        recipe = portable() if callable(portable) else None
        if recipe is None:
            continue
        rules = [(r, g) for g in groups for r in g.rules if r.source == name]
        for fs in cache.fetch_sets(rules):
            keys = {w.key for w in fs.wanted}
            mine = [(g, r) for r, g in rules if cache.fetch_key(r, g) in keys]
            todo.append((cache, recipe, fs, mine))
    tasks = sum(fs.n_chunks for _, _, fs, _ in todo)
    n = default_jobs(tasks) if jobs is None else min(jobs, tasks)
    if n <= 1:
        return None
    # Spawned, not forked: a forked child would inherit the parent's open database connections.
    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
    workers = Workers(pool, start, end)
    try:
        for cache, recipe, fs, mine in todo:
            workers.submit(cache, recipe, fs, mine)
    except BaseException:
        workers.close()
        raise
    return workers
