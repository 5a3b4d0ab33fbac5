"""``watcher bench contribution``: does the explanation name the planted driver, and stay quiet on noise?

This module owns one measurement of ``engine.contribution.explain_rows`` on generated rows of an LLM
application (no store, no daemon): a current window of calls and a reference six times as long,
over tenant (12, Zipf traffic), model (4), feature (5), prompt_version (3), user_id (150, Zipf)
and operation (2), for four aggregates — spend (``sum`` of a log-normal cost per call), refusal
rate (``ratio`` of 0/1 flags, 3 % base), mean groundedness (``mean`` of a clipped normal score) and
p95 TTFT (``quantile`` of a log-normal latency). Each trial draws a window size (200, 500 or 1,500
calls) and one of three arms:

* ``planted``: one value of tenant, model, feature or prompt_version (uniformly among the values
  with at least 5 % of the traffic) drives the change — its calls cost 2–4× (or it sends 2–4× the
  calls), its refusal rate rises by 4–15 points, its groundedness drops by 0.08–0.25, its TTFT
  grows 1.5–3×; a draw where that does not move the aggregate 3 standard errors (no alert would
  fire) is drawn again; scored: is it the first value named (``top[0]``'s leading label), is it
  named at all;
* ``noise``: both periods drawn from the same process (an alert on noise, or a change no label
  explains); scored: is any value named;
* ``spread``: every call moves alike (a provider or a judge, not a tenant) by the planted arm's
  effect; scored: is any value named.

The trials are seeded: the same command prints the same numbers. It does not own the analysis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.contribution import Rows, explain_rows

METRICS: tuple[str, ...] = ("spend", "refusal_rate", "groundedness", "p95_ttft")
ARMS: tuple[str, ...] = ("planted", "noise", "spread")
DRIVER_DIMS: tuple[str, ...] = ("tenant", "model", "feature", "prompt_version")
CARDINALITY: dict[str, int] = {
    "tenant": 12,
    "model": 4,
    "feature": 5,
    "prompt_version": 3,
    "user_id": 150,
    "operation": 2,
}
ZIPF: frozenset[str] = frozenset({"tenant", "user_id"})
SIZES: tuple[int, ...] = (200, 500, 1500)
REFERENCE_WINDOWS = 6
MIN_DRIVER_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class Trial:
    """One generated case and what the explanation said about it."""

    metric: str
    arm: str
    size: int
    driver: tuple[str, str] | None
    first: tuple[str, str] | None
    named: tuple[tuple[str, str], ...]
    explained: bool


def _weights(dim: str, rng: np.random.Generator) -> np.ndarray[Any, np.dtype[np.float64]]:
    k = CARDINALITY[dim]
    w = 1.0 / np.arange(1, k + 1) if dim in ZIPF else rng.dirichlet(np.full(k, 5.0))
    return np.asarray(w / w.sum(), dtype=np.float64)


def _labels(
    n: int, weights: dict[str, np.ndarray[Any, np.dtype[np.float64]]], rng: np.random.Generator
) -> dict[str, np.ndarray[Any, np.dtype[np.int64]]]:
    return {d: rng.choice(len(w), size=n, p=w) for d, w in weights.items()}


def _base(metric: str, n: int, rng: np.random.Generator) -> np.ndarray[Any, np.dtype[np.float64]]:
    if metric == "spend":
        return rng.lognormal(math.log(0.01), 1.0, n)
    if metric == "refusal_rate":
        return (rng.random(n) < 0.03).astype(np.float64)
    if metric == "groundedness":
        return np.clip(rng.normal(0.85, 0.12, n), 0.0, 1.0)
    return rng.lognormal(math.log(0.4), 0.4, n)


def _affect(
    metric: str,
    x: np.ndarray[Any, np.dtype[np.float64]],
    hit: np.ndarray[Any, np.dtype[np.bool_]],
    effect: float,
    rng: np.random.Generator,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Return ``x`` with the rows ``hit`` moved by ``effect`` (its meaning depends on the metric)."""
    x = x.copy()
    if metric == "spend":
        x[hit] *= effect
    elif metric == "refusal_rate":
        flip = hit & (x == 0) & (rng.random(len(x)) < effect)
        x[flip] = 1.0
    elif metric == "groundedness":
        x[hit] = np.clip(x[hit] - effect, 0.0, 1.0)
    else:
        x[hit] *= effect
    return x


def _effect(metric: str, rng: np.random.Generator) -> float:
    if metric == "spend":
        return float(rng.uniform(2.0, 4.0))
    if metric == "refusal_rate":
        return float(rng.uniform(0.04, 0.15))
    if metric == "groundedness":
        return float(rng.uniform(0.08, 0.25))
    return float(rng.uniform(1.5, 3.0))


AGG: dict[str, tuple[str, float | None]] = {
    "spend": ("sum", None),
    "refusal_rate": ("ratio", None),
    "groundedness": ("mean", None),
    "p95_ttft": ("quantile", 0.95),
}


