"""A grep for planted secrets across every output (issue 18): 0 secrets, 0 tracebacks.

Known secrets are planted in the config file and the environment (the ingest, admin, read and
payload tokens, the database password in ``?password=`` and ``user:pw@`` form, a webhook URL
path, an HMAC secret, a Slack signing secret, a PagerDuty routing key, an Apprise URL, a PromQL
bearer token). Then the main outputs run: ``watcher check``, ``watcher db stats``, ``watcher run
--once`` (stdout and the stderr logs at debug level), the status page and its rule page,
``/api/v1/*`` (payloads too), ``/readyz`` and ``/metrics``, and every one of them again on a
store that fails. None may show a secret, or a fragment of one, or a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from watcher.config import load_settings
from watcher.daemon import Daemon
from watcher.redact import Masker, display_url, url_secrets
from watcher.store.db import Store, open_store
from watcher.store.tables import Call, Payload
from watcher.web.app import build_app

ROOT = Path(__file__).resolve().parent.parent
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

INGEST = "PLANTED-ingest-token-7f3a9c"
ADMIN = "PLANTED-admin-token-1b2c3d"
READ = "PLANTED-read-token-9e8d7c"
PAYLOAD = "PLANTED-payload-token-5a6b7c8d"
DB_PASSWORD = "PLANTEDdbpw4217"
DB_USERPW = "PLANTEDuserpw99"
HOOK_PATH = "PLANTED-webhook-path-x1y2"
HMAC = "PLANTED-hmac-signing-secret"
ROUTING_KEY = "PLANTEDroutingkey0123456789abcd"
APPRISE_PATH = "PLANTED-apprise-token-q9w8"
PROM_BEARER = "PLANTED-prom-bearer-z7"
SLACK_PATH = "PLANTED-slack-hook-m4n5"
SLACK_SIGNING = "PLANTED-slack-signing-k2j3"
SECRETS = (
    INGEST,
    ADMIN,
    READ,
    PAYLOAD,
    DB_PASSWORD,
    DB_USERPW,
    HOOK_PATH,
    HMAC,
    ROUTING_KEY,
    APPRISE_PATH,
    PROM_BEARER,
    SLACK_PATH,
    SLACK_SIGNING,
)

RULES = """\
groups:
  - name: planted
    interval: 1m
    rules:
      - alert: CallsSeen
        source: calls
        query: {agg: count, window: 1h}
        detector: {kind: threshold, above: 0}
        for: 0s
        labels: {severity: page}
        annotations: {summary: "{{ value }} calls"}
      - alert: PromDown
        expr: sum(rate(llm_cost_usd_total[5m]))
        detector: {kind: threshold, above: 1}
"""


def plant(tmp_path: Path, store_url: str) -> tuple[Path, dict[str, str]]:
    """Write a config file and return it with the environment that carries the rest of the secrets."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES)
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(
        f"""\
rules: [{rules}]
log_level: debug
log_format: text
server: {{port: 0, admin_token: {ADMIN}}}
prometheus:
  main: {{url: "http://127.0.0.1:1", bearer_token: {PROM_BEARER}, timeout_s: 1}}
receivers:
  hook: {{type: webhook, url: "http://127.0.0.1:9/hooks/{HOOK_PATH}", secret: {HMAC}, timeout_s: 1}}
  pd: {{type: pagerduty, routing_key: {ROUTING_KEY}, url: "http://127.0.0.1:9/v2/enqueue", timeout_s: 1}}
  chat: {{type: apprise, urls: ["json://127.0.0.1:9/{APPRISE_PATH}"]}}
  slack: {{type: slack, url: "http://127.0.0.1:9/services/{SLACK_PATH}", timeout_s: 1}}
route: {{receivers: [hook, pd, chat, slack]}}
notify: {{retry_initial: 1s}}
"""
    )
    env = {
        "WATCHER_STORE__URL": store_url,
        "WATCHER_SERVER__INGEST_TOKEN": INGEST,
        "WATCHER_SERVER__READ_TOKEN": READ,
        "WATCHER_SERVER__SLACK_SIGNING_SECRET": SLACK_SIGNING,
        "WATCHER_SERVER__PAYLOAD_TOKENS": f'{{"alice": "{PAYLOAD}"}}',
    }
    return cfg, env


def assert_clean(where: str, text: str) -> None:
    """Fail when ``text`` shows a planted secret (or a 6+ character piece of one) or a traceback."""
    assert "Traceback" not in text, f"{where}: traceback\n{text[-2000:]}"
    for secret in SECRETS:
        pieces = {secret[i : i + 12] for i in range(0, len(secret) - 11)}
        leaked = [p for p in pieces if p in text]
        assert not leaked, f"{where}: shows {secret!r} ({leaked[:2]})\n{text[-2000:]}"


def watcher(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        env=full,
        cwd=cfg.parent,
        timeout=180,
    )


@pytest.fixture
def planted(pg_url: str, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], str]]:
    url = f"{pg_url}?password={DB_PASSWORD}"  # the test server trusts local connections
    store = open_store(url)
    with store.session() as s:
        s.add(
            Call(trace_id=TRACE, ts=datetime.now(UTC) - timedelta(minutes=5), model="gpt-4o", tenant="acme")
        )
        s.add(Payload(trace_id=TRACE, ts=datetime.now(UTC), prompt="hi [EMAIL]", response="hello"))
        s.commit()
    store.close()
    cfg, env = plant(tmp_path, url)
    yield cfg, env, url


