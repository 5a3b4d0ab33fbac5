"""Grouping on a virtual clock: group_wait, group_interval, repeat_interval and resolve, table-driven."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from tests.notify.factory import T0, SqliteStore, firing, make_settings, resolved
from watcher.config import ReceiverSettings, RouteSettings
from watcher.core import Alert
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers.base import RecordingReceiver
from watcher.store.tables import OutboxRow

S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)


def _a(model: str, tenant: str = "acme") -> Alert:
    return firing(labels={"tenant": tenant, "model": model}, active_at=T0)


A, B, C = _a("a"), _a("b"), _a("c")
D = _a("d", tenant="globex")
RA = resolved(A, T0 + 12 * M)
RB, RC = resolved(B, T0 + 80 * M), resolved(C, T0 + 80 * M)

# (time since T0, alerts the engine hands over, messages expected: [(title prefix, firing, resolved)])
STEPS: list[tuple[timedelta, list[Alert], list[tuple[str, int, int]]]] = [
    (0 * S, [A], []),  # group acme created: waits group_wait
    (10 * S, [A, B], []),  # joins the waiting group
    (30 * S, [A, B], [('[FIRING:2] SpendAnomaly {tenant="acme"}', 2, 0)]),  # group_wait over
    (1 * M, [A, B, C], []),  # new alert waits for group_interval
    (5 * M, [A, B, C], []),
    (5 * M + 30 * S, [A, B, C], [("[FIRING:3]", 3, 0)]),  # group_interval: new alerts in group
    (6 * M, [A, B, C, D], []),  # another tenant: its own group, own group_wait
    (6 * M + 30 * S, [A, B, C, D], [('[FIRING] SpendAnomaly {model="d", tenant="globex"}', 1, 0)]),
    (10 * M + 30 * S, [A, B, C, D], []),  # nothing new
    (12 * M, [RA, B, C, D], []),
    (15 * M + 30 * S, [RA, B, C, D], [("[FIRING:2]", 2, 1)]),  # the resolve rides with the firing ones
    (20 * M + 30 * S, [RA, B, C, D], []),  # resolved only once
    (66 * M + 30 * S, [B, C, D], [('[FIRING] SpendAnomaly {model="d"', 1, 0)]),  # globex repeat (1h)
    (75 * M + 30 * S, [B, C, D], [("[FIRING:2]", 2, 0)]),  # acme repeat_interval elapsed
    (80 * M, [RB, RC, D], []),
    (80 * M + 30 * S, [RB, RC, D], [("[RESOLVED:2]", 0, 2)]),  # acme all resolved
    (86 * M, [RB, RC, D], []),
]


def test_grouping_timing_table(store: SqliteStore) -> None:
    rec = RecordingReceiver("slack")
    rs = ReceiverSettings(
        type="console",
        group_by=["alertname", "tenant"],
        group_wait=30 * S,
        group_interval=5 * M,
        repeat_interval=H,
    )
    settings = make_settings(receivers={"slack": rs}, route=RouteSettings(receivers=["slack"]))
    notifier = Notifier(store, settings, {"slack": rec})
    keys: dict[str, set[str]] = {}
    for at, alerts, expected in STEPS:
        before = len(rec.sent)
        notifier.submit([(a, []) for a in alerts], T0 + at)
        notifier.flush(T0 + at)
        got = rec.sent[before:]
        assert len(got) == len(expected), (at, [n.title for n in got])
        for n, (title, n_firing, n_resolved) in zip(got, expected, strict=True):
            assert n.title.startswith(title), (at, n.title)
            statuses = [str(item.kind) for item in n.listed]
            assert (statuses.count("firing"), statuses.count("resolved")) == (n_firing, n_resolved), at
            assert n.group is not None
            keys.setdefault(n.group.labels["tenant"], set()).add(n.dedup_key)
    # one dedup key (PagerDuty incident) per group episode, different across groups
    assert len(keys["acme"]) == 1 and len(keys["globex"]) == 1 and keys["acme"] != keys["globex"]
    last = rec.sent[-1]
    assert last.kind == "resolved" and "**Resolved (2)**" in last.body


def test_group_message_lists_every_alert_with_its_value(store: SqliteStore) -> None:
    rec = RecordingReceiver("slack")
    rs = ReceiverSettings(type="console", group_by=["tenant"])
    settings = make_settings(receivers={"slack": rs}, route=RouteSettings(receivers=["slack"]))
    notifier = Notifier(store, settings, {"slack": rec})
    notifier.submit([(A, []), (B, [])], T0)
    notifier.flush(T0)
    (n,) = rec.sent
    assert n.body.count("value 12.35 (expected 1.20, band 0.80 – 2.10)") == 2
    assert '*SpendAnomaly* {model="a"}' in n.body and '*SpendAnomaly* {model="b"}' in n.body
    assert n.body.count("[trace 4bf92f35…](http://jaeger.test/trace/") == 2


def test_restart_does_not_renotify_a_notified_group(store: SqliteStore) -> None:
    rs = ReceiverSettings(type="console", group_by=["tenant"], group_wait=30 * S, group_interval=5 * M)
    settings = make_settings(receivers={"slack": rs}, route=RouteSettings(receivers=["slack"]))
    first = Notifier(store, settings, {"slack": RecordingReceiver("slack")})
    first.submit([(A, []), (B, [])], T0)
    first.submit([(A, []), (B, [])], T0 + 30 * S)
    again = Notifier(store, settings, {"slack": RecordingReceiver("slack")})  # a restarted process
    assert again.submit([(A, []), (B, [])], T0 + M) == 0
    assert again.submit([(A, []), (B, []), (C, [])], T0 + 5 * M + 30 * S) == 1  # resumes group_interval
    with store.session() as s:
        rows = list(s.exec(select(OutboxRow).order_by(OutboxRow.id)).all())  # type: ignore[arg-type]
    assert len(rows) == 2 and rows[0].dedup_key == rows[1].dedup_key


def test_a_route_overrides_grouping_for_the_alerts_it_sends(store: SqliteStore) -> None:
    from watcher.config import RouteRule

    pager, team = RecordingReceiver("pager"), RecordingReceiver("team")
    route = RouteSettings(
        receivers=["team"],
        routes=[
            RouteRule(
                match={"severity": "page"},
                receivers=["pager", "team"],
                group_by=["alertname"],
                group_wait=30 * S,
                group_interval=5 * M,
                repeat_interval=10 * M,
                **{"continue": True},
            ),
        ],
    )
    settings = make_settings(
        receivers={"pager": ReceiverSettings(type="console"), "team": ReceiverSettings(type="console")},
        route=route,
        notify={"group_by": None, "repeat_interval": 4 * H},
    )
    notifier = Notifier(store, settings, {"pager": pager, "team": team})
    pages = [firing(labels={"tenant": t, "severity": "page"}) for t in ("acme", "globex")]
    quiet = firing(labels={"tenant": "initech", "severity": "info"})

    def step(at: timedelta) -> tuple[list[str], list[str]]:
        before = len(pager.sent), len(team.sent)
        notifier.submit([(a, []) for a in (*pages, quiet)], T0 + at)
        notifier.flush(T0 + at)
        return [n.title for n in pager.sent[before[0] :]], [n.title for n in team.sent[before[1] :]]

    # The unrouted alert goes out at once, alone (notify: no grouping, no wait); the paging route
    # holds its alerts for its group_wait and sends them as one message per alertname.
    pager_new, team_new = step(0 * S)
    assert pager_new == [] and team_new == ['[FIRING] SpendAnomaly {severity="info", tenant="initech"}']
    pager_new, team_new = step(30 * S)
    assert pager_new == team_new == ["[FIRING:2] SpendAnomaly"]
    # The route's repeat_interval (10m), not notify's (4h), paces the repeats of its groups.
    assert step(5 * M + 30 * S) == ([], [])
    pager_new, team_new = step(10 * M + 30 * S)
    assert pager_new == team_new == ["[FIRING:2] SpendAnomaly"]
    assert step(2 * H) == (["[FIRING:2] SpendAnomaly"], ["[FIRING:2] SpendAnomaly"])
