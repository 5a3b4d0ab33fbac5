"""``watcher bench flagrate``: how often each detector flags real series that hold no labelled incident.

This module owns loading the real public series that ship inside pip packages (``statsmodels``
datasets always; ``pmdarima``'s when it is installed — nothing is downloaded, and datasets that
pmdarima would fetch from the web are not used), turning each into a timestamped series, running
every watcher detector kind at its default sensitivity through the public seam (``make_detector``
with a spec from ``watcher.rules.schema``), and reporting flags per 10,000 scored points per
detector and dataset. The generated series with no labels (``corpus`` and ``hardened``) are
reported beside them. It does not own any detector.

A flag on these series is not necessarily wrong (sunspot maxima, the 2008 recession in macrodata),
but a detector whose default sensitivity promises a 4-sigma tail (~0.3 flags per 10,000 points on
one side, ~0.6 on both) and flags hundreds is not calibrated for them.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import FloatArray

# Native periods in seconds (a year of 365.25 days; a month and a quarter as fractions of it).
YEAR = 365.25 * 86_400.0
NATIVE = {"year": YEAR, "quarter": YEAR / 4, "month": YEAR / 12, "week": 7 * 86_400.0, "30min": 1800.0}
START = 1_767_571_200.0  # 2026-01-05 00:00 UTC, a Monday (the corpus' start)
KINDS = ("rolling", "ewma", "seasonal", "auto", "rate", "drift")


@dataclass
class Dataset:
    """One real series: a name, its source package, native period, values and optional trial counts."""

    name: str
    source: str
    period: str
    values: FloatArray
    counts: FloatArray | None = None
    ts: FloatArray | None = None
    """Its own timestamps (generated series); None: a regular grid is made (``timestamps``)."""


def _sm(name: str) -> Any:
    """Return the pandas frame of a statsmodels dataset."""
    import statsmodels.datasets as smd

    return getattr(smd, name).load_pandas().data


def statsmodels_datasets() -> list[Dataset]:
    """Return the time series that ship with statsmodels (co2, sunspots, elnino, nile, macrodata, …)."""
    out = [
        Dataset("co2", "statsmodels", "week", _sm("co2")["co2"].to_numpy(float)),
        Dataset("sunspots", "statsmodels", "year", _sm("sunspots")["SUNACTIVITY"].to_numpy(float)),
        Dataset("nile", "statsmodels", "year", _sm("nile")["volume"].to_numpy(float)),
    ]
    elnino = _sm("elnino").drop(columns=["YEAR"]).to_numpy(float)
    out.append(Dataset("elnino", "statsmodels", "month", elnino.reshape(-1)))
    macro = _sm("macrodata")
    for col in macro.columns:
        if col not in ("year", "quarter"):
            out.append(Dataset(f"macrodata.{col}", "statsmodels", "quarter", macro[col].to_numpy(float)))
    danish = _sm("danish_data")
    for col in danish.columns:
        out.append(Dataset(f"danish_data.{col}", "statsmodels", "quarter", danish[col].to_numpy(float)))
    return out


# pmdarima datasets stored inside the package (load_gasoline and load_msft fetch from the web).
PMDARIMA = {
    "taylor": "30min",
    "wineind": "month",
    "woolyrnq": "quarter",
    "airpassengers": "month",
    "ausbeer": "quarter",
    "austres": "quarter",
    "heartrate": "30min",  # 150 heart-rate readings at half-second intervals; spacing is nominal
    "lynx": "year",
    "sunspots": "month",
}


def pmdarima_datasets() -> list[Dataset]:
    """Return pmdarima's shipped datasets, or none when pmdarima is not installed."""
    if importlib.util.find_spec("pmdarima") is None:
        why = "pmdarima is not installed (pip install -e '.[bench]')"
        print(f"skipping pmdarima datasets: {why}", file=sys.stderr)
        return []
    import pmdarima.datasets as pmd

    out = []
    for name, period in PMDARIMA.items():
        values = np.asarray(getattr(pmd, f"load_{name}")(as_series=False), dtype=np.float64)
        out.append(Dataset(f"{name}", "pmdarima", period, values))
    return out


def generated_quiet() -> list[Dataset]:
    """Return the generated corpus files with no labelled window (standard and hardened sections)."""
    from . import sections

    out = []
    for s in sections.build_section("both"):
        if s.windows:
            continue
        name = s.path.removeprefix("data/").removesuffix(".csv")
        out.append(Dataset(name, "generated", "5m", s.values, s.counts, s.ts))
    return out


def timestamps(ds: Dataset, spacing: str) -> FloatArray:
    """Return the dataset's timestamps: its own (generated), or a regular grid at ``spacing``."""
    if ds.ts is not None:
        return ds.ts
    if spacing == "native":
        step = NATIVE[ds.period]
    else:
        from ..core import parse_duration

        step = parse_duration(spacing).total_seconds()
    return START + step * np.arange(len(ds.values), dtype=np.float64)


