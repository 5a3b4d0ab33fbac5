"""The "why" subcommands: ``watcher annotate`` (release markers) and ``watcher feedback``.

This module owns their argument parsing and printing; it reads the wall clock (the CLI is the top
of the stack) and passes it down. It does not own the markers or verdicts (``store.markers``,
``store.feedback``). ``cli.build_parser`` calls ``add_annotate_parser`` and ``add_feedback_parser``.

* ``watcher annotate deploy "api v2.3" -l service=api [--at TIME] [--rebaseline 30m]`` adds a marker;
  ``watcher annotate list [--from -7d]`` lists them.
* ``watcher feedback mark TARGET real|false [-l k=v] [--note …]``: TARGET is an alert's fingerprint
  or its rule name (with ``-l`` to pick one series); ``watcher feedback list``; ``watcher feedback
  export [-o incidents.yaml]`` writes the incidents file ``watcher backtest --incidents`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..core import Alert, AlertState, Labels, parse_duration, utc
from ..errors import ConfigError
from ..store.feedback import VERDICTS, incidents_document, list_feedback, record
from ..store.markers import KINDS, MarkerIn, add_marker, list_markers


def _open(config: str | None) -> Any:
    from ..config import load_settings
    from ..store.db import open_store

    settings = load_settings(config)
    return open_store(settings.store.url.get_secret_value(), busy_timeout_ms=settings.store.busy_timeout_ms)


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise ConfigError(f"label {pair!r}: use name=value")
        out[k.strip()] = v.strip()
    return out


def _time(text: str | None, now: datetime) -> datetime | None:
    """Parse ``2026-12-07T14:01Z``, ``now``, ``-10m`` or ``now-10m`` (UTC); None stays None."""
    if text is None:
        return None
    s = text.strip()
    if s == "now":
        return now
    if s.startswith(("-", "now-")):
        try:
            return now - parse_duration(s.removeprefix("now").removeprefix("-").strip())
        except ValueError as exc:
            raise ConfigError(f"bad time {text!r}: {exc}") from None
    try:
        return utc(datetime.fromisoformat(s.replace("Z", "+00:00")))
    except ValueError:
        raise ConfigError(f"bad time {text!r}: use ISO-8601 (2026-12-07T14:01Z), now, or -10m") from None


def _cmd_annotate(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    if args.kind == "list":
        start = _time(args.from_, now) or now - timedelta(days=7)
        store = _open(args.config)
        try:
            markers = list_markers(store, start, now)
        finally:
            store.close()
        if args.json:
            print(json.dumps([m.to_dict() for m in markers], indent=2))
        for m in [] if args.json else markers:
            grace = f" (re-baselines {m.grace})" if m.grace.total_seconds() else ""
            print(f"{m.id:>5}  {m.ts:%Y-%m-%d %H:%M}Z  {m.title()}  {dict(m.labels) or ''}{grace}")
        if not markers and not args.json:
            print("no release markers")
        return 0
    try:
        body = MarkerIn.model_validate(
            {
                "kind": args.kind,
                "text": " ".join(args.text),
                "labels": _labels(args.label),
                "time": _time(args.at, now),
                "rebaseline": args.rebaseline,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"annotate: {where}: {first['msg']}") from None
    store = _open(args.config)
    try:
        saved = add_marker(store, body.marker(now, args.author or "cli"), now=now)
    finally:
        store.close()
    grace = f", re-baselining for {saved.grace}" if saved.grace.total_seconds() else ""
    print(f"release marker {saved.id}: {saved.title()} at {saved.ts:%Y-%m-%d %H:%M:%S}Z{grace}")
    return 0


def _find(alerts: list[Alert], target: str, labels: dict[str, str]) -> Alert:
    hits = [a for a in alerts if a.fingerprint == target]
    if not hits:
        hits = [
            a for a in alerts if a.rule == target and all(a.labels.get(k) == v for k, v in labels.items())
        ]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ConfigError(
            f"no alert {target!r} in the store (resolved alerts are kept for notify.resolved_retention); "
            "name an older episode with --start and labels"
        )
    names = "; ".join(f"{a.fingerprint} {a.labels!r}" for a in hits[:5])
    raise ConfigError(f"{len(hits)} alerts match {target!r}: pick one with -l or a fingerprint ({names})")


def _cmd_feedback(args: argparse.Namespace) -> int:
    from ..engine.state import AlertStore

    now = datetime.now(UTC)
    store = _open(args.config)
    try:
        if args.action == "mark":
            labels = _labels(args.label)
            start = _time(args.start, now)
            try:
                alert = _find(AlertStore(store).load(), args.target, labels)
            except ConfigError:
                if start is None:
                    raise
                end = _time(args.end, now)
                alert = Alert(
                    args.target, "", Labels(labels), AlertState.INACTIVE, active_at=start, resolved_at=end
                )
            saved = record(
                store,
                alert=alert,
                verdict=args.verdict,
                note=args.note,
                who=args.author or "cli",
                now=now,
                episode_start=start,
            )
            what = "a real incident" if saved.verdict == "real" else "a false alarm"
            print(
                f"{saved.rule} {dict(saved.labels)} from {saved.episode_start:%Y-%m-%d %H:%M}Z marked {what}"
            )
            return 0
        rows = list_feedback(store, _time(args.from_, now), _time(args.to, now))
    finally:
        store.close()
    if args.action == "list":
        for f in rows:
            print(f"{f.episode_start:%Y-%m-%d %H:%M}Z  {f.verdict:5}  {f.rule} {dict(f.labels)}  {f.note}")
        if not rows:
            print("no feedback")
        return 0
    text = yaml.safe_dump(incidents_document(rows), sort_keys=False, allow_unicode=True)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {len(rows)} incident(s) to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def add_annotate_parser(sub: Any) -> None:
    """Add ``watcher annotate``."""
    p = sub.add_parser(
        "annotate", help="add a release marker (deploy, prompt version, model switch), or list them"
    )
    p.add_argument("kind", choices=[*KINDS, "list"], help="the kind of change, or list")
    p.add_argument("text", nargs="*", help="what changed, e.g. api-v2.3")
    p.add_argument(
        "--label", "-l", action="append", default=[], help="name=value the change touches (repeat)"
    )
    p.add_argument("--at", help="when it happened: ISO-8601 or -10m (default now)")
    p.add_argument(
        "--rebaseline", help="re-baseline the series it names for this long (e.g. 30m) instead of paging"
    )
    p.add_argument("--author", "-a", default="", help="who")
    p.add_argument("--from", dest="from_", help="list: since (default -7d)")
    p.add_argument("--json", action="store_true", help="list: as JSON")
    p.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")
    p.set_defaults(func=_cmd_annotate)


def add_feedback_parser(sub: Any) -> None:
    """Add ``watcher feedback mark|list|export``."""
    p = sub.add_parser("feedback", help="mark alert episodes real incidents or false alarms; export them")
    fsub = p.add_subparsers(dest="action", required=True)
    mark = fsub.add_parser("mark", help="mark an alert episode")
    mark.add_argument("target", help="the alert's fingerprint, or its rule name (with -l)")
    mark.add_argument("verdict", choices=VERDICTS, help="real (incident) or false (alarm)")
    mark.add_argument("--label", "-l", action="append", default=[], help="name=value picking the series")
    mark.add_argument("--note", default="", help="why")
    mark.add_argument("--author", "-a", default="")
    mark.add_argument("--start", help="the episode's start, for an alert no longer in the store")
    mark.add_argument("--end", help="the episode's end, for an alert no longer in the store")
    for name, helptext in (
        ("list", "list the verdicts"),
        ("export", "write them as a backtest incidents file"),
    ):
        sp = fsub.add_parser(name, help=helptext)
        sp.add_argument("--from", dest="from_", help="episodes since (ISO-8601 or -30d)")
        sp.add_argument("--to", help="episodes until")
        if name == "export":
            sp.add_argument("--out", "-o", help="file to write (default: standard output)")
    for sp in (mark, *(fsub.choices[n] for n in ("list", "export"))):
        sp.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")
    p.set_defaults(func=_cmd_feedback)


__all__ = ["add_annotate_parser", "add_feedback_parser"]
