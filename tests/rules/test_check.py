"""``watcher check``'s warnings about valid rules: printed at the rule, the exit code unchanged."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from watcher.cli import lookback_warning
from watcher.rules.check import check_paths
from watcher.rules.schema import Group

RULES = """\
groups:
  - name: g
    rules:
      - alert: A
        source: calls
        query: {agg: count, window: 5m}
        detector: {kind: threshold, above: 100}
      - alert: B
        source: calls
        query: {agg: count, window: 5m}
        detector: {kind: threshold, above: 100}
"""


def test_advice_is_printed_at_its_rule_and_never_changes_the_exit_code(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    out = io.StringIO()
    code = check_paths([tmp_path / "r.yaml"], out=out, advise=lambda r, g: "look" if r.alert == "B" else None)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[1] == "  SUCCESS: 2 rules found"
    assert lines[2] == f'  WARNING: {tmp_path / "r.yaml"}:8:9: group "g", rule 2, "B": look'
    assert len(lines) == 3


def _group(detector: dict[str, object], lookback: str | None, interval: str) -> Group:
    raw: dict[str, object] = {"alert": "A", "source": "calls", "query": {"agg": "count", "window": "5m"}}
    raw["detector"] = detector
    if lookback is not None:
        raw["lookback"] = lookback
    return Group.model_validate({"name": "g", "interval": interval, "rules": [raw]})


# (detector, lookback, group interval, warned)
CASES = [
    ({"kind": "ewma"}, None, "5m", True),  # 4h10m against 1d5h45m
    ({"kind": "ewma"}, "1d6h", "5m", False),
    ({"kind": "ewma"}, None, "1m", True),  # 4h2m against 5h57m
    ({"kind": "ewma"}, "6h", "1m", False),
    ({"kind": "rolling", "window": "7d"}, None, "5m", False),
    ({"kind": "rolling", "window": "2h"}, None, "5m", True),
    ({"kind": "seasonal"}, None, "5m", False),
    ({"kind": "auto"}, None, "5m", False),
    ({"kind": "rate"}, None, "5m", False),
    ({"kind": "threshold", "above": 1}, None, "5m", False),
]


@pytest.mark.parametrize(("detector", "lookback", "interval", "warned"), CASES)
def test_lookback_warning_compares_the_lookback_with_the_calibrated_warmup(
    detector: dict[str, object], lookback: str | None, interval: str, warned: bool
) -> None:
    group = _group(detector, lookback, interval)
    assert group.interval == timedelta(minutes=int(interval[:-1]))
    message = lookback_warning(group.rules[0], group)
    assert (message is not None) == warned, message
