"""Reloading rules: unchanged groups keep their schedule and state, a changed one keeps its phase,
and a rule file that vanishes or comes back empty is refused (unless ``rules_allow_empty``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from tests.groups import cost_group
from watcher.config import Settings, StoreSettings
from watcher.daemon import Daemon
from watcher.rules.check import check_paths
from watcher.sources.memory import MemorySource


def _group(name: str, interval: str = "1m", above: float = 10) -> dict[str, Any]:
    g = cost_group(detector={"kind": "threshold", "above": above})
    return {**g, "name": name, "interval": interval}


def _write(path: Path, *groups: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump({"groups": list(groups)}) if groups else "")


def _daemon(tmp_path: Path, **settings: Any) -> Daemon:
    s = Settings(
        store=StoreSettings(url=SecretStr(f"sqlite:///{tmp_path}/w.db")),
        rules=[tmp_path / "rules"],
        server={"enabled": False},
        **settings,
    )
    return Daemon(s, sources={"prometheus": MemorySource()})


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    _write(tmp_path / "rules" / "a.yaml", _group("a"), _group("b"))
    _write(tmp_path / "rules" / "c.yaml", _group("c", "5m"))
    return tmp_path / "rules"


def test_reload_keeps_unchanged_schedules_and_the_phase_of_changed_groups(
    tmp_path: Path, rules: Path
) -> None:
    d = _daemon(tmp_path)
    try:
        d._schedule_jobs()
        before = d.next_evaluations()
        kept = d.evaluators["a"]
        others = [j for j in d._scheduler.get_jobs() if not str(j.job_func.args[0]).startswith("group:")]

        # b changes its threshold (same interval), c its interval (5m → 10m), d is new
        _write(rules / "a.yaml", _group("a"), _group("b", above=20), _group("d"))
        _write(rules / "c.yaml", _group("c", "10m"))
        for _ in range(3):  # reloads more often than any interval delay nothing
            assert d.reload().ok
        after = d.next_evaluations()
        assert d.evaluators["a"] is kept and after["a"] == before["a"]  # same job, same state
        assert after["b"] == before["b"]  # changed, same interval: same phase
        assert after["c"] == before["c"] + timedelta(minutes=5)  # one new interval after its last run
        assert "d" in after
        still = [j for j in d._scheduler.get_jobs() if not str(j.job_func.args[0]).startswith("group:")]
        assert still == others  # outbox, retention: not re-added from now either

        (rules / "c.yaml").unlink()
        _write(rules / "a.yaml", _group("a"), _group("b", above=20), _group("d"), _group("c", "10m"))
        assert d.reload().ok  # c moved to another file: not a vanished group
        assert d.next_evaluations()["c"] == after["c"]
    finally:
        d.close()


@pytest.mark.parametrize("change", ["emptied", "vanished", "no groups"])
def test_a_rule_file_that_comes_back_empty_or_vanishes_is_refused(
    tmp_path: Path, rules: Path, change: str
) -> None:
    d = _daemon(tmp_path)
    try:
        groups = dict(d.evaluators)
        if change == "vanished":
            (rules / "c.yaml").unlink()
        elif change == "emptied":
            (rules / "c.yaml").write_text("")
        else:
            (rules / "c.yaml").write_text("groups: []\n")
        result = d.reload()
        assert not result.ok and d.evaluators == groups  # the old rules keep running
        assert (result.error or "").startswith(f"{rules / 'c.yaml'}:1:1: the rule file ")
        assert "rules_allow_empty" in (d.last_reload_error or "")
    finally:
        d.close()


def test_rules_allow_empty_lets_a_file_go(tmp_path: Path, rules: Path) -> None:
    d = _daemon(tmp_path, rules_allow_empty=True)
    try:
        (rules / "c.yaml").write_text("")
        assert d.reload().ok and sorted(d.evaluators) == ["a", "b"]
    finally:
        d.close()


def test_check_warns_about_an_empty_rule_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.yaml").write_text("")
    import sys

    assert check_paths([tmp_path / "empty.yaml"], out=sys.stdout) == 0
    out = capsys.readouterr().out
    assert "SUCCESS: 0 rules found\n  WARNING: the file has no rules" in out
