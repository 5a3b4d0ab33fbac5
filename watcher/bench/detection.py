"""``watcher bench detection``: window-based scoring of detectors on a labelled corpus.

This module owns reading a corpus in the common layout (``data/**/*.csv`` with ``timestamp,value``
and an optional ``count``; a labels JSON mapping each file to ``[[start, end], …]``; an optional
``meta.json`` with the watched ``direction`` per file), running detectors and the two baselines,
turning flagged points into pages, and the NAB-style score. It does not own the detectors or the
generated corpus (``corpus``).

Scoring, per file then summed over the corpus:

* **pages**: a detector flags points with its ``anomalous`` verdict (its default sensitivity: the
  one threshold per detector a user gets without tuning, the same ``score`` threshold for every
  series). A page is sent when flagged points persist for ``for`` (default 10m, Prometheus
  semantics: the flag held from the first flagged point through a point ``for`` later), once per
  run of flagged points. Pages in the first 15 % of a file (probation) do not count.
* **reward**: the first page inside a window scores ``A_tp·σ(y)``, y = (t − end)/(end − start) ∈
  [−1, 0] and σ(y) = 2/(1 + e^{5y}) − 1, so an early page is worth ≈ 1 and one at the window's end
  ≈ 0; a window with no page scores −A_fn; a page outside every window scores ``A_fp·σ(y)`` with y
  measured from the end of the previous window (slightly late pages cost little), −A_fp when no
  window precedes it.
* **normalised**: 100·(S − S_null)/(S_perfect − S_null) over the corpus, where the null detector
  never pages and the perfect one pages at every window's start. Profiles (A_tp, A_fp, A_fn):
  standard (1, 0.11, 1), reward_low_fp (1, 0.22, 1), reward_low_fn (1, 0.11, 2).
* **baselines**: ``zscore`` (mean/std of a trailing 1-day window, |z| > 4) and ``static`` (bounds at
  the min and max of the first two weeks, at most the first half of the file).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import FloatArray, Verdict
from ..detectors.base import Detector
from ..detectors.stats import Direction, band_verdict

PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_fp": (1.0, 0.22, 1.0),
    "reward_low_fn": (1.0, 0.11, 2.0),
}
PROBATION = 0.15
DEFAULT_DETECTORS = ("auto", "seasonal", "ewma", "rolling", "zscore", "static")
BASELINES = ("zscore", "static")


def sigmoid(y: float) -> float:
    """Return NAB's scaled sigmoid 2/(1 + e^{5y}) − 1: ≈ 1 at y = −1, 0 at y = 0, → −1 for large y."""
    return 2.0 / (1.0 + math.exp(min(5.0 * y, 700.0))) - 1.0


@dataclass
class FileResult:
    """One file's pages and outcome under one detector."""

    path: str
    windows: list[tuple[float, float]]
    pages: list[float]
    start: float
    end: float
    detected: list[float | None] = field(default_factory=list)
    """Time to detect per window (seconds from its start), None when missed."""
    false_pages: int = 0

    def raw(self, profile: str) -> float:
        """Return this file's raw NAB-style score under ``profile``."""
        a_tp, a_fp, a_fn = PROFILES[profile]
        total = 0.0
        probation_end = self.start + PROBATION * (self.end - self.start)
        windows = [w for w in self.windows if w[0] >= probation_end]
        used: set[int] = set()
        for t in self.pages:
            if t < probation_end:
                continue
            inside = [k for k, (a, b) in enumerate(windows) if a <= t <= b]
            if inside:
                k = inside[0]
                if k not in used:
                    used.add(k)
                    a, b = windows[k]
                    total += a_tp * sigmoid((t - b) / max(b - a, 1.0))
                continue
            before = [w for w in windows if w[1] < t]
            if before:
                a, b = before[-1]
                total += a_fp * sigmoid((t - b) / max(b - a, 1.0))
            else:
                total -= a_fp
        total -= a_fn * (len(windows) - len(used))
        return total

    def bounds(self, profile: str) -> tuple[float, float]:
        """Return this file's (null, perfect) raw scores under ``profile``."""
        a_tp, _, a_fn = PROFILES[profile]
        probation_end = self.start + PROBATION * (self.end - self.start)
        n = sum(1 for w in self.windows if w[0] >= probation_end)
        return -a_fn * n, a_tp * sigmoid(-1.0) * n