@dataclass
class Cell:
    """One detector on one dataset: points given, points with a ready verdict, flagged points."""

    points: int
    ready: int
    flagged: int
    max_surprise: float

    @property
    def per_10k(self) -> float | None:
        """Return flags per 10,000 ready points (None when no verdict was ready)."""
        return 1e4 * self.flagged / self.ready if self.ready else None


def measure(kind: str, ds: Dataset, ts: FloatArray, sustained: bool = False) -> Cell | None:
    """Run detector ``kind`` at default sensitivity, both directions, over one dataset.

    ``rate`` applies only to proportions with trial counts (None otherwise); ``auto`` picks ``rate``
    itself when the series carries counts. ``sustained`` sets ``sustained: true`` on the kinds that
    take it (the others run as they are).
    """
    from ..detectors import make_detector
    from ..evals.scoring import build_spec

    if kind == "rate" and ds.counts is None:
        return None
    spec = build_spec(kind, "both" if kind != "rate" else "up", [])
    if sustained and "sustained" in type(spec).model_fields:
        spec = spec.model_copy(update={"sustained": True})
    verdicts = make_detector(spec).update_many(ts, ds.values, ds.counts)
    ready = [v for v in verdicts if v.ready]
    surprise = max((v.surprise for v in ready), default=0.0)
    return Cell(len(ds.values), len(ready), sum(v.anomalous for v in ready), surprise)


def run(
    datasets: Sequence[Dataset], kinds: Sequence[str], spacing: str, sustained: bool = False
) -> dict[str, dict[str, Cell | None]]:
    """Return ``{dataset: {kind: Cell or None}}`` for every dataset and detector kind."""
    out: dict[str, dict[str, Cell | None]] = {}
    for ds in datasets:
        ts = timestamps(ds, spacing)
        out[f"{ds.source}:{ds.name}"] = {k: measure(k, ds, ts, sustained) for k in kinds}
    return out


def _fmt(cell: Cell | None) -> str:
    """Format one table cell: flags/10k (flagged/ready), '–' when not applicable."""
    if cell is None:
        return "–"
    if not cell.ready:
        return f"not ready (0/{cell.points})"
    return f"{cell.per_10k:.1f} ({cell.flagged}/{cell.ready})"


def totals(
    table: dict[str, dict[str, Cell | None]], kinds: Sequence[str], generated: bool
) -> dict[str, Cell]:
    """Return per-kind totals over the real datasets, or over the generated ones."""
    out = {}
    for k in kinds:
        rows = [row for key, row in table.items() if key.startswith("generated:") == generated]
        cells = [row[k] for row in rows if row.get(k) is not None]
        out[k] = Cell(
            sum(c.points for c in cells if c),
            sum(c.ready for c in cells if c),
            sum(c.flagged for c in cells if c),
            max((c.max_surprise for c in cells if c), default=0.0),
        )
    return out


def markdown(table: dict[str, dict[str, Cell | None]], kinds: Sequence[str], spacing: str) -> str:
    """Return the per-dataset table and the totals as Markdown (what docs/benchmarks.md pastes)."""
    lines = [
        f"Flags per 10,000 ready points (flagged/ready) at default sensitivity, direction both "
        f"(rate: up), spacing {spacing}",
        "",
        "| dataset | points | " + " | ".join(kinds) + " |",
        "|---|---" + "|---" * len(kinds) + "|",
    ]
    for key, row in table.items():
        n = next((c.points for c in row.values() if c is not None), 0)
        lines.append(f"| {key} | {n} | " + " | ".join(_fmt(row[k]) for k in kinds) + " |")
    for label, generated in (("real (statsmodels, pmdarima)", False), ("generated no-label", True)):
        tot = totals(table, kinds, generated)
        if any(c.points for c in tot.values()):
            lines.append(
                f"| **total {label}** | {max(c.points for c in tot.values())} | "
                + " | ".join(_fmt(c) if c.points else "–" for c in tot.values())
                + " |"
            )
    return "\n".join(lines)


def load(
    names: Sequence[str] | None, generated: bool, loaders: Sequence[Callable[[], list[Dataset]]] | None = None
) -> list[Dataset]:
    """Return the datasets to measure, filtered by substrings of their names."""
    loaders = loaders or [statsmodels_datasets, pmdarima_datasets, *([generated_quiet] if generated else [])]
    datasets = [ds for load_one in loaders for ds in load_one()]
    if names:
        datasets = [d for d in datasets if any(n in f"{d.source}:{d.name}" for n in names)]
    return datasets
