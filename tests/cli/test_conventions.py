"""The command line's conventions, run as a user runs them (``python -m watcher`` on real SQLite files).

Relative times as option values (``--from -30d``), read-only commands that never create a store,
``-`` for standard output, ``--json`` listings, quiet broken pipes, shell completion, a port in use
failing ``watcher run``, install hints, and ``file:line:col`` for test and incident files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import missing_component
from watcher.store.db import open_store
from watcher.store.tables import Call

ROOT = Path(__file__).resolve().parents[2]
RULE = """\
groups:
  - name: g
    interval: 5m
    rules:
      - alert: ManyCalls
        source: calls
        query: {agg: count, window: 5m}
        detector: {kind: threshold, above: 3}
"""


def watcher(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=120,
    )


def add_calls(db: Path, times: list[datetime]) -> None:
    """Write one call at each of ``times`` into the store ``db`` (created if need be)."""
    store = open_store(f"sqlite:///{db}")
    try:
        with store.session() as s:
            for i, ts in enumerate(times):
                s.add(Call(trace_id=f"{ts.timestamp():.0f}{i:04d}", ts=ts, provider="openai", model="gpt-4o"))
            s.commit()
    finally:
        store.close()


@pytest.fixture
def store_with_calls(tmp_path: Path) -> Path:
    """A real SQLite store with a burst of calls two hours ago (the rule fires on it)."""
    db = tmp_path / "calls.db"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    add_calls(db, [now - timedelta(hours=2) + timedelta(seconds=10 * i) for i in range(20)])
    (tmp_path / "r.yaml").write_text(RULE)
    return db


def _config(tmp_path: Path, db: Path, extra: str = "") -> Path:
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{db}'}}\nrules: ['{tmp_path / 'r.yaml'}']\n{extra}")
    return cfg


# --- relative times ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["split", "equals"])
def test_backtest_takes_relative_times_as_written_in_the_docs(
    store_with_calls: Path, tmp_path: Path, form: str
) -> None:
    times = ["--from", "-1d", "--to", "now"] if form == "split" else ["--from=-1d", "--to=now"]
    proc = watcher(
        "backtest", "r.yaml", *times, "--store", f"sqlite:///{store_with_calls}", "--json", "-", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # standard output holds the JSON document only
    assert "ManyCalls" in proc.stderr  # the text report went to stderr
    assert json.dumps(doc).count("ManyCalls") >= 1
    assert not (tmp_path / "-").exists()


def test_relative_time_compound_and_to_before_from(store_with_calls: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{store_with_calls}"
    ok = watcher("backtest", "r.yaml", "--from", "-1d12h", "--to", "-1h", "--store", store, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "ManyCalls (g): 1 episode(s)" in ok.stdout, ok.stdout
    bad = watcher("backtest", "r.yaml", "--from", "-1h", "--to", "-2h", "--store", store, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "watcher: error: --to must be later than --from"


def test_payloads_audit_since_takes_a_relative_time(store_with_calls: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, store_with_calls)
    for since in ("-7d", "7d"):
        proc = watcher("payloads", "audit", "-c", str(cfg), "--since", since, "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == []


# --- read-only commands never create a store -------------------------------------------------------


READ_ONLY = [
    ["alerts"],
    ["silence", "list"],
    ["silence", "expire", "nope"],
    ["silence", "add", "-m", "tenant=acme"],
    ["notify", "dead-letters"],
    ["db", "stats"],
    ["db", "purge", "--dry-run"],
    ["db", "vacuum"],
    ["cluster", "status"],
    ["payloads", "audit"],
    ["gate", "--scores", "s", "--baseline", "a", "--candidate", "b"],
    ["annotate", "list", "--from", "-7d"],
    ["annotate", "deploy", "--at", "-10m"],
    ["feedback", "list", "--from", "-30d"],
    ["feedback", "export", "-o", "-"],
]


@pytest.mark.parametrize("cmd", READ_ONLY, ids=[" ".join(c[:2]) for c in READ_ONLY])
def test_read_only_command_on_a_mistyped_store_fails_and_creates_nothing(
    tmp_path: Path, cmd: list[str]
) -> None:
    missing = tmp_path / "typo" / "watcher.db"
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{missing}'}}\nrules: []\n")
    proc = watcher(*cmd, "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"watcher: error: no store at {missing}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_backtest_on_a_mistyped_store_fails_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULE)
    proc = watcher("backtest", "r.yaml", "--from", "-30d", "--store", "sqlite:///nope.db", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"no store at {tmp_path / 'nope.db'}" in proc.stderr
    assert not (tmp_path / "nope.db").exists()


def test_run_without_its_rules_folder_leaves_no_database(tmp_path: Path) -> None:
    db = tmp_path / "watcher.db"
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{db}'}}\nrules: ['{tmp_path / 'rules'}']\n")
    proc = watcher("run", "--once", "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 1
    assert "rules" in proc.stderr and "Traceback" not in proc.stderr
    assert not db.exists()


# --- '-' is standard output ----------------------------------------------------------------------


def test_score_dash_writes_to_stdout(tmp_path: Path) -> None:
    series = "timestamp,value\n" + "".join(f"2026-01-01T00:{m:02d}:00Z,{1 + m % 3}\n" for m in range(30))
    (tmp_path / "in.csv").write_text(series)
    proc = watcher("score", "-d", "threshold", "--set", "above=2", "in.csv", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("timestamp,") and len(proc.stdout.splitlines()) == 31
    assert not (tmp_path / "-").exists()


# --- --json listings --------------------------------------------------------------------------------


def test_json_listings_parse(store_with_calls: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, store_with_calls)
    add = watcher(
        "silence", "add", "-m", "tenant=acme", "-d", "2h", "--comment", "deploy", "-c", str(cfg), cwd=tmp_path
    )
    assert add.returncode == 0, add.stderr
    silences = json.loads(watcher("silence", "list", "--json", "-c", str(cfg), cwd=tmp_path).stdout)
    assert [s["comment"] for s in silences] == ["deploy"]
    assert silences[0]["status"]["state"] == "active"
    assert silences[0]["matchers"] == [{"name": "tenant", "value": "acme", "op": "="}]
    assert json.loads(watcher("alerts", "--json", "-c", str(cfg), cwd=tmp_path).stdout) == []
    assert json.loads(watcher("notify", "dead-letters", "--json", "-c", str(cfg), cwd=tmp_path).stdout) == []
    check = watcher("check", "--json", "r.yaml", cwd=tmp_path)
    assert check.returncode == 0
    assert json.loads(check.stdout) == {
        "ok": True,
        "files": [{"file": "r.yaml", "rules": 1}],
        "problems": [],
        "warnings": [],
    }
    (tmp_path / "bad.yaml").write_text(RULE.replace("above: 3", "abve: 3"))
    bad = watcher("check", "--json", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == 1
    problem = json.loads(bad.stdout)["problems"][0]
    assert (problem["file"], problem["line"], problem["rule"]) == ("bad.yaml", 8, "ManyCalls")


def test_alerts_json_after_a_run(store_with_calls: Path, tmp_path: Path) -> None:
    """``watcher run --once`` writes the alert state; ``alerts --json`` reads it back."""
    now = datetime.now(UTC)
    add_calls(store_with_calls, [now - timedelta(seconds=20 * i + 1) for i in range(40)])
    cfg = _config(tmp_path, store_with_calls, "server: {enabled: false}\n")
    run = watcher("run", "--once", "--json", "-c", str(cfg), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary == {"groups": 1, "firing": 1, "rule_errors": [], "pending_notifications": 0}
    assert "[FIRING] ManyCalls" in run.stderr  # the default console receiver, moved off stdout
    alerts = json.loads(watcher("alerts", "--json", "-c", str(cfg), cwd=tmp_path).stdout)
    assert [(a["rule"], a["state"]) for a in alerts] == [("ManyCalls", "firing")]
    assert alerts[0]["value"] >= 10 and alerts[0]["upper"] == 3
    text = watcher("alerts", "-c", str(cfg), cwd=tmp_path).stdout
    assert "band=[-inf, 3]" in text and "ManyCalls" in text


def test_test_json_lists_failures_with_positions(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULE)
    (tmp_path / "t.yaml").write_text(
        "rule_files: [r.yaml]\ntests:\n  - alert_rule_test:\n"
        "      - eval_time: 10 minutes\n        alertname: A\n"
    )
    proc = watcher("test", "--json", "t.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert doc["files"][0]["failures"][0]["lines"][0].startswith(
        "t.yaml:4:20: tests[0].alert_rule_test[0].eval_time: bad duration"
    )


# --- file:line:col for unit-test files and incident files --------------------------------------------


def test_test_file_errors_name_the_place(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULE)
    (tmp_path / "t.yaml").write_text(
        "rule_files: [r.yaml]\ntests:\n  - alert_rule_test:\n      - eval_time: 10m\n"
        "        alertname: ManyCalls\n        exp_alert: []\n"
    )
    proc = watcher("test", "t.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert 't.yaml:6:9: unknown field "exp_alert"' in proc.stdout, proc.stdout
    assert 'did you mean "exp_alerts"?' in proc.stdout


def test_incident_file_errors_name_the_place(store_with_calls: Path, tmp_path: Path) -> None:
    (tmp_path / "inc.yaml").write_text(
        "- id: a\n  start: 2026-01-01T00:00Z\n  end: yesterday\n- id: b\n  strat: 2026-01-01\n"
    )
    proc = watcher(
        "backtest", "r.yaml", "--from", "-1d", "--store", f"sqlite:///{store_with_calls}",
        "--incidents", "inc.yaml", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("watcher: error: inc.yaml:3:8: incidents[0].end: "), proc.stderr
    assert lines[1] == 'inc.yaml:4:3: missing required field "start" in incidents[1]; add it'
    assert lines[2] == 'inc.yaml:5:3: unknown field "strat" in incidents[1]; did you mean "start"?'


# --- broken pipes, completion, install hints, port in use ----------------------------------------------


def test_a_closed_pipe_is_quiet() -> None:
    """``watcher completion bash | head -1``: the reader leaves early; no traceback, exit 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "completion", "bash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child writes: its first write fails with EPIPE
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_shell_pipe_to_head(tmp_path: Path) -> None:
    proc = subprocess.run(
        f"{sys.executable} -m watcher completion bash | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.stdout.startswith("# bash completion for watcher")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def _complete(script: str, line: str) -> list[str]:
    """Run the generated bash completion for ``line`` (cursor at its end) in a real bash."""
    words = line.split(" ")
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n"
        '_watcher\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_follows_the_parser(tmp_path: Path) -> None:
    proc = watcher("completion", "bash", cwd=tmp_path)
    assert proc.returncode == 0
    script = proc.stdout
    assert _complete(script, "watcher back") == ["backtest"]
    assert _complete(script, "watcher backtest --fr") == ["--from"]
    assert _complete(script, "watcher run --log-level w") == ["warning"]
    assert set(_complete(script, "watcher db ")) == {"stats", "vacuum", "purge", "partition"}
    assert "--json" in _complete(script, "watcher silence list --")
    assert "--serve" in _complete(script, "watcher demo --")


ZSH_DRIVER = """\
compdef() { : }
source ./_watcher
compadd() { shift; print -l -- "$@" }
_describe() { print -l -- "${(@P)2}" }
_files() { print FILES }
words=(${=1}); CURRENT=${#words}
[[ $1 == *" " ]] && { words+=(""); CURRENT=${#words} }
_watcher
"""


def test_zsh_completion_follows_the_parser(tmp_path: Path) -> None:
    """The zsh script in a real zsh, its completion builtins replaced by functions that print."""
    import shutil

    proc = watcher("completion", "zsh", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("#compdef watcher\n")
    zsh = shutil.which("zsh")
    if zsh is None:
        missing_component("zsh is not installed (Debian: zsh; .ci/run installs it)")
    (tmp_path / "_watcher").write_text(proc.stdout)
    (tmp_path / "drive.zsh").write_text(ZSH_DRIVER)

    def complete(line: str) -> list[str]:
        run = subprocess.run(
            [zsh, "drive.zsh", line], capture_output=True, text=True, cwd=tmp_path, timeout=30
        )
        assert run.returncode == 0 and run.stderr == "", run.stderr
        return run.stdout.splitlines()

    assert "backtest:replay rules over history: episodes, fires/week, incidents caught" in complete(
        "watcher b"
    )
    assert complete("watcher db ") == [
        "stats:rows, oldest and newest per table, file size",
        "vacuum:reclaim space (SQLite VACUUM, PostgreSQL VACUUM ANALYZE)",
        "purge:delete rows past their retention now",
        "partition:PostgreSQL: partition calls and scores by time (converts them once; retention then drops "
        "whole partitions)",
    ]
    assert complete("watcher run --log-level ") == ["debug", "info", "warning", "error"]
    assert complete("watcher backtest --json ") == ["FILES"]
    assert "--json" in complete("watcher silence list --")


def test_missing_matplotlib_gives_an_install_hint_before_the_replay(
    store_with_calls: Path, tmp_path: Path
) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from watcher.cli import main\n"
        f"raise SystemExit(main(['backtest', 'r.yaml', '--from', '-1d', '--store', "
        f"'sqlite:///{store_with_calls}', '--plot', 'plots']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "watcher: error: this needs matplotlib, which is not installed: pip install 'watcher-llm[plot]'\n"
    )
    assert proc.stdout == ""  # failed before the replay


def test_missing_psycopg_gives_an_install_hint(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text("store: {url: 'postgresql://u:hunter2@127.0.0.1:5432/db'}\nrules: []\n")
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from watcher.cli import main\n"
        f"raise SystemExit(main(['db', 'stats', '-c', '{cfg}']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 1
    hint = "PostgreSQL needs psycopg, which is not installed: pip install 'watcher-llm[postgres]'"
    assert hint in proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr


def test_run_fails_at_start_when_its_port_is_taken(store_with_calls: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = _config(tmp_path, store_with_calls, f"server: {{host: 127.0.0.1, port: {port}}}\n")
        proc = watcher("run", "-c", str(cfg), cwd=tmp_path)
    assert proc.returncode == 1
    said = f"watcher: error: server: cannot listen on 127.0.0.1:{port} (address already in use)"
    assert said in proc.stderr
    # watcher's one error, not uvicorn's own "ERROR: [Errno 98] error while attempting to bind …"
    assert "Traceback" not in proc.stderr and "Errno" not in proc.stderr and "ERROR:" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if str(port) in line] == [
        line for line in proc.stderr.splitlines() if line.startswith("watcher: error: server:")
    ]


def test_score_says_which_rows_are_warm_up(tmp_path: Path) -> None:
    """Warm-up rows have no band and anomaly 0: stderr says so instead of letting them read as normal."""
    series = "timestamp,value\n" + "".join(f"2026-01-01T00:{m:02d}:00Z,{10 + m % 3}\n" for m in range(40))
    (tmp_path / "in.csv").write_text(series)
    proc = watcher("score", "-d", "ewma", "in.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        "in.csv: 30 of 40 rows are the detector's warm-up: no band, never anomalous; "
        "last: warming up: 29/30 points\n"
    )
    first = proc.stdout.splitlines()[1].split(",")
    assert first[2:5] == ["", "", ""]  # no expected value or band while warming up
    short = watcher("score", "-d", "rolling", "in.csv", cwd=tmp_path)
    assert "40 of 40 rows are the detector's warm-up (every row: the series is shorter" in short.stderr


def test_prometheus_only_backtest_needs_no_store_and_creates_none(tmp_path: Path) -> None:
    """Rules that all read Prometheus need no store: the missing default file is not created."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once the socket is closed
    (tmp_path / "p.yaml").write_text(
        "groups:\n  - name: p\n    rules:\n      - alert: Up\n        expr: up\n"
        "        detector: {kind: threshold, below: 1}\n"
    )
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"prometheus: {{main: {{url: 'http://127.0.0.1:{port}'}}}}\n")
    proc = watcher("backtest", "p.yaml", "-c", str(cfg), "--from", "-1h", cwd=tmp_path)
    assert "no store" not in proc.stderr, proc.stderr
    assert "Up (p): 0 episode(s)" in proc.stdout, proc.stdout + proc.stderr
    assert "error:" in proc.stdout  # the unreachable Prometheus is reported, not hidden
    assert list(tmp_path.glob("*.db")) == []
