"""Linear-time regular expressions for user-supplied patterns (silences, matchers, routes).

This module owns compiling a pattern that came from a user (a silence's ``=~`` matcher, a route's
``match_re``, a maintenance window or inhibit rule) with RE2, whose matching time is linear in the
input: a pattern such as ``(a+)+$`` cannot stall a notification tick the way Python's backtracking
``re`` can. RE2 is also the engine of Prometheus and Alertmanager, so a matcher means the same here
as there. Patterns RE2 does not support (backreferences, lookaround) are errors that say so.

Matching is anchored at both ends (``fullmatch``) and ``.`` matches newlines, as in Alertmanager.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import re2

MAX_PATTERN = 1024
"""Longest pattern accepted."""


class LinearPattern(Protocol):
    """The part of a compiled pattern watcher uses."""

    def fullmatch(self, text: str) -> Any: ...


def _options() -> Any:
    opts = re2.Options()
    opts.log_errors = False  # RE2 would print every rejected pattern on stderr
    opts.dot_nl = True
    opts.max_mem = 8 << 20  # a pattern whose automaton needs more is refused, not slow
    return opts


_OPTIONS = _options()


@functools.lru_cache(maxsize=1024)
def compile_linear(pattern: str) -> LinearPattern:
    """Compile ``pattern`` with RE2; raise ValueError with the reason when it is not accepted."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"regular expression longer than {MAX_PATTERN} characters")
    if "\x00" in pattern:
        raise ValueError("regular expression contains a NUL character")
    try:
        compiled: LinearPattern = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        hint = ""
        if "\\1" in pattern or "(?=" in pattern or "(?!" in pattern or "(?<" in pattern:
            hint = " (backreferences and lookarounds are not supported: watcher uses RE2, as Prometheus does)"
        raise ValueError(f"invalid regular expression {pattern!r}: {reason}{hint}") from None
    return compiled


def full_match(pattern: str, text: str) -> bool:
    """Tell whether ``pattern`` matches all of ``text``; raise ValueError for a bad pattern."""
    return compile_linear(pattern).fullmatch(text) is not None
