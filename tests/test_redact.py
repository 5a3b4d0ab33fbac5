"""The one secret-redaction helper and the commands that print the store (issue 18, finding 3).

``store.url: postgresql+psycopg://user@host/db?password=S`` is a valid psycopg URL whose password
SQLAlchemy's ``hide_password`` does not mask: ``watcher db stats``, ``watcher cluster status`` and
start-up errors printed it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from watcher.cli import main
from watcher.errors import StoreError
from watcher.redact import Masker, display_url, redact_headers, secret_values, url_secrets
from watcher.store.db import open_store

PLANTED = "Planted-S3cret-Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://user@host/db?password=S3cretPw",
            "postgresql+psycopg://user@host/db?password=***",
        ),
        ("postgresql+psycopg://u:pw12@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        (
            "postgresql+psycopg://u:p%40ss@h/db?sslmode=require&sslpassword=KEYPW",
            "postgresql+psycopg://u:***@h/db?sslmode=require&sslpassword=***",
        ),
        ("http://x.test/a?token=T0ken&x=1", "http://x.test/a?token=***&x=1"),
        ("https://x.test/a?api_key=K&Signature=abc", "https://x.test/a?api_key=***&Signature=***"),
        ("sqlite:///var/lib/watcher/watcher.db", "sqlite:///var/lib/watcher/watcher.db"),
        ("sqlite://", "sqlite://"),
        ("not a url", "***"),
    ],
)
def test_display_url(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_url_secrets_and_masker() -> None:
    secrets = url_secrets("postgresql://u:p%40ssword@h/db?password=S3cretPw&sslmode=require")
    assert {"p@ssword", "p%40ssword", "S3cretPw"} <= secrets and "require" not in secrets
    mask = Masker(secrets)
    assert mask("failed for p@ssword and S3cretPw") == "failed for *** and ***"


def test_headers_and_secretstr() -> None:
    shown = redact_headers(
        {"Authorization": "Bearer x", "X-Scope-OrgID": "t1", "X-Api-Key": "k", "Cookie": "c"}
    )
    assert shown == {"Authorization": "***", "X-Scope-OrgID": "t1", "X-Api-Key": "***", "Cookie": "***"}
    values = set(
        secret_values({"a": SecretStr(f"postgresql://u@h/d?password={PLANTED}"), "b": [SecretStr("tok")]})
    )
    assert PLANTED in values and "tok" in values


def _config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "watcher.yaml"
    cfg.write_text(f"store: {{url: '{url}'}}\n")
    return cfg


def test_db_stats_and_cluster_status_hide_a_query_password(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, f"{pg_url}?password={PLANTED}")
    for argv in (
        ["db", "stats", "-c", str(cfg)],
        ["db", "stats", "-c", str(cfg), "--json"],
        ["cluster", "status", "-c", str(cfg)],
        ["cluster", "status", "-c", str(cfg), "--json"],
    ):
        assert main(argv) == 0, argv
        out = capsys.readouterr()
        assert PLANTED not in out.out + out.err, argv
        assert "password=***" in out.out, argv


def test_startup_error_hides_both_passwords(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://watcher:{PLANTED}1@127.0.0.1:1/db?password={PLANTED}&connect_timeout=1"
    with pytest.raises(StoreError) as info:
        open_store(url)
    assert PLANTED not in str(info.value) and "127.0.0.1:1" in str(info.value)
    cfg = _config(tmp_path, url)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for argv in (["db", "stats", "-c", str(cfg)], ["run", "--once", "-c", str(cfg)]):
        done = subprocess.run(
            [sys.executable, "-m", "watcher", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode != 0
        text = done.stdout + done.stderr
        assert PLANTED not in text and "Traceback" not in text, text
