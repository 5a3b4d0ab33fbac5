"""Hostile rule and config files: each is refused with a message at file:line:col that says what to
do; none gives a traceback, an "internal error", or passes the check (issue 18, findings 2 and 6).

Data-driven like the loader's bad-file fixtures: (name, file content, expected message part).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from watcher.cli import main
from watcher.config import load_settings
from watcher.errors import ConfigError
from watcher.rules.loader import inspect_rule_files

BOMB = (
    "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
)


def _rule(body: str, *, interval: str = "1m") -> str:
    return f"groups:\n  - name: g\n    interval: {interval}\n    rules:\n      - alert: A\n{body}"


PROM = "        expr: up > 1\n"
CALLS = "        source: calls\n        detector: {kind: rolling}\n"

BAD_RULES: list[tuple[str, str, str]] = [
    ("interval-overflow", _rule(PROM, interval="10000000w"), "is too long: at most 520w"),
    ("interval-99999999999d", _rule(PROM, interval="99999999999d"), "is too long"),
    ("interval-5000-digits", _rule(PROM, interval="1" + "0" * 5000 + "s"), "bad duration"),
    ("for-overflow", _rule(PROM + "        for: 99999999999d\n"), "for: duration 99999999999d is too long"),
    ("keep-firing-overflow", _rule(PROM + "        keep_firing_for: 10000000w\n"), "is too long"),
    ("lookback-overflow", _rule(PROM + "        lookback: 9999999999w\n"), "is too long"),
    ("window-overflow", _rule(CALLS + "        query: {agg: count, window: 99999999999d}\n"), "is too long"),
    (
        "rolling-window-overflow",
        _rule(PROM + "        detector: {kind: rolling, window: 10000000w}\n"),
        "too long",
    ),
    (
        "seasons-overflow",
        _rule(PROM + "        detector: {kind: seasonal, seasons: [99999999999d]}\n"),
        "too long",
    ),
    (
        "above-nan",
        _rule(PROM + "        detector: {kind: threshold, above: .nan}\n"),
        "must be a finite number",
    ),
    (
        "below-inf",
        _rule(PROM + "        detector: {kind: threshold, below: -.inf}\n"),
        "must be a finite number",
    ),
    ("min-value-nan", _rule(PROM + "        min_value: .NaN\n"), "must be a finite number"),
    (
        "sensitivity-huge",
        _rule(PROM + "        detector: {kind: rolling, sensitivity: 1e308}\n"),
        "less than or equal to 100",
    ),
    (
        "min-points-huge",
        _rule(PROM + "        detector: {kind: rolling, min_points: 99999999999999}\n"),
        "less than or equal",
    ),
    (
        "min-count-huge",
        _rule(CALLS + "        query: {agg: count, min_count: 99999999999999}\n"),
        "less than or equal",
    ),
    (
        "top-huge",
        _rule(PROM + "        traces: {from: exemplars, top: 100000}\n"),
        "less than or equal to 50",
    ),
    ("promql-broken", _rule("        expr: rate(foo[5m] > > 3 )))\n"), "expr: PromQL does not parse"),
    ("promql-unclosed", _rule("        expr: sum(rate(x[5m])\n"), "PromQL does not parse"),
    ("promql-bad-range", _rule("        expr: rate(x[5q])\n"), "PromQL does not parse"),
    ("promql-garbage", _rule("        expr: '}}}'\n"), "PromQL does not parse"),
    (
        "filter-roundd",
        _rule(PROM + "        annotations: {summary: '{{ value | roundd(2) }}'}\n"),
        'unknown template filter "roundd"; did you mean "round"?',
    ),
    (
        "filter-unknown",
        _rule(PROM + "        annotations: {summary: '{{ value | frob }}'}\n"),
        'unknown template filter "frob"',
    ),
    (
        "test-unknown",
        _rule(PROM + "        annotations: {summary: '{{ value is frobbed }}'}\n"),
        'unknown template test "frobbed"',
    ),
    (
        "template-unclosed",
        _rule(PROM + "        annotations: {summary: '{{ value '}\n"),
        "template does not parse",
    ),
    (
        "alert-name-100k",
        _rule("").replace("alert: A", "alert: " + "A" * 100_000) + PROM,
        "at most 200 characters",
    ),
    ("group-name-100k", _rule(PROM).replace("name: g", "name: " + "g" * 100_000), "at most 200 characters"),
    (
        "label-value-huge",
        _rule(PROM + "        labels: {team: " + "x" * 5000 + "}\n"),
        "at most 1024 characters",
    ),
    ("label-name-huge", _rule(PROM + "        labels: {" + "x" * 500 + ": a}\n"), "at most 200 characters"),
    (
        "where-nul",
        _rule(CALLS + '        query: {agg: count, where: {tenant: "a\\0b"}}\n'),
        "query.where.tenant: a value contains a NUL",
    ),
    (
        "where-list-nul",
        _rule(CALLS + '        query: {agg: count, where: {tenant: ["ok", "a\\0b"]}}\n'),
        "NUL",
    ),
    (
        "match-nul",
        _rule(CALLS + '        query: {agg: ratio, match: {outcome: "\\0"}}\n'),
        "query.match.outcome: a value contains a NUL",
    ),
    ("expr-nul", _rule('        expr: "up\\0 > 1"\n'), "NUL"),
    ("annotation-nul", _rule(PROM + '        annotations: {summary: "a\\0"}\n'), "NUL"),
    (
        "yaml-bomb",
        BOMB + "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\ngroups: *e\n",
        "expands to more than",
    ),
    ("yaml-recursive", "groups: &a\n  - *a\n", "contains itself through an alias"),
    ("yaml-deep", "groups: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    (
        "yaml-python-tag",
        "groups: !!python/object/apply:os.system ['true']\n",
        "could not determine a constructor",
    ),
    ("yaml-python-name", "groups: !!python/name:os.system\n", "could not determine a constructor"),
    ("yaml-binary", "groups: !!binary aGVsbG8=\n", "expected a list"),
    ("yaml-control-char", "groups: []\x07\n", "control character"),
    ("yaml-not-utf8", "groups: [\xff]\n", "not UTF-8"),
]

BAD_CONFIGS: list[tuple[str, str, str]] = [
    (
        "repeat-interval-overflow",
        "notify:\n  repeat_interval: 99999999999d\n",
        ":2:20: notify.repeat_interval: duration 99999999999d is too long",
    ),
    ("group-wait-overflow", "notify:\n  group_wait: 10000000w\n", "too long"),
    ("retention-overflow", "retention:\n  calls: 99999999999d\n", "retention.calls: duration"),
    ("lease-ttl-overflow", "cluster:\n  lease_ttl: 99999999999d\n", "too long"),
    ("max-silence-overflow", "notify:\n  max_silence: 99999999999d\n", "too long"),
    ("ingest-future-overflow", "server:\n  ingest_max_future: 99999999999d\n", "too long"),
    (
        "typo-did-you-mean",
        "notify:\n  repeat_intervall: 1h\n",
        ':2:3: unknown field "repeat_intervall" in notify; did you mean "repeat_interval"?',
    ),
    ("top-level-typo", "recievers: {}\n", 'did you mean "receivers"?'),
    ("log-level-literal", "log_level: verbose\n", '"verbose" is not one of: debug, info, warning, error'),
    ("port-string", "server:\n  port: abc\n", "server.port: expected a whole number"),
    ("port-huge", "server:\n  port: 99999999999999999999\n", "server.port"),
    ("yaml-deep", "a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    (
        "yaml-bomb",
        BOMB
        + "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e]\n",
        "expands to more than",
    ),
    (
        "yaml-python-tag",
        "store: !!python/object/apply:os.system ['true']\n",
        "could not determine a constructor",
    ),
    ("yaml-malformed", "server: [\n", "invalid YAML"),
    ("yaml-duplicate", "log_level: info\nlog_level: debug\n", 'duplicate key "log_level"'),
    ("not-a-mapping", "- a\n- b\n", "the config must be a mapping"),
    (
        "route-regex-backref",
        "route:\n  routes:\n    - {match_re: {team: '(a)\\1'}, receivers: [console]}\n",
        "backreferences and lookarounds are not supported",
    ),
    (
        "maintenance-regex-bad",
        "notify:\n  maintenance_windows:\n    - {matchers: ['team=~(a'], start: '01:00', end: '02:00'}\n",
        "invalid regular expression",
    ),
    ("trace-url-no-placeholder", "trace_url: http://jaeger/trace\n", "trace_url must contain {trace_id}"),
]


def test_there_are_at_least_fifty_bad_files() -> None:
    assert len(BAD_RULES) + len(BAD_CONFIGS) >= 50
    names = [n for n, _, _ in BAD_RULES] + [f"config-{n}" for n, _, _ in BAD_CONFIGS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("name", "text", "expected"), BAD_RULES, ids=[r[0] for r in BAD_RULES])
def test_bad_rule_file(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(text.encode("latin-1") if name == "yaml-not-utf8" else text.encode())
    found = inspect_rule_files([path])
    messages = [str(p) for p in found.problems]
    assert messages, f"{name} passed the check"
    assert any(expected in m for m in messages), messages
    for m in messages:
        assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", m), m
        assert "internal error" not in m and "Traceback" not in m
        assert len(m) < 2000, m[:300]  # a 100,000-character name is not echoed whole


@pytest.mark.parametrize(("name", "text", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_file(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert expected in message, message
    for line in message.splitlines():
        assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", line), line


def test_check_command_prints_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``watcher check`` over every bad rule file at once, and over each bad config: exit 1, no traceback."""
    paths = []
    for name, text, _ in BAD_RULES:
        p = tmp_path / "rules" / f"{name}.yaml"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(text.encode("latin-1") if name == "yaml-not-utf8" else text.encode())
        paths.append(str(p))
    assert main(["check", *paths]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "internal error" not in out.out
    assert out.out.count("FAILED") == len(BAD_RULES)
    for name, text, _ in BAD_CONFIGS:
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(text)
        code = main(["check", "--config", str(cfg), paths[0]])
        out = capsys.readouterr()
        assert code != 0 and "Traceback" not in out.out + out.err, name


def test_check_knows_the_sandbox_filters() -> None:
    from jinja2.sandbox import SandboxedEnvironment

    from watcher.notify.templates import sandbox_filters
    from watcher.rules.loader import WATCHER_FILTERS

    assert sandbox_filters() - set(SandboxedEnvironment().filters) == WATCHER_FILTERS
