"""Seven days of LLM metrics as the hooks name them, as OpenMetrics text for ``promtool`` backfill.

This module owns a deterministic synthetic history of ``llm_*`` counters and the TTFT histogram
(one sample every 2 minutes, daily seasonality, ±10% jitter per sample) with two planted incidents,
plus the exact ratios the pack's PromQL must find in it. It does not own starting Prometheus
(``tests/prom.py``) nor any assertion.

Traffic per tenant: ``calls(t) = base · f(t) · jitter`` calls per minute, ``f`` = 1 at 03:00 UTC
rising to 3 at 15:00 UTC. Every call costs $0.001 and uses 500 input + 150 output tokens; 2% are
refused, 1% fail; TTFT is ≤ 0.25 s for 50%, ≤ 0.5 s for 40% and ≤ 0.75 s for 10% of calls
(p95 by linear interpolation: 0.625 s). The ratios hold exactly in every minute, so PromQL ratios
of increases are exact whatever Prometheus's extrapolation.

Incidents (the only times anything is abnormal):

* ``acme-night-loop``: tenant acme makes 3.5x its calls for 2 h from 02:00 UTC on day 5, which is
  about the level of its normal 15:00 peak: only a seasonal baseline can tell;
* ``beta-burst``: tenant beta spends ~$36/h for 90 min from 10:00 UTC on day 6 (a budget burn
  of ~26x a $1000/month budget, and a spend anomaly too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from watcher.core import from_epoch
from watcher.instrument.metrics import TTFT_BUCKETS

DAY = 86_400
STEP = 120
"""Seconds between samples: enough for rate(…[5m]), and promtool 2.42 backfills it in seconds."""
COST_PER_CALL = 0.001
INPUT_TOKENS, OUTPUT_TOKENS = 500, 150
REFUSED, ERRORS = 0.02, 0.01
TTFT_SHARES = ((0.25, 0.5), (0.5, 0.4), (0.75, 0.1))  # (upper bound, share of calls)
TTFT_P95 = 0.625
BASE_CALLS = {"acme": 20.0, "beta": 10.0}
LABELS = 'provider="openai",model="gpt-4o"'


@dataclass(frozen=True)
class History:
    """A generated history: its range, incidents and the OpenMetrics text."""

    start: int
    end: int
    acme_loop: tuple[int, int]
    beta_burst: tuple[int, int]
    text: str

    def at(self, ts: int) -> datetime:
        """Return ``ts`` as a UTC datetime."""
        return from_epoch(ts)


def daily(ts: np.ndarray) -> np.ndarray:
    """Return the daily traffic factor: 1 at 03:00 UTC, 3 at 15:00 UTC."""
    phase = (ts % DAY) / DAY - 3 / 24
    return 1.0 + (1.0 - np.cos(2 * math.pi * phase))


def generate(end: int, days: int = 7, seed: int = 5) -> History:
    """Return ``days`` of history ending at ``end`` (Unix seconds, a whole minute, ≥ 3 h ago)."""
    start = end - days * DAY
    ts = np.arange(start, end + 1, STEP, dtype=np.int64)
    day5 = (start // DAY + 5) * DAY
    acme_loop = (day5 + 2 * 3600, day5 + 4 * 3600)
    beta_burst = (day5 + DAY + 10 * 3600, day5 + DAY + 11 * 3600 + 1800)
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    for tenant, base in BASE_CALLS.items():
        calls = base * STEP / 60 * daily(ts.astype(np.float64)) * rng.uniform(0.9, 1.1, len(ts))
        if tenant == "acme":
            calls = np.where((ts >= acme_loop[0]) & (ts < acme_loop[1]), calls * 3.5, calls)
        else:
            calls = np.where((ts >= beta_burst[0]) & (ts < beta_burst[1]), 600.0 * STEP / 60, calls)
        total = np.cumsum(calls)
        lab = f'{LABELS},tenant="{tenant}",feature="chat"'
        call_lab = f'{LABELS},operation="chat",tenant="{tenant}",feature="chat"'
        lines += _counter("llm_cost_usd", lab, ts, total * COST_PER_CALL)
        lines += _counter("llm_tokens", lab + ',type="input"', ts, total * INPUT_TOKENS)
        lines += _counter("llm_tokens", lab + ',type="output"', ts, total * OUTPUT_TOKENS)
        lines += _counter("llm_refusals", lab + ',reason="content_filter"', ts, total * REFUSED)
        for outcome, share in (("ok", 1 - REFUSED - ERRORS), ("refused", REFUSED), ("error", ERRORS)):
            lines += _counter("llm_requests", call_lab + f',outcome="{outcome}"', ts, total * share)
        if tenant == "acme":
            lines += _histogram(call_lab, ts, total)
    # A feature that is used (5 calls a minute) but never refused: no llm_refusals_total series.
    search = np.cumsum(np.full(len(ts), 5.0 * STEP / 60))
    lab = f'{LABELS},tenant="acme",feature="search"'
    call_lab = f'{LABELS},operation="chat",tenant="acme",feature="search",outcome="ok"'
    lines += _counter("llm_requests", call_lab, ts, search)
    lines += _counter("llm_tokens", lab + ',type="input"', ts, search * INPUT_TOKENS)
    lines += _counter("llm_tokens", lab + ',type="output"', ts, search * OUTPUT_TOKENS)
    text = _families(lines)
    return History(int(start), int(end), acme_loop, beta_burst, text)


def _counter(name: str, labels: str, ts: np.ndarray, values: np.ndarray) -> list[str]:
    return _counter_raw(f"{name}_total", labels, ts, values)


def _histogram(labels: str, ts: np.ndarray, total: np.ndarray) -> list[str]:
    """Return the cumulative TTFT buckets (only the bounds that matter, to keep the backfill small)."""
    out: list[str] = []
    for le in (0.1, 0.25, 0.5, 0.75, 1.0, math.inf):
        assert math.isinf(le) or le in TTFT_BUCKETS
        share = sum(s for bound, s in TTFT_SHARES if bound <= le)
        le_text = "+Inf" if math.isinf(le) else repr(float(le))
        bucket = f'{labels},le="{le_text}"'
        out += _counter_raw("llm_time_to_first_token_seconds_bucket", bucket, ts, total * share)
    return out


def _counter_raw(name: str, labels: str, ts: np.ndarray, values: np.ndarray) -> list[str]:
    return [f"{name}{{{labels}}} {v:.6f} {t}" for t, v in zip(ts.tolist(), values.tolist(), strict=True)]


def _families(lines: list[str]) -> str:
    """Group sample lines into metric families with TYPE lines, as OpenMetrics requires."""
    families: dict[str, list[str]] = {}
    for line in lines:
        metric = line.split("{", 1)[0]
        for suffix in ("_total", "_bucket", "_count", "_sum"):
            if metric.endswith(suffix):
                metric = metric[: -len(suffix)]
                break
        families.setdefault(metric, []).append(line)
    out: list[str] = []
    for family, samples in families.items():
        kind = "histogram" if family.endswith("_seconds") else "counter"
        out.append(f"# TYPE {family} {kind}")
        out += samples
    out.append("# EOF")
    return "\n".join(out) + "\n"
