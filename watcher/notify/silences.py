"""The muting stage: label matchers and the silences in force at a given time.

This module owns matcher semantics and the question "is this alert silenced now?". It does not own
creating or expiring silences (the CLI and the API write ``SilenceRow`` themselves), nor inhibition.

Matchers follow Alertmanager: ``=`` and ``!=`` compare strings, ``=~`` and ``!~`` are regexes
anchored at both ends, and a label the alert does not have counts as the empty string (so
``team=""`` matches alerts without a ``team``). A silence mutes an alert when every one of its
matchers matches; a silence with no matchers, or with an invalid regex, mutes nothing (a broken
silence must never swallow every page). Regexes run on RE2 (``watcher.regex``): linear time, the
syntax of Alertmanager; ``(a+)+$`` cannot stall a tick.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from ..core import utc
from ..regex import LinearPattern, compile_linear
from ..store.tables import SilenceRow

logger = logging.getLogger(__name__)

OPS = ("=", "!=", "=~", "!~")


def _regex(pattern: str) -> LinearPattern | None:
    """Compile a regex once with RE2 (linear time, as Alertmanager); None when the pattern is invalid."""
    try:
        return compile_linear(pattern)
    except ValueError as exc:
        logger.warning("silence matcher: %s", exc)
        return None


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``name op value``."""

    name: str
    value: str
    op: str = "="

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown matcher operator {self.op!r}; use one of {', '.join(OPS)}")

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Tell whether ``labels`` satisfy this matcher (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        rx = _regex(self.value)
        if rx is None:
            return False
        found = rx.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Matcher:
        """Build a matcher from its stored form ``{"name", "value", "op"}``."""
        return cls(name=str(d["name"]), value=str(d.get("value", "")), op=str(d.get("op", "=")))

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def matches_all(matchers: Iterable[Mapping[str, str]], labels: Mapping[str, str]) -> bool:
    """Tell whether every stored matcher matches ``labels``; an empty or invalid list matches nothing."""
    parsed: list[Matcher] = []
    for d in matchers:
        try:
            m = Matcher.from_dict(d)
        except (KeyError, ValueError) as exc:
            logger.warning("silence matcher %r ignored: %s", dict(d), exc)
            return False
        if m.op in ("=~", "!~") and _regex(m.value) is None:
            return False
        parsed.append(m)
    return bool(parsed) and all(m.matches(labels) for m in parsed)


def is_active(silence: SilenceRow, now: datetime) -> bool:
    """Tell whether ``silence`` is in force at ``now`` (start inclusive, end exclusive)."""
    return utc(silence.starts_at) <= utc(now) < utc(silence.ends_at)


def is_silenced(
    labels: Mapping[str, str], silences: Sequence[SilenceRow], now: datetime
) -> SilenceRow | None:
    """Return the first silence in force at ``now`` that matches ``labels``, or None."""
    for s in silences:
        if is_active(s, now) and matches_all(s.matchers or [], labels):
            return s
    return None


def active_silences(session: Session, now: datetime) -> list[SilenceRow]:
    """Return the silences in force at ``now``, oldest first."""
    stmt = (
        select(SilenceRow)
        .where(col(SilenceRow.starts_at) <= now, col(SilenceRow.ends_at) > now)
        .order_by(col(SilenceRow.starts_at))
    )
    return list(session.exec(stmt).all())


_MATCHER_TEXT = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


def parse_matcher(text: str) -> Matcher:
    """Parse ``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex`` (value may be quoted)."""
    m = _MATCHER_TEXT.match(text)
    if m is None:
        raise ValueError(f"bad matcher {text!r}: write name=value, name!=value, name=~regex or name!~regex")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if op in ("=~", "!~"):
        try:
            compile_linear(value)
        except ValueError as exc:
            raise ValueError(f"bad matcher {text!r}: {exc}") from None
    return Matcher(name=name, value=value, op=op)


_PROBE = "\u2063watcher-probe-value\u2063"


def matches_everything(matchers: Iterable[Mapping[str, str]]) -> bool:
    """Tell whether a silence with these matchers mutes (nearly) every alert.

    It does when it matches an alert that has none of the labels it names, or one that has them
    all with a value nobody uses: ``tenant=~".*"``, ``alertname!=""``, ``team!="x"``, ``team=""``.
    A silence that names a value (``tenant="acme"``, ``tenant=~"acme|globex"``) does not. Creating
    such a silence needs an explicit flag (``--match-all``, ``matchAll: true``).
    """
    stored = list(matchers)
    names = {str(d.get("name", "")) for d in stored}
    return matches_all(stored, {}) or matches_all(stored, dict.fromkeys(names, _PROBE))


def matcher_dicts(texts: Iterable[str]) -> list[dict[str, str]]:
    """Return the stored form of matcher texts (see ``parse_matcher``)."""
    out = []
    for t in texts:
        m = parse_matcher(t)
        out.append({"name": m.name, "value": m.value, "op": m.op})
    return out
