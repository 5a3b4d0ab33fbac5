"""Command-line wiring of rules as code: ``watcher test`` and ``watcher backtest``.

This module owns the argument parsers of those subcommands and the thin functions that call into
``backtest.testing`` and ``backtest.report`` (``gate`` and ``scores`` are in ``cli.evals``). It does
not own any behaviour. Imports stay lazy so ``watcher --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigError
from .common import UsageError, is_stdout, open_existing_store, require, write_text


def _cmd_test(args: argparse.Namespace) -> int:
    from ..backtest.testing import run_test_file, run_test_files

    if not args.json:
        return run_test_files(args.files, out=sys.stdout)
    import json
    from pathlib import Path

    files = []
    for name in args.files:
        failures = run_test_file(Path(name))
        files.append(
            {
                "file": name,
                "ok": not failures,
                "failures": [{"test": f.test, "lines": f.lines} for f in failures],
            }
        )
    print(json.dumps({"ok": all(f["ok"] for f in files), "files": files}, indent=2, ensure_ascii=False))
    return 0 if all(f["ok"] for f in files) else 1


def add_test_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher test FILES…`` (rule unit tests) on the command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser("test", help="run rule unit tests (promtool format)")
    p.add_argument("files", nargs="+", help="unit-test YAML files")
    p.add_argument("--json", action="store_true", help="print each file's failures as JSON")
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
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT (-: standard output only)")
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


def _backtest_store(settings: Any, groups: list[Any]) -> Any:
    """Open the store the backtest reads ``calls``/``scores`` from; it is never created.

    Rules that all read Prometheus need no store: a missing SQLite file then gets an in-memory
    stand-in (nothing is written to disk). Any ``calls``/``scores`` rule needs the real one.
    """
    from ..store.db import open_store
    from .common import sqlite_path

    path = sqlite_path(settings.store.url.get_secret_value())
    sql = any(rule.source != "prometheus" for g in groups for rule in g.rules)
    if path is not None and not path.is_file() and not sql:
        return open_store("sqlite://")
    return open_existing_store(settings)


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
    from ..store.markers import list_markers

    overrides: dict[str, Any] = {"store": {"url": args.store}} if args.store else {}
    settings = load_settings(args.config, **overrides)
    paths = args.rule_files or [str(p) for p in settings.rules]
    now = datetime.now(UTC)
    try:
        start, end = parse_time(args.from_, now), parse_time(args.to, now)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if end <= start:
        raise UsageError("--to must be later than --from")
    if args.plot:
        require("matplotlib")  # before the replay, not after minutes of it
    incidents = load_incidents(args.incidents) if args.incidents else None
    groups = load_groups(paths)
    store = _backtest_store(settings, groups)
    sources = build_sources(settings, store)
    try:
        markers = list_markers(store, start - timedelta(days=1), end)  # the day before: restarts replay it
        if args.compare:
            from ..backtest.compare import compare_main

            return compare_main(args.compare, paths, sources, start, end, incidents, sys.stdout)
        report = run_backtest(
            groups,
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
    # With --json -, standard output holds the JSON document only; the text report goes to stderr.
    text = sys.stderr if is_stdout(args.json) else sys.stdout
    print_report(report, text)
    if args.json:
        write_text(args.json, json.dumps(report_json(report), indent=2) + "\n")
        if not is_stdout(args.json):
            print(f"wrote {args.json}", file=text)
    if args.plot:
        from ..backtest.plot import write_plots

        files = write_plots(report, incidents or [], Path(args.plot))
        print(f"wrote {len(files)} plot(s) to {args.plot}", file=text)
    return 0
