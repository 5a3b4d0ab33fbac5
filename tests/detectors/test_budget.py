"""The ``budget`` detector: period arithmetic, burn rates, and the forecast at a fixed ``now``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from watcher.detectors import make_detector
from watcher.detectors.budget import BudgetBurn, Forecast, money, period_bounds
from watcher.detectors.checkpoint import get_state, set_state
from watcher.rules.schema import BudgetDetector

H = 3600.0


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


PERIODS = [
    # (point, period, start, end)
    (_ts(2026, 12, 7, 10, 5), "month", _ts(2026, 12, 1), _ts(2027, 1, 1)),
    (_ts(2026, 12, 7, 10, 5), "day", _ts(2026, 12, 7), _ts(2026, 12, 8)),
    (_ts(2028, 2, 29, 23, 55), "month", _ts(2028, 2, 1), _ts(2028, 3, 1)),  # leap year
    (_ts(2027, 1, 1), "month", _ts(2026, 12, 1), _ts(2027, 1, 1)),  # on the boundary: the month it closes
    (_ts(2027, 1, 1, 0, 5), "month", _ts(2027, 1, 1), _ts(2027, 2, 1)),
    (_ts(2026, 12, 8), "day", _ts(2026, 12, 7), _ts(2026, 12, 8)),
]


@pytest.mark.parametrize(("ts", "period", "start", "end"), PERIODS)
def test_period_bounds(ts: float, period: str, start: float, end: float) -> None:
    assert period_bounds(ts, period) == (start, end)


NOW = _ts(2026, 12, 7, 12)
END = _ts(2027, 1, 1)
FORECASTS = [
    # (spent, rate $/h, text)
    (3100.0, 5.0, "at this rate acme exceeds $5,000 on Dec 23 ($3,100 spent this month, 62%)"),
    (
        3100.0,
        0.5,
        "at this rate acme stays within $5,000 (forecast $3,394 by Dec 31; $3,100 spent this month, 62%)",
    ),  # 588 h left
    (
        3100.0,
        0.0,
        "at this rate acme stays within $5,000 (forecast $3,100 by Dec 31; $3,100 spent this month, 62%)",
    ),
    (4999.0, 1.0, "at this rate acme exceeds $5,000 on Dec 7 ($4,999 spent this month, 100%)"),
    (5200.0, 1.0, "acme has exceeded $5,000 ($5,200 spent this month, 104%)"),  # when: unknown
]


@pytest.mark.parametrize(("spent", "rate", "text"), FORECASTS)
def test_forecast_text_at_a_fixed_now(spent: float, rate: float, text: str) -> None:
    f = Forecast("acme", 5000.0, spent, rate / H, NOW, "month", END)
    assert f.text() == text


def test_forecast_of_an_exceeded_budget_says_when() -> None:
    f = Forecast("acme", 5000.0, 5200.0, 1.0 / H, NOW, "month", END, exceeded_at=_ts(2026, 12, 5, 9))
    assert f.text() == "acme exceeded $5,000 on Dec 5 ($5,200 spent this month, 104%)"
    assert f.exhausted_at == _ts(2026, 12, 5, 9)


def test_forecast_arithmetic() -> None:
    f = Forecast("acme", 5000.0, 3100.0, 5.0 / H, NOW, "month", END)
    assert f.exhausted_at == pytest.approx(NOW + 1900 / 5 * H)  # 380 h after Dec 7 12:00: Dec 23 08:00
    assert datetime.fromtimestamp(f.exhausted_at or 0, UTC) == datetime(2026, 12, 23, 8, tzinfo=UTC)
    assert f.projected == pytest.approx(3100 + 5 * (END - NOW) / H)
    daily = Forecast("", 200.0, 150.0, 25.0 / H, NOW, "day", _ts(2026, 12, 8))
    assert daily.text() == "at this rate the budget exceeds $200 at 14:00 UTC ($150 spent today, 75%)"


def test_money() -> None:
    assert [money(x) for x in (5000, 12.345, 0, 1234567.8, -3)] == [
        "$5,000",
        "$12.35",
        "$0.00",
        "$1,234,568",
        "-$3.00",
    ]
    assert money(250, "€") == "€250"


def _budget(**kw: object) -> BudgetBurn:
    spec = BudgetDetector.model_validate({"kind": "budget", "amount": 744, **kw})
    det = make_detector(spec, "acme")
    assert isinstance(det, BudgetBurn)
    return det


def _feed(det: BudgetBurn, start: float, hours: float, per_hour: float, step: float = 300.0) -> list[float]:
    """Feed ``hours`` of 5-minute points spending ``per_hour``; return the points' times."""
    out = []
    n = round(hours * H / step)
    for k in range(1, n + 1):
        t = start + k * step
        det.update(t, per_hour * step / H)
        out.append(t)
    return out


# January: 744 h, so a budget of $744 is $1/h at the even rate.
JAN = _ts(2027, 1, 1)


