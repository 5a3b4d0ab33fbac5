"""Charts: a PNG of one series with its expected band and the anomalous span highlighted.

This module owns drawing (matplotlib, the non-interactive Agg canvas, no pyplot global state, so
it is thread-safe) and keeping a drawing failure from ever costing an alert: ``render_chart``
returns None and logs instead of raising. It does not own where the series come from nor attaching
the image (receivers that take files, e.g. Apprise, attach it).

A notification's chart travels through the outbox as a *snapshot*: ``chart_snapshot`` turns the
engine's recent verdicts of the alert's series into a small JSON-ready dict (stored with the outbox
row, so a restarted process can still draw it) and ``snapshot_png`` draws it at delivery time.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..core import Verdict, from_epoch

logger = logging.getLogger(__name__)

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 3.0, 100
CHART_NAME = "chart.png"
MIN_POINTS = 2
"""A series with fewer ready points than this gets no chart."""
MAX_POINTS = 480
"""The newest points a chart shows (8 h of one-minute points): enough on 800 pixels, small in the outbox."""


MARKER_COLOUR = "#7b2cbf"
"""Release markers (deploys, prompt versions, model switches) on charts."""


def _json(x: float) -> float | None:
    return float(f"{x:.6g}") if math.isfinite(x) else None  # PostgreSQL JSON has no NaN


def chart_snapshot(verdicts: Sequence[Verdict], *, title: str = "", unit: str = "") -> dict[str, Any] | None:
    """Return the JSON-ready data of a chart of ``verdicts`` (oldest first), or None if too short.

    Only ready points are kept, the newest ``MAX_POINTS`` of them, numbers to 6 significant digits.
    """
    ready = [v for v in verdicts if v.ready and math.isfinite(v.value)][-MAX_POINTS:]
    if len(ready) < MIN_POINTS:
        return None
    return {
        "title": title,
        "unit": unit,
        "ts": [v.ts for v in ready],
        "value": [_json(v.value) for v in ready],
        "expected": [_json(v.expected) for v in ready],
        "lower": [_json(v.lower) for v in ready],
        "upper": [_json(v.upper) for v in ready],
        "anomalous": [bool(v.anomalous) for v in ready],
    }


def snapshot_png(snapshot: Mapping[str, Any] | None) -> bytes | None:
    """Return the PNG of a ``chart_snapshot`` (None without one, or if drawing fails; never raises)."""
    if not snapshot:
        return None
    try:

        def nums(key: str) -> list[float]:
            return [math.nan if x is None else float(x) for x in snapshot[key]]

        ts, values = nums("ts"), nums("value")
        expected, lower, upper = nums("expected"), nums("lower"), nums("upper")
        anomalous = [bool(x) for x in snapshot["anomalous"]]
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("chart data unreadable, sending without it: %s: %s", type(exc).__name__, exc)
        return None
    has_band = any(math.isfinite(x) for x in lower) and any(math.isfinite(x) for x in upper)
    return render_chart(
        ts,
        values,
        lower=lower if has_band else None,
        upper=upper if has_band else None,
        expected=expected if any(math.isfinite(x) for x in expected) else None,
        anomalous=anomalous,
        title=str(snapshot.get("title") or ""),
        unit=str(snapshot.get("unit") or ""),
    )


def flagged_runs(ts: Sequence[float], flags: Sequence[bool]) -> list[tuple[float, float]]:
    """Return (first, last) timestamps of each run of consecutive flagged points."""
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
    markers: Sequence[tuple[float, str]] = (),
) -> bytes | None:
    """Return a PNG of the series (Unix-second ``timestamps``) with band and anomalies, or None on failure.

    ``markers`` are release markers ``(Unix seconds, title)`` drawn as dashed vertical lines.
    """
    try:
        return _draw(timestamps, values, lower, upper, expected, anomalous, title, unit, markers)
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
    markers: Sequence[tuple[float, str]] = (),
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
        for i, (a, b) in enumerate(flagged_runs(list(timestamps), list(anomalous))):
            pad = (timestamps[1] - timestamps[0]) / 2 if len(timestamps) > 1 else 30.0
            ax.axvspan(
                num(a - pad),
                num(b + pad),
                color="tab:red",
                alpha=0.2,
                label="anomalous" if i == 0 else None,
            )
    draw_markers(ax, [(num(at), text) for at, text in markers if timestamps[0] <= at <= timestamps[-1]])
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


def draw_markers(ax: Any, markers: Sequence[tuple[float, str]]) -> None:
    """Draw release markers ``(x in the axis' date units, title)`` as labelled dashed vertical lines."""
    for i, (x, text) in enumerate(markers):
        ax.axvline(x, color=MARKER_COLOUR, linestyle="--", linewidth=1.2, label="release" if i == 0 else None)
        ax.annotate(
            text[:40],
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color=MARKER_COLOUR,
            rotation=90,
            va="top",
            ha="right",
        )
