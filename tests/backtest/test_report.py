"""``watcher backtest``: replay equals the daemon tick by tick; incidents, JSON and the cache."""

from __future__ import annotations

import io
import itertools
import json
import math
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from watcher import instrument
from watcher.backtest.replay import Episode, replay
from watcher.backtest.report import Incident as Labelled
from watcher.backtest.report import parse_time, run_backtest, score_incidents
from watcher.cli import main
from watcher.cli.demo import Incident, Traffic
from watcher.config import ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.core import AlertState, Notification
from watcher.daemon import Daemon
from watcher.instrument.writer import StoreWriter
from watcher.sources.sql import SqlSource
from watcher.store.db import Store, open_store

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules" / "llm-store.yaml"
END = datetime(2026, 3, 4, tzinfo=UTC)
START = END - timedelta(hours=11)
STEP = timedelta(minutes=5)
INCIDENTS = [
    Incident(
        "grounded",
        END - timedelta(hours=10),
        END - timedelta(hours=8, minutes=30),
        "GroundednessDrop",
        {"feature": "support-rag"},
    ),
    Incident(
        "spend", END - timedelta(hours=3), END - timedelta(hours=2), "SpendAnomaly", {"tenant": "globex"}
    ),
]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Return a SQLite file with three days of demo traffic (through the hooks) and two incidents.

    Three days, because the shipped spend rule's seasonal baseline scores once it holds two.
    """
    db = tmp_path_factory.mktemp("scenario") / "s.db"
    store = open_store(f"sqlite:///{db}")
    traffic = Traffic(3, INCIDENTS)
    writer = StoreWriter(store, batch_size=2000)
    instrument.configure(store, writer=writer, clock=traffic.clock, metrics=False)
    try:
        t = END - timedelta(days=3)
        while t < END:
            traffic.minute(t)
            t += timedelta(minutes=1)
        writer.flush(timeout=60)
    finally:
        instrument.reset()
        writer.close()
        store.close()
    yield db


def expected_chunks(alert: str) -> int:
    """Return how many 2-day chunks the whole-range fetch of a shipped rule takes over START..END."""
    from watcher.backtest.report import load_groups
    from watcher.engine.group import rule_lookback

    ((group, rule),) = [(g, r) for g in load_groups([PACK]) for r in g.rules if r.alert == alert]
    return math.ceil((rule_lookback(rule, group) + rule.evaluation_delay + (END - START)) / timedelta(days=2))


class Recorder:
    name = "rec"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def send(self, n: Notification) -> None:
        self.sent.append(n)


def _daemon_episodes(store: Store) -> list[tuple[str, dict[str, str], datetime, datetime | None, list[str]]]:
    """Run the real daemon tick by tick and collect its episodes (fired_at → resolved_at)."""
    settings = Settings(
        store=StoreSettings(url="sqlite://"),
        rules=[PACK],
        receivers={"console": ReceiverSettings(type="console")},
        route=RouteSettings(receivers=["console"]),
    )
    now = {"t": START}
    daemon = Daemon(settings, store=store, receivers={"console": Recorder()}, clock=lambda: now["t"])
    episodes: dict[tuple[str, datetime], list] = {}
    t = START
    while t <= END:
        now["t"] = t
        for name in list(daemon.evaluators):
            for a in daemon.evaluate_group(name, t).alerts:
                if a.fired_at is None:
                    continue
                key = (a.fingerprint, a.fired_at)
                if key not in episodes and a.state is AlertState.FIRING:
                    episodes[key] = [a.rule, dict(a.labels), a.fired_at, None, []]
                if key in episodes:
                    episodes[key][3] = a.resolved_at
                    episodes[key][4] = [r.trace_id for r in a.traces]
        t += STEP
    assert daemon.notifier is not None
    return sorted((tuple(e) for e in episodes.values()), key=lambda e: (e[0], e[2], repr(e[1])))  # type: ignore[misc]


def _as_tuples(
    episodes: list[Episode],
) -> list[tuple[str, dict[str, str], datetime, datetime | None, list[str]]]:
    return sorted(
        ((e.alert, dict(e.labels), e.start, e.end, e.trace_ids) for e in episodes),
        key=lambda e: (e[0], e[2], repr(e[1])),
    )


def test_backtest_episodes_equal_the_daemon_tick_by_tick(scenario: Path) -> None:
    from watcher.backtest.report import load_groups

    store = open_store(f"sqlite:///{scenario}")
    try:
        sql = SqlSource(store)
        result = replay(load_groups([PACK]), {"calls": sql, "scores": sql}, START, END)
        assert not result.errors
        backtest = _as_tuples(result.episodes)
        daemon = _daemon_episodes(store)
    finally:
        store.close()
    assert {e[0] for e in backtest} >= {"GroundednessDrop", "SpendAnomaly"}
    assert all(len(e[4]) == 5 for e in backtest), "every episode carries its top trace IDs"
    assert backtest == daemon


def test_whole_range_is_fetched_once_per_rule(scenario: Path) -> None:
    from watcher.backtest.report import load_groups

    store = open_store(f"sqlite:///{scenario}")
    calls: list[tuple[str, bool, datetime, datetime]] = []
    sql = SqlSource(store)

    class Counting:
        name = "counting"

        def fetch(self, rule, start, end, step):  # type: ignore[no-untyped-def]
            calls.append((rule.alert, rule.traces.from_ != "none", start, end))
            return sql.fetch(rule, start, end, step)

    try:
        result = replay(load_groups([PACK]), {"calls": Counting(), "scores": Counting()}, START, END)
    finally:
        store.close()
    whole = [c for c in calls if not c[1]]
    assert {c[0] for c in whole} == {
        "SpendAnomaly",
        "RefusalRateHigh",
        "TTFTDegraded",
        "GroundednessDrop",
        "RetrievalRelevanceDrop",
        "EmptyRetrievalsHigh",
        "ScoreCoverageLow",
        "ScoreLagHigh",
        "JudgeErrorRateHigh",
        "GroundednessDrift",
        "TenantBudgetBurn",
    }
    for alert in {c[0] for c in whole}:
        # Once over the whole range, in consecutive chunks of at most 2 days (bounded memory):
        # 7d11h15m for the rolling 7d rules (4 chunks), 21d11h15m for the seasonal one (11).
        chunks = sorted((c[2], c[3]) for c in whole if c[0] == alert)
        assert chunks[0][0] < START - timedelta(days=7) and chunks[-1][1] == END
        assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
        assert all(hi - lo <= timedelta(days=2) for lo, hi in chunks)
        assert len(chunks) == expected_chunks(alert)
    # Trace references are fetched afterwards, a 6h block at a time, only for rules with episodes.
    with_traces = {c[0] for c in calls if c[1]}
    assert with_traces == {e.alert for e in result.episodes}
    # (an episode whose points span three one-hour blocks, GroundednessDrift's, reads three)
    assert len(calls) - len(whole) <= 3 * len(result.episodes)


def test_cli_reports_incidents_and_writes_json(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "inc.yaml").write_text(
        f"""
