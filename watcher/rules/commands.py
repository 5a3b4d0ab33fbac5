"""Command-line wiring of rules as code: ``watcher test``, ``backtest``, ``gate`` and ``scores``.

This module owns the argument parsers of those subcommands and the thin functions that call into
``rules.testing``, ``rules.backtest`` and ``gate``. It does not own any behaviour. Imports stay lazy
so ``watcher --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_test(args: argparse.Namespace) -> int:
    from .testing import run_test_files

    return run_test_files(args.files, out=sys.stdout)


def add_test_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher test FILES…`` (rule unit tests) on the command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser("test", help="run rule unit tests (promtool format)")
    p.add_argument("files", nargs="+", help="unit-test YAML files")
    p.set_defaults(func=_cmd_test)
    return p


def _cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest import main_backtest

    return main_backtest(args)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def add_backtest_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher backtest RULE_FILES… --from T --to T`` on the command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "backtest", help="replay rules over history: episodes, fires/week, incidents caught"
    )
    p.add_argument("rule_files", nargs="*", help="rule files or folders (default: the configured rules)")
    p.add_argument("--from", dest="from_", required=True, help="start: ISO-8601, now, or -30d")
    p.add_argument("--to", default="now", help="end: ISO-8601, now (default), or -1d")
    p.add_argument("--config", "-c", help="settings file (sources, store)")
    p.add_argument("--store", help="database URL to read calls/scores from (overrides the config)")
    p.add_argument("--incidents", help="YAML list of {id, start, end, alert?, labels?}")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--plot", metavar="DIR", help="write one PNG per rule and label set to DIR")
    p.add_argument(
        "--compare", metavar="OLD", help="compare with an older rule set: a git ref or a rule file/folder"
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        metavar="N",
        help="worker processes fetching and scoring rules (default: one per CPU; 1: no workers; "
        "--compare runs in one process, its two backtests sharing one fetch cache)",
    )
    p.set_defaults(func=_cmd_backtest)
    return p


def _cmd_gate(args: argparse.Namespace) -> int:
    from ..gate import main_gate

    return main_gate(args)


def _cmd_scores_import(args: argparse.Namespace) -> int:
    from ..evalruns import main_import

    return main_import(args)


def add_gate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher gate`` (compare two evaluation runs) on the command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "gate", help="fail when a candidate evaluation run's scores regress against the baseline"
    )
    p.add_argument(
        "--scores", action="append", required=True, help="score name(s), comma-separated or repeated"
    )
    p.add_argument("--baseline", required=True, help="baseline evaluation run (scores.eval_run)")
    p.add_argument("--candidate", required=True, help="candidate evaluation run")
    p.add_argument("--max-drop", type=float, default=0.02, help="allowed drop of the mean (default 0.02)")
    p.add_argument("--alpha", type=float, default=0.05, help="one-sided significance level (default 0.05)")
    p.add_argument("--config", "-c")
    p.add_argument("--store", help="database URL (overrides the config)")
    p.set_defaults(func=_cmd_gate)
    return p


def add_scores_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher scores import FILE --run NAME`` on the command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser("scores", help="manage evaluation-run scores")
    sub = p.add_subparsers(dest="scores_command", required=True, metavar="import")
    imp = sub.add_parser("import", help="import an evaluation run from JSONL or CSV")
    imp.add_argument("file", help="a .jsonl or .csv file, one score per row")
    imp.add_argument("--run", required=True, help="evaluation run name to tag the rows with")
    imp.add_argument("--name", help="score name for rows that give none")
    imp.add_argument("--config", "-c")
    imp.add_argument("--store", help="database URL (overrides the config)")
    imp.set_defaults(func=_cmd_scores_import)
    return p


def add_rules_as_code_parsers(subparsers: Any) -> None:
    """Register every rules-as-code subcommand (test, backtest, gate, scores)."""
    add_test_parser(subparsers)
    add_backtest_parser(subparsers)
    add_gate_parser(subparsers)
    add_scores_parser(subparsers)
