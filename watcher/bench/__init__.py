"""``watcher bench``: the detection benchmark on a labelled corpus and the throughput benchmark.

This package owns the generated corpus (``corpus``, ``hardened``), window-based detection scoring
(``detection``, ``ranking``) with other libraries' detectors beside watcher's (``peers``), flag
rates on real anomaly-free series shipped inside pip packages (``flagrate``), the per-detector
timing of start-up and steady-state ticks (``throughput``) and an alert storm through the outbox
(``storm``).
It does not own any detector. Imports stay lazy: ``watcher --help`` must not pay for numpy.
"""

from __future__ import annotations

import argparse
from typing import Any


def _run_detection(args: argparse.Namespace) -> int:
    from .detection import main_detection

    return main_detection(args)


def _run_flagrate(args: argparse.Namespace) -> int:
    from .flagrate import main_flagrate

    return main_flagrate(args)


def _run_throughput(args: argparse.Namespace) -> int:
    from .throughput import main_throughput

    return main_throughput(args)


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher bench detection|flagrate|throughput|daemon|hooks|ingest|notify``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="detection, flag-rate, throughput, hooks, ingest and notification-storm benchmarks"
    )
    sub = p.add_subparsers(
        dest="bench", required=True, metavar="detection|flagrate|throughput|daemon|hooks|ingest|notify"
    )
    det = sub.add_parser("detection", help="score detectors on a labelled corpus (window-based, 0-100)")
    det.add_argument("--corpus", help="corpus directory (data/**/*.csv + labels JSON); default: generated")
    det.add_argument("--labels", help="labels JSON (default: the corpus' labels/*.json or labels.json)")
    det.add_argument("--detector", action="append", help="detector kind or baseline (repeatable)")
    det.add_argument("--for", dest="for_", default="10m", help="persistence before a point pages (10m)")
    det.add_argument("--write-corpus", metavar="DIR", help="write the generated corpus to DIR and exit")
    det.add_argument("--json", action="store_true", help="print the full results as JSON")
    det.add_argument("--per-file", action="store_true", help="print per-file precision/recall/TTD")
    det.add_argument(
        "--corpus-set",
        choices=("standard", "hardened", "both"),
        default="standard",
        help="generated corpus section(s): standard (comparable with earlier numbers), hardened "
        "(heavy tails, zeros, quantisation, bursts, messy timestamps) or both, reported separately",
    )
    det.add_argument("--no-peers", action="store_true", help="leave out the other libraries' detectors")
    det.add_argument(
        "--only", action="append", metavar="SUBSTR", help="only files whose path contains SUBSTR (repeatable)"
    )
    det.set_defaults(func=_run_detection)
    fr = sub.add_parser(
        "flagrate", help="flags per 10,000 points at default sensitivity on real anomaly-free series"
    )
    fr.add_argument("--detector", action="append", help="detector kind (repeatable; default: all)")
    fr.add_argument("--dataset", action="append", help="only datasets whose name contains this (repeatable)")
    fr.add_argument(
        "--spacing",
        default="1h",
        help="time step between the real datasets' points: a duration (1h, the default, so the default "
        "windows hold enough points of even a 100-point series) or 'native' (each dataset's own period: "
        "year, quarter, month, week, 30 min); generated series keep their own timestamps",
    )
    fr.add_argument("--no-generated", action="store_true", help="leave out the generated no-label series")
    fr.add_argument("--json", action="store_true", help="print the results as JSON")
    fr.set_defaults(func=_run_flagrate)
    thr = sub.add_parser(
        "throughput",
        help="the detector-kernel view: start-up and steady-state ticks of the detectors alone "
        "(the whole daemon path: bench daemon)",
    )
    thr.add_argument("--series", type=int, default=10_000)
    thr.add_argument("--history", default="7d")
    thr.add_argument("--step", default="1m")
    thr.add_argument("--ticks", type=int, default=5, help="steady-state ticks to time")
    thr.add_argument(
        "--startup-sample", type=int, default=100, help="series whose start-up is timed (then cloned)"
    )
    thr.add_argument("--detector", action="append", help="detector kind (repeatable)")
    thr.set_defaults(func=_run_throughput)
    # These pull in sqlalchemy/pydantic (which the CLI loads anyway for `watcher db`), not numpy.
    from ..ingest import add_ingest_bench_parser
    from ..instrument.bench import add_hooks_bench_parser
    from .daemon import add_daemon_parser
    from .storm import add_storm_parser

    add_daemon_parser(sub)
    add_hooks_bench_parser(sub)
    add_ingest_bench_parser(sub)
    add_storm_parser(sub)
    return p
