"""``watcher check``: validate rule files and print the result the way ``promtool check rules`` does.

This module owns the report (one block per file, ``SUCCESS: N rules found`` or ``FAILED:`` and
every problem; a file without rules gets a ``WARNING:`` line, the exit code unchanged) and the
exit code, and prints the rule-file JSON schema. It does not own finding, parsing or validating
files (``loader``), nor reading the settings (``cli``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TextIO

from .loader import inspect_rule_files
from .schema import json_schema

EMPTY_WARNING = (
    "the file has no rules; a running daemon refuses to reload a rule file that had rules and comes "
    "back empty (set rules_allow_empty: true to allow it)"
)


def check_paths(
    paths: Sequence[str | Path], *, known_receivers: Collection[str] | None = None, out: TextIO
) -> int:
    """Check every rule file under ``paths``, print a report to ``out``, and return the exit code.

    The exit code is 0 when every file is valid and 1 when any problem was found.
    """
    found = inspect_rule_files(paths, known_receivers=known_receivers)
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
        blocks.append("\n".join(lines) + "\n")
    if not blocks:
        blocks.append("no rule files found\n")
    out.write("\n".join(blocks))
    out.flush()
    return 1 if found.problems else 0


def schema_json() -> str:
    """Return the JSON schema of a rule file as pretty-printed JSON."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=False)
