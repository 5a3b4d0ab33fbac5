"""Charts: a real PNG with the band and the anomalous span; failures return None, never raise."""

from __future__ import annotations

import logging
import math

import pytest

from watcher.notify.charts import flagged_runs, render_chart

PNG = b"\x89PNG\r\n\x1a\n"


def test_chart_is_a_png_of_the_right_size() -> None:
    ts = [1_764_165_900.0 + 60 * i for i in range(120)]
    values = [1.0 + 0.1 * math.sin(i / 5) for i in range(120)]
    values[100:110] = [5.0] * 10
    png = render_chart(
        ts,
        values,
        lower=[0.8] * 120,
        upper=[1.3] * 120,
        expected=[1.0] * 120,
        anomalous=[v > 1.3 for v in values],
        title="SpendAnomaly {tenant=acme}",
        unit="USD/h",
    )
    assert png is not None and png.startswith(PNG)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (800, 300)


def test_spans_of_consecutive_anomalies() -> None:
    assert flagged_runs([1, 2, 3, 4, 5, 6], [False, True, True, False, True, True]) == [(2, 3), (5, 6)]


@pytest.mark.parametrize(("ts", "values"), [([], []), ([1.0, 2.0], [1.0])])
def test_bad_input_returns_none_and_logs(
    ts: list[float], values: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert render_chart(ts, values) is None
    assert "chart rendering failed" in caplog.text