- {{id: grounded, start: "{INCIDENTS[0].start.isoformat()}", end: "{INCIDENTS[0].end.isoformat()}",
   alert: GroundednessDrop, labels: {{feature: support-rag}}}}
- {{id: spend, start: "{INCIDENTS[1].start.isoformat()}", end: "{INCIDENTS[1].end.isoformat()}"}}
- {{id: never, start: "{(END - timedelta(hours=15)).isoformat()}",
   end: "{(END - timedelta(hours=14)).isoformat()}"}}
"""
    )
    out_json = tmp_path / "bt.json"
    code = main(
        [
            "backtest",
            str(PACK),
            "--store",
            f"sqlite:///{scenario}",
            "--from",
            START.isoformat(),
            "--to",
            END.isoformat(),
            "--incidents",
            str(tmp_path / "inc.yaml"),
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "incidents: 2/3 detected" in text and "never: MISSED" in text
    doc = json.loads(out_json.read_text())
    assert set(doc) >= {"rules", "incidents", "false_episodes", "precision", "recall"}
    assert [r["alert"] for r in doc["rules"]] == [
        "SpendAnomaly",
        "RefusalRateHigh",
        "TTFTDegraded",
        "GroundednessDrop",
        "RetrievalRelevanceDrop",
        "EmptyRetrievalsHigh",
        "ScoreCoverageLow",
        "ScoreLagHigh",
        "JudgeErrorRateHigh",
        "GroundednessDrift",
        "TenantBudgetBurn",
    ]
    ep = doc["rules"][0]["episodes"][0]
    assert (
        set(ep) == {"labels", "start", "end", "peak_value", "trace_ids", "explanation", "release"}
        and ep["labels"]["tenant"] == "globex"
    )
    assert doc["rules"][0]["fires_per_week"] == pytest.approx(7 * 24 / 11, rel=1e-3)
    # the runaway agent loop of globex: its agent feature (always on gpt-4o) spent the difference
    assert ep["explanation"].startswith("sum cost_usd +"), ep["explanation"]
    assert "feature=agent" in ep["explanation"].split("; ")[0] and ep["release"] is None
    by_id = {i["id"]: i for i in doc["incidents"]}
    assert by_id["never"] == {"id": "never", "detected": False, "time_to_detect_s": None}
    assert by_id["spend"]["detected"] and 0 <= by_id["spend"]["time_to_detect_s"] <= 3600
    # GroundednessDrift also sees the groundedness incident (at 15:40, 100 minutes in): the incidents
    # file names GroundednessDrop for it, so the drift rule's episode counts as a false one.
    drift = next(r for r in doc["rules"] if r["alert"] == "GroundednessDrift")["episodes"]
    assert [e["start"] for e in drift] == ["2026-03-03T15:40:00Z"] and INCIDENTS[0].start.hour == 14
    assert doc["false_episodes"] == 1 and doc["precision"] == pytest.approx(2 / 3)
    assert doc["recall"] == pytest.approx(2 / 3)


def test_incident_scoring_counts_false_episodes() -> None:
    from watcher.core import Labels

    t = datetime(2026, 1, 1, tzinfo=UTC)
    eps = [
        Episode("A", "g", Labels(tenant="x"), t + timedelta(minutes=10), t + timedelta(hours=1), 1.0),
        Episode("A", "g", Labels(tenant="y"), t + timedelta(minutes=10), None, 1.0),
        Episode("B", "g", Labels(), t + timedelta(days=1), t + timedelta(days=1, hours=1), 1.0),
    ]
    incs = [
        Labelled(id="i1", start=t, end=t + timedelta(hours=2), alert="A", labels={"tenant": "x"}),
        Labelled(id="i2", start=t + timedelta(days=3), end=None),
    ]
    results, false, precision, recall = score_incidents(eps, incs, t + timedelta(days=4))
    assert [(r.id, r.detected, r.time_to_detect_s) for r in results] == [
        ("i1", True, 600.0),
        ("i2", True, 0.0),
    ]
    assert false == 1 and precision == pytest.approx(2 / 3) and recall == 1.0


def test_parse_time() -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_time("-30d", now) == now - timedelta(days=30)
    assert parse_time("now-1h", now) == now - timedelta(hours=1)
    assert parse_time("2026-01-31", now) == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_time("2026-01-31T12:00Z", now) == datetime(2026, 1, 31, 12, tzinfo=UTC)


def test_run_backtest_without_incidents_has_no_scores(scenario: Path) -> None:
    from watcher.backtest.report import load_groups

    store = open_store(f"sqlite:///{scenario}")
    try:
        sql = SqlSource(store)
        report = run_backtest(
            load_groups([PACK]), {"calls": sql, "scores": sql}, END - timedelta(hours=4), END
        )
    finally:
        store.close()
    assert report.precision is None and report.false_episodes is None


def test_compare_reports_added_episodes_as_markdown(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(PACK.read_text().replace("min_value: 0.5 ", "min_value: 500 "))  # spend never paged
    code = main(
        [
            "backtest",
            str(PACK),
            "--store",
            f"sqlite:///{scenario}",
            "--from",
            START.isoformat(),
            "--to",
            END.isoformat(),
            "--compare",
            str(old),
        ]
    )
    assert code == 0
    md = capsys.readouterr().out
    assert md.startswith(f"### watcher backtest: `{old}` → `{PACK}`")
    assert "| `SpendAnomaly` **changed** | 0 | 1 |" in md
    assert "**Episodes added** (1):\n- `SpendAnomaly`" in md and "**Episodes removed** (0):" in md


def test_plot_writes_one_png_per_rule_and_label_set(scenario: Path, tmp_path: Path) -> None:
    code = main(
        [
            "backtest",
            str(PACK),
            "--store",
            f"sqlite:///{scenario}",
            "--from",
            (END - timedelta(hours=4)).isoformat(),
            "--to",
            END.isoformat(),
            "--plot",
            str(tmp_path / "p"),
        ]
    )
    assert code == 0
    pngs = sorted(p.name for p in (tmp_path / "p").glob("*.png"))
    assert "SpendAnomaly__tenant=globex.png" in pngs and len(pngs) >= 8
    assert (tmp_path / "p" / "SpendAnomaly__tenant=globex.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_compare_against_a_git_ref_reports_episodes_fires_and_incidents(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # v1 never pages on spend; v2 (HEAD) fixes that but raises the groundedness floor out of reach.
    repo = tmp_path / "repo"
    (repo / "rules").mkdir(parents=True)
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "ci@example.com")
    _git(repo, "config", "user.name", "CI")
    pack = repo / "rules" / "llm.yaml"
    v1 = PACK.read_text().replace("min_value: 0.5 ", "min_value: 500 ")
    pack.write_text(v1)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "rules v1")
    pack.write_text(PACK.read_text().replace("max_value: 0.8 ", "max_value: 0.1 "))
    _git(repo, "commit", "-q", "-am", "rules v2: threshold change")
    inc = tmp_path / "inc.yaml"
    inc.write_text(
        f"""
