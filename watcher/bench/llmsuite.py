"""``watcher bench llm-suite``: the shipped rule pack's detectors on a simulated LLM application.

This module owns a deterministic simulator of five weeks of an LLM application's signals at
1-minute resolution, the incidents and traps placed in its weeks 3–5, and the scoring of the
shipped rules' detectors (``rules/llm-store.yaml``: kind, sensitivity, direction and the other
detector settings, the rule's ``min_value``/``max_value``) with a common ``for:`` (5m by default)
over it: incidents caught, minutes from an incident's start to its page, and false episodes (pages
outside every incident). It does not own any detector or the rule engine; it is a regression bench
for issue 15's night-time runaway, and every detector change is also measured on the corpora
(``watcher bench detection``) and on real series (``watcher bench flagrate``).

The simulated application (one seed, numpy only, nothing committed but this code):

* **spend** ($/h, the cost of the calls of each minute × 60) for three tenants in different time
  zones: calls per minute are Poisson around a diurnal and weekly rate with a slow log-AR(1)
  drift; each call costs a log-normal amount (σ 0.7: a heavy tail); agent loops add benign bursts
  of 1–4 minutes a few times a day. Night rates are 0.15–3 calls per minute, so a quiet tenant's
  nights are mostly zeros and another's are 15–40 % zeros;
* **refusal rate** per feature (refused out of calls, with the calls as the point's count);
* **mean groundedness** per feature (mean of the minute's per-answer scores);
* **p95 time-to-first-token** per model (the minute's calls' 95th percentile).

A minute with no call has no point (NaN) for the rate, groundedness and TTFT series; spend is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import FloatArray

START = 1_767_571_200.0  # 2026-01-05 00:00 UTC, a Monday
MINUTE = 60.0
DAYS = 35
N = DAYS * 1440
EVAL_FROM = 14 * 1440
"""Incidents, traps and false episodes are counted from day 14 (weeks 3–5); weeks 1–2 are warm-up."""
GRACE = 30
"""Minutes after an incident's end during which a page still counts as that incident's."""
SEED = 15

RULES = Path(__file__).resolve().parents[2] / "rules" / "llm-store.yaml"
SIGNAL_RULE = {
    "spend": "SpendAnomaly",
    "refusal": "RefusalRateHigh",
    "ttft": "TTFTDegraded",
    "grounded": "GroundednessDrop",
}


@dataclass
class SimSeries:
    """One simulated series: its signal (which shipped rule judges it), values, optional counts."""

    name: str
    signal: str
    values: FloatArray
    counts: FloatArray | None = None


@dataclass(frozen=True)
class Event:
    """An incident (should page) or a trap (should not) on one series, in minutes from the start."""

    name: str
    series: str
    start: int
    minutes: int
    incident: bool
    what: str


@dataclass
class Suite:
    """The simulated series and the events placed in them."""

    series: list[SimSeries] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _minute(day: int, hour: float, tz: float = 0.0) -> int:
    """Return the minute index of ``hour`` local time (UTC offset ``tz`` hours) on ``day``."""
    return round(day * 1440 + (hour - tz) * 60)


def _activity(tz: float, peak_hour: float = 14.0) -> FloatArray:
    """Return a 0..1 weekly activity shape per minute in local time: 0 at night, 1 at the day's peak."""
    t = np.arange(N) / 60.0 + tz  # local hours since the start
    h = t % 24.0
    dow = (t // 24.0).astype(int) % 7
    day = np.clip((h - 6.0) / 16.0, 0.0, 1.0)  # 06:00 → 22:00 local
    shape = np.sin(np.pi * day) ** 2 * np.exp(-(((h - peak_hour) / 6.0) ** 2)) ** 0.5
    shape = shape / shape.max()
    weekend = dow >= 5
    out: FloatArray = np.where(weekend, 0.35 * shape, shape)
    return out


def _drift(rng: np.random.Generator, sd: float = 0.1, corr_minutes: float = 30.0) -> FloatArray:
    """Return a slow multiplicative drift: exp of a stationary AR(1) with the given sd and correlation."""
    phi = math.exp(-1.0 / corr_minutes)
    e = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), N)
    x = np.empty(N)
    acc = 0.0
    for i in range(N):  # 50k steps; fast enough for a bench
        acc = phi * acc + e[i]
        x[i] = acc
    return np.exp(x)


@dataclass(frozen=True)
class Tenant:
    name: str
    tz: float
    night: float  # calls per minute at night
    day: float  # calls per minute at the weekday peak
    cost: float  # median cost of a call, USD


