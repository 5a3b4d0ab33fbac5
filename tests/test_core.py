"""Labels: fingerprints stay what they were (persisted alerts depend on them); merges are cached."""

from __future__ import annotations

import hashlib
import pickle

from watcher.core import Labels


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