- {{id: grounded, start: "{INCIDENTS[0].start.isoformat()}", end: "{INCIDENTS[0].end.isoformat()}"}}
- {{id: spend, start: "{INCIDENTS[1].start.isoformat()}", end: "{INCIDENTS[1].end.isoformat()}"}}
"""
    )
    code = main(
        [
            "backtest",
            str(repo / "rules"),
            "--store",
            f"sqlite:///{scenario}",
            "--from",
            START.isoformat(),
            "--to",
            END.isoformat(),
            "--incidents",
            str(inc),
            "--compare",
            "HEAD~1",
        ]
    )
    assert code == 0
    md = capsys.readouterr().out
    assert md.startswith("### watcher backtest: `HEAD~1` → `working tree`")
    weekly = 7 * 24 / 11  # one episode in 11 hours
    assert f"| `SpendAnomaly` **changed** | 0 | 1 | 0.00 | {weekly:.2f} |" in md
    assert f"| `GroundednessDrop` **changed** | 1 | 0 | {weekly:.2f} | 0.00 |" in md
    assert "| `TTFTDegraded` | 0 | 0 | 0.00 | 0.00 |" in md
    added = md.split("**Episodes added** (1):\n")[1].split("\n")[0]
    removed = md.split("**Episodes removed** (1):\n")[1].split("\n")[0]
    assert added.startswith('- `SpendAnomaly` `{severity="page", team="platform", tenant="globex"}`')
    assert removed.startswith("- `GroundednessDrop`") and 'feature="support-rag"' in removed
    assert "**Incidents**: gained spend; lost grounded; recall 0.50 → 0.50" in md


def test_compare_with_an_unknown_git_ref_is_a_clear_error(
    scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    (repo / "rules").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "rules" / "llm.yaml").write_text(PACK.read_text())
    args = ["backtest", str(repo / "rules"), "--store", f"sqlite:///{scenario}", "--from", START.isoformat()]
    code = main([*args, "--to", END.isoformat(), "--compare", "v9-does-not-exist"])
    assert code != 0
    assert "v9-does-not-exist" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_goes_to_stderr(
    scenario: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["backtest", str(PACK), "--store", f"sqlite:///{scenario}", "--from", START.isoformat()]
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert main([*args, "--to", END.isoformat()]) == 0
    drawn = term.getvalue()
    assert "backtest" in drawn and "100%" in drawn and "\x1b[" in drawn  # a live, coloured bar
    assert "100%" not in capsys.readouterr().out  # the report stays clean for redirection

    plain = io.StringIO()  # not a terminal (CI, a pipe): no bar at all
    monkeypatch.setattr("sys.stderr", plain)
    assert main([*args, "--to", END.isoformat()]) == 0
    assert plain.getvalue() == ""


def _pixels_near(png: Path, rgb: tuple[int, int, int], tol: int = 6) -> int:
    import matplotlib.image as mpimg
    import numpy as np

    img = (mpimg.imread(str(png))[..., :3] * 255).round()
    return int((np.abs(img - np.array(rgb)).max(axis=-1) <= tol).sum())


def test_plot_shades_episodes_and_marks_incidents(scenario: Path, tmp_path: Path) -> None:
    (tmp_path / "inc.yaml").write_text(
        f'- {{id: spend, start: "{INCIDENTS[1].start.isoformat()}", end: "{INCIDENTS[1].end.isoformat()}",'
        " labels: {tenant: globex}}\n"
    )
    args = ["backtest", str(PACK), "--store", f"sqlite:///{scenario}"]
    args += ["--incidents", str(tmp_path / "inc.yaml")]
    start = (END - timedelta(hours=4)).isoformat()
    assert main([*args, "--from", start, "--to", END.isoformat(), "--plot", str(tmp_path / "p")]) == 0
    fired = tmp_path / "p" / "SpendAnomaly__tenant=globex.png"
    quiet = next(p for p in (tmp_path / "p").glob("SpendAnomaly__*.png") if p != fired)
    shade = (247, 212, 212)  # #d62728 at alpha 0.2 over white: the would-have-fired span
    assert _pixels_near(fired, shade) > 2000 and _pixels_near(quiet, shade) == 0

    # The incident's start (a black dashed line across the plot) is drawn on globex only; the other
    # full-height black columns are the two spines of the axes.
    def black_columns(png: Path) -> int:
        return int((_pixels_near_mask(png, (0, 0, 0)).sum(axis=0) > 100).sum())

    assert black_columns(quiet) == 2 and black_columns(fired) == 3


def _pixels_near_mask(png: Path, rgb: tuple[int, int, int], tol: int = 40) -> Any:
    import matplotlib.image as mpimg
    import numpy as np

    img = (mpimg.imread(str(png))[..., :3] * 255).round()
    return np.abs(img - np.array(rgb)).max(axis=-1) <= tol


def test_compare_fetches_an_unchanged_query_once(scenario: Path, tmp_path: Path) -> None:
    from watcher.backtest.compare import compare_main

    old = tmp_path / "old.yaml"
    old.write_text(PACK.read_text().replace("min_value: 0.5 ", "min_value: 500 "))
    store = open_store(f"sqlite:///{scenario}")
    sql = SqlSource(store)
    fetched: list[tuple[str, bool]] = []

    class Counting:
        name = "counting"

        def fetch(self, rule, start, end, step):  # type: ignore[no-untyped-def]
            fetched.append((rule.alert, rule.traces.from_ != "none"))
            return sql.fetch(rule, start, end, step)

    out = io.StringIO()
    try:
        src = Counting()
        assert compare_main(str(old), [str(PACK)], {"calls": src, "scores": src}, START, END, None, out) == 0
    finally:
        store.close()
    assert "| `SpendAnomaly` **changed** | 0 | 1 |" in out.getvalue()
    whole = [alert for alert, traces in fetched if not traces]
    # Only the floor changed: both versions replay the same whole-range fetch (once per rule).
    assert sorted(set(whole)) == [
        "EmptyRetrievalsHigh",
        "GroundednessDrift",
        "GroundednessDrop",
        "JudgeErrorRateHigh",
        "RefusalRateHigh",
        "RetrievalRelevanceDrop",
        "ScoreCoverageLow",
        "ScoreLagHigh",
        "SpendAnomaly",
        "TTFTDegraded",
        "TenantBudgetBurn",
    ]
    assert len(whole) == sum(expected_chunks(a) for a in set(whole))


def test_jobs_give_the_same_json_report(scenario: Path, tmp_path: Path) -> None:
    # Worker processes fetch and score; the parent evaluates: the report must not depend on jobs.
    docs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"bt-{jobs}.json"
        argv = ["backtest", str(PACK), "--store", f"sqlite:///{scenario}", "--from", START.isoformat()]
        argv += ["--to", END.isoformat(), "--json", str(out), "--jobs", jobs]
        assert main(argv) == 0
        docs[jobs] = out.read_text()
    assert docs["1"] == docs["2"]
    episodes = [e for r in json.loads(docs["1"])["rules"] for e in r["episodes"]]
    assert len(episodes) >= 2 and all(len(e["trace_ids"]) == 5 for e in episodes)


def test_replay_in_workers_equals_in_process(scenario: Path) -> None:
    from watcher.backtest.cache import shared_caches
    from watcher.backtest.parallel import start_workers
    from watcher.backtest.report import load_groups

    groups = load_groups([PACK])
    start = END - timedelta(days=1)
    store = open_store(f"sqlite:///{scenario}")
    try:
        sql = SqlSource(store)
        sources: dict[str, Any] = {"calls": sql, "scores": sql}
        workers = start_workers(shared_caches(sources, start, END), groups, start, END, 2)
        assert workers is not None  # the store is a file: its rules go to worker processes
        workers.close()
        here = replay(groups, sources, start, END, record_verdicts=True, jobs=1)
        there = replay(groups, sources, start, END, record_verdicts=True, jobs=2)
    finally:
        store.close()
    assert there.episodes == here.episodes and there.errors == here.errors == []
    assert (there.ticks, there.evaluations) == (here.ticks, here.evaluations)
    assert there.verdicts.keys() == here.verdicts.keys() and len(here.verdicts) > 0
    for key, trace in here.verdicts.items():
        for name in ("ts", "value", "lower", "upper", "expected"):
            a, b = np.array(getattr(trace, name)), np.array(getattr(there.verdicts[key], name))
            assert a.tobytes() == b.tobytes(), (key, name)


def test_a_shared_fetch_equals_each_rules_own_fetch(scenario: Path, tmp_path: Path) -> None:
    import sqlite3

    from watcher.backtest.prefetch import NO_TRACES
    from watcher.backtest.report import load_groups

    db = tmp_path / "nulls.db"  # the scenario, with a time to first token missing on some calls
    with sqlite3.connect(scenario) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
        dst.execute("UPDATE calls SET ttft_s = NULL WHERE rowid % 5 = 0")

    calls_rules = [r for g in load_groups([PACK]) for r in g.rules if r.source == "calls"]
    pack = [r for r in calls_rules if r.query is not None and r.query.missing_score is None]
    # ScoreCoverageLow judges each point as of its evaluation (missing_score): it never shares
    (coverage,) = [r.model_copy(update={"traces": NO_TRACES}) for r in calls_rules if r not in pack]
    q = pack[0].query
    assert q is not None
    # More shapes than the pack's: two labels, a computed field, a ratio that carries a field
    # with NULLs (it keeps those rows; the others drop them).
    extra = [
        pack[0].model_copy(update={"query": q.model_copy(update={"by": ["tenant", "model"], "agg": "max"})}),
        pack[0].model_copy(update={"query": q.model_copy(update={"field": "total_tokens", "agg": "mean"})}),
        pack[1].model_copy(update={"query": pack[1].query.model_copy(update={"field": "ttft_s"})}),  # type: ignore[union-attr]
        pack[2].model_copy(update={"query": pack[2].query.model_copy(update={"agg": "sum", "by": []})}),  # type: ignore[union-attr]
    ]
    rules = [r.model_copy(update={"traces": NO_TRACES}) for r in [*pack, *extra]]
    store = open_store(f"sqlite:///{db}")
    try:
        sql = SqlSource(store)
        assert len({sql.shared_key(r) for r in rules}) == 1 and sql.shared_key(pack[0]) is None  # traces
        assert coverage.alert == "ScoreCoverageLow" and sql.shared_key(coverage) is None
        # Different ranges and steps, as rules with different lookbacks and windows have.
        requests = [
            (r, END - timedelta(hours=20, minutes=10 * i), END - timedelta(hours=i % 3), STEP * (1 + i % 2))
            for i, r in enumerate(rules)
        ]
        shared = sql.fetch_shared(requests)
        own = [sql.fetch(*req) for req in requests]
    finally:
        store.close()
    assert sum(len(s) for s in own) > len(rules)
    for got, want in zip(shared, own, strict=True):
        assert [s.labels for s in got] == [s.labels for s in want]
        for a, b in zip(got, want, strict=True):
            assert a.timestamps.tobytes() == b.timestamps.tobytes()
            # The same numbers, NaN where no value; sums may differ in the last bits, since the own fetch
            # adds in the database (sources/sqlagg.py) and the shared one in numpy, as differences of
            # running sums: their error is absolute, a few ulps of the fetch's total (a 5-minute window
            # of cents after hours of dollars, TenantBudgetBurn, differs by 2e-12 relative).
            total = float(np.nansum(np.abs(b.values)))
            np.testing.assert_allclose(a.values, b.values, rtol=1e-12, atol=1e-14 * total, equal_nan=True)
            assert a.counts is not None and b.counts is not None
            assert a.counts.tobytes() == b.counts.tobytes()


def test_a_fetch_failing_in_a_worker_is_reported_as_without_workers(scenario: Path) -> None:
    from watcher.backtest.report import load_groups

    groups = load_groups([PACK])
    rule = groups[0].rules[0]
    assert rule.query is not None
    # Not valid on the calls table (model_copy does not validate): the source rejects it.
    bad = rule.model_copy(update={"query": rule.query.model_copy(update={"where": {"bogus": "x"}})})
    groups[0] = groups[0].model_copy(update={"rules": [bad]})
    start = END - timedelta(hours=6)
    store = open_store(f"sqlite:///{scenario}")
    try:
        sql = SqlSource(store)
        sources: dict[str, Any] = {"calls": sql, "scores": sql}
        here = replay(groups, sources, start, END, jobs=1)
        there = replay(groups, sources, start, END, jobs=2)
    finally:
        store.close()
    assert len(here.errors) == 1 and "bogus" in here.errors[0]
    assert there.errors == here.errors and there.episodes == here.episodes