def _draw(
    metric: str, arm: str, rng: np.random.Generator
) -> tuple[Rows, tuple[str, str] | None, int, np.ndarray[Any, np.dtype[np.float64]], int]:
    """Draw one case: its rows, the planted driver, the window size, the current values and n0."""
    size = int(rng.choice(SIZES))
    weights = {d: _weights(d, rng) for d in CARDINALITY}
    n0 = size * REFERENCE_WINDOWS
    driver: tuple[str, str] | None = None
    effect = _effect(metric, rng)
    extra = 0
    volume = metric == "spend" and arm == "planted" and rng.random() < 0.5
    if arm == "planted":
        dim = str(rng.choice(DRIVER_DIMS))
        eligible = np.flatnonzero(weights[dim] >= MIN_DRIVER_SHARE)
        value = int(rng.choice(eligible))
        driver = (dim, f"{dim[0]}{value}")
        if volume:
            extra = int(rng.poisson(size * weights[dim][value] * (effect - 1.0)))
    lab0 = _labels(n0, weights, rng)
    lab1 = _labels(size, weights, rng)
    if extra:
        more = _labels(extra, weights, rng)
        assert driver is not None
        more[driver[0]][:] = int(driver[1][1:])
        lab1 = {d: np.concatenate([lab1[d], more[d]]) for d in lab1}
    x0 = _base(metric, n0, rng)
    x1 = _base(metric, len(lab1["tenant"]), rng)
    if arm == "planted" and not volume:
        assert driver is not None
        x1 = _affect(metric, x1, lab1[driver[0]] == int(driver[1][1:]), effect, rng)
    elif arm == "spread":
        x1 = _affect(metric, x1, np.ones(len(x1), dtype=bool), effect, rng)
    n1 = len(x1)
    rows = Rows(
        np.concatenate([x1, x0]),
        np.concatenate([np.ones(n1, dtype=bool), np.zeros(n0, dtype=bool)]),
        {d: [f"{d[0]}{v}" for v in np.concatenate([lab1[d], lab0[d]]).tolist()] for d in CARDINALITY},
    )
    return rows, driver, size, x0, n0


def alert_z(metric: str, rows: Rows) -> float:
    """Return how many standard errors the aggregate moved in the planted direction (an alert's view).

    Spend: the window's sum against the reference's rescaled (compound Poisson); refusal rate and
    groundedness: Welch on the means (groundedness counts downwards); p95 TTFT: the share of the
    window's calls beyond the reference p95 against the 5 % expected.
    """
    x1, x0 = rows.x[rows.current], rows.x[~rows.current]
    scale = 1.0 / REFERENCE_WINDOWS
    if metric == "spend":
        return float((x1.sum() - scale * x0.sum()) / math.sqrt((x1**2).sum() + scale**2 * (x0**2).sum()))
    if metric == "p95_ttft":
        share = float((x1 > np.quantile(x0, 0.95)).mean())
        return (share - 0.05) / math.sqrt(0.05 * 0.95 / len(x1))
    se = math.sqrt(x1.var() / len(x1) + x0.var() / len(x0)) or 1e-12
    z = float((x1.mean() - x0.mean()) / se)
    return -z if metric == "groundedness" else z


ALERT_Z = 3.0
"""A planted case is kept only when the aggregate moved this many standard errors (an alert fires)."""


def trial(metric: str, arm: str, seed: int) -> Trial:
    """Generate one case of ``metric`` in ``arm`` and explain it.

    A planted driver too weak to move the aggregate ``ALERT_Z`` standard errors would not raise an
    alert: such draws are drawn again (up to 100 times).
    """
    rng = np.random.default_rng(seed)
    for _ in range(100):
        rows, driver, size, _, _ = _draw(metric, arm, rng)
        if arm != "planted" or alert_z(metric, rows) >= ALERT_Z:
            break
    agg, q = AGG[metric]
    got = explain_rows(
        rows,
        agg=agg,
        metric=metric,
        quantile=q,
        scale=1.0 / REFERENCE_WINDOWS,
        percent=agg == "ratio",
    )
    if got is None:
        return Trial(metric, arm, size, driver, None, (), False)
    named = tuple(c.labels[0] for c in got.top)
    return Trial(metric, arm, size, driver, named[0] if named else None, named, True)


def run(
    trials: int = 200,
    seed: int = 22,
    metrics: tuple[str, ...] = METRICS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``trials`` cases per metric and arm; return the rates and the CPU time per analysis."""
    out: dict[str, Any] = {"trials": trials, "seed": seed, "metrics": {}}
    cpu = 0.0
    count = 0
    for metric in metrics:
        row: dict[str, Any] = {}
        for a_i, arm in enumerate(ARMS):
            got: list[Trial] = []
            for t in range(trials):
                c0 = time.process_time()
                got.append(
                    trial(metric, arm, seed * 1_000_003 + METRICS.index(metric) * 100_003 + a_i * 10_007 + t)
                )
                cpu += time.process_time() - c0
                count += 1
            if arm == "planted":
                row["driver_first"] = sum(t.first == t.driver for t in got) / trials
                row["driver_named"] = sum(t.driver in t.named for t in got) / trials
                row["planted_other_first"] = (
                    sum(t.first is not None and t.first != t.driver for t in got) / trials
                )
            else:
                row[f"{arm}_named"] = sum(bool(t.named) for t in got) / trials
            if progress is not None:
                progress(f"{metric} {arm}: done")
        out["metrics"][metric] = row
    out["cpu_ms_per_trial"] = 1000.0 * cpu / max(count, 1)
    return out


def table(result: dict[str, Any]) -> str:
    """Return the Markdown table of ``run``'s result."""
    lines = [
        f"{result['trials']} trials per metric and arm, seed {result['seed']}; "
        f"{result['cpu_ms_per_trial']:.1f} ms CPU per trial (generation included)",
        "",
        "| metric | planted: driver first | planted: driver named | planted: another first "
        "| noise: a value named | spread: a value named |",
        "|---|---|---|---|---|---|",
    ]
    for metric, r in result["metrics"].items():
        lines.append(
            f"| {metric} | {r['driver_first']:.1%} | {r['driver_named']:.1%} | "
            f"{r['planted_other_first']:.1%} | {r['noise_named']:.1%} | {r['spread_named']:.1%} |"
        )
    return "\n".join(lines)


__all__ = ["ARMS", "METRICS", "Trial", "run", "table", "trial"]
