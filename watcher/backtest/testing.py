"""``watcher test``: rule unit tests in promtool's format, run by the real engine on a virtual clock.

This module owns the test-file shape, running each test case and the promtool-style report. It
does not own parsing the input notation (``testinput``), the rules (``loader``) nor any
evaluation: every case builds real ``GroupEvaluator``s, with the real detectors and state machine,
over an in-memory source (``input_series``) and a real in-memory SQLite store behind the real
``SqlSource`` (``input_calls``/``input_scores``).

The format is promtool's (``rule_files``, ``evaluation_interval``, ``tests[].interval``,
``input_series``, ``alert_rule_test[].eval_time/alertname/exp_alerts[].exp_labels/exp_annotations``)
plus watcher's ``input_calls``, ``input_scores``, ``rule_series`` and ``exp_trace_ids``.
Decisions, documented in docs/rules-as-code.md:

* time starts at the Unix epoch; each group is evaluated at multiples of its ``interval`` (a group
  without one uses ``evaluation_interval``), and only groups holding a tested alert are evaluated
  (groups are independent, so this only saves time);
* watcher does not evaluate PromQL: a prometheus rule reads the input series its ``expr`` selects
  when the ``expr`` is one selector, optionally compared to a number (``llm_x{a="b"} > 3``);
  for any other ``expr`` the test names the series that stand for its result in
  ``rule_series: {AlertName: ['selector', ...]}``; for a ``rate`` rule two selectors stand for
  its successes and its trials (the detector's sample size), as the Prometheus source queries them;
* ``exp_alerts`` lists the *firing* alerts at ``eval_time`` (as promtool); labels must match
  exactly, ``exp_annotations`` must match on the keys given, ``exp_trace_ids`` in rank order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from ..core import Alert, AlertState, Duration, Labels, format_duration
from ..engine.group import GroupEvaluator
from ..errors import RuleFileError, WatcherError
from ..rules.loader import load_rule_files
from ..rules.schema import Group, RateDetector
from ..sources.base import Source
from ..sources.memory import MemorySource
from ..sources.sql import SqlSource
from ..store.tables import Call, Score
from .testinput import (
    Selector,
    TestInputError,
    expand_rows,
    expand_values,
    parse_expr,
    parse_selector,
    parse_series,
)

ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpAlert(_Model):
    """One expected firing alert."""

    exp_labels: dict[str, str] = Field(default_factory=dict)
    exp_annotations: dict[str, str] = Field(default_factory=dict)
    exp_trace_ids: list[str] | None = None


class AlertRuleTest(_Model):
    """The firing alerts of one rule expected at one instant."""

    eval_time: Duration
    alertname: str
    exp_alerts: list[ExpAlert] = Field(default_factory=list)


class InputSeries(_Model):
    """One input series in promtool's notation."""

    series: str
    values: str


class TestCase(_Model):
    """One test: inputs and the alerts expected from them."""

    name: str | None = None
    interval: Duration | None = None
    input_series: list[InputSeries] = Field(default_factory=list)
    rule_series: dict[str, list[str]] = Field(default_factory=dict)
    input_calls: list[dict[str, Any]] = Field(default_factory=list)
    input_scores: list[dict[str, Any]] = Field(default_factory=list)
    alert_rule_test: list[AlertRuleTest] = Field(default_factory=list)


