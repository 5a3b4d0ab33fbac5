"""Tests for watcher.rules.loader and watcher.rules.check: bad files, good files, and the report."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from watcher.errors import RuleFileError
from watcher.rules.check import check_paths, schema_json
from watcher.rules.loader import LoadedRules, find_rule_files, load_rule_files

FIXTURES = Path(__file__).parent / "fixtures"
BAD = FIXTURES / "bad"
GOOD = FIXTURES / "good"
SHIPPED = Path(__file__).resolve().parents[2] / "rules"
RECEIVERS = {"console", "slack"}
BAD_CASES = sorted(p.name for p in BAD.glob("*.expected"))


def _problems(*paths: str | Path, known: set[str] | None = RECEIVERS) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        load_rule_files(list(paths), known_receivers=known)
    return [str(p) for p in info.value.problems]


# --- bad files: one data-driven test over fixtures/bad/NAME.yaml (or NAME/) + NAME.expected -------


def test_there_are_enough_bad_fixtures() -> None:
    assert len(BAD_CASES) >= 14


@pytest.mark.parametrize("expected", BAD_CASES, ids=[c.removesuffix(".expected") for c in BAD_CASES])
def test_bad_file_reports_the_expected_problems(expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    name = expected.removesuffix(".expected")
    target = f"{name}.yaml" if Path(f"{name}.yaml").exists() else name
    got = _problems(target)
    for line in Path(expected).read_text(encoding="utf-8").splitlines():
        if line.strip():
            assert line in got, f"expected line not reported:\n  {line}\ngot:\n  " + "\n  ".join(got)


def test_every_problem_of_every_file_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    got = _problems(".")
    files_with_problems = {line.split(":", 1)[0] for line in got}
    assert files_with_problems == {str(p) for p in find_rule_files(["."])}


def test_a_file_with_two_problems_reports_both_in_line_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    got = _problems("two_problems.yaml")
    assert len(got) == 2
    assert got == sorted(got, key=lambda s: int(s.split(":")[1]))


def test_problems_carry_group_and_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    with pytest.raises(RuleFileError) as info:
        load_rule_files(["bad_duration.yaml"])
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.col) == ("bad_duration.yaml", 6, 14)
    assert (problem.group, problem.rule, problem.rule_index) == ("llm-cost", "SpendHigh", 0)
    assert "Value error" not in problem.message


def test_receivers_are_not_checked_without_a_list_of_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    assert load_rule_files(["unknown_receiver.yaml"]).rule_count == 1


def test_a_missing_path_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = "no such file or directory; check the path to the rule file or folder"
    assert _problems(missing) == [f"{missing}:1:1: {message}"]


def test_a_file_that_is_not_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"groups: []\n# caf\xe9\n")
    (line,) = _problems(path)
    assert line.startswith(f"{path}:2:") and "UTF-8" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("groups: []\n")
    path.chmod(0)
    try:
        (line,) = _problems(path)
    finally:
        path.chmod(0o644)
    assert line.startswith(f"{path}:1:1: cannot read the file")


def test_truncated_files_raise_only_rule_file_errors(tmp_path: Path) -> None:
    text = (GOOD / "full.yaml").read_text(encoding="utf-8")
    path = tmp_path / "cut.yaml"
    for end in range(0, len(text), 7):
        path.write_text(text[:end], encoding="utf-8")
        try:
            load_rule_files([path])
        except RuleFileError as exc:
            assert exc.problems
            assert all("internal error" not in p.message for p in exc.problems), exc


# --- good files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["full.yaml", "empty.yaml", "no_groups.yaml", "pack"])
def test_good_fixture_loads(name: str) -> None:
    loaded = load_rule_files([GOOD / name], known_receivers=RECEIVERS)
    assert isinstance(loaded, LoadedRules)


def test_a_folder_loads_sorted_and_skips_tests_folders() -> None:
    loaded = load_rule_files([GOOD], known_receivers=RECEIVERS)
    assert [p.relative_to(GOOD).as_posix() for p in loaded.files] == [
        "empty.yaml",
        "full.yaml",
        "no_groups.yaml",
        "pack/rules.yml",
    ]
    assert [g.name for g in loaded.groups] == ["llm-cost", "llm-refusals", "rag-quality", "pack"]
    assert loaded.groups[0].file == GOOD / "full.yaml"
    assert loaded.rule_count == 5


def test_yaml_anchors_and_merge_keys_work() -> None:
    (cost, *_) = load_rule_files([GOOD / "full.yaml"]).groups
    assert dict(cost.group.rules[1].labels) == {"severity": "ticket", "team": "platform"}


def test_the_same_file_given_twice_is_read_once() -> None:
    loaded = load_rule_files([GOOD / "full.yaml", GOOD, GOOD / "full.yaml"])
    assert len(loaded.files) == 4


def test_the_hash_follows_the_contents_not_the_argument_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text((GOOD / "full.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    b.write_text((GOOD / "pack" / "rules.yml").read_text(encoding="utf-8"), encoding="utf-8")
    first = load_rule_files([a, b]).hash
    assert load_rule_files([b, a]).hash == first
    assert load_rule_files([tmp_path]).hash == first
    b.write_text(b.read_text().replace("up == 0", "up == 1"))
    assert load_rule_files([a, b]).hash != first


def test_the_shipped_rule_pack_is_valid() -> None:
    loaded = load_rule_files([SHIPPED])
    assert loaded.rule_count > 0


# --- watcher check -----------------------------------------------------------------------------


def test_check_reports_success_per_file() -> None:
    out = io.StringIO()
    assert check_paths([GOOD / "full.yaml", GOOD / "pack"], out=out) == 0
    assert out.getvalue() == (
        f"Checking {GOOD / 'full.yaml'}\n  SUCCESS: 4 rules found\n\n"
        f"Checking {GOOD / 'pack' / 'rules.yml'}\n  SUCCESS: 1 rules found\n"
    )


def test_check_reports_failures_per_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    out = io.StringIO()
    code = check_paths(["duplicate_group", "two_problems.yaml"], known_receivers=RECEIVERS, out=out)
    assert code == 1
    blocks = out.getvalue().split("\n\n")
    assert blocks[0] == "Checking duplicate_group/a.yaml\n  SUCCESS: 1 rules found"
    assert blocks[1].startswith("Checking duplicate_group/b.yaml\n  FAILED:\n  duplicate_group/b.yaml:3:11: ")
    lines = blocks[2].splitlines()
    assert lines[:2] == ["Checking two_problems.yaml", "  FAILED:"]
    assert [line[:19] for line in lines[2:]] == ["  two_problems.yaml"] * 2


def test_schema_json_is_pretty_json() -> None:
    text = schema_json()
    assert text.startswith("{\n  ")
    assert json.loads(text)["title"] == "watcher rule file"
