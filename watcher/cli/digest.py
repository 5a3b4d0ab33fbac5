"""The ``watcher digest`` subcommand: preview or queue the cost digest (``notify.costdigest``).

This module owns its argument parsing and printing. It does not own what the digest says nor
its schedule (``notify.costdigest``). ``cli.build_parser`` calls ``add_digest_parser``.

Exit codes: 0 done; 1 bad config, rules or store; 2 bad usage (``--at`` unreadable, ``--send``
without receivers).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from ..core import utc
from .common import UsageError


def _when(text: str | None) -> datetime:
    """Return ``--at`` as a UTC datetime (the wall clock when absent: the CLI may read it)."""
    if not text:
        return datetime.now(UTC)
    try:
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(f"--at: not an ISO-8601 time: {text!r} (e.g. 2026-12-07T08:00:00Z)") from None


def _cmd_digest(args: argparse.Namespace) -> int:
    from ..config import CostDigestSettings, load_settings
    from ..notify.costdigest import budget_rules, collect, local_day, render
    from ..notify.outbox import enqueue
    from ..rules.loader import load_rule_files
    from .common import open_existing_store

    now = _when(args.at)
    settings = load_settings(args.config)
    digest = settings.notify.cost_digest
    receivers = list(args.receiver or (digest.receivers if digest is not None else []))
    if args.send and not receivers:
        raise UsageError("--send needs receivers: set notify.cost_digest.receivers or pass --receiver")
    unknown = sorted(set(receivers) - set(settings.receivers))
    if unknown:
        raise UsageError(
            f"unknown receiver(s) {', '.join(unknown)}; configured: {', '.join(settings.receivers)}"
        )
    cfg = digest if digest is not None else CostDigestSettings(receivers=["preview"])
    rules = budget_rules(g.group for g in load_rule_files(settings.rules).groups)
    store = open_existing_store(settings)
    try:
        d = collect(store, rules, now, cfg)
        day, _ = local_day(now, cfg)
        notes = [render(d, r, day) for r in receivers or ["(preview)"]]
        if args.send:
            with store.session() as s:
                for n in notes:
                    enqueue(s, n, now, fingerprint="cost-digest")
                s.commit()
    finally:
        store.close()
    if args.json:
        out = [
            {"receiver": n.receiver, "title": n.title, "body": n.body, "dedup_key": n.dedup_key}
            for n in notes
        ]
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        for n in notes:
            verb = "queued for" if args.send else "to"
            print(f"--- {verb} {n.receiver}: {n.title}")
            print(n.body)
            print()
    return 0


def add_digest_parser(sub: Any) -> None:
    """Add ``watcher digest``."""
    p = sub.add_parser("digest", help="preview or queue the cost digest (spend vs budget, top models)")
    p.add_argument("--config", "-c")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--preview", action="store_true", help="print what would be sent, send nothing")
    mode.add_argument(
        "--send", action="store_true", help="queue it in the outbox now (the daemon delivers it)"
    )
    p.add_argument("--receiver", action="append", help="receiver (repeatable); default notify.cost_digest's")
    p.add_argument("--at", help="the digest's time, ISO-8601 (default: now)")
    p.add_argument("--json", action="store_true", help="print the messages as JSON")
    p.set_defaults(func=_cmd_digest)
