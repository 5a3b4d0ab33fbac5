"""The ``watcher`` command line.

This module owns argument parsing, exit codes and turning errors into one clear line. It does not
own any behaviour: each subcommand calls into the package. Exit codes: 0 ok, 1 problems found
(bad rules, failed checks, errors at run time), 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import ConfigError, RuleFileError, StoreError, WatcherError

logger = logging.getLogger("watcher")


def _setup_logging(level: str, settings: object | None = None) -> None:
    from ..logs import LogFormat, secret_values, setup_logging

    fmt: LogFormat = getattr(settings, "log_format", "auto")
    setup_logging(level, fmt=fmt, stream=sys.stderr, secrets=secret_values(settings))


def _cmd_check(args: argparse.Namespace) -> int:
    from ..rules.check import check_paths, schema_json

    if args.schema:
        print(schema_json())
        return 0
    known: set[str] | None = None
    paths = list(args.paths)
    if args.config or Path("watcher.yaml").is_file():
        from ..config import load_settings

        settings = load_settings(args.config)
        known = set(settings.receivers)
        if not paths:
            paths = [str(p) for p in settings.rules]
    if not paths:
        paths = ["rules"]
    return check_paths(paths, known_receivers=known, out=sys.stdout)


def _cmd_run(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..daemon import Daemon

    settings = load_settings(args.config)
    _setup_logging(args.log_level or settings.log_level, settings)
    daemon = Daemon(settings)
    try:
        if args.once:
            results = daemon.run_once(drain_s=args.drain_timeout)
            firing = sum(1 for r in results for a in r.alerts if a.state.name == "FIRING")
            failed = [h for r in results for h in r.health if not h.ok]
            left = daemon.notifier.pending_count()
            print(
                f"evaluated {len(results)} group(s): {firing} firing alert(s), "
                f"{len(failed)} rule error(s), {left} notification(s) still pending"
            )
            for h in failed:
                print(f"  rule {h.group}/{h.rule}: {h.error}", file=sys.stderr)
            return 1 if failed else 0
        from .. import sdnotify

        def ready() -> None:
            sdnotify.ready(f"evaluating {len(daemon.evaluators)} rule group(s)")

        daemon.run(ready=ready)
        return 0
    finally:
        daemon.close()


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(db=Path(args.db), days=args.days, seed=args.seed, out=sys.stdout)


def _cmd_alerts(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..engine.state import AlertStore
    from ..store.db import open_store

    settings = load_settings(args.config)
    store = open_store(settings.store.url.get_secret_value())
    try:
        alerts = AlertStore(store).load()
    finally:
        store.close()
    if not alerts:
        print("no alerts")
        return 0
    for a in sorted(alerts, key=lambda a: (-int(a.state), a.rule)):
        state = "resolved" if a.resolved else str(a.state)
        since = (a.resolved_at if a.resolved else a.active_at) or a.last_eval
        print(f"{state:9} {a.rule} {a.labels!r} value={a.value:.4g} since={since:%Y-%m-%d %H:%M}Z")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``watcher`` command."""
    p = argparse.ArgumentParser(prog="watcher", description="Alerting and anomaly detection for LLM apps.")
    p.add_argument("--version", action="version", version=f"watcher {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (or --once)")
    run.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")
    run.add_argument("--once", action="store_true", help="evaluate every group once, flush the outbox, exit")
    run.add_argument("--drain-timeout", type=float, default=30.0, help="seconds --once waits for deliveries")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="simulate LLM traffic with incidents and watch watcher catch them")
    demo.add_argument("--db", default="watcher-demo.db", help="SQLite file to (re)create")
    demo.add_argument("--days", type=int, default=4, help="days of traffic to generate (>= 3)")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check", help="validate rule files (and the config, if given)")
    check.add_argument("paths", nargs="*", help="rule files or folders (default: the configured rules)")
    check.add_argument("--config", "-c")
    check.add_argument("--schema", action="store_true", help="print the JSON schema of rule files")
    check.set_defaults(func=_cmd_check)

    alerts = sub.add_parser("alerts", help="list current alerts from the store")
    alerts.add_argument("--config", "-c")
    alerts.set_defaults(func=_cmd_alerts)
    from .evals import add_score_parser

    add_score_parser(sub)
    from .bench import add_bench_parser

    add_bench_parser(sub)
    from .rules import add_rules_as_code_parsers

    add_rules_as_code_parsers(sub)
    from .store import add_db_parser

    add_db_parser(sub)
    from .notify import add_notify_parser, add_silence_parser

    add_silence_parser(sub)
    add_notify_parser(sub)
    from .cluster import add_cluster_parser

    add_cluster_parser(sub)
    from .payloads import add_payloads_parser

    add_payloads_parser(sub)
    from .why import add_annotate_parser, add_feedback_parser

    add_annotate_parser(sub)
    add_feedback_parser(sub)
    return p


def _score_only_parser() -> argparse.ArgumentParser:
    """Return a parser with only ``watcher score``: it must not import the daemon's dependencies.

    ``build_parser`` imports every subcommand's module (sqlalchemy, the store, the notifiers),
    ~1.5 s of CPU that a one-off ``watcher score INPUT.csv`` has no use for.
    """
    from .evals import add_score_parser

    p = argparse.ArgumentParser(prog="watcher", description="Alerting and anomaly detection for LLM apps.")
    p.add_argument("--version", action="version", version=f"watcher {__version__}")
    add_score_parser(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``watcher`` command and return its exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = _score_only_parser() if words[:1] == ["score"] else build_parser()
    args = parser.parse_args(words)
    try:
        return int(args.func(args))
    except RuleFileError as exc:
        print(f"watcher: invalid rules:\n{exc}", file=sys.stderr)
        return 1
    except (ConfigError, StoreError) as exc:
        print(f"watcher: error: {exc}", file=sys.stderr)
        return 1
    except WatcherError as exc:
        print(f"watcher: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
