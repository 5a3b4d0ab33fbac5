"""The ``watcher`` command line.

This module owns argument parsing, exit codes and turning errors into one clear line. It does not
own any behaviour: each subcommand calls into the package. Exit codes: 0 ok, 1 problems found
(bad rules, failed checks, errors at run time), 2 bad usage or bad input (a missing store file
included), 141 the reader of standard output went away (``watcher … | head -1``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import ConfigError, RuleFileError, StoreError, WatcherError
from .common import Parser, UsageError, install_hint, open_existing_store

if TYPE_CHECKING:
    from ..core import Alert
    from ..errors import Problem
    from ..rules.schema import Group, Rule

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
    if args.json:
        return _check_json(paths, known)
    return check_paths(paths, known_receivers=known, out=sys.stdout, advise=lookback_warning)


def lookback_warning(rule: Rule, group: Group) -> str | None:
    """Return a warning when ``rule``'s lookback is shorter than its detector's calibrated warm-up.

    A series whose start-up history is shorter than that starts, after every restart, with the
    conservative default tail (only extreme points page) and without the run statistic (a lasting
    small shift cannot page) until the warm-up has passed in real time.
    """
    from ..core import format_duration
    from ..detectors.warmup import warmup
    from ..engine.group import rule_lookback, rule_step

    if rule.detector is None:
        return None
    step = rule_step(rule, group)
    lookback = rule_lookback(rule, group)
    need = warmup(rule.detector, step).calibrated
    if lookback >= need:
        return None
    given = "lookback" if rule.lookback is not None else "the default lookback"
    return (
        f"{given} {format_duration(lookback)} is shorter than the {rule.detector.kind} detector's "
        f"calibrated warm-up at one point per {format_duration(step)} ({format_duration(need)}): after "
        f"every restart its series page only on extreme points until then; set lookback: "
        f"{format_duration(need)} or more"
    )


def _problem_json(p: Problem) -> dict[str, Any]:
    return {
        "file": p.file,
        "line": p.line,
        "col": p.col,
        "group": p.group,
        "rule": p.rule,
        "message": p.message,
        "text": str(p),
    }


def _check_json(paths: list[str], known: set[str] | None) -> int:
    """Print ``watcher check``'s findings as one JSON document: files, rule counts, problems, warnings."""
    from ..rules.check import rule_warnings
    from ..rules.loader import inspect_rule_files

    found = inspect_rule_files(paths, known_receivers=known)
    doc = {
        "ok": not found.problems,
        "files": [{"file": name, "rules": found.rules_in(name)} for name in found.checked],
        "problems": [_problem_json(p) for p in found.problems],
        "warnings": [_problem_json(w) for w in rule_warnings(found, lookback_warning)],
    }
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return 1 if found.problems else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..daemon import Daemon

    settings = load_settings(args.config)
    _setup_logging(args.log_level or settings.log_level, settings)
    daemon = Daemon(settings)
    try:
        if args.once:
            import contextlib

            # With --json, standard output holds the JSON only: the console receiver prints to stderr.
            quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
            with quiet:
                results = daemon.run_once(drain_s=args.drain_timeout)
            firing = sum(1 for r in results for a in r.alerts if a.state.name == "FIRING")
            failed = [h for r in results for h in r.health if not h.ok]
            left = daemon.notifier.pending_count()
            if args.json:
                doc = {
                    "groups": len(results),
                    "firing": firing,
                    "rule_errors": [{"group": h.group, "rule": h.rule, "error": h.error} for h in failed],
                    "pending_notifications": left,
                }
                print(json.dumps(doc, indent=2, ensure_ascii=False))
                return 1 if failed else 0
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
    from .demo import DEFAULT_PORT, pick_port, run_demo, serve

    port = pick_port(args.host, args.port) if args.serve else DEFAULT_PORT
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'localhost' if not args.serve else host}:{port}"
    end = None
    if args.end is not None:
        from ..backtest.report import parse_time

        try:
            end = parse_time(args.end)
        except ConfigError as exc:
            raise UsageError(f"--end: {exc}") from None
    code = run_demo(
        db=Path(args.db),
        days=args.days,
        seed=args.seed,
        end=end,
        out=sys.stdout,
        progress=None if args.quiet else sys.stderr,
        external_url=url,
        serving=args.serve,
    )
    if code or not args.serve:
        return code
    return serve(Path(args.db), args.host, port, sys.stdout, end=end)


