"""Detector checkpoints: every kind resumes exactly where it stopped; foreign blobs are refused."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from watcher.detectors import make_detector
from watcher.detectors.checkpoint import CheckpointError, code_version, get_state, set_state
from watcher.rules.schema import Rule

SPECS: list[dict[str, Any]] = [
    {"kind": "ewma"},
    {"kind": "rolling", "window": "1d"},
    {"kind": "seasonal", "seasons": ["6h"], "history": "1d"},
    {"kind": "seasonal"},
    {"kind": "auto"},
    {"kind": "rate", "halflife": "1h"},
    {"kind": "rate", "halflife": "1h", "sustained": True},
    {"kind": "threshold", "above": 3},
    {"kind": "drift", "reference": "6h", "recent": "30m", "direction": "up", "below": 1.0},
]


def _spec(d: dict[str, Any]) -> Any:
    return Rule.model_validate({"alert": "A", "expr": "x", "detector": d}).detector


def _data(n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    ts = 1_767_571_200.0 + 60.0 * np.arange(n)
    values = rng.lognormal(size=n) * (1 + 0.5 * np.sin(ts / 3600))
    values[2700:2710] *= 30  # an anomaly after the checkpoint: both copies must flag it alike
    values[100:110] = np.nan
    return ts, values, rng.integers(5, 50, n).astype(float)


@pytest.mark.parametrize("d", SPECS, ids=[json.dumps(s) for s in SPECS])
def test_restored_detector_continues_exactly(d: dict[str, Any]) -> None:
    ts, values, counts = _data()
    spec = _spec(d)
    a = make_detector(spec)
    a.update_many(ts[:2500], values[:2500], counts[:2500])
    blob = get_state(a)
    b = set_state(make_detector(spec), blob)
    assert b is not a
    va = a.update_many(ts[2500:], values[2500:], counts[2500:])
    vb = b.update_many(ts[2500:], values[2500:], counts[2500:])
    assert [repr(v) for v in va] == [repr(v) for v in vb]  # repr: NaN bands compare equal
    assert any(v.ready for v in va)
    if d["kind"] in ("ewma", "rolling", "threshold"):
        assert any(v.anomalous for v in va)
    assert get_state(b) == get_state(a)  # the state itself, not only what it says, is the same


def _rewrite(blob: bytes, change: Any) -> bytes:
    magic, fmt, n = struct.unpack_from("<3sBI", blob)
    head = json.loads(blob[8 : 8 + n])
    change(head)
    raw = json.dumps(head).encode()
    return struct.pack("<3sBI", magic, fmt, len(raw)) + raw + blob[8 + n :]


def test_foreign_blobs_are_refused() -> None:
    ts, values, counts = _data(200)
    ewma = make_detector(_spec({"kind": "ewma"}))
    ewma.update_many(ts, values, counts)
    blob = get_state(ewma)
    rolling = make_detector(_spec({"kind": "rolling"}))
    with pytest.raises(CheckpointError, match="not a RollingBaseline"):
        set_state(rolling, blob)
    with pytest.raises(CheckpointError, match="other detector code"):
        set_state(ewma, _rewrite(blob, lambda h: h.update(v="0" * 16)))

    def outside(h: dict[str, Any]) -> None:
        h["s"] = {"o": "subprocess:Popen", "a": {}}

    with pytest.raises(CheckpointError, match="outside the detectors"):
        set_state(ewma, _rewrite(blob, outside))
    for junk in (b"", b"WDS", b"XYZ\x01\x00\x00\x00\x00", blob[:20]):
        with pytest.raises(CheckpointError):
            set_state(ewma, junk)
    assert len(code_version()) == 16
