"""Every exception watcher raises on purpose, in one tree.

::

    WatcherError
     ├── ConfigError                 bad settings file or environment
     ├── RuleFileError               bad rule files; .problems lists every one with file:line:col
     ├── StoreError                  the database cannot be opened, is corrupt or locked
 │    └── LeaseLostError          a replica no longer holds the rule group it was writing for
     ├── SourceError                 a fetch failed; alert state must not change
     │    ├── SourceUnavailableError transient (timeout, connection refused, 5xx): back off, retry
     │    └── QueryError             the query itself is wrong (4xx, bad_data): fix the rule
     ├── DetectorError               a detector was configured with impossible parameters
     └── NotifyError                 a delivery failed; .retryable and .reason say what to do next

Third-party exceptions are translated into these at the edge (the source, the store, the
receiver) so that callers handle one tree. Messages never contain secrets: receivers and sources
redact URLs and tokens before building them.
"""

from __future__ import annotations

from dataclasses import dataclass


class WatcherError(Exception):
    """Base of every error watcher raises on purpose."""


class ConfigError(WatcherError):
    """The settings file or environment is invalid."""


def _clip(name: str, most: int = 60) -> str:
    """Return ``name`` cut to ``most`` characters (a 100,000-character name is not echoed whole)."""
    return name if len(name) <= most else name[:most] + f"…({len(name):,} characters)"


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a rule file, with where it is and what to do."""

    file: str
    line: int
    col: int
    message: str
    group: str | None = None
    rule: str | None = None
    rule_index: int | None = None

    def __str__(self) -> str:
        where = []
        if self.group is not None:
            where.append(f'group "{_clip(self.group)}"')
        if self.rule_index is not None:
            where.append(f"rule {self.rule_index + 1}")
        if self.rule:
            where.append(f'"{_clip(self.rule)}"')
        context = ", ".join(where)
        prefix = f"{self.file}:{self.line}:{self.col}: "
        return prefix + (f"{context}: " if context else "") + self.message


class RuleFileError(WatcherError):
    """One or more rule files are invalid; ``problems`` holds every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StoreError(WatcherError):
    """The store cannot be opened or used (corrupt file, locked, unreachable server)."""


class LeaseLostError(StoreError):
    """This replica's lease on a rule group ran out or moved: the evaluation's writes were refused."""


class SourceError(WatcherError):
    """A fetch from a data source failed. Alert state must not change because of it."""

    def __init__(self, message: str, *, source: str = "") -> None:
        self.source = source
        super().__init__(message)


class SourceUnavailableError(SourceError):
    """The source is unreachable or overloaded; retry later with backoff."""


class QueryError(SourceError):
    """The source rejected the query itself; retrying will not help, the rule must change."""


class DetectorError(WatcherError):
    """A detector cannot be built from its parameters."""


class NotifyError(WatcherError):
    """A delivery failed. ``retryable`` tells the outbox whether to try again; ``reason`` is a
    short metric-label-safe word (``server_error``, ``client_error``, ``rate_limited``, ``timeout``,
    ``connection``, ``template``, ``unknown``)."""

    def __init__(self, message: str, *, retryable: bool, reason: str, receiver: str = "") -> None:
        self.retryable = retryable
        self.reason = reason
        self.receiver = receiver
        super().__init__(message)
