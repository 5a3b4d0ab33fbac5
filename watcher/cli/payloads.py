"""``watcher payloads show|audit``: read a trace's captured payloads (audited) and the audit log.

This module owns the commands' options and output. It does not own reading payloads or writing
the audit row (``web.payloads.read_payloads``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from ..errors import ConfigError
from ..store.db import Store
from ..web.payloads import TRACE_ID_RE, audit_log, iso_utc, read_payloads


def _open(args: argparse.Namespace) -> tuple[Any, Store]:
    from ..config import load_settings
    from .common import open_existing_store

    settings = load_settings(args.config)
    return settings, open_existing_store(settings)


def cli_user() -> str:
    """Return ``cli:<OS user>`` (``cli:unknown`` when the system cannot say)."""
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (KeyError, OSError):
        return "cli:unknown"


def cmd_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the payloads of one trace (audited as ``cli:<user>``)."""
    out = out or sys.stdout
    if not TRACE_ID_RE.match(args.trace_id):
        print("watcher: error: a trace id is 1-64 letters, digits, _ . : -", file=sys.stderr)
        return 2
    _, store = _open(args)
    try:
        rows = read_payloads(store, args.trace_id, who=cli_user(), via="cli", now=datetime.now(UTC))
    finally:
        store.close()
    if args.json:
        print(json.dumps({"trace_id": args.trace_id, "payloads": rows}, indent=2), file=out)
        return 0
    if not rows:
        print(f"no payloads for trace {args.trace_id} (not captured, or past retention.payloads)", file=out)
        return 1
    for r in rows:
        print(f"--- {r['ts']}", file=out)
        print(f"prompt:   {r['prompt'] or ''}", file=out)
        print(f"response: {r['response'] or ''}", file=out)
    return 0


def cmd_audit(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print who read which trace's payloads, when (newest first)."""
    from ..core import parse_duration

    out = out or sys.stdout
    since = None
    if args.since:
        now = datetime.now(UTC)
        try:
            try:
                since = now - parse_duration(args.since)  # "7d": the last seven days
            except ValueError:
                from ..backtest.report import parse_time

                since = parse_time(args.since, now)  # "-7d", "now-7d" or an ISO-8601 time
        except (OverflowError, ConfigError) as exc:
            print(f"watcher: error: --since {args.since!r}: {exc}", file=sys.stderr)
            return 2
    _, store = _open(args)
    try:
        entries = audit_log(store, since=since, trace_id=args.trace, limit=args.limit)
    finally:
        store.close()
    if args.json:
        doc = [
            {
                "ts": iso_utc(e.ts),
                "who": e.who,
                "via": e.via,
                "trace_id": e.trace_id,
                "rows": e.rows,
                "client": e.client,
            }
            for e in entries
        ]
        print(json.dumps(doc, indent=2), file=out)
        return 0
    if not entries:
        print("no payload reads recorded", file=out)
        return 0
    print(f"{'when':<20}  {'who':<24} {'via':<4} {'rows':>4}  trace", file=out)
    for e in entries:
        print(f"{iso_utc(e.ts)[:19]:<20}  {e.who:<24} {e.via:<4} {e.rows:>4}  {e.trace_id}", file=out)  # type: ignore[index]
    return 0


def add_payloads_parser(sub: Any) -> None:
    """Add ``watcher payloads show|audit`` to the subcommands ``sub``."""
    p = sub.add_parser("payloads", help="read captured prompts/responses (audited) and the audit log")
    cmds = p.add_subparsers(dest="payloads_command", required=True)
    show = cmds.add_parser("show", help="print a trace's captured prompts/responses (the read is audited)")
    show.add_argument("trace_id")
    show.add_argument("--config", "-c")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    audit = cmds.add_parser("audit", help="list who read which trace's payloads, when")
    audit.add_argument("--config", "-c")
    audit.add_argument("--since", help="only reads in this last span (7d, -7d) or since a time (ISO-8601)")
    audit.add_argument("--trace", help="only reads of this trace id")
    audit.add_argument("--limit", type=int, default=1000)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)
