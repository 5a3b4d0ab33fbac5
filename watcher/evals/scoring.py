"""``watcher score``: run one detector over a CSV series and write the verdict of every point.

This module owns the CSV input/output of the command and building a detector spec from
``--detector``/``--direction``/``--set``. It does not own any detector (``detectors``) nor the rest
of the command line (``cli.evals``).

Input: a header row naming at least ``timestamp`` and ``value`` (an optional ``count`` column gives
the trials behind a proportion, for ``rate``/``auto``); timestamps are ISO-8601 with ``T`` or a space,
with or without a zone (none = UTC), or Unix seconds; irregular spacing and gaps are fine; an empty
value is a missing point. Rows need not be in order, and timestamps may repeat (a DST fall-back
hour exported in local time, a merged export): rows are scored in timestamp order, a stable sort,
so rows with the same timestamp are scored one after the other in input order, each as a point of
its own. Every input row gets one output row, in input order, and stderr says how many rows were
out of order or repeated a timestamp. Output:
``timestamp,value,expected,lower,upper,score,anomaly,surprise`` (timestamps as given, empty for NaN,
anomaly 0/1 at the spec's sensitivity, surprise = -log10 of the tail probability: unbounded and
comparable across series and kinds, the column to rank by), to OUTPUT or stdout. Bad input exits 2
with ``INPUT.csv:LINE: what is wrong``, never a traceback.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

OUTPUT_COLUMNS = ("timestamp", "value", "expected", "lower", "upper", "score", "anomaly", "surprise")
REPEAT_NUDGE_S = 1e-3
"""Rows that repeat a timestamp are scored this far apart (seconds), in input order."""
KINDS = ("threshold", "rolling", "ewma", "seasonal", "rate", "auto", "drift")


class BadInput(Exception):
    """A problem with the command's input, already phrased for the user (``file:line: what``)."""


@dataclass(frozen=True)
class Row:
    """One parsed input row: its line, original timestamp text, epoch seconds, value and count."""

    line: int
    text: str
    ts: float
    value: float
    count: float | None


def parse_timestamp(text: str) -> float:
    """Return Unix seconds for an ISO-8601 timestamp (no zone = UTC) or a number of Unix seconds."""
    s = text.strip()
    try:
        x = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(x):
            raise ValueError(f"timestamp {text!r} is not a finite number")
        return x
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither ISO-8601 (2026-01-31T14:05:00Z) nor Unix seconds"
        ) from None
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()


def _number(text: str, column: str) -> float:
    """Return ``text`` as a float (empty = NaN), or raise ValueError naming the column."""
    s = text.strip()
    if not s:
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None


def read_rows(stream: TextIO, name: str) -> Iterator[Row]:
    """Yield the parsed rows of a CSV series, raising ``BadInput`` at the first bad line."""
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise BadInput(f"{name}:1: empty file: expected a header row with timestamp and value")
    cols = [h.strip().lower() for h in header]
    missing = [c for c in ("timestamp", "value") if c not in cols]
    if missing:
        raise BadInput(f"{name}:1: header has no {' or '.join(missing)} column (found: {', '.join(cols)})")
    i_ts, i_val = cols.index("timestamp"), cols.index("value")
    i_cnt = cols.index("count") if "count" in cols else None
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(cols):
            raise BadInput(f"{name}:{line}: expected {len(cols)} fields like the header, got {len(fields)}")
        try:
            ts = parse_timestamp(fields[i_ts])
            value = _number(fields[i_val], "value")
            count = None if i_cnt is None else _number(fields[i_cnt], "count")
        except ValueError as exc:
            raise BadInput(f"{name}:{line}: {exc}") from None
        if count is not None and count < 0:
            raise BadInput(f"{name}:{line}: count {fields[i_cnt or 0]!r} is negative")
        if count is not None and math.isnan(count):
            count = None
        yield Row(line, fields[i_ts].strip(), ts, value, count)


