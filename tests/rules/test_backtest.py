"""``watcher backtest``: replay equals the daemon tick by tick; incidents, JSON and the cache."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from watcher import instrument
from watcher.cli import main
from watcher.config import ReceiverSettings, RouteSettings, Settings, StoreSettings
from watcher.core import AlertState, Notification
from watcher.demo import Incident, Traffic
from watcher.engine.scheduler import Daemon
from watcher.instrument.writer import StoreWriter
from watcher.rules.backtest import Incident as Labelled
from watcher.rules.backtest import parse_time, run_backtest, score_incidents
from watcher.rules.replay import Episode, replay
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
    """Return a SQLite file with two days of demo traffic (through the hooks) and two incidents."""
    db = tmp_path_factory.mktemp("scenario") / "s.db"
    store = open_store(f"sqlite:///{db}")
    traffic = Traffic(3, INCIDENTS)
    writer = StoreWriter(store, batch_size=2000)
    instrument.configure(store, writer=writer, clock=traffic.clock, metrics=False)
    try:
        t = END - timedelta(days=2)
        while t < END:
            traffic.minute(t)
            t += timedelta(minutes=1)
        writer.flush(timeout=60)
    finally:
        instrument.reset()
        writer.close()
        store.close()
    yield db


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
    from watcher.rules.backtest import load_groups

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
    from watcher.rules.backtest import load_groups

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
    assert {c[0] for c in whole} == {"SpendAnomaly", "RefusalRateHigh", "TTFTDegraded", "GroundednessDrop"}
    for alert in {c[0] for c in whole}:
        # Once over the whole range, in consecutive chunks of at most 2 days (bounded memory).
        chunks = sorted((c[2], c[3]) for c in whole if c[0] == alert)
        assert chunks[0][0] < START - timedelta(days=7) and chunks[-1][1] == END
        assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
        assert all(hi - lo <= timedelta(days=2) for lo, hi in chunks) and len(chunks) == 4  # 7d11h15m
    # Trace references are fetched afterwards, a 6h block at a time, only for rules with episodes.
    with_traces = {c[0] for c in calls if c[1]}
    assert with_traces == {e.alert for e in result.episodes}
    assert len(calls) - len(whole) <= 2 * len(result.episodes)


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
    ]
    ep = doc["rules"][0]["episodes"][0]
    assert (
        set(ep) == {"labels", "start", "end", "peak_value", "trace_ids"}
        and ep["labels"]["tenant"] == "globex"
    )
    assert doc["rules"][0]["fires_per_week"] == pytest.approx(7 * 24 / 11, rel=1e-3)
    by_id = {i["id"]: i for i in doc["incidents"]}
    assert by_id["never"] == {"id": "never", "detected": False, "time_to_detect_s": None}
    assert by_id["spend"]["detected"] and 0 <= by_id["spend"]["time_to_detect_s"] <= 3600
    assert doc["false_episodes"] == 0 and doc["precision"] == 1.0 and doc["recall"] == pytest.approx(2 / 3)


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
    from watcher.rules.backtest import load_groups

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
    from watcher.rules.compare import compare_main

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
    # Only the floor changed: both versions replay the same whole-range fetch (4 chunks per rule).
    assert sorted(set(whole)) == ["GroundednessDrop", "RefusalRateHigh", "SpendAnomaly", "TTFTDegraded"]
    assert len(whole) == 4 * 4
