"""``watcher cluster status``: the replicas, leases, groups per replica and outbox depth.

This module owns the command's options and output stream. It does not own reading the cluster's
state (``cluster.status``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import sqlalchemy as sa


def cmd_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the cluster's replicas, leases, groups per replica and outbox depth."""
    out = out or sys.stdout
    from ..cluster.status import collect, print_tables
    from ..config import load_settings
    from .common import open_existing_store

    settings = load_settings(args.config)
    store = open_existing_store(settings)
    try:
        try:
            doc = collect(store, settings.cluster.lease_ttl)
        except sa.exc.SQLAlchemyError as exc:
            raise store.error("cluster status", exc) from None
    finally:
        store.close()
    if args.json:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        print_tables(doc, out)
    return 0


def add_cluster_parser(sub: Any) -> None:
    """Register ``watcher cluster status``."""
    cluster = sub.add_parser("cluster", help="replicas sharing rule groups through PostgreSQL")
    csub = cluster.add_subparsers(dest="cluster_command", required=True)
    status = csub.add_parser("status", help="replicas, leases, groups per replica, outbox depth")
    status.add_argument("--config", "-c")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(func=cmd_status)
