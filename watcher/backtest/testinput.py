"""Input of rule unit tests: promtool's series notation and watcher's ``input_calls``/``input_scores`` rows.

This module owns parsing ``metric{a="b"}`` selectors and series, expanding promtool's value
notation (``1+2x3 _ 5 _x2 stale 10-1x4``), matching a rule's ``expr`` to input series, and
turning row lists and row generators into ``calls``/``scores`` table rows. It does not own
running tests (``testing``) nor any evaluation.

Row generators (watcher's extension): ``{every: 1m, from: 0m, to: 2h, rows: {...}}`` yields one
row per ``every`` in ``[from, to)``; a list value in ``rows`` is cycled row by row (so
``value: [0.9, 0.8]`` alternates) and ``{i}`` in a string value is replaced by the row's index
(so ``trace_id: "slow-{i}"`` gives distinct IDs). Rows without ``trace_id`` get ``t<n>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..core import parse_duration

_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(?:\{(.*)\})?\s*$", re.S)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_COMPARISON = re.compile(r"^(.*?)\s*(==|!=|>=|<=|>|<)\s*(-?[0-9.eE+]+)\s*$", re.S)
_EXPAND = re.compile(r"^(-?[0-9.eE]+?|_)(?:([+-])([0-9.eE]+))?x([0-9]+)$")
_NUMBER = re.compile(r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$|^[+-]?(?:Inf|NaN)$")

MISSING: float | None = None
STALE = math.nan


class TestInputError(ValueError):
    """A malformed series, value string or row in a unit-test file."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher of a selector."""

    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Tell whether ``labels`` satisfy this matcher (a missing label is the empty string)."""
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric name plus label matchers, optionally filtered by a comparison with a number."""

    name: str | None
    matchers: tuple[Matcher, ...]
    op: str | None = None
    threshold: float = math.nan

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        """Tell whether the series ``name{labels}`` is selected."""
        return (self.name is None or self.name == name) and all(m.matches(labels) for m in self.matchers)

    def keep(self, value: float) -> bool:
        """Tell whether a sample survives the comparison (always, without one)."""
        if self.op is None:
            return True
        t = self.threshold
        return {
            "==": value == t,
            "!=": value != t,
            ">": value > t,
            "<": value < t,
            ">=": value >= t,
            "<=": value <= t,
        }[self.op]


def parse_selector(text: str) -> Selector:
    """Parse ``name{l="v", l2=~"re"}``; raise ``TestInputError`` for anything else."""
    m = _SELECTOR.match(text)
    if m is None or (m.group(1) is None and m.group(2) is None):
        raise TestInputError(f'not a series selector: {text!r} (write e.g. metric{{label="value"}})')
    body = m.group(2) or ""
    matchers = []
    pos = 0
    while pos < len(body.strip()):
        mm = _MATCHER.match(body, pos)
        if mm is None:
            raise TestInputError(f"bad label matcher in {text!r} at {body[pos:]!r}")
        value = mm.group(3).encode().decode("unicode_escape")
        matchers.append(Matcher(mm.group(1), mm.group(2), value))
        pos = mm.end()
    return Selector(m.group(1), tuple(matchers))


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """Parse an input series ``name{a="b"}`` into its name and labels (equality matchers only)."""
    sel = parse_selector(text)
    if sel.name is None or any(m.op != "=" for m in sel.matchers):
        raise TestInputError(f"an input series needs a metric name and only = matchers: {text!r}")
    return sel.name, {m.name: m.value for m in sel.matchers}


def parse_expr(expr: str) -> Selector | None:
    """Return the selector when ``expr`` is one selector, optionally compared to a number, else None."""
    m = _COMPARISON.match(expr)
    text, op, threshold = (m.group(1), m.group(2), float(m.group(3))) if m else (expr, None, math.nan)
    try:
        sel = parse_selector(text)
    except TestInputError:
        return None
    if sel.name is None:
        return None
    return Selector(sel.name, sel.matchers, op, threshold)


def expand_values(text: str) -> list[float | None]:
    """Expand promtool's value notation; ``None`` is a missing sample, NaN a staleness marker.

    ``a+bxn`` gives the n+1 values a, a+b, …, a+n·b (``a-bxn`` counts down, ``axn`` repeats a);
    ``_`` is one missing sample and ``_xn`` n of them; ``stale`` ends the series until the next value.
    """
    out: list[float | None] = []
    for token in str(text).split():
        if token == "_":
            out.append(MISSING)
            continue
        if token == "stale":
            out.append(STALE)
            continue
        m = _EXPAND.match(token)
        if m is not None:
            start, sign, delta, times = m.groups()
            n = int(times)
            if start == "_":
                if sign:
                    raise TestInputError(f"bad value {token!r}: '_' cannot be incremented")
                out.extend([MISSING] * n)
                continue
            a = float(start)
            b = (float(delta) if sign == "+" else -float(delta)) if sign else 0.0
            out.extend(a + k * b for k in range(n + 1))
            continue
        if not _NUMBER.match(token):
            raise TestInputError(
                f"bad value {token!r} in {text!r} (use 1, 1+2x3, 5-1x4, 3x10, _, _x3, stale)"
            )
        out.append(float(token))
    return out


def _offset(value: Any, where: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise TestInputError(f"{where}: {exc}") from None


def expand_rows(items: Sequence[Any], where: str) -> Iterator[tuple[timedelta, dict[str, Any]]]:
    """Yield ``(offset, columns)`` for plain rows (``ts: 5m``) and generators (``every``/``from``/``to``)."""
    for n, item in enumerate(items or []):
        at = f"{where}[{n}]"
        if not isinstance(item, Mapping):
            raise TestInputError(f"{at}: a row is a mapping, got {item!r}")
        if "every" in item:
            unknown = set(item) - {"every", "from", "to", "rows"}
            if unknown or "to" not in item or not isinstance(item.get("rows"), Mapping):
                raise TestInputError(
                    f"{at}: a generator is {{every, from, to, rows: {{...}}}}, got {dict(item)}"
                )
            every, first, last = (_offset(item.get(k, "0s"), f"{at}.{k}") for k in ("every", "from", "to"))
            if every <= timedelta(0):
                raise TestInputError(f"{at}.every must be positive")
            k, t = 0, first
            while t < last:
                yield t, _row(item["rows"], k)
                k, t = k + 1, t + every
        else:
            if "ts" not in item:
                raise TestInputError(f"{at}: a row needs `ts` (an offset such as 5m) or `every`")
            yield _offset(item["ts"], f"{at}.ts"), {k: v for k, v in item.items() if k != "ts"}


def _row(template: Mapping[str, Any], i: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in template.items():
        v = value[i % len(value)] if isinstance(value, list) and value else value
        row[key] = v.replace("{i}", str(i)) if isinstance(v, str) else v
    return row
