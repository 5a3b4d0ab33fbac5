"""``promjson.parse_range`` reads a query_range body into the same numbers as ``json`` does.

Bodies are built the way Prometheus writes them (shortest round-trip floats as strings, NaN and
±Inf spelled out, label values with quotes and brackets); each is parsed both ways and compared
bit for bit. Malformed bodies are refused, never read short.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from watcher.sources.promjson import MalformedAnswer, parse_range


def prom_text(x: float) -> str:
    """Return ``x`` as Prometheus writes a sample value."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def body(series: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> bytes:
    result = [
        {"metric": metric, "values": [[ts, prom_text(v)] for ts, v in points]} for metric, points in series
    ]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()


def by_json(raw: bytes) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """Parse the old way: json, then one float() per timestamp and per value."""
    out = []
    for item in json.loads(raw)["data"]["result"]:
        pairs = item.get("values") or []
        ts = np.array([float(p[0]) for p in pairs], dtype=np.float64)
        vs = np.array([float(p[1]) for p in pairs], dtype=np.float64)
        out.append((item["metric"], ts, vs))
    return out


def test_random_doubles_and_hostile_labels_read_as_json_reads_them() -> None:
    rng = np.random.default_rng(19)
    raw_bits = rng.integers(0, 2**63, size=20_000, dtype=np.int64)
    doubles = [struct.unpack("<d", struct.pack("<q", int(b)))[0] for b in raw_bits]
    doubles += [0.0, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, math.nan, math.inf, -math.inf, 0.1]
    stamps = 1_767_571_200 + 60.0 * np.arange(len(doubles))
    stamps[::7] += 0.125  # sub-second timestamps, as Prometheus writes them
    series = [
        ({"tenant": 'a"values":[[1,"2"]]', "le": "\\"}, list(zip(stamps.tolist(), doubles, strict=True))),
        ({}, []),
        ({"values": "x", "__name__": "m"}, [(1.0, 2.5)]),
    ]
    raw = body(series)
    got = parse_range(raw)
    want = by_json(raw)
    assert [s.metric for s in got] == [m for m, _, _ in want]
    for g, (_, ts, vs) in zip(got, want, strict=True):
        assert g.timestamps.tobytes() == ts.tobytes()
        assert g.values.tobytes() == vs.tobytes()  # bit for bit, NaN and -0.0 included


def test_whitespace_and_an_empty_result() -> None:
    raw = (
        b'{"status":"success","data":{"resultType":"matrix","result":'
        b'[ {"metric":{"a":"b"},\n "values" : [ [1, "2"] , [3,"4"] ] } ]}}'
    )
    (s,) = parse_range(raw)
    assert s.metric == {"a": "b"} and s.timestamps.tolist() == [1.0, 3.0] and s.values.tolist() == [2.0, 4.0]
    assert parse_range(b'{"status":"success","data":{"resultType":"matrix","result":[]}}') == []


@pytest.mark.parametrize(
    "raw",
    [
        b"ok",
        b'{"status":"success","data":{"result":{}}}',
        b'{"status":"success","data":{"result":[{"values":[[1,"abc"]]}]}}',
        b'{"status":"success","data":{"result":[{"values":[[1,"2",3]]}]}}',
        b'{"status":"success","data":{"result":[{"values":[[1,""]]}]}}',
        b'{"status":"success","data":{"result":[{"values":[[1,"1e5x"]]}]}}',
        b'{"status":"success","data":{"result":[{"values":7}]}}',
    ],
)
def test_malformed_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedAnswer):
        parse_range(raw)
