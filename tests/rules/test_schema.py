"""Tests for watcher.rules.schema: durations, the models' cross-field checks, and the JSON schema."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from watcher.rules.schema import Rule, RuleFile, format_duration, json_schema, parse_duration

GOOD = Path(__file__).parent / "fixtures" / "good"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("0", timedelta(0)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration_accepts(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 minutes", "bad duration"),
        ("10", "bad duration"),
        (10, "needs a unit"),
        ("", "bad duration"),
        ("m5", "bad duration"),
        (True, "expected a duration"),
        (1.5, "expected a duration"),
    ],
)
def test_parse_duration_rejects(text: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "30s", "5m", "1h30m", "3d", "2w", "1s500ms"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    "rule",
    [
        {"alert": "A", "expr": "up == 0"},
        {"alert": "A", "expr": "x", "detector": {"kind": "threshold", "above": 1}},
        {
            "alert": "A",
            "source": "calls",
            "query": {"agg": "count", "per": "1h"},
            "detector": {"kind": "rolling"},
        },
        {
            "alert": "A",
            "source": "scores",
            "query": {"agg": "ratio", "score": "thumbs", "below": 0.5},
            "detector": {"kind": "rolling"},
            "traces": {"from": "rows"},
        },
    ],
)
def test_valid_rules(rule: dict[str, Any]) -> None:
    Rule.model_validate(rule)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"alert": "A", "expr": "x", "query": {"agg": "count"}}, "`query` is for source: calls or scores"),
        ({"alert": "A", "expr": "x", "traces": {"from": "rows"}}, "use from: exemplars"),
        ({"alert": "A", "source": "calls", "query": {"agg": "count"}}, "needs a `detector`"),
        (
            {"alert": "A", "source": "scores", "query": {"agg": "mean"}, "detector": {"kind": "rolling"}},
            "query.score",
        ),
        (
            {"alert": "A", "source": "calls", "query": {"agg": "sum"}, "detector": {"kind": "rolling"}},
            "needs `field`",
        ),
        ({"alert": "A", "expr": "x", "detector": {"kind": "threshold"}}, "needs `above`, `below` or both"),
        ({"alert": "A", "expr": "x", "min_value": 2, "max_value": 1}, "could never fire"),
    ],
)
def test_invalid_rules(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Rule.model_validate(rule)


def test_models_are_frozen() -> None:
    rule = Rule.model_validate({"alert": "A", "expr": "up == 0"})
    with pytest.raises(ValidationError):
        rule.expr = "up == 1"  # type: ignore[misc]


def test_json_schema_is_json() -> None:
    schema = json.loads(json.dumps(json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "groups" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_json_schema_validates_a_good_file() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load((GOOD / "full.yaml").read_text(encoding="utf-8"))
    RuleFile.model_validate(data)
    jsonschema.validate(data, json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"groups": [{"name": "g", "rules": [{"alert": "A", "fro": "5m"}]}]}, json_schema()
        )