def _cmd_alerts(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..engine.state import AlertStore

    settings = load_settings(args.config)
    store = open_existing_store(settings)
    try:
        alerts = AlertStore(store).load()
    finally:
        store.close()
    ordered = sorted(alerts, key=lambda a: (-int(a.state), a.rule))
    if args.json:
        print(json.dumps([_alert_json(a) for a in ordered], indent=2, ensure_ascii=False))
        return 0
    if not alerts:
        print("no alerts")
        return 0
    for a in ordered:
        state = "resolved" if a.resolved else str(a.state)
        since = (a.resolved_at if a.resolved else a.active_at) or a.last_eval
        print(f"{state:9} {a.rule} {a.labels!r} {_alert_value(a)} since={since:%Y-%m-%d %H:%M}Z")
    return 0


def _alert_value(a: Alert) -> str:
    """Return ``value=… expected=… band=[lo, hi]``: only what is known, never a made-up band."""
    import math

    parts = [f"value={a.value:.4g}" if math.isfinite(a.value) else "value=none"]
    if math.isfinite(a.expected):
        parts.append(f"expected={a.expected:.4g}")
    if math.isfinite(a.lower) or math.isfinite(a.upper):
        low = f"{a.lower:.4g}" if math.isfinite(a.lower) else "-inf"
        high = f"{a.upper:.4g}" if math.isfinite(a.upper) else "+inf"
        parts.append(f"band=[{low}, {high}]")
    return " ".join(parts)


def _alert_json(a: Alert) -> dict[str, Any]:
    """Return one alert as ``watcher alerts --json`` prints it: the store's codec, state by name."""
    from ..core import alert_to_dict

    return alert_to_dict(a) | {"state": "resolved" if a.resolved else str(a.state)}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``watcher`` command."""
    p = Parser(prog="watcher", description="Alerting and anomaly detection for LLM apps.")
    p.add_argument("--version", action="version", version=f"watcher {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (or --once)")
    run.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")
    run.add_argument("--once", action="store_true", help="evaluate every group once, flush the outbox, exit")
    run.add_argument("--drain-timeout", type=float, default=30.0, help="seconds --once waits for deliveries")
    run.add_argument("--json", action="store_true", help="with --once: print the summary as JSON")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="simulate LLM traffic with incidents and watch watcher catch them")
    demo.add_argument("--db", default="watcher-demo.db", help="SQLite file to (re)create")
    demo.add_argument("--days", type=int, default=4, help="days of traffic to generate (>= 3)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--end", help="the simulated traffic ends here (default now; a fixed time makes the run reproducible)"
    )
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    demo.add_argument("--serve", action="store_true", help="then serve the result's status page until Ctrl-C")
    demo.add_argument("--host", default="127.0.0.1", help="--serve's address (default 127.0.0.1)")
    demo.add_argument(
        "--port", type=int, help="--serve's port (default: 9464 if free, else a free one; 0: any free)"
    )
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check", help="validate rule files (and the config, if given)")
    check.add_argument("paths", nargs="*", help="rule files or folders (default: the configured rules)")
    check.add_argument("--config", "-c")
    check.add_argument("--schema", action="store_true", help="print the JSON schema of rule files")
    check.add_argument("--json", action="store_true", help="print files, rule counts and problems as JSON")
    check.set_defaults(func=_cmd_check)

    alerts = sub.add_parser("alerts", help="list current alerts from the store")
    alerts.add_argument("--config", "-c")
    alerts.add_argument("--json", action="store_true", help="print the alerts as a JSON list")
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
    from .digest import add_digest_parser

    add_digest_parser(sub)
    from .completion import add_completion_parser

    add_completion_parser(sub, build_parser)
    return p


def _score_only_parser() -> argparse.ArgumentParser:
    """Return a parser with only ``watcher score``: it must not import the daemon's dependencies.

    ``build_parser`` imports every subcommand's module (sqlalchemy, the store, the notifiers),
    ~1.5 s of CPU that a one-off ``watcher score INPUT.csv`` has no use for.
    """
    from .evals import add_score_parser

    p = Parser(prog="watcher", description="Alerting and anomaly detection for LLM apps.")
    p.add_argument("--version", action="version", version=f"watcher {__version__}")
    add_score_parser(p.add_subparsers(dest="command", required=True))
    return p


def _broken_pipe() -> int:
    """The reader of standard output went away (``watcher … | head -1``): stop quietly.

    Standard output is pointed at /dev/null so that the interpreter's last flush does not print
    a second BrokenPipeError; the exit code is the shell's for a process ended by SIGPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (tests capturing output)
        pass
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``watcher`` command and return its exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = _score_only_parser() if words[:1] == ["score"] else build_parser()
        args = parser.parse_args(words)
        code = _dispatch(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _broken_pipe()


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"watcher: error: {exc}", file=sys.stderr)
        return 2
    except RuleFileError as exc:
        print(f"watcher: invalid rules:\n{exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"watcher: error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, WatcherError) as exc:
        print(f"watcher: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        print(f"watcher: error: {install_hint(exc.name)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
