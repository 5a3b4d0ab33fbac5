"""``watcher bench flagrate``: flag rates per detector on small datasets, and the shipped loaders."""

from __future__ import annotations

import numpy as np

from watcher.bench import flagrate
from watcher.bench.flagrate import Dataset


def tiny() -> list[Dataset]:
    """Return two small series: plain noise, and a proportion with trial counts."""
    rng = np.random.default_rng(3)
    calls = rng.integers(50, 150, 400).astype(float)
    return [
        Dataset("noise", "test", "month", 100.0 + rng.normal(0.0, 1.0, 400)),
        Dataset("refusals", "test", "month", rng.binomial(calls.astype(int), 0.02) / calls, calls),
    ]


def test_flagrate_counts_ready_and_flagged_points_per_detector() -> None:
    table = flagrate.run(tiny(), ["rolling", "ewma", "rate"], "1h")
    noise, refusals = table["test:noise"], table["test:refusals"]
    assert noise["rate"] is None  # no trial counts: not applicable
    for kind in ("rolling", "ewma"):
        cell = noise[kind]
        assert cell is not None and cell.points == 400 and 0 < cell.ready < 400
        assert 0 <= cell.flagged <= cell.ready
    assert refusals["rate"] is not None and refusals["rate"].points == 400
    text = flagrate.markdown(table, ["rolling", "ewma", "rate"], "1h")
    assert "| test:noise | 400 |" in text and "**total real" in text


def test_native_spacing_uses_the_datasets_period() -> None:
    ds = tiny()[0]
    ts = flagrate.timestamps(ds, "native")
    assert np.allclose(np.diff(ts), flagrate.NATIVE["month"])
    assert np.allclose(np.diff(flagrate.timestamps(ds, "5m")), 300.0)


def test_statsmodels_datasets_ship_with_the_package() -> None:
    names = {d.name: d for d in flagrate.statsmodels_datasets()}
    assert {"co2", "sunspots", "nile", "elnino", "macrodata.realgdp"} <= set(names)
    assert len(names["nile"].values) == 100 and len(names["elnino"].values) == 61 * 12


def test_generated_no_label_series_keep_their_own_timestamps() -> None:
    quiet = flagrate.generated_quiet()
    messy = next(d for d in quiet if d.name == "hardened/messy_timestamps_normal")
    assert messy.ts is not None and (np.diff(messy.ts) <= 0).any()
    assert any(d.counts is not None for d in quiet)  # rate applies to the refusal files
