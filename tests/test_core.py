"""Labels: fingerprints stay what they were (persisted alerts depend on them); merges are cached."""

from __future__ import annotations

import hashlib
import math
import pickle
from datetime import UTC, datetime

import pytest

from watcher.core import (
    Alert,
    AlertState,
    Band,
    Labels,
    TraceRef,
    alert_from_dict,
    alert_to_dict,
    trace_from_dict,
    trace_to_dict,
)


def test_fingerprint_is_the_stable_sha256_prefix() -> None:
    expected = hashlib.sha256(b"a\x1e1\x1fb\x1e2").hexdigest()[:16]
    assert Labels(b="2", a=1).fingerprint == expected
    assert pickle.loads(pickle.dumps(Labels(a="1", b="2"))).fingerprint == expected


def test_merge_is_cached_and_exact() -> None:
    base = Labels(tenant="acme")
    merged = base.merge({"severity": "page"})
    assert merged == Labels(tenant="acme", severity="page")
    assert base.merge({"severity": "page"}) is merged  # the evaluator merges every series every tick
    # Values are compared as the strings they become: True and 1 are different label values.
    assert base.merge({"x": True})["x"] == "True" and base.merge({"x": 1})["x"] == "1"
    assert base.merge({"tenant": "beta"}) == Labels(tenant="beta")  # laid over
    for i in range(20):  # many different merges stay correct past the cache's size
        assert base.merge({"i": i})["i"] == str(i)


T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FULL = Alert(
    rule="SpendAnomaly",
    group="llm-cost",
    labels=Labels(tenant="acme"),
    state=AlertState.FIRING,
    active_at=T,
    fired_at=T,
    last_eval=T,
    keep_firing_since=T,
    value=12.5,
    expected=1.0,
    lower=0.5,
    upper=2.0,
    score=0.9,
    annotations={"summary": "acme spends"},
    traces=(TraceRef("a" * 32, "b" * 16, 0.4, T, "gpt-4o"), TraceRef("c" * 32)),
    surprise=7.25,
)


@pytest.mark.parametrize(
    "alert",
    [
        FULL,
        Alert(rule="R", group="g", labels=Labels(), state=AlertState.INACTIVE, resolved_at=T),
        Alert(rule="R", group="g", labels=Labels(x="1"), state=AlertState.PENDING, active_at=T),
    ],
)
def test_alert_codec_round_trips_every_field(alert: Alert) -> None:
    import json

    doc = json.loads(json.dumps(alert_to_dict(alert), allow_nan=False))  # JSON-ready: no NaN
    back = alert_from_dict(doc)
    assert back.fingerprint == alert.fingerprint
    for name in ("value", "expected", "lower", "upper"):
        x, y = getattr(alert, name), getattr(back, name)
        assert (math.isnan(x) and math.isnan(y)) or x == y, name
    if not math.isnan(alert.value):
        assert back == alert


def test_alert_codec_writes_rfc3339_utc_and_none_for_missing_numbers() -> None:
    doc = alert_to_dict(Alert(rule="R", group="g", labels=Labels(), state=AlertState.PENDING, active_at=T))
    assert doc["active_at"] == "2026-03-01T12:00:00Z"
    assert doc["value"] is None and doc["keep_firing_since"] is None


def test_trace_codec_round_trips() -> None:
    t = TraceRef("a" * 32, None, math.inf, T, None)
    assert trace_to_dict(t)["value"] is None  # JSON has no infinity
    assert trace_from_dict(trace_to_dict(FULL.traces[0])) == FULL.traces[0]


def test_band_of_an_alert_and_what_it_contains() -> None:
    assert FULL.band == Band(1.0, 0.5, 2.0)
    assert FULL.band.contains(1.5) and not FULL.band.contains(12.5)
    assert Band().contains(1e9) and not Band().known