def test_cli_outputs_show_no_secret(planted: tuple[Path, dict[str, str], str]) -> None:
    cfg, env, _ = planted
    outputs = {
        "watcher check": watcher(cfg, env, "check"),
        "watcher db stats": watcher(cfg, env, "db", "stats"),
        "watcher db stats --json": watcher(cfg, env, "db", "stats", "--json"),
        "watcher run --once": watcher(cfg, env, "run", "--once", "--drain-timeout", "3"),
        "watcher payloads show": watcher(cfg, env, "payloads", "show", TRACE),
        "watcher payloads audit": watcher(cfg, env, "payloads", "audit"),
    }
    assert outputs["watcher check"].returncode == 0, outputs["watcher check"].stdout
    assert outputs["watcher db stats"].returncode == 0, outputs["watcher db stats"].stderr
    run = outputs["watcher run --once"]
    assert "rule planted/PromDown" in run.stderr  # the PromQL endpoint is down: logged, without its token
    for receiver in ("hook", "pd", "chat"):  # each receiver was tried (and failed): logged without its secret
        assert f"delivery to {receiver} failed" in run.stderr, run.stderr[-2000:]
    assert "1 firing alert(s)" in run.stdout
    assert "password=***" in outputs["watcher db stats"].stdout
    for name, done in outputs.items():
        assert_clean(f"{name} (exit {done.returncode})", done.stdout + done.stderr)


def test_http_outputs_show_no_secret(
    planted: tuple[Path, dict[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, env, url = planted
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(cfg)
    daemon = Daemon(settings, store=open_store(url))
    read = {"Authorization": f"Bearer {READ}"}
    try:
        daemon.run_once(drain_s=2)
        with TestClient(build_app(daemon), raise_server_exceptions=False) as c:
            pages = {
                "/": c.get("/", headers=read),
                "/rules/planted/CallsSeen": c.get("/rules/planted/CallsSeen", headers=read),
                "/rules/planted/PromDown": c.get("/rules/planted/PromDown", headers=read),
                "/api/v1/alerts": c.get("/api/v1/alerts", headers=read),
                "/api/v1/rules": c.get("/api/v1/rules", headers=read),
                "/api/v1/silences": c.get("/api/v1/silences", headers=read),
                "/api/v1/payloads": c.get(
                    f"/api/v1/payloads/{TRACE}", headers={"Authorization": f"Bearer {PAYLOAD}"}
                ),
                "/readyz": c.get("/readyz"),
                "/metrics": c.get("/metrics"),
                "/openapi.json": c.get("/openapi.json"),
                "silence with the ingest token": c.post(
                    "/api/v1/silences",
                    json={"matchers": ["tenant=acme"], "duration": "1h"},
                    headers={"Authorization": f"Bearer {INGEST}"},
                ),
                "bad token": c.get("/api/v1/alerts", headers={"Authorization": f"Bearer {READ}x"}),
                "bad body": c.post(
                    "/api/v1/calls", content=b"{", headers={"Authorization": f"Bearer {INGEST}"}
                ),
            }
            assert pages["/"].status_code == 200 and "CallsSeen" in pages["/"].text
            assert pages["/api/v1/payloads"].status_code == 200
            for name, r in pages.items():
                assert r.status_code < 500 or name == "/readyz", (name, r.status_code)
                assert_clean(f"GET {name} ({r.status_code})", r.text + str(dict(r.headers)))

            # The same outputs with the store failing (PostgreSQL gone, both password forms in its URL).
            bad = f"postgresql+psycopg://watcher:{DB_USERPW}@127.0.0.1:1/db?password={DB_PASSWORD}&connect_timeout=1"
            working = daemon.store
            daemon.store = Store(
                sa.create_engine(bad), display_url(bad), "postgresql", Masker(url_secrets(bad))
            )
            try:
                failing = {
                    "/": c.get("/", headers=read),
                    "/readyz": c.get("/readyz"),
                    "/metrics": c.get("/metrics"),
                    "/api/v1/silences": c.get("/api/v1/silences", headers=read),
                    "/api/v1/payloads": c.get(
                        f"/api/v1/payloads/{TRACE}", headers={"Authorization": f"Bearer {PAYLOAD}"}
                    ),
                    "/api/v1/scores": c.post(
                        "/api/v1/scores",
                        json={"trace_id": TRACE, "name": "x", "value": 1},
                        headers={"Authorization": f"Bearer {INGEST}"},
                    ),
                }
            finally:
                daemon.store.close()
                daemon.store = working
            assert failing["/readyz"].status_code == 503 and "127.0.0.1:1" in failing["/readyz"].text
            assert failing["/api/v1/payloads"].status_code == 503
            for name, r in failing.items():
                assert r.status_code != 500, (name, r.text[:300])
                assert_clean(f"store down: GET {name} ({r.status_code})", r.text)
    finally:
        daemon.close()


def test_a_failing_store_shows_no_secret(tmp_path: Path) -> None:
    bad = f"postgresql+psycopg://watcher:{DB_USERPW}@127.0.0.1:1/db?password={DB_PASSWORD}&connect_timeout=1"
    cfg, env = plant(tmp_path, bad)
    for args in (("db", "stats"), ("run", "--once"), ("payloads", "audit"), ("payloads", "show", TRACE)):
        done = watcher(cfg, env, *args)
        assert done.returncode == 1, (args, done.stderr)
        assert "127.0.0.1:1" in done.stderr, done.stderr
        assert_clean(f"store down: watcher {' '.join(args)}", done.stdout + done.stderr)
