"""Rule unit tests (``watcher test``): notation, the runner, the shipped pack and a mutation check."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml

from watcher.backtest import testinput
from watcher.backtest.testing import run_test_file
from watcher.backtest.testinput import expand_rows, expand_values, parse_expr, parse_selector
from watcher.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACK_TESTS = sorted((ROOT / "rules" / "tests").glob("*.yaml")) + sorted(
    (ROOT / "rules-prometheus" / "tests").glob("*.yaml")  # the opt-in Prometheus pack
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 2 3", [1, 2, 3]),
        ("1+2x3", [1, 3, 5, 7]),
        ("10-1x4", [10, 9, 8, 7, 6]),
        ("3x2", [3, 3, 3]),
        ("1 _ 5 _x3", [1, None, 5, None, None, None]),
        ("0.5+0.25x2", [0.5, 0.75, 1.0]),
        ("-1+1x2", [-1, 0, 1]),
    ],
)
def test_expand_values(text: str, expected: list[float | None]) -> None:
    assert expand_values(text) == expected


def test_expand_values_stale_and_errors() -> None:
    got = expand_values("1 stale 2")
    assert got[0] == 1 and got[1] is not None and math.isnan(got[1]) and got[2] == 2
    with pytest.raises(testinput.TestInputError, match="bad value 'abc'"):
        expand_values("1 abc")


def test_selectors() -> None:
    sel = parse_selector('llm_x{tenant="acme", model=~"gpt-.*", op!="embed"}')
    assert sel.matches("llm_x", {"tenant": "acme", "model": "gpt-4o", "op": "chat"})
    assert not sel.matches("llm_x", {"tenant": "acme", "model": "claude", "op": "chat"})
    assert not sel.matches("llm_y", {"tenant": "acme", "model": "gpt-4o"})
    cmp = parse_expr('up{job="api"} == 0')
    assert cmp is not None and cmp.keep(0.0) and not cmp.keep(1.0)
    assert parse_expr("sum by (tenant) (rate(x[5m]))") is None


def test_row_generators_cycle_lists_and_number_ids() -> None:
    rows = list(
        expand_rows([{"every": "1m", "from": "0m", "to": "3m", "rows": {"v": [1, 2], "id": "a-{i}"}}], "x")
    )
    assert [(t.total_seconds(), r) for t, r in rows] == [
        (0, {"v": 1, "id": "a-0"}),
        (60, {"v": 2, "id": "a-1"}),
        (120, {"v": 1, "id": "a-2"}),
    ]
    with pytest.raises(testinput.TestInputError, match=r"x\[0\]: a row needs `ts`"):
        list(expand_rows([{"v": 1}], "x"))


RULES = """
groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        for: 2m
        labels: {severity: page}
        annotations: {summary: "{{ labels.job }} down"}
      - alert: Cost
        expr: sum by (tenant) (rate(llm_cost_usd_total[5m]))
        detector: {kind: threshold, above: 5}
"""

TESTS = """
rule_files: [rules.yml]
tests:
  - input_series:
      - {series: 'up{job="api"}', values: '1 1 0x10 1x5'}
      - {series: 'up{job="db"}', values: '1x20'}
      - {series: 'cost{tenant="acme"}', values: '1+1x10'}
    rule_series: {Cost: ['cost']}
    alert_rule_test:
      - {eval_time: 3m, alertname: Down}
      - eval_time: 5m
        alertname: Down
        exp_alerts: [{exp_labels: {job: api, severity: page}, exp_annotations: {summary: api down}}]
      - {eval_time: 15m, alertname: Down}
      - eval_time: 8m
        alertname: Cost
        exp_alerts: [{exp_labels: {tenant: WRONG}}]
"""


def test_promtool_style_test_reports_expected_vs_got(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "t.yml").write_text(TESTS)
    assert main(["test", str(tmp_path / "t.yml")]) == 1
    out = capsys.readouterr().out
    assert "alertname: Cost, time: 8m," in out
    lines = [line.strip() for line in out.splitlines()]
    exp, got = lines.index("exp:"), lines.index("got:")
    assert lines[exp + 1] == '0: Labels:{alertname="Cost", tenant="WRONG"}'
    assert lines[got + 1] == '0: Labels:{alertname="Cost", tenant="acme"} TraceIDs:[]'
    assert "alertname: Down" not in out  # the Down checks pass
    (tmp_path / "t.yml").write_text(TESTS.replace("WRONG", "acme"))
    assert main(["test", str(tmp_path / "t.yml")]) == 0
    assert "SUCCESS" in capsys.readouterr().out


def test_unselectable_expr_without_rule_series_is_a_clear_failure(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "t.yml").write_text(TESTS.replace("rule_series: {Cost: ['cost']}", ""))
    (failure,) = run_test_file(tmp_path / "t.yml")
    assert "alertname Cost: its expr is not a single selector" in failure.lines[0]


def test_bad_rows_and_unknown_fields_are_reported(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    bad = "rule_files: [rules.yml]\ntests:\n  - input_calls: [{ts: 1m, tenant: a, costt: 1}]\n"
    (tmp_path / "t.yml").write_text(bad + "    alert_rule_test: [{eval_time: 1m, alertname: Down}]\n")
    (failure,) = run_test_file(tmp_path / "t.yml")
    assert "input_calls: unknown column(s) costt" in failure.lines[0]
    (tmp_path / "t.yml").write_text("rule_files: [rules.yml]\npromql_expr_test: []\n")
    (failure,) = run_test_file(tmp_path / "t.yml")
    where = tmp_path / "t.yml"  # at file:line:col, like `watcher check`
    assert failure.lines == [
        f'{where}:2:1: unknown field "promql_expr_test"; valid here: rule_files, evaluation_interval, tests'
    ]


def test_shipped_pack_unit_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert PACK_TESTS, "rules/tests/ holds the shipped pack's unit tests"
    assert main(["test", *map(str, PACK_TESTS)]) == 0, capsys.readouterr().out


@pytest.mark.parametrize(
    ("case", "old", "new"),
    [
        (0, "min_value: 0.5 ", "min_value: 50  "),  # a floor too high: the runaway loop no longer pages
        (3, "max_value: 0.8 ", "max_value: 0.9 "),  # a ceiling too high: summarize's 0.86 would page
        (7, "direction: down, min_spread: 0.01", "direction: up, min_spread: 0.01"),  # the wrong side
        (8, "min_value: 0.1 ", "min_value: 0.3 "),  # a floor too high: 24% empty retrievals no longer page
    ],
)
def test_unit_tests_catch_a_broken_threshold(tmp_path: Path, case: int, old: str, new: str) -> None:
    rules = (ROOT / "rules" / "llm-store.yaml").read_text()
    assert old in rules
    (tmp_path / "llm-store.yaml").write_text(rules.replace(old, new))
    (tmp_path / "tests").mkdir()
    spec = yaml.safe_load((ROOT / "rules" / "tests" / "llm-store.yaml").read_text())
    spec["tests"] = [spec["tests"][case]]
    (tmp_path / "tests" / "t.yaml").write_text(yaml.safe_dump(spec))
    assert run_test_file(tmp_path / "tests" / "t.yaml") != []
    shutil.copy(ROOT / "rules" / "llm-store.yaml", tmp_path / "llm-store.yaml")
    assert run_test_file(tmp_path / "tests" / "t.yaml") == []
