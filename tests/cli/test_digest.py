"""``watcher digest --preview|--send``: what the cost digest says, and its exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from tests.httpreceiver import HTTPReceiver
from watcher.cli import main
from watcher.config import load_settings
from watcher.notify.pipeline import Notifier
from watcher.store.db import open_store
from watcher.store.tables import Call, OutboxRow

AT = "2026-12-07T12:00:00Z"
RULES = """\
groups:
  - name: llm-budget
    interval: 5m
    rules:
      - alert: TenantBudgetBurn
        source: calls
        query: {agg: sum, field: cost_usd, window: 5m, by: [tenant]}
        detector: {kind: budget, amount: 1000, amounts: {acme: 5000}}
"""


def _setup(tmp_path: Path, url: str = "http://127.0.0.1:9") -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "budget.yaml").write_text(RULES)
    config = tmp_path / "watcher.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        f"rules: ['{tmp_path}/rules']\n"
        f"receivers:\n  hook: {{type: webhook, url: '{url}/digest'}}\n"
        "route: {receivers: [hook]}\n"
        "notify: {cost_digest: {receivers: [hook], at: '08:00'}}\n"
    )
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with store.session() as s:
        s.add_all(
            Call(
                trace_id=f"a{h}",
                ts=start + timedelta(hours=h + 1),
                tenant="acme",
                model="gpt-4o",
                cost_usd=20.0,
            )
            for h in range(156)
        )
        s.commit()
    store.close()
    return config


def test_preview_prints_the_digest_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _setup(tmp_path)
    assert main(["digest", "--preview", "--config", str(config), "--at", AT]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--- to hook: [COST DIGEST] 2026-12-07: LLM spend: $480 in the last 24h\n")
    assert "  acme: $3,120 of $5,000 (62%); at this rate acme exceeds $5,000 on Dec 11" in out
    assert "  gpt-4o: $480" in out
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    with store.session() as s:
        assert s.exec(select(OutboxRow)).all() == []
    store.close()


def test_preview_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _setup(tmp_path)
    assert main(["digest", "--preview", "--json", "-c", str(config), "--at", AT, "--receiver", "hook"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["receiver"] == "hook" and len(doc["dedup_key"]) == 32
    assert "at this rate acme exceeds $5,000 on Dec 11" in doc["body"]


def test_send_queues_it_and_the_outbox_delivers_it(
    tmp_path: Path, http_receiver: HTTPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _setup(tmp_path, http_receiver.url)
    assert main(["digest", "--send", "--config", str(config), "--at", AT]) == 0
    assert capsys.readouterr().out.startswith("--- queued for hook: [COST DIGEST]")
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    try:
        assert (
            Notifier(store, load_settings(str(config))).flush(datetime(2026, 12, 7, 12, tzinfo=UTC)).sent == 1
        )
    finally:
        store.close()
    (path, _, body) = http_receiver.requests[0]
    assert path == "/digest" and body["alertname"] == "WatcherCostDigest"
    assert "at this rate acme exceeds $5,000 on Dec 11" in body["body"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preview", "--at", "yesterday"], "--at: not an ISO-8601 time: 'yesterday'"),
        (["--send", "--receiver", "nope"], "unknown receiver(s) nope; configured: hook"),
    ],
)
def test_bad_usage_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    config = _setup(tmp_path)
    assert main(["digest", "--config", str(config), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_mode_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["digest", "--config", str(_setup(tmp_path))])
    assert exc.value.code == 2
    assert "one of the arguments --preview --send is required" in capsys.readouterr().err


def test_a_missing_store_exits_2_and_bad_rules_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _setup(tmp_path)
    (tmp_path / "w.db").unlink()
    assert main(["digest", "--preview", "--config", str(config), "--at", AT]) == 2
    _setup_again = tmp_path / "rules" / "budget.yaml"
    _setup_again.write_text(RULES.replace("by: [tenant]", "by: [user_id]"))
    assert main(["digest", "--preview", "--config", str(config), "--at", AT]) == 1
    err = capsys.readouterr().err
    assert "budget.yaml:5:9:" in err and "by: user_id makes one series per user_id" in err