TENANTS = (
    Tenant("acme", -5.0, 3.0, 60.0, 0.02),
    Tenant("globex", 1.0, 1.5, 25.0, 0.017),
    Tenant("initech", -8.0, 0.15, 8.0, 0.03),
)


def _calls(rng: np.random.Generator, t: Tenant, quiet: FloatArray) -> FloatArray:
    """Return the expected calls per minute of a tenant (before incidents)."""
    shape = _activity(t.tz)
    lam = t.night + (t.day - t.night) * shape
    return lam * _drift(rng) * quiet


def _spend(rng: np.random.Generator, lam: FloatArray, cost: float, bursts_per_day: float) -> FloatArray:
    """Return $/h per minute: Poisson calls × log-normal costs, plus benign 1–4-minute agent bursts."""
    calls = rng.poisson(lam)
    sigma = 0.7
    # The sum of n log-normal costs, drawn per call (n is small at night, large by day).
    total = np.zeros(N)
    idx = np.repeat(np.arange(N), calls)
    np.add.at(total, idx, rng.lognormal(math.log(cost), sigma, len(idx)))
    n_bursts = rng.poisson(bursts_per_day * DAYS)
    for start in rng.integers(0, N - 5, n_bursts):
        length = int(min(4, rng.geometric(0.5)))
        for m in range(start, start + length):
            k = rng.poisson(4.0 + 0.3 * lam[m])
            total[m] += rng.lognormal(math.log(2.0 * cost), sigma, k).sum()
    return total * 60.0


