"""Command-line wiring of rules as code: ``watcher test`` and ``watcher backtest``.

This module owns the argument parsers of those subcommands and the thin functions that call into
``backtest.testing`` and ``backtest.report`` (``gate`` and ``scores`` are in ``cli.evals``). It does
not own any behaviour. Imports stay lazy so ``watcher --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from ..errors import ConfigError


def _cmd_test(args: argparse.Namespace) -> int:
    from ..backtest.testing import run_test_files

    return run_test_files(args.files, out=sys.stdout)


def add_test_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher test FILES…`` (rule unit tests) on the command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser("test", help="run rule unit tests (promtool format)")
    p.add_argument("files", nargs="+", help="unit-test YAML files")
    p.set_defaults(func=_cmd_test)
    return p


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
    p.set_defaults(func=main_backtest)
    return p


def add_rules_as_code_parsers(subparsers: Any) -> None:
    """Register every rules-as-code subcommand (test, backtest, gate, scores)."""
    add_test_parser(subparsers)
    add_backtest_parser(subparsers)
    from .evals import add_gate_parser, add_scores_parser

    add_gate_parser(subparsers)
    add_scores_parser(subparsers)


def main_backtest(args: argparse.Namespace) -> int:
    """Run ``watcher backtest`` from parsed arguments; return the exit code."""
    import json
    from pathlib import Path

    from ..backtest.report import (
        load_groups,
        load_incidents,
        parse_time,
        print_report,
        report_json,
        run_backtest,
    )
    from ..config import load_settings
    from ..sources.build import build_sources
    from ..store.db import open_store
    from ..store.markers import list_markers

    overrides: dict[str, Any] = {"store": {"url": args.store}} if args.store else {}
    settings = load_settings(args.config, **overrides)
    paths = args.rule_files or [str(p) for p in settings.rules]
    start, end = parse_time(args.from_), parse_time(args.to)
    if end <= start:
        raise ConfigError("--to must be later than --from")
    incidents = load_incidents(args.incidents) if args.incidents else None
    store = open_store(settings.store.url.get_secret_value(), busy_timeout_ms=settings.store.busy_timeout_ms)
    sources = build_sources(settings, store)
    try:
        markers = list_markers(store, start - timedelta(days=1), end)  # the day before: restarts replay it
        if args.compare:
            from ..backtest.compare import compare_main

            return compare_main(args.compare, paths, sources, start, end, incidents, sys.stdout)
        report = run_backtest(
            load_groups(paths),
            sources,
            start,
            end,
            incidents=incidents,
            record_verdicts=bool(args.plot),
            show_progress=sys.stderr.isatty(),
            jobs=getattr(args, "jobs", None),
            markers=markers,
        )
    finally:
        for src in {id(s): s for s in sources.values()}.values():
            close = getattr(src, "close", None)
            if callable(close):
                close()
        store.close()
    print_report(report, sys.stdout)
    if args.json:
        Path(args.json).write_text(json.dumps(report_json(report), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot:
        from ..backtest.plot import write_plots

        files = write_plots(report, incidents or [], Path(args.plot))
        print(f"wrote {len(files)} plot(s) to {args.plot}")
    return 0
