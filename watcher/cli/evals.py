"""``watcher score``, ``watcher gate`` and ``watcher scores import``: the offline evaluation commands.

This module owns their options and exit codes. It does not own scoring a CSV series
(``evals.scoring``), the gate (``evals.gate``) or evaluation runs (``evals.runs``).
``watcher score`` must not import the daemon's dependencies: imports stay lazy.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any


def run_score(args: argparse.Namespace) -> int:
    """Run ``watcher score``: exit 0 when scored, 2 on bad input or bad detector settings."""
    from ..errors import DetectorError
    from ..evals.scoring import BadInput, build_spec, score_stream

    name = str(args.input)
    try:
        spec = build_spec(args.detector, args.direction, args.set or [])
        try:
            text = Path(args.input).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{name}: cannot read: {exc}") from None
        buf = io.StringIO()
        score_stream(io.StringIO(text, newline=""), name, spec, buf, sys.stderr)
    except (BadInput, DetectorError) as exc:
        print(f"watcher score: {exc}", file=sys.stderr)
        return 2
    if args.output is None or args.output == "-":
        sys.stdout.write(buf.getvalue())
        return 0
    try:
        Path(args.output).write_text(buf.getvalue(), encoding="utf-8")
    except OSError as exc:
        print(f"watcher score: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    return 0


def add_score_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher score`` on the command line's subparsers."""
    from ..evals import scoring
    from ..evals.scoring import KINDS

    p: argparse.ArgumentParser = subparsers.add_parser(
        "score",
        help="run one detector over a CSV series (timestamp,value) and write its verdicts",
        description=scoring.__doc__.split("\n\n")[2] if scoring.__doc__ else None,
    )
    p.add_argument("--detector", "-d", required=True, choices=KINDS, help="detector kind")
    p.add_argument("--direction", choices=("up", "down", "both"), help="which side is anomalous")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="detector parameter, e.g. --set window=1d --set 'seasons=[1d,1w]' (repeatable)",
    )
    p.add_argument("input", metavar="INPUT.csv")
    p.add_argument(
        "output", metavar="OUTPUT.csv", nargs="?", help="where to write (default, or -: standard output)"
    )
    p.set_defaults(func=run_score)
    return p


def _cmd_gate(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..evals.gate import main_gate
    from .common import require_existing_store

    overrides: dict[str, Any] = {"store": {"url": args.store}} if args.store else {}
    require_existing_store(load_settings(args.config, **overrides))

    return main_gate(args)


def _cmd_scores_import(args: argparse.Namespace) -> int:
    from ..evals.runs import main_import

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
    p.add_argument(
        "--json", action="store_true", help="print the verdict and each score's comparison as JSON"
    )
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
    imp.add_argument(
        "--json", action="store_true", help="print {file, run, imported, errors, errors_total} as JSON"
    )
    imp.set_defaults(func=_cmd_scores_import)
    return p
