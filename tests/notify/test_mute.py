"""Silences (and their CLI), maintenance windows and inhibition mute exactly the matching alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.notify.factory import T0, SqliteStore, firing, make_settings
from watcher.cli import main
from watcher.config import InhibitRule, MaintenanceWindow
from watcher.notify.maintenance import is_open
from watcher.notify.pipeline import Notifier
from watcher.notify.receivers.base import RecordingReceiver
from watcher.notify.silences import parse_matcher

M = timedelta(minutes=1)

# Saturday 2026-11-28 23:30 in Berlin is 22:30 UTC (CET, UTC+1)
WINDOW = MaintenanceWindow(
    name="weekend-deploys",
    matchers=["tenant=acme"],
    time_zone="Europe/Berlin",
    weekdays=["sat"],
    start="23:00",
    end="02:00",
)


@pytest.mark.parametrize(
    ("utc_time", "open_"),
    [
        ("2026-11-28T21:59", False),  # Sat 22:59 Berlin
        ("2026-11-28T22:00", True),  # Sat 23:00 Berlin: opens
        ("2026-11-29T00:59", True),  # Sun 01:59 Berlin: still Saturday's window
        ("2026-11-29T01:00", False),  # Sun 02:00 Berlin: closed
        ("2026-11-29T22:30", False),  # Sun 23:30 Berlin: not a window day
        ("2026-06-27T21:30", True),  # Sat 23:30 Berlin in summer time (UTC+2)
        ("2026-06-27T22:30", True),
    ],
)
def test_maintenance_window_is_time_zone_aware(utc_time: str, open_: bool) -> None:
    assert is_open(WINDOW, datetime.fromisoformat(utc_time).replace(tzinfo=UTC)) is open_


def test_maintenance_window_mutes_only_matching_alerts(store: SqliteStore) -> None:
    rec = RecordingReceiver("console")
    settings = make_settings(notify={"maintenance_windows": [WINDOW]})
    notifier = Notifier(store, settings, {"console": rec})
    at = datetime(2026, 11, 28, 22, 30, tzinfo=UTC)
    acme, globex = firing(active_at=at), firing(labels={"tenant": "globex"}, active_at=at)
    assert notifier.submit([(acme, []), (globex, [])], at) == 1
    assert notifier.submit([(acme, [])], at + timedelta(hours=3)) == 1  # window closed: now it is sent


INHIBIT = InhibitRule(
    source_matchers=["alertname=~SourceDown|ProviderOutage"],
    target_matchers=["severity!=page"],
    equal=["provider"],
)


def test_inhibition_mutes_symptoms_while_the_cause_fires(store: SqliteStore) -> None:
    rec = RecordingReceiver("console")
    notifier = Notifier(store, make_settings(notify={"inhibit_rules": [INHIBIT]}), {"console": rec})
    outage = firing("ProviderOutage", labels={"provider": "openai"})
    ttft = firing("TTFTAnomaly", labels={"provider": "openai", "model": "gpt-4o"})
    other = firing("TTFTAnomaly", labels={"provider": "anthropic", "model": "claude"})
    paged = firing("SpendAnomaly", labels={"provider": "openai", "severity": "page"})
    # the cause arrives in another evaluation group's submission: still known
    assert notifier.submit([(outage, [])], T0) == 1
    assert notifier.submit([(ttft, []), (other, []), (paged, [])], T0 + M) == 2
    notifier.flush(T0 + M)
    assert {n.alert.rule + "/" + n.alert.labels["provider"] for n in rec.sent} == {
        "ProviderOutage/openai",
        "TTFTAnomaly/anthropic",
        "SpendAnomaly/openai",
    }
    from tests.notify.factory import resolved

    notifier.submit([(resolved(outage, T0 + 2 * M), [])], T0 + 2 * M)
    assert notifier.submit([(ttft, [])], T0 + 3 * M) == 1  # cause gone: the symptom is told


def test_an_alert_does_not_inhibit_itself() -> None:
    from watcher.notify.inhibit import inhibiting

    rule = InhibitRule(source_matchers=["alertname=X"], target_matchers=["alertname=X"])
    labels = {"alertname": "X"}
    assert inhibiting([rule], labels, [labels]) is None
    assert inhibiting([rule], labels, [{"alertname": "X", "a": "1"}]) is not None


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ("tenant=acme", "tenant", "=", "acme"),
        ("alertname=~Spend.*", "alertname", "=~", "Spend.*"),
        ('team!="ml"', "team", "!=", "ml"),
        ("model !~ gpt-4.*", "model", "!~", "gpt-4.*"),
    ],
)
def test_parse_matcher(text: str, name: str, op: str, value: str) -> None:
    m = parse_matcher(text)
    assert (m.name, m.op, m.value) == (name, op, value)


@pytest.mark.parametrize("bad", ["tenant", "=x", "a=~(", "9x=1"])
def test_parse_matcher_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_matcher(bad)


def test_silence_cli_add_list_expire_mutes_exactly_the_matching_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from watcher.store.db import migrate, open_store

    config = tmp_path / "watcher.yaml"
    config.write_text(f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\nserver: {{enabled: false}}\n")
    args = [
        "silence",
        "add",
        "--matcher",
        "tenant=acme",
        "--matcher",
        "alertname=~Spend.*",
        "--duration",
        "2h",
        "--author",
        "x",
        "--comment",
        "y",
        "--config",
        str(config),
    ]
    # a silence goes into the store the daemon reads: a mistyped path is refused, not created
    assert main(args) == 2 and not (tmp_path / "w.db").exists()
    capsys.readouterr()
    created = open_store(f"sqlite:///{tmp_path}/w.db")
    migrate(created)
    created.close()
    assert main(args) == 0
    line = capsys.readouterr().out
    sid = line.split()[0]
    assert 'tenant="acme"' in line and 'alertname=~"Spend.*"' in line and "by x: y" in line
    assert main(["silence", "list", "--config", str(config)]) == 0
    assert sid in capsys.readouterr().out

    store = open_store(f"sqlite:///{tmp_path}/w.db")
    try:
        rec = RecordingReceiver("console")
        notifier = Notifier(store, make_settings(), {"console": rec})
        now = datetime.now(UTC)
        hits = [
            firing("SpendAnomaly", labels={"tenant": "acme"}, active_at=now),  # muted
            firing("SpendSpike", labels={"tenant": "acme"}, active_at=now),  # muted (regex)
            firing("SpendAnomaly", labels={"tenant": "globex"}, active_at=now),
            firing("TTFTAnomaly", labels={"tenant": "acme"}, active_at=now),
        ]
        assert notifier.submit([(a, []) for a in hits], now) == 2
        notifier.flush(now)
        assert sorted((n.alert.rule, n.alert.labels["tenant"]) for n in rec.sent) == [
            ("SpendAnomaly", "globex"),
            ("TTFTAnomaly", "acme"),
        ]
        assert main(["silence", "expire", sid, "--config", str(config)]) == 0
        assert "expired" in capsys.readouterr().out
        assert notifier.submit([(hits[0], [])], now + timedelta(seconds=5)) == 1
    finally:
        store.close()
    assert main(["silence", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "no silences"
    assert main(["silence", "add", "--matcher", "bad", "--config", str(config)]) == 2


SOURCE_DOWN = InhibitRule(
    source_matchers=["alertname=WatcherSourceDown"],
    target_matchers=["alertname!=WatcherSourceDown"],
    equal=["source"],
)


def test_inhibition_holds_back_repeats_and_they_resume_when_the_cause_resolves(store: SqliteStore) -> None:
    rec = RecordingReceiver("console")
    notifier = Notifier(store, make_settings(notify={"inhibit_rules": [SOURCE_DOWN]}), {"console": rec})
    symptom = firing("TTFTAnomaly", labels={"source": "prom-a", "model": "gpt-4o"})
    cause = firing("WatcherSourceDown", labels={"source": "prom-a"}, active_at=T0 + M)
    assert notifier.submit([(symptom, [])], T0) == 1  # notified before the cause existed
    assert notifier.submit([(cause, [])], T0 + M) == 1
    notifier.flush(T0 + M)
    assert [n.alert.rule for n in rec.sent] == ["TTFTAnomaly", "WatcherSourceDown"]
    rec.sent.clear()
    # the symptom's repeat_interval (4h) passes while the cause fires: neither the group timer
    # nor the next evaluation's submission sends a repeat
    for step in (4 * 60 + 1, 4 * 60 + 5, 4 * 60 + 30):
        now = T0 + step * M
        notifier.submit([(cause, [])], now)
        assert notifier.submit([(symptom, [])], now) == 0
        notifier.flush(now)
    assert [n.alert.rule for n in rec.sent if n.alert.rule == "TTFTAnomaly"] == []
    from tests.notify.factory import resolved

    back = T0 + 5 * 60 * M
    notifier.submit([(resolved(cause, back), [])], back)
    assert notifier.submit([(symptom, [])], back + M) == 1  # cause gone: the repeat is sent
    notifier.flush(back + M)
    assert [n.alert.rule for n in rec.sent if n.alert.rule == "TTFTAnomaly"] == ["TTFTAnomaly"]