def test_both_windows_of_a_pair_must_burn() -> None:
    det = _budget()
    _feed(det, JAN, 10, 1.0)  # the even rate: burn 1
    assert det.spent == pytest.approx(10.0)
    # $20/h for 25 minutes: the 5m window burns 20x, the 1h one (25/60·20 + 35/60·1) = 8.9x
    _feed(det, JAN + 10 * H, 25 / 60, 20.0)
    last = det.update(JAN + 10 * H + 30 * 60, 20.0 * 300 / H)
    assert last is not None and not last.anomalous
    # ten more minutes: 1h window (40/60·20 + 20/60·1) = 13.7x, then 45 minutes: 15.25x
    _feed(det, JAN + 10.5 * H, 10 / 60, 20.0)
    v = det.update(JAN + 10.5 * H + 15 * 60, 20.0 * 300 / H)
    assert v is not None and v.anomalous
    assert v.value == pytest.approx(45 / 60 * 20 + 15 / 60 * 1)
    assert v.upper == 14.4 and v.expected == 1.0
    assert v.score > 0 and v.surprise > 0
    assert v.note.startswith("at this rate acme exceeds $744 on Jan ")
    # the spending stops: the 5m window resets the alert at the next point; the value is then the
    # burn of the pair nearest to firing (6h & 30m; the smaller: 6h): in 6h, 9 points at $20/h
    # ($15) and 63 at $1/h ($5.25)
    stop = det.update(JAN + 10.5 * H + 20 * 60, 1.0 * 300 / H)
    assert stop is not None and not stop.anomalous
    assert stop.upper == 6.0 and stop.value == pytest.approx((15 + 5.25) / 6)


def test_slow_pair_fires_on_a_long_moderate_burn() -> None:
    det = _budget()
    points = _feed(det, JAN, 7, 8.0)  # 8x for 7h: the 6h pair (> 6x) fires, the 1h pair (> 14.4x) never
    v = det.update(points[-1] + 300, 8.0 * 300 / H)
    assert v is not None and v.anomalous
    assert v.value == pytest.approx(8.0) and v.upper == 6.0
    only_all = _budget(require="all")
    points = _feed(only_all, JAN, 7, 8.0)
    w = only_all.update(points[-1] + 300, 8.0 * 300 / H)
    assert w is not None and not w.anomalous


def test_no_rows_is_no_data_and_spends_nothing() -> None:
    det = _budget()
    _feed(det, JAN, 1, 30.0)
    v = det.update(JAN + 1 * H + 300, math.nan)
    assert v is not None and not v.ready and v.reason == "no data"
    assert det.spent == pytest.approx(30.0)
    w = det.update(JAN + 1 * H + 600, 30.0 * 300 / H)
    assert w is not None and w.ready
    assert det.spent == pytest.approx(32.5)
    assert w.value == pytest.approx(27.5)  # 1h: 11 points of $2.50 (the NaN one spent nothing); 5m: 30x


def test_a_new_period_starts_from_zero() -> None:
    det = _budget(period="day", amount=24)
    _feed(det, _ts(2027, 1, 1), 24, 2.0)
    assert det.spent == pytest.approx(48.0)
    assert det.exceeded_at == _ts(2027, 1, 1, 12)
    det.update(_ts(2027, 1, 2, 0, 5), 1.0)
    assert det.spent == 1.0 and det.exceeded_at is None


def test_amounts_per_key() -> None:
    spec = BudgetDetector.model_validate({"kind": "budget", "amount": 100, "amounts": {"acme": 5000}})
    assert isinstance(make_detector(spec, "acme"), BudgetBurn)
    assert make_detector(spec, "acme").amount == 5000  # type: ignore[attr-defined]
    assert make_detector(spec, "beta").amount == 100  # type: ignore[attr-defined]
    assert make_detector(spec).amount == 100  # type: ignore[attr-defined]


def test_checkpoint_round_trip_gives_the_same_verdicts() -> None:
    det = _budget()
    _feed(det, JAN, 5, 3.0)
    blob = get_state(det)
    again = set_state(_budget(), blob)
    t = JAN + 5 * H + 300
    assert det.update(t, 2.0) == again.update(t, 2.0)


def test_stale_points_are_ignored() -> None:
    det = _budget()
    det.update(JAN + 600, 1.0)
    assert det.update(JAN + 300, 1.0) is None
    assert det.spent == 1.0


def test_forecast_of_the_last_point() -> None:
    det = _budget()
    assert det.forecast() is None
    _feed(det, JAN, 6, 2.0)
    f = det.forecast()
    assert f is not None
    assert f.spent == pytest.approx(12.0) and f.rate * H == pytest.approx(2.0)
    assert f.exhausted_at == pytest.approx(JAN + 6 * H + (744 - 12) / 2 * H)


def test_the_default_windows_are_the_prometheus_packs() -> None:
    spec = BudgetDetector.model_validate({"kind": "budget", "amount": 1})
    got = [(w.long, w.short, w.burn) for w in spec.windows]
    assert got == [
        (timedelta(hours=1), timedelta(minutes=5), 14.4),
        (timedelta(hours=6), timedelta(minutes=30), 6.0),
    ]
