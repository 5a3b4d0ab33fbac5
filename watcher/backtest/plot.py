"""``watcher backtest --plot``: one PNG per rule and label set (series, expected band, episodes, incidents).

This module owns drawing with matplotlib's Agg backend (no display needed) and naming the files.
It does not own the replay or the verdicts it draws (``replay``, ``report``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import from_epoch, utc

if TYPE_CHECKING:
    from .report import BacktestReport, Incident

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def plot_name(alert: str, labels: dict[str, str]) -> str:
    """Return a file-system-safe PNG name for one rule and label set."""
    parts = [alert, *(f"{k}={v}" for k, v in sorted(labels.items()))]
    return _UNSAFE.sub("_", "__".join(parts))[:180] + ".png"


def _num(ts: datetime) -> float:
    """Return matplotlib's date number of ``ts`` (what its axes take for a time)."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(ts))  # type: ignore[no-untyped-call]


def write_plots(report: BacktestReport, incidents: Sequence[Incident], out_dir: Path) -> list[Path]:
    """Write one PNG per rule and label set that has verdicts; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rule_labels = {rule.alert: rule.labels for _, rule in report.result.rules}
    for (alert, labels), tr in sorted(
        report.result.verdicts.items(), key=lambda kv: (kv[0][0], repr(kv[0][1]))
    ):
        if not tr.ts:
            continue
        times = [_num(from_epoch(t)) for t in tr.ts]
        fig, ax = plt.subplots(figsize=(11, 3.6), dpi=100)
        try:
            ax.plot(times, tr.value, lw=0.9, color="#1f77b4", label="value")
            lower = [x if math.isfinite(x) else math.nan for x in tr.lower]
            upper = [x if math.isfinite(x) else math.nan for x in tr.upper]
            if any(math.isfinite(x) for x in upper + lower):
                # A one-sided rule has no bound on the side it does not watch: its band runs from
                # the expected value to the bound it has (or the value, with no expected value).
                expected = tr.expected or tr.value
                mid = [e if math.isfinite(e) else v for e, v in zip(expected, tr.value, strict=True)]
                lo = [
                    x if math.isfinite(x) else min(m, u) if math.isfinite(u) else m
                    for x, m, u in zip(lower, mid, upper, strict=True)
                ]
                hi = [
                    x if math.isfinite(x) else max(m, lw) if math.isfinite(lw) else m
                    for x, m, lw in zip(upper, mid, lower, strict=True)
                ]
                ax.fill_between(times, lo, hi, color="#1f77b4", alpha=0.15, lw=0, label="expected band")
            first = True
            for ep in report.result.episodes:
                if ep.alert == alert and ep.labels == labels.merge(rule_labels.get(alert, {})):
                    ax.axvspan(
                        _num(ep.start),
                        _num(ep.end or report.end),
                        color="#d62728",
                        alpha=0.2,
                        label="would have fired" if first else None,
                    )
                    first = False
            first = True
            for inc in incidents:
                if inc.alert not in (None, alert) or any(labels.get(k) != v for k, v in inc.labels.items()):
                    continue
                start = _num(utc(inc.start))
                ax.axvline(start, color="black", ls="--", lw=1, label="incident" if first else None)
                if inc.end is not None:
                    ax.axvline(_num(utc(inc.end)), color="black", ls=":", lw=1)
                first = False
            ax.set_title(f"{alert} {labels!r}", fontsize=9)
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
            ax.legend(loc="upper left", fontsize=7)
            fig.autofmt_xdate()
            path = out_dir / plot_name(alert, dict(labels))
            fig.savefig(path)
            written.append(path)
        finally:
            plt.close(fig)
    return written
