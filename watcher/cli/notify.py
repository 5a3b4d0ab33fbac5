"""The notification subcommands: ``watcher silence add|list|expire``, ``watcher notify test`` and
``watcher notify dead-letters``.

This module owns their argument parsing and printing. It does not own matcher semantics
(``silences``), receivers (``receivers``) nor the store (``store.db``). ``cli.build_parser`` calls
``add_silence_parser`` and ``add_notify_parser``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import col, select

from ..core import AlertState, Labels, NotificationKind, TraceRef, format_duration, parse_duration
from ..errors import ConfigError, NotifyError
from ..notify.silences import Matcher, matcher_dicts, matches_everything
from ..store.tables import SilenceRow


def _open(config: str | None) -> Any:
    from ..config import load_settings
    from .common import open_existing_store

    return open_existing_store(load_settings(config))


def _describe(s: SilenceRow, now: datetime) -> str:
    matchers = ", ".join(str(Matcher.from_dict(m)) for m in s.matchers or [])
    if s.ends_at <= now:
        state = "expired"
    elif s.starts_at > now:
        state = "pending"
    else:
        state = f"active, {format_duration(timedelta(seconds=int((s.ends_at - now).total_seconds())))} left"
    ends = s.ends_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"{s.id}  {{{matchers}}}  until {ends} ({state})  by {s.created_by or '-'}: {s.comment}"


def _cmd_silence_add(args: argparse.Namespace) -> int:
    from ..config import load_settings

    try:
        matchers = matcher_dicts(args.matcher)
        duration = parse_duration(args.duration)
    except ValueError as exc:
        print(f"watcher: {exc}", file=sys.stderr)
        return 2
    if duration <= timedelta(0):
        print("watcher: --duration must be positive", file=sys.stderr)
        return 2
    longest = load_settings(args.config).notify.max_silence
    if duration > longest:
        print(
            f"watcher: a silence may last at most {format_duration(longest)} (notify.max_silence)",
            file=sys.stderr,
        )
        return 2
    if matches_everything(matchers) and not args.match_all:
        print(
            "watcher: these matchers mute (nearly) every alert; name a value (tenant=acme) "
            "or confirm with --match-all",
            file=sys.stderr,
        )
        return 2
    now = datetime.now(UTC)
    row = SilenceRow(
        id=str(uuid.uuid4()),
        matchers=matchers,
        starts_at=now,
        ends_at=now + duration,
        created_by=args.author,
        comment=args.comment,
        created_at=now,
    )
    store = _open(args.config)
    try:
        with store.session() as s:
            s.add(row)
            s.commit()
            print(_describe(row, now))
    finally:
        store.close()
    return 0


def _cmd_silence_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    store = _open(args.config)
    try:
        with store.session() as s:
            stmt = select(SilenceRow).order_by(col(SilenceRow.starts_at))
            if not args.all:
                stmt = stmt.where(col(SilenceRow.ends_at) > now)
            rows = list(s.exec(stmt).all())
    finally:
        store.close()
    if args.json:
        print(json.dumps([_silence_json(row, now) for row in rows], indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        print(_describe(row, now))
    if not rows:
        print("no silences")
    return 0


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    ts = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _silence_json(s: SilenceRow, now: datetime) -> dict[str, Any]:
    """Return one silence as ``silence list --json`` prints it (Alertmanager's field names)."""
    ends = s.ends_at if s.ends_at.tzinfo is not None else s.ends_at.replace(tzinfo=UTC)
    starts = s.starts_at if s.starts_at.tzinfo is not None else s.starts_at.replace(tzinfo=UTC)
    state = "expired" if ends <= now else ("pending" if starts > now else "active")
    return {
        "id": s.id,
        "matchers": list(s.matchers or []),
        "startsAt": _iso(s.starts_at),
        "endsAt": _iso(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": {"state": state},
    }


def _cmd_silence_expire(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    store = _open(args.config)
    try:
        with store.session() as s:
            row = s.get(SilenceRow, args.id)
            if row is None:
                print(f"watcher: no silence {args.id}", file=sys.stderr)
                return 1
            if row.ends_at > now:
                row.ends_at = now
                s.add(row)
                s.commit()
            print(_describe(row, now))
    finally:
        store.close()
    return 0


def add_silence_parser(sub: Any) -> None:
    """Add ``silence add|list|expire`` to the ``watcher`` subcommands."""
    p = sub.add_parser("silence", help="add, list or expire silences")
    ssub = p.add_subparsers(dest="silence_command", required=True)
    add = ssub.add_parser("add", help="mute alerts matching every --matcher for --duration")
    add.add_argument(
        "--matcher",
        "-m",
        action="append",
        required=True,
        help="name=value, name!=value, name=~regex or name!~regex (repeatable)",
    )
    add.add_argument("--duration", "-d", default="1h", help="e.g. 30m, 2h, 1d (default 1h)")
    add.add_argument("--author", "-a", default="", help="who is silencing")
    add.add_argument("--comment", default="", help="why")
    add.add_argument(
        "--match-all", action="store_true", help="confirm a silence that mutes (nearly) every alert"
    )
    add.set_defaults(func=_cmd_silence_add)
    ls = ssub.add_parser("list", help="list active and pending silences")
    ls.add_argument("--all", action="store_true", help="include expired silences")
    ls.add_argument("--json", action="store_true", help="print the silences as a JSON list")
    ls.set_defaults(func=_cmd_silence_list)
    exp = ssub.add_parser("expire", help="end a silence now")
    exp.add_argument("id")
    exp.set_defaults(func=_cmd_silence_expire)
    for sp in (add, ls, exp):
        sp.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")


def _sample_alert(now: datetime) -> Any:
    from ..core import Alert

    return Alert(
        rule="WatcherTestNotification",
        group="watcher",
        labels=Labels({"severity": "info", "tenant": "example"}),
        state=AlertState.FIRING,
        active_at=now - timedelta(minutes=12),
        fired_at=now - timedelta(minutes=2),
        last_eval=now,
        value=12.34,
        expected=1.2,
        lower=0.8,
        upper=2.1,
        score=0.97,
        annotations={
            "summary": "test notification from `watcher notify test`: spend $12.34/h, expected ≤ $2.10/h",
            "unit": "USD/h",
        },
        traces=(TraceRef("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0.42, now, "sample"),),
    )


def _sample_chart(now: datetime) -> list[tuple[str, bytes]]:
    """Return the sample alert's chart as attachments: 2 hours of a normal series, then the spike."""
    import math

    from ..core import Verdict
    from ..notify.charts import CHART_NAME, chart_snapshot, snapshot_png

    start = now.timestamp() - 120 * 60
    points = []
    for i in range(121):
        normal = 1.2 + 0.3 * math.sin(i / 9)
        value = 12.34 if i >= 110 else normal
        points.append(
            Verdict(ts=start + 60 * i, value=value, expected=1.2, lower=0.8, upper=2.1, anomalous=i >= 110)
        )
    png = snapshot_png(chart_snapshot(points, title="WatcherTestNotification {tenant=example}", unit="USD/h"))
    return [(CHART_NAME, png)] if png is not None else []


def sample_dedup_key(receiver: str) -> str:
    """Return the dedup key of ``watcher notify test RECEIVER`` (the same with ``--resolved``)."""
    return hashlib.sha256(f"watcher notify test|{receiver}".encode()).hexdigest()[:32]


def _cmd_notify_test(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..notify.outbox import from_message, to_message
    from ..notify.receivers import build_receiver
    from ..notify.templates import render_notification

    settings = load_settings(args.config)
    rs = settings.receivers.get(args.receiver)
    if rs is None:
        known = ", ".join(sorted(settings.receivers))
        raise ConfigError(f"no receiver {args.receiver!r}; configured: {known}")
    receiver = build_receiver(args.receiver, rs, settings)
    now = datetime.now(UTC)
    kind = NotificationKind.RESOLVED if args.resolved else NotificationKind.FIRING
    alert = _sample_alert(now)
    if args.resolved:
        alert = replace(alert, state=AlertState.INACTIVE, resolved_at=now)
    rule_url = f"{settings.external_url.rstrip('/')}/rules/watcher/WatcherTestNotification"
    n = render_notification(
        alert,
        kind=kind,
        receiver=args.receiver,
        settings=settings,
        rule_url=rule_url,
        title_template=rs.title_template,
        body_template=rs.body_template,
    )
    # One test incident per receiver: `notify test` and `notify test --resolved` share the key, so
    # the resolve closes what the trigger opened (PagerDuty, Alertmanager, webhooks).
    n = replace(n, notification_id=uuid.uuid4().hex, dedup_key=sample_dedup_key(args.receiver))
    message = to_message(n)  # sent as the outbox would send it
    files = _sample_chart(now) if rs.attach_chart and getattr(receiver, "accepts_files", False) else []
    try:
        if files:
            receiver.send(from_message(message), files=files)  # type: ignore[call-arg]
        else:
            receiver.send(from_message(message))
    except NotifyError as exc:
        retry = "retryable" if exc.retryable else "not retryable"
        if args.json:
            doc = {"receiver": args.receiver, "kind": str(kind), "dedup_key": message["dedup_key"]}
            doc["accepted"] = False
            doc |= {"reason": str(exc.reason), "retryable": exc.retryable, "error": str(exc)}
            print(json.dumps(doc, indent=2, ensure_ascii=False))
        else:
            print(f"{args.receiver}: FAILED ({exc.reason}, {retry}): {exc}")
        return 1
    response = getattr(receiver, "last_response", None)
    if args.json:
        doc = {"receiver": args.receiver, "kind": str(kind), "dedup_key": message["dedup_key"]}
        doc |= {"accepted": True, "chart": bool(files)}
        doc["response"] = str(response) if response else None
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    what = f"{kind} test notification" + (" with a chart" if files else "")
    print(f"{args.receiver}: accepted {what}" + (f" — {response}" if response else ""))
    return 0


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from ..notify.deadletter import list_dead_letters, requeue_dead_letter

    store = _open(args.config)
    try:
        if args.requeue is not None:
            if not requeue_dead_letter(store, args.requeue, datetime.now(UTC)):
                print(f"no dead letter with id {args.requeue}", file=sys.stderr)
                return 1
            print(f"dead letter {args.requeue} queued again; the running daemon delivers it")
            return 0
        letters = list_dead_letters(store, limit=args.limit, receiver=args.receiver)
    finally:
        store.close()
    if args.json:
        doc = [
            {
                "id": d.id,
                "created_at": _iso(d.created_at),
                "receiver": d.receiver,
                "reason": d.reason,
                "attempts": d.attempts,
                "title": d.title,
                "error": d.error,
            }
            for d in letters
        ]
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    for d in letters:
        when = d.created_at.strftime("%Y-%m-%d %H:%M UTC")
        print(f"{d.id}  {when}  {d.receiver}  {d.reason} after {d.attempts} attempt(s)  {d.title}")
        if d.error:
            print(f"    {d.error}")
    if not letters:
        print("no dead letters")
    return 0


def add_notify_parser(sub: Any) -> None:
    """Add ``notify test RECEIVER`` and ``notify dead-letters`` to the ``watcher`` subcommands."""
    p = sub.add_parser("notify", help="notification tools")
    nsub = p.add_subparsers(dest="notify_command", required=True)
    test = nsub.add_parser("test", help="send a realistic sample alert to RECEIVER and show its answer")
    test.add_argument("receiver")
    test.add_argument("--resolved", action="store_true", help="send the resolve of the sample")
    test.add_argument("--json", action="store_true", help="print the outcome as JSON")
    test.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")
    test.set_defaults(func=_cmd_notify_test)
    dead = nsub.add_parser(
        "dead-letters", help="list the notifications given up (newest first), or requeue one"
    )
    dead.add_argument("--receiver", help="only this receiver's")
    dead.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    dead.add_argument(
        "--requeue", type=int, metavar="ID", help="deliver dead letter ID again (fresh max_age)"
    )
    dead.add_argument("--json", action="store_true", help="print the dead letters as a JSON list")
    dead.add_argument("--config", "-c", help="settings file (default: ./watcher.yaml if present)")
    dead.set_defaults(func=_cmd_dead_letters)
