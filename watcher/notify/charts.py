"""Charts: a PNG of one series with its expected band and the anomalous span highlighted.

This module owns drawing (matplotlib, the non-interactive Agg canvas, no pyplot global state, so
it is thread-safe) and keeping a drawing failure from ever costing an alert: ``render_chart``
returns None and logs instead of raising. It does not own where the series come from nor attaching
the image (receivers that take files, e.g. Apprise, attach it).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence

from ..core import from_epoch

logger = logging.getLogger(__name__)

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 3.0, 100


def _spans(ts: Sequence[float], flags: Sequence[bool]) -> list[tuple[float, float]]:
    """Return (start, end) of each run of consecutive anomalous points."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = ts[i]
        if not flag and start is not None:
            spans.append((start, ts[i - 1]))
            start = None
    if start is not None:
        spans.append((start, ts[-1]))
    return spans


def render_chart(
    timestamps: Sequence[float],
    values: Sequence[float],
    *,
    lower: Sequence[float] | None = None,
    upper: Sequence[float] | None = None,
    expected: Sequence[float] | None = None,
    anomalous: Sequence[bool] | None = None,
    title: str = "",
    unit: str = "",
) -> bytes | None:
    """Return a PNG of the series (Unix-second ``timestamps``) with band and anomalies, or None on failure."""
    try:
        return _draw(timestamps, values, lower, upper, expected, anomalous, title, unit)
    except Exception as exc:  # a chart is decoration: never let it stop the notification
        logger.warning("chart rendering failed, sending without it: %s: %s", type(exc).__name__, exc)
        return None


def _draw(
    timestamps: Sequence[float],
    values: Sequence[float],
    lower: Sequence[float] | None,
    upper: Sequence[float] | None,
    expected: Sequence[float] | None,
    anomalous: Sequence[bool] | None,
    title: str,
    unit: str,
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    if len(timestamps) != len(values) or not timestamps:
        raise ValueError(
            f"need equally long, non-empty timestamps and values ({len(timestamps)}/{len(values)})"
        )

    def num(t: float) -> float:
        return float(date2num(from_epoch(t)))  # type: ignore[no-untyped-call]

    when = [num(t) for t in timestamps]
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if lower is not None and upper is not None:
        lo = [x if math.isfinite(x) else math.nan for x in lower]
        hi = [x if math.isfinite(x) else math.nan for x in upper]
        ax.fill_between(when, lo, hi, color="tab:blue", alpha=0.15, linewidth=0, label="expected band")
    if expected is not None:
        ax.plot(when, list(expected), color="tab:blue", linewidth=1, linestyle="--", label="expected")
    ax.plot(when, list(values), color="black", linewidth=1.4, label="value")
    if anomalous is not None:
        for i, (a, b) in enumerate(_spans(list(timestamps), list(anomalous))):
            pad = (timestamps[1] - timestamps[0]) / 2 if len(timestamps) > 1 else 30.0
            ax.axvspan(
                num(a - pad),
                num(b + pad),
                color="tab:red",
                alpha=0.2,
                label="anomalous" if i == 0 else None,
            )
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if unit:
        ax.set_ylabel(unit)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
