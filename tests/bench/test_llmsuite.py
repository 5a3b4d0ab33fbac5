"""The LLM-suite simulator: deterministic, the shapes it claims, events where it says, and scoring."""

from __future__ import annotations

import numpy as np
import pytest

from watcher.bench import llmsuite as L


@pytest.fixture(scope="module")
def suite() -> L.Suite:
    return L.build()


def test_the_suite_is_deterministic_and_holds_nine_series_of_five_weeks(suite: L.Suite) -> None:
    again = L.build()
    assert [s.name for s in suite.series] == [s.name for s in again.series]
    assert len(suite.series) == 9
    for a, b in zip(suite.series, again.series, strict=True):
        assert len(a.values) == L.N == 35 * 1440
        np.testing.assert_array_equal(a.values, b.values)


def test_five_incidents_and_the_traps_lie_in_weeks_three_to_five(suite: L.Suite) -> None:
    incidents = [e for e in suite.events if e.incident]
    traps = [e for e in suite.events if not e.incident]
    assert len(incidents) == 5 and len(traps) >= 4
    assert all(e.start >= L.EVAL_FROM for e in suite.events)
    names = {s.name for s in suite.series}
    assert all(e.series in names or e.series == "*" for e in suite.events)


def test_spend_is_zero_inflated_at_night_and_the_runaway_is_four_times_the_night(suite: L.Suite) -> None:
    globex = next(s for s in suite.series if s.name == "spend.globex")
    runaway = next(e for e in suite.events if e.name == "night-runaway")
    local_hour = ((np.arange(L.N) / 60.0) + 1.0) % 24.0
    night = (local_hour >= 2) & (local_hour < 5) & (np.arange(L.N) < L.EVAL_FROM)
    assert 0.05 < float(np.mean(globex.values[night] == 0.0)) < 0.5
    during = globex.values[runaway.start : runaway.start + runaway.minutes]
    assert 2.5 < float(np.mean(during)) / float(np.mean(globex.values[night])) < 6.0
    day = (local_hour >= 13) & (local_hour < 15)
    assert float(np.mean(during)) < 0.5 * float(np.mean(globex.values[day]))  # far below the day


def test_the_shipped_rules_give_each_signal_a_detector_and_floors() -> None:
    rules = L.shipped_rules()
    assert set(rules) == {"spend", "refusal", "ttft", "grounded"}
    assert rules["spend"].detector.kind == "seasonal" and rules["spend"].detector.direction == "up"
    assert rules["grounded"].detector.direction == "down" and rules["grounded"].max_value == 0.8


def test_scoring_counts_caught_incidents_minutes_to_page_and_false_episodes() -> None:
    inc = L.Event("x", "a", L.EVAL_FROM + 100, 60, True, "")
    trap = L.Event("t", "a", L.EVAL_FROM + 1000, 1, False, "")
    suite = L.Suite(series=[], events=[inc, trap])
    flags = np.zeros(L.N, dtype=bool)
    runs = {"a": L.SeriesRun("a", flags, [L.EVAL_FROM + 107, L.EVAL_FROM + 1005, L.EVAL_FROM + 5000, 10], 1)}
    res = L.score(suite, runs)
    assert res["caught"] == 1 and res["incidents"][0]["minutes_to_page"] == 7
    # The page at minute 10 is in the warm-up weeks: not counted.
    assert res["false_episodes"] == 2
    assert [f["trap"] for f in res["false"]] == ["t", ""]


def test_a_run_of_flags_pages_once_when_it_has_lasted_for_and_a_gap_restarts_it() -> None:
    flags = np.zeros(30, dtype=bool)
    flags[2:8] = True  # 6 flagged minutes: pages at minute 7 with for 5
    flags[10:14] = True  # 4 minutes: never
    flags[15:22] = True  # pages once, at 20
    assert L.pages_of(flags, 5) == [7, 20]
    assert L.pages_of(flags, 0) == [2, 10, 15]


def test_sustained_sets_the_option_on_the_kinds_that_take_it_only() -> None:
    rules = L.shipped_rules(sustained=True)
    assert rules["spend"].detector.sustained and rules["ttft"].detector.sustained
    assert rules["refusal"].detector.kind == "rate" and rules["refusal"].detector.sustained
    shipped = L.shipped_rules()  # the pack sets it on spend and refusals only
    assert shipped["spend"].detector.sustained and shipped["refusal"].detector.sustained
    assert not shipped["ttft"].detector.sustained and not shipped["grounded"].detector.sustained


def test_sustained_spend_pages_the_night_runaway_without_false_episodes() -> None:
    # The night runaway is ~2 sigma per minute: without sustained evidence it never pages
    # (docs/benchmarks.md).
    # With sustained evidence it pages; the day after the holiday returns to a known level
    # instead of paging as a lasting shift (3 false episodes before that check).
    res = L.run(only=["spend.globex"], sustained=True)
    night = next(i for i in res["incidents"] if i["incident"] == "night-runaway")
    assert night["caught"] and night["minutes_to_page"] <= 15
    assert res["false_episodes"] == 0


def test_the_shipped_rules_page_every_incident_of_the_suite_without_a_false_episode() -> None:
    # As shipped (spend and refusals with sustained evidence): the night runaway and the refusal
    # spike on a few calls a minute page too; none of the four traps does.
    res = L.run()
    assert res["caught"] == 5, res["incidents"]
    assert res["false_episodes"] == 0, res["false"]
    pages = {i["incident"]: i["minutes_to_page"] for i in res["incidents"]}
    assert pages["night-runaway"] <= 15 and pages["refusal-spike"] <= 20, pages
