"""The command line on bad input: one clear line naming the place, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_RULE = """\
groups:
  - name: g
    rules:
      - alert: A
        source: calls
        query: {agg: count, window: 5m}
        detector: {kind: threshold, above: 100}
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


def test_check_shipped_rules_pass() -> None:
    proc = watcher("check", str(ROOT / "rules"), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Checking" in proc.stdout and "SUCCESS: 11 rules found" in proc.stdout


def test_check_schema_is_json() -> None:
    proc = watcher("check", "--schema", cwd=ROOT)
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert "groups" in schema["properties"]


# (file content, config content or None, expected fragment of the single error line)
BAD_RULES = {
    "malformed yaml": ("groups:\n  - name: g\n    rules: [\n", None, "r.yaml:4:1"),
    "unknown field": (
        GOOD_RULE.replace("alert: A", "alert: A\n        severity: page"),
        None,
        'r.yaml:5:9: group "g", rule 1, "A": unknown field "severity"',
    ),
    "bad duration": (GOOD_RULE.replace("window: 5m", "window: 5 minutes"), None, "r.yaml:6:37"),
    "unknown detector": (GOOD_RULE.replace("threshold, above: 100", "sesonal"), None, "sesonal"),
    "unknown receiver": (
        GOOD_RULE + "        receivers: [pager]\n",
        "receivers: {console: {type: console}}\n",
        'unknown receiver "pager"',
    ),
}


@pytest.mark.parametrize("case", list(BAD_RULES))
def test_check_bad_rules_one_line_each(case: str, tmp_path: Path) -> None:
    text, config, fragment = BAD_RULES[case]
    (tmp_path / "r.yaml").write_text(text)
    args = ["check", "r.yaml"]
    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        args += ["--config", "c.yaml"]
    proc = watcher(*args, cwd=tmp_path)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "FAILED" in out and fragment in out, out


def _config(tmp_path: Path, db: Path) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.yaml").write_text(GOOD_RULE)
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(f"store: {{url: 'sqlite:///{db}'}}\nrules: [rules]\nserver: {{enabled: false}}\n")
    return cfg


def test_run_once_on_corrupt_database(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    db.write_bytes(b"this is not a database, just some bytes " * 200)
    _config(tmp_path, db)
    proc = watcher("run", "--once", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "w.db" in lines[0], proc.stderr


def test_run_once_on_locked_database(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    _config(tmp_path, db)
    assert watcher("run", "--once", cwd=tmp_path).returncode == 0  # creates the schema
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        proc = watcher("run", "--once", cwd=tmp_path, env={"WATCHER_STORE__BUSY_TIMEOUT_MS": "200"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "locked" in proc.stderr and "w.db" in proc.stderr, proc.stderr


def test_bad_config_file_names_the_place(tmp_path: Path) -> None:
    (tmp_path / "watcher.yaml").write_text("store:\n  url: [\n")
    proc = watcher("run", "--once", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "watcher.yaml:3:" in proc.stderr

    (tmp_path / "watcher.yaml").write_text("stroe: {}\n")
    proc = watcher("run", "--once", cwd=tmp_path)
    assert proc.returncode == 1 and "stroe" in proc.stderr and "Traceback" not in proc.stderr


def test_secret_never_printed_on_bad_store(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(GOOD_RULE)
    (tmp_path / "watcher.yaml").write_text(
        "store: {url: 'postgresql+psycopg://watcher:Hunter2Secret@127.0.0.1:1/watcher'}\nrules: [rules]\n"
    )
    proc = watcher("run", "--once", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Hunter2Secret" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_score_does_not_import_the_daemons_dependencies(tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("timestamp,value\n" + "".join(f"{60 * i},{i % 7}\n" for i in range(50)))
    probe = (
        "import sys\nfrom watcher.cli import main\n"
        f"code = main(['score', '--detector', 'rolling', {str(csv)!r}])\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'sqlmodel', 'apprise') if m in sys.modules)\n"
        "print('HEAVY', heavy, code, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert "HEAVY [] 0" in proc.stderr, proc.stderr
    assert proc.stdout.startswith("timestamp,value,expected,lower,upper,score,anomaly")


EWMA_RULES = """\
groups:
  - name: g
    interval: 5m
    rules:
      - alert: Short
        source: calls
        query: {agg: sum, field: cost_usd, window: 5m}
        detector: {kind: ewma}
      - alert: Long
        source: calls
        query: {agg: sum, field: cost_usd, window: 5m}
        detector: {kind: ewma}
        lookback: 2d
"""


def test_check_warns_when_a_lookback_is_shorter_than_the_detectors_warmup(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(EWMA_RULES)
    proc = watcher("check", "r.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a warning, not a problem
    warnings = [line.strip() for line in proc.stdout.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, proc.stdout
    # ewma at 5-minute points: 30 points of its own warm-up + 327 for the calibration = 29 h 45 min.
    where = 'WARNING: r.yaml:5:9: group "g", rule 1, "Short": '
    assert warnings[0].startswith(where + "the default lookback 4h10m is shorter than the ewma")
    assert "(1d5h45m)" in warnings[0] and "set lookback: 1d5h45m" in warnings[0]
    doc = json.loads(watcher("check", "--json", "r.yaml", cwd=tmp_path).stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert [(w["line"], w["col"], w["rule"]) for w in doc["warnings"]] == [(5, 9, "Short")]


def test_check_shipped_rules_have_no_warnings() -> None:
    proc = watcher("check", "--json", str(ROOT / "rules"), str(ROOT / "rules-prometheus"), cwd=ROOT)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"] and doc["warnings"] == [], proc.stdout
