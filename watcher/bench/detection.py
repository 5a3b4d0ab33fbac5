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
* **peers** (``peers``): other libraries' detectors run causally on the same files; a peer whose
  package is missing is skipped with the reason printed.
* **flag rate**: flagged points per 10,000 scored (ready) points, over all files and over the
  files with no labels (where every flag is a false one).
* **ranked**: every point ranked by a continuous score (``surprise`` for watcher's kinds; the
  baselines' and peers' own scores), scored at the best single threshold for the whole corpus
  (``ranking``).

Rows are read as written, repeated and out-of-order timestamps included: watcher's detectors get
every row (they skip a point at or before the last one they saw); the peers get the rows that
are strictly newer than every earlier row (the same rule), and flags are compared at those times.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import FloatArray, Verdict
from ..detectors.base import Detector
from ..detectors.stats import Direction, band_verdict
from .ranking import BestCut, Ranked, candidates, pages_at

PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_fp": (1.0, 0.22, 1.0),
    "reward_low_fn": (1.0, 0.11, 2.0),
}
PROBATION = 0.15
DEFAULT_DETECTORS = ("auto", "seasonal", "ewma", "rolling", "zscore", "static")
BASELINES = ("zscore", "static")
MODES = {
    "auto": "causal (watcher)",
    "seasonal": "causal (watcher)",
    "ewma": "causal (watcher)",
    "rolling": "causal (watcher)",
    "zscore": "causal baseline",
    "static": "bounds from weeks 1-2",
}


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
    vs = list(verdicts)
    ts = np.array([v.ts for v in vs], dtype=np.float64)
    return pages_at(ts, np.array([v.anomalous for v in vs], dtype=bool), for_s)


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
    from ..evals.scoring import build_spec

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
    """One labelled series of a corpus, rows in file order (repeats and late rows included)."""

    path: str
    ts: FloatArray
    values: FloatArray
    counts: FloatArray | None
    windows: list[tuple[float, float]]
    direction: Direction

    def newer_mask(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Return which rows are strictly newer than every earlier row (what a detector scores)."""
        before = np.concatenate(([-np.inf], np.maximum.accumulate(self.ts)[:-1]))
        return np.asarray(self.ts > before, dtype=bool)


def read_series(path: Path, name: str) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Return a corpus CSV's timestamps, values and counts in file order (no ordering check)."""
    import csv

    from ..evals.scoring import parse_timestamp

    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        cols = [c.strip().lower() for c in next(reader)]
        i_ts, i_val = cols.index("timestamp"), cols.index("value")
        i_cnt = cols.index("count") if "count" in cols else None
        ts, vs, cs = [], [], []
        for fields in reader:
            if not fields:
                continue
            ts.append(parse_timestamp(fields[i_ts]))
            vs.append(float(fields[i_val]) if fields[i_val].strip() else math.nan)
            if i_cnt is not None:
                cs.append(float(fields[i_cnt]) if fields[i_cnt].strip() else math.nan)
    counts = np.array(cs) if i_cnt is not None else None
    return np.array(ts, dtype=np.float64), np.array(vs, dtype=np.float64), counts


def load_corpus(root: str | Path, labels_path: str | Path | None = None) -> list[CorpusFile]:
    """Read ``data/**/*.csv`` under ``root`` with its labels (and ``meta.json`` directions)."""
    from ..evals.scoring import parse_timestamp

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
        ts, values, counts = read_series(csv_path, rel)
        windows = [(parse_timestamp(str(a)), parse_timestamp(str(b))) for a, b in labels.get(key, [])]
        direction = meta.get(rel, meta.get(key, {})).get("direction", "both")
        out.append(CorpusFile(rel, ts, values, counts, windows, direction))
    return out


@dataclass
class Scored:
    """One detector's per-point output on one file, at the times it scored."""

    ts: FloatArray
    flags: np.ndarray[Any, np.dtype[np.bool_]]
    ready: np.ndarray[Any, np.dtype[np.bool_]]
    rank: FloatArray | None
    """``surprise`` for watcher's kinds and the baselines, a peer's own score; None: flags only."""
    score_rank: FloatArray | None = None
    """−log10((1 − score)/2): the rank a calibrated ``score`` implies (used while ``surprise`` is 0)."""


def score_file(kind: str, cf: CorpusFile) -> Scored:
    """Run one detector, baseline or peer on one file and return its per-point output."""
    from .peers import PEERS

    if kind in PEERS:
        keep = cf.newer_mask()
        ts = cf.ts[keep]
        try:
            out = PEERS[kind].run(ts, cf.values[keep], cf.direction)
        except Exception as exc:  # a peer's own failure on one file: no verdicts there, say so
            print(f"  {kind} failed on {cf.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            none = np.zeros(len(ts), dtype=bool)
            return Scored(ts, none, none, np.full(len(ts), np.nan))
        return Scored(ts, out.flags, out.ready, out.rank)
    det = make(kind, cf.direction, cf.ts, cf.values)
    verdicts = det.update_many(cf.ts, cf.values, cf.counts)
    ready = np.array([v.ready for v in verdicts], dtype=bool)
    score = np.array([v.score for v in verdicts], dtype=np.float64)
    return Scored(
        ts=np.array([v.ts for v in verdicts], dtype=np.float64),
        flags=np.array([v.anomalous for v in verdicts], dtype=bool),
        ready=ready,
        rank=np.where(ready, [v.surprise for v in verdicts], np.nan),
        score_rank=np.where(ready, -np.log10(np.maximum((1.0 - score) / 2.0, 1e-300)), np.nan),
    )


@dataclass
class KindRun:
    """Everything one detector produced on a corpus: per-file page outcomes and per-point output."""

    kind: str
    results: list[FileResult]
    scored: list[Scored]
    seconds: float


def run(files: Sequence[CorpusFile], kinds: Sequence[str], for_s: float) -> dict[str, list[FileResult]]:
    """Return the per-file results of every detector kind on the corpus."""
    return {k: r.results for k, r in run_all(files, kinds, for_s).items()}


def run_all(files: Sequence[CorpusFile], kinds: Sequence[str], for_s: float) -> dict[str, KindRun]:
    """Run every detector on every file; peers whose package is missing are skipped (printed)."""
    import time

    from .peers import PEERS

    out: dict[str, KindRun] = {}
    for kind in kinds:
        if kind in PEERS and (why := PEERS[kind].available()) is not None:
            print(f"skipping peer {kind}: {why}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        scored = [score_file(kind, cf) for cf in files]
        results = [
            evaluate(cf.path, cf.ts, cf.windows, pages_at(sc.ts, sc.flags, for_s))
            for cf, sc in zip(files, scored, strict=True)
        ]
        out[kind] = KindRun(kind, results, scored, time.perf_counter() - t0)
        print(f"  {kind}: {out[kind].seconds:.1f} s", file=sys.stderr)
    return out


def _per_10k(flagged: int, ready: int) -> float | None:
    """Return flags per 10,000 ready points (None with no ready point)."""
    return round(1e4 * flagged / ready, 2) if ready else None


def best_cut(
    files: Sequence[Ranked], for_s: float, profile: str = "standard", n: int = 120
) -> BestCut | None:
    """Return the single threshold (flag where rank > threshold) with the best corpus score."""
    best: BestCut | None = None
    total = sum(int(np.isfinite(r.rank).sum()) for r in files) or 1
    for cut in candidates(files, n):
        results = []
        flagged = 0
        for r in files:
            flags = np.nan_to_num(r.rank, nan=-math.inf) > cut
            flagged += int(flags.sum())
            res = evaluate(r.path, np.array([r.start, r.end]), r.windows, pages_at(r.ts, flags, for_s))
            results.append(res)
        score = normalised(results, profile)
        if best is None or score > best.score:
            best = BestCut(
                threshold=cut,
                score=score,
                windows_detected=sum(d is not None for res in results for d in res.detected),
                windows=sum(len(res.windows) for res in results),
                false_pages=sum(res.false_pages for res in results),
                flagged_fraction=flagged / total,
            )
    return best


def ranked_summary(files: Sequence[CorpusFile], kr: KindRun, for_s: float) -> dict[str, Any]:
    """Return the corpus score at the best single threshold on the detector's rank, and what it ranks by."""
    from .peers import PEERS

    by = "surprise" if kr.kind not in PEERS else "peer score"
    ranks = [sc.rank for sc in kr.scored]
    if kr.kind not in PEERS and not any(r is not None and np.nanmax(r, initial=0.0) > 0 for r in ranks):
        by, ranks = "score (surprise all 0)", [sc.score_rank for sc in kr.scored]
    if any(r is None for r in ranks):
        return {"ranked_by": "- (flags only)", "ranked_standard": None}
    ranked = [
        Ranked(cf.path, sc.ts, r, cf.windows, float(cf.ts.min()), float(cf.ts.max()))
        for cf, sc, r in zip(files, kr.scored, ranks, strict=True)
        if r is not None
    ]
    cut = best_cut(ranked, for_s)
    if cut is None:
        return {"ranked_by": by, "ranked_standard": None}
    top = max(float(np.nanmax(r.rank, initial=-math.inf)) for r in ranked)
    return {
        "ranked_by": by,
        "ranked_standard": round(cut.score, 1),
        "ranked_threshold": round(cut.threshold, 4),
        "ranked_windows": f"{cut.windows_detected}/{cut.windows}",
        "ranked_false_pages": cut.false_pages,
        "ranked_ties_at_top": int(sum(int(np.sum(r.rank == top)) for r in ranked)),
    }


def summary(
    results: dict[str, list[FileResult]],
    runs: dict[str, KindRun] | None = None,
    files: Sequence[CorpusFile] = (),
    for_s: float = 600.0,
) -> dict[str, Any]:
    """Return the scores per profile, recall, false pages, flag rates and the ranked score per detector."""
    from .peers import PEERS

    out: dict[str, Any] = {}
    for kind, res in results.items():
        detected = [d for r in res for d in r.detected if d is not None]
        windows = sum(len(r.windows) for r in res)
        quiet = [r for r in res if not r.windows]
        row: dict[str, Any] = {
            "mode": PEERS[kind].mode if kind in PEERS else MODES.get(kind, ""),
            **{p: round(normalised(res, p), 1) for p in PROFILES},
            "windows_detected": f"{len(detected)}/{windows}",
            "false_pages": sum(r.false_pages for r in res),
            "non_incident_pages": sum(len(r.pages) for r in quiet),
            "median_ttd_min": round(statistics.median(detected) / 60.0, 1) if detected else None,
        }
        if runs is not None and kind in runs:
            kr = runs[kind]
            quiet_idx = [i for i, r in enumerate(res) if not r.windows]
            row["flags_per_10k"] = _per_10k(
                sum(int((s.flags & s.ready).sum()) for s in kr.scored),
                sum(int(s.ready.sum()) for s in kr.scored),
            )
            row["quiet_flags_per_10k"] = _per_10k(
                sum(int((kr.scored[i].flags & kr.scored[i].ready).sum()) for i in quiet_idx),
                sum(int(kr.scored[i].ready.sum()) for i in quiet_idx),
            )
            row.update(ranked_summary(files, kr, for_s))
            row["seconds"] = round(kr.seconds, 1)
        out[kind] = row
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


TABLE_COLUMNS = (
    ("mode", "mode"),
    ("standard", "std"),
    ("reward_low_fp", "low_fp"),
    ("reward_low_fn", "low_fn"),
    ("windows_detected", "windows"),
    ("false_pages", "FP episodes"),
    ("non_incident_pages", "pages on no-label files"),
    ("flags_per_10k", "flags/10k"),
    ("quiet_flags_per_10k", "flags/10k no-label"),
    ("ranked_standard", "ranked std"),
    ("ranked_windows", "ranked windows"),
    ("ranked_false_pages", "ranked FP"),
    ("ranked_by", "ranked by"),
    ("median_ttd_min", "TTD min"),
)


def markdown_table(title: str, table: dict[str, Any]) -> str:
    """Return the summary as a Markdown table (what docs/benchmarks.md pastes)."""
    lines = [f"{title}", "", "| detector | " + " | ".join(h for _, h in TABLE_COLUMNS) + " |"]
    lines.append("|---" * (len(TABLE_COLUMNS) + 1) + "|")
    for kind, row in table.items():
        cells = ["–" if row.get(c) is None else str(row.get(c)) for c, _ in TABLE_COLUMNS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sections_of(files: Sequence[CorpusFile], section: str) -> list[tuple[str, list[CorpusFile]]]:
    """Split the files into the corpus sections to report separately (standard, hardened)."""
    hard = [f for f in files if f.path.startswith("data/hardened/")]
    std = [f for f in files if not f.path.startswith("data/hardened/")]
    return [(name, part) for name, part in (("standard", std), ("hardened", hard)) if part]