class TestFile(_Model):
    """A unit-test file."""

    rule_files: list[str] = Field(min_length=1)
    evaluation_interval: Duration = timedelta(minutes=1)
    tests: list[TestCase] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one test case failed, as lines for the report."""

    test: str
    lines: list[str]


def run_test_files(paths: Sequence[str | Path], *, out: TextIO) -> int:
    """Run every test file in ``paths``, print a promtool-style report to ``out``, return 0 or 1."""
    failed = False
    for path in paths:
        out.write(f"Unit Testing:  {path}\n")
        failures = run_test_file(Path(path))
        if failures:
            failed = True
            out.write("  FAILED:\n")
            for f in failures:
                out.write(f"    {f.test}:\n")
                out.writelines(f"      {line}\n" for line in f.lines)
        else:
            out.write("  SUCCESS\n")
        out.write("\n")
    out.flush()
    return 1 if failed else 0


def run_test_file(path: Path) -> list[Failure]:
    """Run one test file; return its failures (empty when every case passes)."""
    from .yamlfile import LocatedError, load_located

    try:
        spec = load_located(path, TestFile)
    except LocatedError as exc:
        return [Failure(str(path), [str(p) for p in exc.problems])]
    try:
        rules = load_rule_files([path.parent / f for f in spec.rule_files])
    except RuleFileError as exc:
        return [Failure(str(path), ["the rule files are invalid:", *str(exc).splitlines()])]
    groups = [_with_interval(g.group, spec.evaluation_interval) for g in rules.groups]
    failures: list[Failure] = []
    for n, case in enumerate(spec.tests):
        name = case.name or f"test {n}"
        try:
            lines = run_case(case, groups, spec.evaluation_interval)
        except (TestInputError, WatcherError) as exc:
            lines = [f"error: {exc}"]
        if lines:
            failures.append(Failure(name, lines))
    return failures


def _with_interval(group: Group, default: timedelta) -> Group:
    """Return ``group`` with ``default`` as its interval when the file set none (promtool's rule)."""
    if "interval" in group.model_fields_set:
        return group
    return group.model_copy(update={"interval": default})


def run_case(case: TestCase, groups: Sequence[Group], evaluation_interval: timedelta) -> list[str]:
    """Run one test case with the real engine; return the failure lines (empty when it passes)."""
    tested = {t.alertname for t in case.alert_rule_test}
    known = {r.alert: (g, r) for g in groups for r in g.rules}
    problems = [f"alertname {a}: no such rule in the rule files" for a in sorted(tested - set(known))]
    memory = MemorySource()
    unmatched = _load_series(case, groups, memory, case.interval or evaluation_interval)
    problems += [
        f"alertname {a}: its expr is not a single selector; name the input series that stand for its "
        f"result in rule_series: {{{a}: ['metric{{...}}']}}"
        for a in sorted(tested & unmatched)
    ]
    if problems:
        return problems
    store = None
    sources: dict[str, Source] = {"prometheus": memory}
    if case.input_calls or case.input_scores or any(known[a][1].source != "prometheus" for a in tested):
        from ..store.db import open_store

        store = open_store("sqlite://")
        _insert_rows(store, case)
        sql = SqlSource(store)
        sources.update(calls=sql, scores=sql)
    try:
        return _evaluate(case, [g for g in groups if any(r.alert in tested for r in g.rules)], sources)
    finally:
        if store is not None:
            store.close()


def _load_series(
    case: TestCase, groups: Sequence[Group], memory: MemorySource, interval: timedelta
) -> set[str]:
    """Feed each prometheus rule the input series it selects; return the rules that select nothing."""
    parsed = []
    for s in case.input_series:
        name, labels = parse_series(s.series)
        parsed.append((name, labels, expand_values(s.values)))
    unmatched: set[str] = set()
    step = interval.total_seconds()
    for group in groups:
        for rule in group.rules:
            if rule.source != "prometheus":
                continue
            selectors: list[Selector] = []
            if rule.alert in case.rule_series:
                selectors = [parse_selector(t) for t in case.rule_series[rule.alert]]
            else:
                sel = parse_expr(rule.expr or "")
                if sel is None:
                    unmatched.add(rule.alert)
                    continue
                selectors = [sel]
            ratio = isinstance(rule.detector, RateDetector) and len(selectors) == 2
            if ratio and rule.alert in case.rule_series:
                _load_ratio(rule.alert, selectors, parsed, memory, step)
                continue
            for name, labels, values in parsed:
                sel = next((s for s in selectors if s.matches(name, labels)), None)
                if sel is None:
                    continue
                target = memory.series(rule.alert, labels)
                for k, v in enumerate(values):
                    if v is None:
                        continue
                    target.add(ORIGIN.timestamp() + k * step, v if sel.keep(v) else math.nan)
    return unmatched


def _load_ratio(
    alert: str,
    selectors: Sequence[Selector],
    parsed: Sequence[tuple[str, dict[str, str], list[float | None]]],
    memory: MemorySource,
    step: float,
) -> None:
    """Feed a rate rule: ``rule_series: {A: [successes, trials]}`` give the proportion and its trials."""
    hits: dict[Labels, list[float | None]] = {}
    trials: dict[Labels, list[float | None]] = {}
    for name, labels, values in parsed:
        for sel, into in ((selectors[0], hits), (selectors[1], trials)):
            if sel.matches(name, labels):
                into[Labels(labels)] = values
    for key, ns in trials.items():
        ks = hits.get(key, [])
        target = memory.series(alert, key)
        for k, n in enumerate(ns):
            if n is None:
                continue
            got = ks[k] if k < len(ks) else None
            hit = 0.0 if got is None else got
            ts = ORIGIN.timestamp() + k * step
            target.add(ts, hit / n if n > 0 else math.nan)
            target.counts[ts] = n


def _insert_rows(store: Any, case: TestCase) -> None:
    """Write the case's ``input_calls`` and ``input_scores`` into the store (one executemany per table)."""
    seq = 0
    for table, items, where in (
        (Call, case.input_calls, "input_calls"),
        (Score, case.input_scores, "input_scores"),
    ):
        fields = table.model_fields
        columns = set(fields) - {"id", "ts"}
        defaults = {k: f.default for k, f in fields.items() if k in columns and not f.is_required()}
        rows: list[dict[str, Any]] = []
        for offset, row in expand_rows(items, where):
            unknown = set(row) - columns
            if unknown:
                raise TestInputError(
                    f"{where}: unknown column(s) {', '.join(sorted(unknown))}; "
                    f"known: {', '.join(sorted(columns))}"
                )
            missing = [k for k, f in fields.items() if k in columns and f.is_required() and k not in row]
            if set(missing) - {"trace_id"}:
                raise TestInputError(f"{where}: a row needs {', '.join(missing)}, got {row}")
            seq += 1
            rows.append({**defaults, "trace_id": f"t{seq}", **row, "ts": ORIGIN + offset})
        if rows:
            with store.engine.begin() as conn:
                conn.execute(table.__table__.insert(), rows)  # type: ignore[union-attr]


def _evaluate(case: TestCase, groups: Sequence[Group], sources: dict[str, Source]) -> list[str]:
    """Step every group on its interval up to the last ``eval_time``; compare at each one."""
    evaluators = [GroupEvaluator(g, sources) for g in groups]
    checks = sorted(case.alert_rule_test, key=lambda t: t.eval_time)
    if not checks:
        return []
    end = checks[-1].eval_time.total_seconds()
    ticks = sorted(
        (k * ev.group.interval.total_seconds(), n)
        for n, ev in enumerate(evaluators)
        for k in range(int(end // ev.group.interval.total_seconds()) + 1)
    )
    lines: list[str] = []
    i = 0
    for check in checks:
        at = check.eval_time.total_seconds()
        while i < len(ticks) and ticks[i][0] <= at:
            evaluators[ticks[i][1]].evaluate(ORIGIN + timedelta(seconds=ticks[i][0]))
            i += 1
        got = [
            a
            for ev in evaluators
            for a in ev.alerts()
            if a.rule == check.alertname and a.state is AlertState.FIRING
        ]
        lines += compare_alerts(check, got)
    return lines


def compare_alerts(check: AlertRuleTest, got: Sequence[Alert]) -> list[str]:
    """Return failure lines when ``got`` differs from ``check.exp_alerts`` (empty when they agree)."""
    remaining = sorted(got, key=lambda a: repr(a.labels))
    ok = len(remaining) == len(check.exp_alerts)
    for exp in check.exp_alerts:
        want = Labels({k: v for k, v in exp.exp_labels.items() if k != "alertname"})
        match = next((a for a in remaining if a.labels == want), None)
        if match is None or not _details_match(exp, match):
            ok = False
            continue
        remaining.remove(match)
    if ok:
        return []
    name, when = check.alertname, format_duration(check.eval_time)
    exp_lines = [_describe(e.exp_labels, e.exp_annotations, e.exp_trace_ids, name) for e in check.exp_alerts]
    got_lines = [
        _describe(dict(a.labels), dict(a.annotations), [t.trace_id for t in a.traces], name)
        for a in sorted(got, key=lambda a: repr(a.labels))
    ]
    return [
        f"alertname: {name}, time: {when},",
        "    exp:" + ("[]" if not exp_lines else ""),
        *[f"      {n}: {line}" for n, line in enumerate(exp_lines)],
        "    got:" + ("[]" if not got_lines else ""),
        *[f"      {n}: {line}" for n, line in enumerate(got_lines)],
    ]


def _details_match(exp: ExpAlert, alert: Alert) -> bool:
    if any(alert.annotations.get(k) != v for k, v in exp.exp_annotations.items()):
        return False
    return exp.exp_trace_ids is None or exp.exp_trace_ids == [t.trace_id for t in alert.traces]


def _describe(
    labels: dict[str, str], annotations: dict[str, str], traces: list[str] | None, name: str
) -> str:
    shown = Labels({**labels, "alertname": name})
    text = f"Labels:{shown!r}"
    if annotations:
        text += " Annotations:{" + ", ".join(f"{k}={v!r}" for k, v in sorted(annotations.items())) + "}"
    if traces is not None:
        text += f" TraceIDs:{traces}"
    return text
