"""Reading a PromQL ``query_range`` answer straight into numpy arrays.

This module owns parsing the JSON body of ``/api/v1/query_range`` without a Python object per
point: each series' ``"values"`` array is cut out of the body, its brackets and quotes are dropped,
and numpy parses the remaining ``ts,value,ts,value,…`` text in one call (Prometheus writes values
as strings such as ``"1.5"``, ``"NaN"``, ``"+Inf"``, which numpy reads as the same doubles
``float()`` does). What remains of the body (status, label sets) is small and goes to ``json``.
It does not own the HTTP call nor laying series on a grid (``prometheus``).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass

import numpy as np

from ..core import FloatArray

# A values array holds pairs of a number and a quoted number, nothing nested deeper and no
# string that could hold a bracket. A quote inside a label value is escaped in JSON, so the
# unescaped text `"values":[` is always the key of a series' points.
_VALUES_RE = re.compile(rb'"values"\s*:\s*(\[\s*(?:\[[^\[\]]*\]\s*,?\s*)*\])')
_DROP = b'[]"'


class MalformedAnswer(ValueError):
    """The body is not a query_range matrix answer numpy can read."""


@dataclass(frozen=True, slots=True)
class RangeSeries:
    """One series of a range answer: its label set, timestamps (Unix seconds) and values."""

    metric: dict[str, str]
    timestamps: FloatArray
    values: FloatArray


def parse_range(body: bytes) -> list[RangeSeries]:
    """Return the series of a successful ``query_range`` body; raise ``MalformedAnswer`` otherwise."""
    arrays: list[bytes] = []

    def cut(m: re.Match[bytes]) -> bytes:
        arrays.append(m.group(1))
        return b'"values":%d' % (len(arrays) - 1)

    try:
        doc = json.loads(_VALUES_RE.sub(cut, body))
        result = doc["data"]["result"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedAnswer(f"not a query_range answer ({type(exc).__name__})") from None
    if not isinstance(result, list):
        raise MalformedAnswer("data.result is not a list")
    out = []
    for item in result:
        if not isinstance(item, dict):
            raise MalformedAnswer("a result item is not an object")
        at = item.get("values")
        metric = item.get("metric") or {}
        if at is None:
            continue  # a native histogram series, or no points
        if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at < len(arrays):
            raise MalformedAnswer("a result item's values are not an array of pairs")
        ts, vs = _pairs(arrays[at])
        out.append(RangeSeries({str(k): str(v) for k, v in metric.items()}, ts, vs))
    return out


def _pairs(raw: bytes) -> tuple[FloatArray, FloatArray]:
    """Return the timestamps and values of one ``[[ts,"v"],…]`` array."""
    n = raw.count(b"[") - 1
    if n <= 0:
        empty = np.empty(0, dtype=np.float64)
        return empty, empty.copy()
    text = raw.translate(None, _DROP).decode("ascii", "replace")
    flat = _numbers(text, 2 * n)
    pairs = flat.reshape(n, 2)
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def _numbers(text: str, count: int) -> FloatArray:
    """Parse ``count`` comma-separated numbers, exactly as many (anything else is malformed)."""
    if text.count(",") != count - 1:
        raise MalformedAnswer("a values array does not hold pairs of numbers")
    try:
        with warnings.catch_warnings():
            # numpy warns (and stops early) on text it cannot read: that is a malformed answer
            warnings.simplefilter("error", DeprecationWarning)
            flat: FloatArray = np.fromstring(text, dtype=np.float64, sep=",")
    except (ValueError, DeprecationWarning) as exc:
        raise MalformedAnswer(f"a values array holds something that is not a number ({exc})") from None
    if len(flat) != count:
        raise MalformedAnswer("a values array holds something that is not a number")
    return flat


__all__ = ["MalformedAnswer", "RangeSeries", "parse_range"]
