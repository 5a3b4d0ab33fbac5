"""``watcher gate``: the offline-evaluation gate for CI, comparing two evaluation runs' scores.

This module owns the statistics and the verdict: per score name, the baseline and candidate runs
(``scores.eval_run``) are compared paired (by ``trace_id``, which an offline evaluation sets to the
dataset item ID) when the runs share most items, else unpaired. Paired: a bootstrap percentile CI
of the mean per-item difference. Unpaired: a bootstrap CI of the difference of means, and the
one-sided Mann-Whitney U test (scores are bounded and skewed, not normal). A score *regresses*
when the drop is significant at ``alpha`` (one-sided) **and** the estimated drop exceeds
``max_drop``. Bootstraps use a fixed seed, so a gate is reproducible. It does not own reading
files into the store (``runs``) nor the store itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from ..errors import ConfigError
from ..store.tables import Score

FloatArray = npt.NDArray[np.float64]
SEED = 20240611
RESAMPLES = 4000
PAIRED_OVERLAP = 0.8


@dataclass(frozen=True, slots=True)
class GateResult:
    """The comparison of one score between the two runs."""

    score: str
    test: str
    n_baseline: int
    n_candidate: int
    baseline_mean: float
    candidate_mean: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    regression: bool


def _bootstrap_means(x: FloatArray, rng: np.random.Generator, resamples: int) -> FloatArray:
    """Return ``resamples`` bootstrap means of ``x`` (in chunks, to bound memory)."""
    out = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(len(x), 1))
    for lo in range(0, resamples, chunk):
        hi = min(resamples, lo + chunk)
        idx = rng.integers(0, len(x), size=(hi - lo, len(x)))
        out[lo:hi] = x[idx].mean(axis=1)
    return out


def compare_paired(
    baseline: FloatArray,
    candidate: FloatArray,
    *,
    alpha: float,
    max_drop: float,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    score: str = "",
) -> GateResult:
    """Compare per-item paired scores: bootstrap CI of the mean difference (candidate − baseline)."""
    d = candidate - baseline
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(d, rng, resamples)
    p = float((np.sum(boot >= 0) + 1) / (resamples + 1))  # one-sided: P(no drop) under the bootstrap
    return _result(score, "paired bootstrap", baseline, candidate, boot, p, alpha=alpha, max_drop=max_drop)


def compare_unpaired(
    baseline: FloatArray,
    candidate: FloatArray,
    *,
    alpha: float,
    max_drop: float,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    score: str = "",
) -> GateResult:
    """Compare independent samples: bootstrap CI of the difference of means, one-sided Mann-Whitney U."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(candidate, rng, resamples) - _bootstrap_means(baseline, rng, resamples)
    p = float(mannwhitneyu(candidate, baseline, alternative="less").pvalue)
    return _result(
        score, "unpaired Mann-Whitney", baseline, candidate, boot, p, alpha=alpha, max_drop=max_drop
    )


def _result(
    score: str,
    method: str,
    baseline: FloatArray,
    candidate: FloatArray,
    boot: FloatArray,
    p: float,
    *,
    alpha: float,
    max_drop: float,
) -> GateResult:
    """Return the verdict: a drop fails when it is significant (p < alpha) and larger than ``max_drop``."""
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    diff = float(candidate.mean() - baseline.mean())
    return GateResult(
        score,
        method,
        len(baseline),
        len(candidate),
        float(baseline.mean()),
        float(candidate.mean()),
        diff,
        float(lo),
        float(hi),
        p,
        p < alpha and diff < -max_drop,
    )


def compare_runs(
    baseline: dict[str, float], candidate: dict[str, float], *, alpha: float, max_drop: float, score: str = ""
) -> GateResult:
    """Compare two runs given as item → score; paired when they share most items."""
    if len(baseline) < 2 or len(candidate) < 2:
        raise ConfigError(
            f"score {score}: each run needs at least 2 scores (got {len(baseline)}, {len(candidate)})"
        )
    shared = sorted(set(baseline) & set(candidate))
    if len(shared) >= 2 and len(shared) >= PAIRED_OVERLAP * max(len(baseline), len(candidate)):
        b = np.array([baseline[k] for k in shared])
        c = np.array([candidate[k] for k in shared])
        return compare_paired(b, c, alpha=alpha, max_drop=max_drop, score=score)
    b = np.fromiter(baseline.values(), dtype=np.float64)
    c = np.fromiter(candidate.values(), dtype=np.float64)
    return compare_unpaired(b, c, alpha=alpha, max_drop=max_drop, score=score)