def normalised(results: Sequence[FileResult], profile: str) -> float:
    """Return the corpus score 100·(S − S_null)/(S_perfect − S_null) under ``profile``."""
    raw = sum(r.raw(profile) for r in results)
    null = sum(r.bounds(profile)[0] for r in results)
    perfect = sum(r.bounds(profile)[1] for r in results)
    return 100.0 * (raw - null) / (perfect - null) if perfect > null else 0.0


def pages_from(verdicts: Iterable[Verdict], for_s: float) -> list[float]:
    """Return the page times: runs of flagged points held for ``for_s``, one page per run."""
    pages: list[float] = []
    run_start: float | None = None
    paged = False
    for v in verdicts:
        if not v.anomalous:
            run_start, paged = None, False
            continue
        if run_start is None:
            run_start = v.ts
        if not paged and v.ts - run_start >= for_s:
            pages.append(v.ts)
            paged = True
    return pages


def evaluate(path: str, ts: FloatArray, windows: list[tuple[float, float]], pages: list[float]) -> FileResult:
    """Return the per-file outcome: time to detect per window and the false pages."""
    res = FileResult(path, windows, pages, float(ts[0]), float(ts[-1]))
    for a, b in windows:
        hits = [t for t in pages if a <= t <= b]
        res.detected.append(hits[0] - a if hits else None)
    res.false_pages = sum(1 for t in pages if not any(a <= t <= b for a, b in windows))
    return res


class ZScore(Detector):
    """Baseline: plain z-score against the mean/std of a trailing time window (not robust)."""

    kind = "zscore"

    def __init__(self, window_s: float = 86_400.0, k: float = 4.0, direction: Direction = "both") -> None:
        super().__init__()
        self.window_s, self.k, self.direction = window_s, k, direction
        self.points: deque[tuple[float, float]] = deque()
        self.s1 = self.s2 = 0.0

    def _update(self, ts: float, value: float, count: float | None) -> Verdict:
        while self.points and self.points[0][0] <= ts - self.window_s:
            _, old = self.points.popleft()
            self.s1 -= old
            self.s2 -= old * old
        n = len(self.points)
        verdict = Verdict(ts=ts, value=value, ready=False, reason="warming up")
        if n >= 30:
            mean = self.s1 / n
            std = math.sqrt(max(self.s2 / n - mean * mean, 0.0)) or 1e-12
            verdict = band_verdict(ts, value, mean, std, self.k, self.direction)
        self.points.append((ts, value))
        self.s1 += value
        self.s2 += value * value
        return verdict


def static_bounds(ts: FloatArray, values: FloatArray) -> tuple[float, float]:
    """Return (min, max) of the first two weeks (at most the first half) as a user would set them."""
    cut = min(ts[0] + 14 * 86_400.0, ts[0] + (ts[-1] - ts[0]) / 2.0)
    head = values[(ts < cut) & np.isfinite(values)]
    return float(np.min(head)), float(np.max(head))


def make(kind: str, direction: Direction, ts: FloatArray, values: FloatArray) -> Detector:
    """Return a fresh detector (or baseline) of ``kind`` watching ``direction`` for one file."""
    from ..detectors import make_detector
    from ..detectors.threshold import StaticThreshold
    from ..scoring import build_spec

    if kind == "zscore":
        return ZScore(direction=direction)
    if kind == "static":
        lo, hi = static_bounds(ts, values)
        return StaticThreshold(
            above=hi if direction != "down" else None, below=lo if direction != "up" else None
        )
    extra = ["window=1d"] if kind == "rolling" else []
    return make_detector(build_spec(kind, direction, extra))


@dataclass
class CorpusFile:
    """One labelled series of a corpus."""

    path: str
    ts: FloatArray
    values: FloatArray
    counts: FloatArray | None
    windows: list[tuple[float, float]]
    direction: Direction


