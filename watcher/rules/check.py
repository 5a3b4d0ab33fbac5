"""``watcher check``: validate rule files and print the result the way ``promtool check rules`` does.

This module owns the report (one block per file, ``SUCCESS: N rules found`` or ``FAILED:`` and
every problem; a file without rules, and a rule an ``advise`` callback has a warning for, gets a
``WARNING:`` line, the exit code unchanged) and the exit code, and prints the rule-file JSON
schema. It does not own finding, parsing or validating files (``loader``), reading the settings
(``cli``), nor what the warnings about a valid rule say: the format knows nothing of detectors or
the engine, so the caller passes ``advise`` (the CLI's compares a rule's lookback with its
detector's warm-up).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TextIO

from ..errors import Problem
from .loader import Inspection, inspect_rule_files
from .schema import Group, Rule, json_schema

Advise = Callable[[Rule, Group], str | None]
"""Return a warning about one valid rule of a group (None: nothing to say)."""

EMPTY_WARNING = (
    "the file has no rules; a running daemon refuses to reload a rule file that had rules and comes "
    "back empty (set rules_allow_empty: true to allow it)"
)


def rule_warnings(found: Inspection, advise: Advise | None) -> list[Problem]:
    """Return ``advise``'s warnings about the valid rules ``found``, each at its rule, in file order."""
    if advise is None:
        return []
    out = []
    for site in found.sites:
        message = advise(site.rule, site.group)
        if message:
            out.append(site.problem(message))
    return out


def check_paths(
    paths: Sequence[str | Path],
    *,
    known_receivers: Collection[str] | None = None,
    out: TextIO,
    advise: Advise | None = None,
) -> int:
    """Check every rule file under ``paths``, print a report to ``out``, and return the exit code.

    The exit code is 0 when every file is valid and 1 when any problem was found; warnings (an
    empty file, ``advise``'s) never change it.
    """
    found = inspect_rule_files(paths, known_receivers=known_receivers)
    warned: dict[str, list[str]] = {}
    for warning in rule_warnings(found, advise):
        warned.setdefault(warning.file, []).append(str(warning))
    by_file: dict[str, list[str]] = {name: [] for name in found.checked}
    for problem in found.problems:
        by_file.setdefault(problem.file, []).append(str(problem))
    blocks = []
    for name, problems in by_file.items():
        lines = [f"Checking {name}"]
        if problems:
            lines.append("  FAILED:")
            lines += [f"  {p}" for p in problems]
        else:
            n = found.rules_in(name)
            lines.append(f"  SUCCESS: {n} rules found")
            if n == 0:
                lines.append(f"  WARNING: {EMPTY_WARNING}")
            lines += [f"  WARNING: {w}" for w in warned.get(name, [])]
        blocks.append("\n".join(lines) + "\n")
    if not blocks:
        blocks.append("no rule files found\n")
    out.write("\n".join(blocks))
    out.flush()
    return 1 if found.problems else 0


def schema_json() -> str:
    """Return the JSON schema of a rule file as pretty-printed JSON."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=False)
