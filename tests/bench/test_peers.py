"""The peers' adapters: one causal output per point, the same on a prefix as on the whole series."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

from watcher.bench.peers import PEERS, Peer

ROOT = Path(__file__).resolve().parents[2]
STEP = 300.0


def _test_extra() -> set[str]:
    """Return the distribution names declared in the project's ``test`` extra."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = meta["project"]["optional-dependencies"]["test"]
    return {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in reqs}


def need(peer: Peer) -> None:
    """Skip when the peer's package is missing, unless CI requires it and ``test`` declares it."""
    why = peer.available()
    if why is None:
        return
    if os.environ.get("WATCHER_REQUIRE_INTEGRATION") == "1" and peer.package in _test_extra():
        pytest.fail(f"{peer.name}: {why}, but it is in the test extra and integration is required")
    pytest.skip(f"{peer.name}: {why} (in the bench extra only)")


def series(days: float = 3.5, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Return a short diurnal series at 5 minutes with one obvious spike on the last day."""
    rng = np.random.default_rng(seed)
    ts = 1_767_571_200.0 + STEP * np.arange(int(days * 288))
    values = 10.0 + 3.0 * np.sin(2 * np.pi * ts / 86_400.0) + rng.normal(0.0, 0.3, len(ts))
    values[-60:-40] += 15.0
    return ts, values


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_gives_one_causal_output_per_point(name: str) -> None:
    peer = PEERS[name]
    need(peer)
    ts, values = series()
    full = peer.run(ts, values, "up")
    assert len(full.flags) == len(full.ready) == len(ts)
    assert full.rank is None or len(full.rank) == len(ts)
    assert not full.flags[~full.ready].any(), "a flag without a verdict"
    assert full.ready.any() and not full.ready[0], "no warm-up, or never ready"
    # Causal: the verdicts on a prefix are those the whole run gave the same points.
    cut = len(ts) - 100
    head = peer.run(ts[:cut], values[:cut], "up")
    np.testing.assert_array_equal(head.flags, full.flags[:cut])
    np.testing.assert_array_equal(head.ready, full.ready[:cut])
    if full.rank is not None and head.rank is not None:
        np.testing.assert_allclose(head.rank, full.rank[:cut], rtol=1e-9, equal_nan=True)


@pytest.mark.parametrize("name", ["river-gauss", "adtk-persist", "prophet"])
def test_peer_flags_the_spike_on_the_watched_side(name: str) -> None:
    peer = PEERS[name]
    need(peer)
    ts, values = series()
    assert peer.run(ts, values, "up").flags[-60:-40].any()
    assert not peer.run(ts, values, "down").flags[-60:-40].any()


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_survives_a_flat_series_then_a_move(name: str) -> None:
    peer = PEERS[name]
    need(peer)
    ts = 1_767_571_200.0 + STEP * np.arange(3 * 288)
    values = np.full(len(ts), 4.0)
    values[-30:] = 9.0
    out = peer.run(ts, values, "up")
    assert len(out.flags) == len(ts)