def load_corpus(root: str | Path, labels_path: str | Path | None = None) -> list[CorpusFile]:
    """Read ``data/**/*.csv`` under ``root`` with its labels (and ``meta.json`` directions)."""
    from ..scoring import parse_timestamp, read_rows

    root = Path(root)
    if labels_path is None:
        found = sorted(root.glob("labels*.json")) + sorted((root / "labels").glob("*.json"))
        if not found:
            raise FileNotFoundError(f"{root}: no labels JSON (labels.json or labels/*.json)")
        labels_path = found[0]
    labels: dict[str, list[list[Any]]] = json.loads(Path(labels_path).read_text(encoding="utf-8"))
    meta_path = root / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    out: list[CorpusFile] = []
    for csv_path in sorted((root / "data").rglob("*.csv")):
        rel = csv_path.relative_to(root).as_posix()
        key = rel if rel in labels else csv_path.relative_to(root / "data").as_posix()
        with csv_path.open(encoding="utf-8", newline="") as f:
            rows = list(read_rows(f, rel))
        ts = np.array([r.ts for r in rows])
        values = np.array([r.value for r in rows])
        counts = None if all(r.count is None for r in rows) else np.array([r.count or 0.0 for r in rows])
        windows = [(parse_timestamp(str(a)), parse_timestamp(str(b))) for a, b in labels.get(key, [])]
        direction = meta.get(rel, meta.get(key, {})).get("direction", "both")
        out.append(CorpusFile(rel, ts, values, counts, windows, direction))
    return out


def run(files: Sequence[CorpusFile], kinds: Sequence[str], for_s: float) -> dict[str, list[FileResult]]:
    """Return the per-file results of every detector kind on the corpus."""
    results: dict[str, list[FileResult]] = {}
    for kind in kinds:
        results[kind] = []
        for cf in files:
            det = make(kind, cf.direction, cf.ts, cf.values)
            verdicts = det.update_many(cf.ts, cf.values, cf.counts)
            results[kind].append(evaluate(cf.path, cf.ts, cf.windows, pages_from(verdicts, for_s)))
    return results


def summary(results: dict[str, list[FileResult]]) -> dict[str, Any]:
    """Return the scores per profile, and recall, false pages and quiet non-incidents per detector."""
    out: dict[str, Any] = {}
    for kind, res in results.items():
        detected = [d for r in res for d in r.detected if d is not None]
        windows = sum(len(r.windows) for r in res)
        quiet = [r for r in res if not r.windows]
        out[kind] = {
            **{p: round(normalised(res, p), 1) for p in PROFILES},
            "windows_detected": f"{len(detected)}/{windows}",
            "false_pages": sum(r.false_pages for r in res),
            "non_incident_pages": sum(len(r.pages) for r in quiet),
            "median_ttd_min": round(statistics.median(detected) / 60.0, 1) if detected else None,
        }
    return out


def per_file(res: Sequence[FileResult]) -> list[dict[str, Any]]:
    """Return per-file precision, recall and time to detect of one detector."""
    rows = []
    for r in res:
        hits = sum(d is not None for d in r.detected)
        pages_hit = hits + r.false_pages
        rows.append(
            {
                "file": r.path,
                "windows": len(r.windows),
                "recall": round(hits / len(r.windows), 2) if r.windows else None,
                "precision": round(hits / pages_hit, 2) if pages_hit else None,
                "false_pages": r.false_pages,
                "ttd_min": [None if d is None else round(d / 60.0, 1) for d in r.detected],
            }
        )
    return rows


def main_detection(args: argparse.Namespace) -> int:
    """Run ``watcher bench detection`` and print the table (or JSON)."""
    from ..rules.schema import parse_duration
    from . import corpus

    if args.write_corpus:
        root = corpus.write(args.write_corpus)
        print(f"wrote {len(corpus.build())} series to {root}")
        return 0
    kinds = args.detector or list(DEFAULT_DETECTORS)
    for_s = parse_duration(args.for_).total_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.corpus or corpus.write(tmp)
        files = load_corpus(root, args.labels)
    results = run(files, kinds, for_s)
    table = summary(results)
    if args.json:
        payload = {"summary": table, "per_file": {k: per_file(v) for k, v in results.items()}}
        print(json.dumps(payload, indent=1))
        return 0
    cols = [*PROFILES, "windows_detected", "false_pages", "non_incident_pages", "median_ttd_min"]
    print(f"{len(files)} files, pages after {args.for_} of flagged points, probation {PROBATION:.0%}")
    print(f"{'detector':<10}" + "".join(f"{c:>20}" for c in cols))
    for kind, row in table.items():
        print(f"{kind:<10}" + "".join(f"{row[c]!s:>20}" for c in cols))
    if args.per_file:
        for kind, res in results.items():
            print(f"\n{kind}")
            for row in per_file(res):
                print("  " + json.dumps(row))
    sys.stdout.flush()
    return 0
