"""The hardened corpus section has the properties its docstrings claim, and scores like any section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from watcher.bench import corpus, hardened, sections
from watcher.bench.detection import PROBATION, best_cut, load_corpus
from watcher.bench.ranking import Ranked, pages_at


@pytest.fixture(scope="module")
def section() -> dict[str, corpus.Series]:
    return {s.name: s for s in hardened.build()}


def test_every_shape_has_a_quiet_file_and_a_labelled_one_after_probation(
    section: dict[str, corpus.Series],
) -> None:
    for _, name, _ in hardened.MAKERS:
        assert not section[f"{name}_normal"].windows
        incident = section[f"{name}_incident"]
        assert len(incident.windows) == 1
        start, end = incident.ts.min(), incident.ts.max()
        assert incident.windows[0][0] > start + PROBATION * (end - start)


def test_shapes(section: dict[str, corpus.Series]) -> None:
    disk = section["disk_write_bytes_normal"].values
    assert 0.85 < np.mean(disk == 0.0) < 0.95 and np.all(disk == np.round(disk))
    counts = section["integer_counts_normal"].values
    assert np.all(counts == np.round(counts)) and np.mean(counts == 0) > 0.3
    steps = section["rounded_sensor_normal"].values * 2.0
    assert np.all(steps == np.round(steps))
    t = section["student_t_normal"].values
    kurtosis = np.mean((t - t.mean()) ** 4) / t.var() ** 2
    assert kurtosis > 4.0  # a Gaussian's is 3
    flat = section["flat_gauge_normal"].values
    assert np.mean(flat == 4.0) > 0.99
    refusals = section["sparse_refusals_normal"]
    assert refusals.counts is not None and np.mean(refusals.values == 0.0) > 0.7


def test_timestamps_are_messy_where_claimed(section: dict[str, corpus.Series]) -> None:
    messy = np.diff(section["messy_timestamps_normal"].ts)
    assert (messy == 0).sum() > 50  # repeated rows
    assert (messy < 0).sum() == 1 and messy.min() == -3300.0  # 02:55 back to 02:00: an hour again
    gaps = np.diff(section["irregular_sampling_normal"].ts)
    assert gaps.min() > 0 and gaps.max() > 3000 and np.std(gaps) > 100


def test_the_standard_section_is_unchanged_and_the_sections_write_and_read_back(tmp_path: Path) -> None:
    assert len(sections.build_section("standard")) == len(corpus.build())
    both = sections.build_section("both")
    assert len(both) == len(corpus.build()) + len(hardened.build())
    root = sections.write(tmp_path / "c", "hardened")
    files = {f.path: f for f in load_corpus(root)}
    messy = files["data/hardened/messy_timestamps_normal.csv"]
    assert len(messy.ts) == len(hardened.messy_timestamps("m", 109, False).ts)  # every row, in order
    assert (np.diff(messy.ts) <= 0).any() and messy.newer_mask().sum() < len(messy.ts)
    assert files["data/hardened/disk_write_bytes_normal.csv"].values.max() > 1e6  # bytes written exactly


def test_pages_at_and_the_best_single_cut() -> None:
    ts = 300.0 * np.arange(11)
    flags = np.array([0, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert pages_at(ts, flags, 600.0) == [900.0, 3000.0]
    assert pages_at(ts, flags, 0.0) == [300.0, 1800.0, 2400.0]
    day = 86_400.0
    t = np.arange(0.0, 10 * day, 300.0)
    rank = np.zeros(len(t))
    hit = (t >= 8 * day) & (t < 8 * day + 3600.0)
    rank[hit] = 10.0
    files = [Ranked("a.csv", t, rank, [(8 * day, 8 * day + 7200.0)], 0.0, t[-1])]
    cut = best_cut(files, 600.0)
    assert cut is not None and cut.score > 95.0 and cut.false_pages == 0 and cut.threshold < 10.0