def build_spec(kind: str, direction: str | None, settings: Sequence[str]) -> Any:
    """Return the validated detector spec for ``--detector``, ``--direction`` and ``--set`` pairs."""
    import yaml
    from pydantic import TypeAdapter, ValidationError

    from ..rules.schema import DetectorSpec

    raw: dict[str, Any] = {"kind": kind}
    if direction is not None:
        raw["direction"] = direction
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set {item!r}: expected key=value, e.g. --set window=1d")
        try:
            raw[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raw[key.strip()] = text
    try:
        return TypeAdapter(DetectorSpec).validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or kind}: {e['msg']}" for e in exc.errors()
        )
        raise BadInput(f"detector {kind}: {problems}") from None


def _fmt(x: float) -> str:
    """Format a float for the output CSV: empty for NaN, else up to 10 significant digits."""
    return "" if math.isnan(x) else format(x, ".10g")


@dataclass(frozen=True)
class Ordering:
    """How far the input was from one point per timestamp, in order."""

    out_of_order: int
    """Rows whose timestamp is before the previous row's."""
    repeated: int
    """Rows whose timestamp equals an earlier row's."""

    def describe(self, name: str) -> str:
        """Return the stderr note for ``name``, or "" when the input was clean."""
        parts = []
        if self.out_of_order:
            parts.append(f"{self.out_of_order} row(s) out of timestamp order")
        if self.repeated:
            parts.append(f"{self.repeated} row(s) repeating an earlier timestamp")
        if not parts:
            return ""
        return (
            f"watcher score: {name}: {' and '.join(parts)}; scored in timestamp order "
            "(repeats one after the other, in input order), written in input order"
        )


def schedule(rows: Sequence[Row]) -> tuple[list[int], list[float], Ordering]:
    """Return the scoring order (indexes into ``rows``), the time each is scored at, and the counts.

    A stable sort by timestamp; a row repeating the previous scored timestamp is scored
    ``REPEAT_NUDGE_S`` after it, so every row is a point of its own (detectors ignore a point that is
    not newer than the last one).
    """
    order = sorted(range(len(rows)), key=lambda i: rows[i].ts)
    out_of_order = sum(1 for a, b in itertools.pairwise(rows) if b.ts < a.ts)
    times: list[float] = []
    repeated = 0
    last = -math.inf
    for i in order:
        t = rows[i].ts
        if t <= last:
            repeated += rows[i].ts == rows[order[len(times) - 1]].ts
            t = last + REPEAT_NUDGE_S
        times.append(t)
        last = t
    return order, times, Ordering(out_of_order, repeated)


def score_rows(rows: Sequence[Row], spec: Any) -> tuple[list[Any], Ordering]:
    """Return one verdict per row (in input order) from a fresh detector, and the ordering counts."""
    from ..detectors import make_detector

    det = make_detector(spec)
    order, times, ordering = schedule(rows)
    verdicts: list[Any] = [None] * len(rows)
    for i, t in zip(order, times, strict=True):
        verdicts[i] = det.update(t, rows[i].value, rows[i].count)
    return verdicts, ordering


def score_stream(stream: TextIO, name: str, spec: Any, out: TextIO, err: TextIO | None = None) -> int:
    """Score every row of ``stream`` with a fresh detector for ``spec``; return how many were flagged."""
    rows = list(read_rows(stream, name))  # validate everything before writing anything
    verdicts, ordering = score_rows(rows, spec)
    note = ordering.describe(name)
    if note and err is not None:
        print(note, file=err)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    flagged = 0
    warming: list[str] = []
    for row, v in zip(rows, verdicts, strict=True):
        assert v is not None  # every row is scored at a time newer than the previous one
        flagged += v.anomalous
        if not v.ready and v.reason.startswith("warming up"):
            warming.append(v.reason)
        writer.writerow(
            (
                row.text,
                _fmt(row.value),
                _fmt(v.expected),
                _fmt(v.lower),
                _fmt(v.upper),
                f"{v.score:.6f}",
                int(v.anomalous),
                f"{v.surprise:.4f}",
            )
        )
    if warming and err is not None:
        # Warm-up rows have empty expected/lower/upper and anomaly 0: say so, or a series too short
        # for the detector reads as "nothing anomalous, score 0".
        every = (
            " (every row: the series is shorter than the detector's warm-up)"
            if len(warming) == len(rows)
            else ""
        )
        print(
            f"{name}: {len(warming)} of {len(rows)} rows are the detector's warm-up{every}: no band, "
            f"never anomalous; last: {warming[-1]}",
            file=err,
        )
    return flagged
