"""One fetch per group, rule and range for all the shards of a group a replica holds.

This module owns ``SharedFetch``, a source wrapper: the shards of one group on one replica ask the
same query over the same range at the same tick, and only the first asks the backend; the others
(waiting for it, when they run at the same time) get the same list of series. Each shard then
keeps its own series (``engine.group``: the ``shard`` predicate). The list and its label sets are
the same objects for every shard, so the shard of a series is hashed once (``Labels`` caches its
merges and fingerprint).

A failed fetch is not remembered: every shard that asks gets its own failure, and a failed query
never resolves anything. A range asked once is kept until newer ranges of the rule push it out
(``keep`` per rule), so memory holds at most a couple of fetches per rule.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta

from ..core import Series
from ..rules.schema import Rule
from ..sources.base import Source

_Key = tuple[str, str, str, datetime, datetime, timedelta]


class SharedFetch:
    """A source whose fetches of the same rule and range are run once and shared."""

    def __init__(self, inner: Source, *, keep: int = 2) -> None:
        self.inner = inner
        self.name = inner.name
        self._keep = keep
        self._lock = threading.Lock()
        self._locks: dict[_Key, threading.Lock] = {}
        self._done: dict[tuple[str, str], OrderedDict[_Key, list[Series]]] = {}
        self.backend_fetches = 0
        """How many fetches reached the backend (the rest were shared)."""

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """Return the rule's series in ``(start, end]``: from the backend once, then shared."""
        rule_key = (rule.source, rule.alert + "\x00" + rule.model_dump_json())
        key: _Key = (rule_key[0], rule_key[1], "", start, end, step)
        with self._lock:
            done = self._done.get(rule_key)
            if done is not None and key in done:
                return done[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                done = self._done.get(rule_key)
                if done is not None and key in done:
                    return done[key]
            try:
                series = self.inner.fetch(rule, start, end, step)
            finally:
                with self._lock:
                    self._locks.pop(key, None)
            with self._lock:
                self.backend_fetches += 1
                done = self._done.setdefault(rule_key, OrderedDict())
                done[key] = series
                while len(done) > self._keep:
                    done.popitem(last=False)
            return series