def load_run(store: Any, name: str, run: str) -> dict[str, float]:
    """Return item (trace_id) → mean score of ``name`` in evaluation run ``run``."""
    t: Any = Score.__table__  # type: ignore[attr-defined]
    stmt = (
        sa.select(t.c.trace_id, sa.func.avg(t.c.value), sa.func.count())
        .where(t.c.name == name, t.c.eval_run == run)
        .group_by(t.c.trace_id)
    )
    with store.engine.connect() as conn:
        return {str(k): float(v) for k, v, _ in conn.execute(stmt)}


def null_false_alarm_rate(
    sims: int = 200,
    items: int = 300,
    *,
    alpha: float = 0.05,
    max_drop: float = 0.0,
    noise: float = 0.08,
    seed: int = 1,
) -> float:
    """Return the share of ``sims`` null comparisons (no true change) that the gate fails.

    Each simulation draws per-item groundedness from Beta(17, 3) and a candidate equal to the baseline
    plus zero-mean judge noise, clipped to [0, 1], as an unchanged prompt re-judged would look.
    """
    rng = np.random.default_rng(seed)
    fails = 0
    for k in range(sims):
        base = rng.beta(17, 3, size=items)
        cand = np.clip(base + rng.normal(0, noise, size=items), 0, 1)
        base = np.clip(base + rng.normal(0, noise, size=items), 0, 1)
        res = compare_paired(base, cand, alpha=alpha, max_drop=max_drop, seed=SEED + k, resamples=2000)
        fails += res.regression
    return fails / sims


def format_table(results: Sequence[GateResult], alpha: float, max_drop: float) -> str:
    """Return the verdict table as text."""
    ci = f"{round((1 - alpha) * 100)}% CI"
    head = (
        f"{'score':<18} {'test':<22} {'n base':>7} {'n cand':>7} {'base':>7} {'cand':>7} {'diff':>8} "
        f"{ci:>19} {'p':>7}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        verdict = "REGRESSION" if r.regression else ("ok (drop within allowance)" if r.diff < 0 else "ok")
        p = "<0.001" if r.p_value < 0.001 else f"{r.p_value:.3f}"
        interval = f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
        lines.append(
            f"{r.score:<18} {r.test:<22} {r.n_baseline:>7} {r.n_candidate:>7} {r.baseline_mean:>7.4f} "
            f"{r.candidate_mean:>7.4f} {r.diff:>+8.4f} {interval:>19} {p:>7}  {verdict}"
        )
    lines.append(
        f"regression = drop significant at alpha={alpha} (one-sided) and larger than max-drop={max_drop}"
    )
    return "\n".join(lines)


def main_gate(args: Any, out: TextIO | None = None) -> int:
    """Run ``watcher gate`` from parsed arguments: 0 pass, 1 regression, 2 missing data."""
    out = out or sys.stdout
    from ..config import load_settings
    from ..store.db import open_store

    overrides: dict[str, Any] = {"store": {"url": args.store}} if args.store else {}
    settings = load_settings(args.config, **overrides)
    names = [n.strip() for item in args.scores for n in item.split(",") if n.strip()]
    store = open_store(settings.store.url.get_secret_value())
    results = []
    try:
        for name in names:
            base, cand = load_run(store, name, args.baseline), load_run(store, name, args.candidate)
            for run, got in ((args.baseline, base), (args.candidate, cand)):
                if not got:
                    print(f"watcher gate: no {name!r} scores in evaluation run {run!r}", file=sys.stderr)
                    return 2
            results.append(compare_runs(base, cand, alpha=args.alpha, max_drop=args.max_drop, score=name))
    finally:
        store.close()
    failed = [r.score for r in results if r.regression]
    if getattr(args, "json", False):
        import json
        import math
        from dataclasses import asdict

        def finite(d: dict[str, Any]) -> dict[str, Any]:
            return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}

        doc = {
            "passed": not failed,
            "alpha": args.alpha,
            "max_drop": args.max_drop,
            "results": [finite(asdict(r)) for r in results],
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return 1 if failed else 0
    out.write(format_table(results, args.alpha, args.max_drop) + "\n")
    out.write(f"gate: {'FAILED (' + ', '.join(failed) + ')' if failed else 'passed'}\n")
    return 1 if failed else 0
