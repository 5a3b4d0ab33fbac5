"""Recent verdicts of one series, kept compactly for charts and the status page.

This module owns ``VerdictRing``: a bounded ring of the verdicts a detector produced for one
series, oldest overwritten first. It stores columns of machine floats and one flag byte per point
(about 50 bytes a point, against about 310 for a ``Verdict`` object), so keeping a day of
one-minute points for a thousand series costs tens of megabytes. It does not own which series are
kept nor for how long (``group``).

One thread appends (the group's evaluation), others may read: a reader racing a write can see the
newest point half-written, which a chart can afford; it never sees an index out of range.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable

from ..core import Verdict

_ANOMALOUS, _READY = 1, 2


class VerdictRing:
    """The last ``capacity`` verdicts of one series, in time order, each timestamp once."""

    __slots__ = ("_cap", "_cols", "_flags", "_head", "_n")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._cap = capacity
        self._cols = tuple(array("d") for _ in range(6))  # ts, value, expected, lower, upper, score
        self._flags = bytearray()
        self._head = 0  # where the next point goes once the ring is full
        self._n = 0

    @property
    def capacity(self) -> int:
        """Return how many points the ring keeps at most."""
        return self._cap

    def __len__(self) -> int:
        return self._n

    @property
    def last_ts(self) -> float:
        """Return the timestamp of the newest point (-inf when empty)."""
        if not self._n:
            return -math.inf
        return self._cols[0][(self._head - 1) % self._n if self._n == self._cap else self._n - 1]

    def extend(self, verdicts: Iterable[Verdict]) -> None:
        """Append the verdicts newer than the newest kept one, dropping the oldest beyond capacity."""
        last = self.last_ts
        for v in verdicts:
            if v.ts > last:
                self._append(v)
                last = v.ts

    def append(self, v: Verdict) -> None:
        """Append one verdict if it is newer than the newest kept one (``extend`` of one, cheaper)."""
        if v.ts > self.last_ts:
            self._append(v)

    def _append(self, v: Verdict) -> None:
        ts, value, expected, lower, upper, score = self._cols
        flag = (_ANOMALOUS if v.anomalous else 0) | (_READY if v.ready else 0)
        if self._n < self._cap:
            ts.append(v.ts)
            value.append(v.value)
            expected.append(v.expected)
            lower.append(v.lower)
            upper.append(v.upper)
            score.append(v.score)
            self._flags.append(flag)
            self._n += 1
            return
        i = self._head
        ts[i] = v.ts
        value[i] = v.value
        expected[i] = v.expected
        lower[i] = v.lower
        upper[i] = v.upper
        score[i] = v.score
        self._flags[i] = flag
        self._head = (i + 1) % self._cap

    def verdicts(self) -> list[Verdict]:
        """Return the kept verdicts, oldest first (``reason`` is coarse: "no data" or "warming up")."""
        n, head = self._n, self._head
        order = range(n) if n < self._cap else [(head + k) % n for k in range(n)]
        ts, value, expected, lower, upper, score = self._cols
        out = []
        for i in order:
            f = self._flags[i]
            ready = bool(f & _READY)
            reason = "" if ready else ("no data" if math.isnan(value[i]) else "warming up")
            out.append(
                Verdict(
                    ts=ts[i],
                    value=value[i],
                    expected=expected[i],
                    lower=lower[i],
                    upper=upper[i],
                    score=score[i],
                    anomalous=bool(f & _ANOMALOUS),
                    ready=ready,
                    reason=reason,
                )
            )
        return out