def build(seed: int = SEED) -> Suite:
    """Return the simulated application with its incidents and traps (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    suite = Suite()
    ev = suite.events
    quiet = np.ones(N)
    holiday = _minute(25, 0.0)  # the Friday of week 4: traffic at 30 % for the whole (UTC) day
    quiet[holiday : holiday + 1440] = 0.3
    lams: dict[str, FloatArray] = {}
    for t in TENANTS:
        lams[t.name] = _calls(rng, t, quiet)
    # The features' and models' traffic: acme's calls before any incident or step.
    traffic = lams["acme"].copy()
    # Incidents and traps on spend change the calls (a runaway loop) or the cost per call.
    g = TENANTS[1]
    night = _minute(16, 3.0, g.tz)  # Wednesday of week 3, 03:00 local
    lams["globex"][night : night + 180] *= 4.0
    ev.append(
        Event("night-runaway", "spend.globex", night, 180, True, "globex spend ×4 at 03:00 local for 3 h")
    )
    a = TENANTS[0]
    day = _minute(22, 14.0, a.tz)
    lams["acme"][day : day + 90] *= 2.5
    ev.append(Event("day-runaway", "spend.acme", day, 90, True, "acme spend ×2.5 at 14:00 local for 90 min"))
    step = _minute(19, 0.0, a.tz)
    lams["acme"][step:] *= 1.25
    ev.append(
        Event("planned-step", "spend.acme", step, N - step, False, "acme spend +25 % for good (new customer)")
    )
    for t in TENANTS:
        s = _spend(rng, lams[t.name], t.cost, bursts_per_day=4.0)
        if t.name == "acme":
            spike = _minute(24, 11.0, a.tz)
            s[spike] *= 15.0
            ev.append(
                Event("one-minute-spike", "spend.acme", spike, 1, False, "acme spend ×15 for one minute")
            )
        suite.series.append(SimSeries(f"spend.{t.name}", "spend", s))
    ev.append(Event("holiday", "*", holiday, 1440, False, "all traffic at 30 % for a day"))

    # Refusals per feature: calls follow acme's shape; a beta-distributed rate around 2-4 %.
    for feat, scale, base in (("support-bot", 0.6, 0.03), ("docs-qa", 0.3, 0.02)):
        n = rng.poisson(np.maximum(traffic * scale, 0.05)).astype(float)
        hour = (np.arange(N) / 60.0) % 24.0
        p = base * (1.0 + 0.3 * np.sin(2 * np.pi * hour / 24.0))
        p = rng.beta(p * 200.0, (1.0 - p) * 200.0)
        if feat == "support-bot":
            i = _minute(30, 15.0, a.tz)
            p[i : i + 60] = 0.15
            ev.append(Event("refusal-spike", f"refusal.{feat}", i, 60, True, "refusals 3 % → 15 % for 1 h"))
            j = _minute(20, 3.5, a.tz)
            n[j], p[j] = 3.0, 0.0
            refused = rng.binomial(n.astype(int), p).astype(float)
            refused[j] = 2.0
            ev.append(
                Event("night-refusals", f"refusal.{feat}", j, 1, False, "2 of 3 calls refused at night")
            )
        else:
            refused = rng.binomial(n.astype(int), p).astype(float)
        rate = np.where(n > 0, refused / np.maximum(n, 1.0), np.nan)
        suite.series.append(SimSeries(f"refusal.{feat}", "refusal", rate, n))

    # Groundedness per feature: mean of the minute's answer scores (beta around 0.88).
    for feat, scale in (("support-bot", 0.3), ("docs-qa", 0.2)):
        n = rng.poisson(np.maximum(traffic * scale, 0.05))
        mu = np.full(N, 0.88)
        if feat == "docs-qa":
            k = _minute(18, 12.0)
            mu[k:] += 0.04
            ev.append(
                Event("index-upgrade", f"grounded.{feat}", k, N - k, False, "groundedness +0.04 for good")
            )
            i = _minute(29, 11.0, a.tz)
            mu[i : i + 180] = 0.74
            ev.append(
                Event(
                    "groundedness-drop",
                    f"grounded.{feat}",
                    i,
                    180,
                    True,
                    "mean groundedness 0.92 → 0.74 for 3 h",
                )
            )
        conc = 20.0
        idx = np.repeat(np.arange(N), n)
        scores = rng.beta(mu[idx] * conc, (1.0 - mu[idx]) * conc)
        sums = np.bincount(idx, weights=scores, minlength=N)
        mean = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
        suite.series.append(SimSeries(f"grounded.{feat}", "grounded", mean))

    # p95 time-to-first-token per model, from the minute's calls (log-normal around 0.6 s / 0.9 s).
    for model, scale, median in (("gpt-x", 0.5, 0.6), ("claude-y", 0.3, 0.9)):
        n = rng.poisson(np.maximum(traffic * scale, 0.05))
        med = np.full(N, median)
        if model == "gpt-x":
            i = _minute(31, 11.0, a.tz)
            med[i : i + 90] *= 2.2
            ev.append(Event("ttft-degraded", f"ttft.{model}", i, 90, True, "p95 TTFT ×2.2 for 90 min"))
            k = _minute(23, 15.0)
            ev.append(Event("ttft-spike", f"ttft.{model}", k, 1, False, "p95 TTFT ×5 for one minute"))
        else:
            k = -1
        p95 = np.full(N, np.nan)
        draws = rng.lognormal(0.0, 0.4, int(n.sum()))
        pos = 0
        for m in range(N):
            c = int(n[m])
            if c:
                p95[m] = med[m] * float(np.quantile(draws[pos : pos + c], 0.95))
                pos += c
        if k >= 0 and not math.isnan(p95[k]):
            p95[k] *= 5.0
        suite.series.append(SimSeries(f"ttft.{model}", "ttft", p95))
    return suite


@dataclass
class RuleSpec:
    """What the bench takes from a shipped rule: its detector spec and its value floors."""

    detector: Any
    min_value: float | None
    max_value: float | None


def shipped_rules(path: Path = RULES, sustained: bool = False) -> dict[str, RuleSpec]:
    """Return ``{signal: RuleSpec}`` from the shipped rule pack (detector spec validated by the schema).

    ``sustained`` sets ``sustained: true`` on the detectors that take it (all but ``threshold``); the
    shipped spend and refusal rules set it themselves.
    """
    import yaml
    from pydantic import TypeAdapter

    from ..rules.schema import DetectorSpec

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    by_alert = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    out = {}
    for signal, alert in SIGNAL_RULE.items():
        rule = by_alert[alert]
        det = dict(rule["detector"])
        if sustained and det["kind"] in ("rolling", "ewma", "seasonal", "auto", "rate"):
            det["sustained"] = True
        spec = TypeAdapter(DetectorSpec).validate_python(det)
        out[signal] = RuleSpec(spec, rule.get("min_value"), rule.get("max_value"))
    return out


@dataclass
class SeriesRun:
    """One series scored by its rule: flags per minute (after floors) and the page minutes."""

    name: str
    flags: np.ndarray[Any, np.dtype[np.bool_]]
    pages: list[int]
    ready: int


def run_series(s: SimSeries, rule: RuleSpec, for_minutes: int, floors: bool) -> SeriesRun:
    """Score one series with a fresh detector of its rule and return its flags and pages."""
    from ..detectors import make_detector

    ts = START + MINUTE * np.arange(N, dtype=np.float64)
    det = make_detector(rule.detector)
    flags = np.zeros(N, dtype=bool)
    ready = 0
    counts = s.counts.tolist() if s.counts is not None else [None] * N
    for i, (t, v, c) in enumerate(zip(ts.tolist(), s.values.tolist(), counts, strict=True)):
        verdict = det.update(t, v, c)
        if verdict is None or not verdict.ready:
            continue
        ready += 1
        flag = verdict.anomalous
        if floors and flag:
            if rule.min_value is not None and not v >= rule.min_value:
                flag = False
            if rule.max_value is not None and not v <= rule.max_value:
                flag = False
        flags[i] = flag
    return SeriesRun(s.name, flags, pages_of(flags, for_minutes), ready)


def pages_of(flags: np.ndarray[Any, np.dtype[np.bool_]], for_minutes: int) -> list[int]:
    """Return the minutes that page: a run of flagged minutes pages once, ``for_minutes`` after its start.

    A minute with no flag (or no point) ends the run, as a rule whose condition stops holding.
    """
    pages: list[int] = []
    start = -1
    paged = False
    for i, f in enumerate(flags.tolist()):
        if f:
            if start < 0:
                start, paged = i, False
            if not paged and i - start >= for_minutes:
                pages.append(i)
                paged = True
        else:
            start = -1
    return pages


def score(suite: Suite, runs: dict[str, SeriesRun]) -> dict[str, Any]:
    """Return incidents caught with minutes to page, false episodes (and the traps they fall in)."""
    incidents = []
    claimed: dict[str, set[int]] = {k: set() for k in runs}
    for e in suite.events:
        if not e.incident:
            continue
        pages = [p for p in runs[e.series].pages if e.start <= p <= e.start + e.minutes + GRACE]
        claimed[e.series].update(pages)
        incidents.append(
            {
                "incident": e.name,
                "series": e.series,
                "what": e.what,
                "caught": bool(pages),
                "minutes_to_page": (pages[0] - e.start) if pages else None,
            }
        )
    false = []
    for name, r in runs.items():
        for p in r.pages:
            if p < EVAL_FROM or p in claimed[name]:
                continue
            trap = next(
                (
                    e.name
                    for e in suite.events
                    if not e.incident
                    and e.series in (name, "*")
                    and e.start <= p <= e.start + min(e.minutes, 1440) + GRACE
                ),
                "",
            )
            false.append(
                {
                    "series": name,
                    "minute": p,
                    "day": p // 1440,
                    "utc": f"{(p % 1440) // 60:02d}:{p % 60:02d}",
                    "trap": trap,
                }
            )
    return {
        "caught": sum(i["caught"] for i in incidents),
        "incidents": incidents,
        "false_episodes": len(false),
        "false": false,
        "flags_per_10k": {
            n: (1e4 * float(r.flags[EVAL_FROM:].sum()) / max(1, r.ready)) for n, r in runs.items()
        },
    }


def run(
    for_minutes: int = 5,
    floors: bool = True,
    seed: int = SEED,
    only: Sequence[str] = (),
    sustained: bool = False,
) -> dict[str, Any]:
    """Build the suite, score every series with its shipped rule and return the results."""
    suite = build(seed)
    rules = shipped_rules(sustained=sustained)
    runs = {}
    for s in suite.series:
        if only and not any(o in s.name for o in only):
            continue
        runs[s.name] = run_series(s, rules[s.signal], for_minutes, floors)
    suite.events = [e for e in suite.events if e.series in runs or e.series == "*"]
    return score(suite, runs)


def markdown(res: dict[str, Any], for_minutes: int, floors: bool, sustained: bool = False) -> str:
    """Return the per-incident table and the false episodes as Markdown."""
    n_inc = len(res["incidents"])
    lines = [
        f"LLM suite (seed {SEED}): {res['caught']}/{n_inc} incidents paged, {res['false_episodes']} false "
        f"episodes in weeks 3–5; shipped rules' detectors, for: {for_minutes}m, "
        f"floors {'on' if floors else 'off'}{', sustained: true' if sustained else ''}",
        "",
        "| incident | series | what | paged | minutes to page |",
        "|---|---|---|---|---|",
    ]
    for i in res["incidents"]:
        mtp = "–" if i["minutes_to_page"] is None else str(i["minutes_to_page"])
        lines.append(
            f"| {i['incident']} | {i['series']} | {i['what']} | {'yes' if i['caught'] else 'no'} | {mtp} |"
        )
    if res["false"]:
        lines += ["", "| false episode: series | day | UTC | inside trap |", "|---|---|---|---|"]
        for f in res["false"]:
            lines.append(f"| {f['series']} | {f['day']} | {f['utc']} | {f['trap'] or '–'} |")
    lines += ["", "| series | flags/10k ready points, weeks 3–5 |", "|---|---|"]
    for n, v in res["flags_per_10k"].items():
        lines.append(f"| {n} | {v:.1f} |")
    return "\n".join(lines)
