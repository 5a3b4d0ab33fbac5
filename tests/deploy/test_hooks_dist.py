"""The hooks-only distribution (hooks/pyproject.toml): built offline, its files, its dependencies,
and that it imports and records a call with none of the daemon's dependencies importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
LIGHT = {"opentelemetry-api>=1.25", "prometheus-client>=0.20", "genai-prices>=0.2.3"}
DAEMON_ONLY = (
    "sqlalchemy", "sqlmodel", "fastapi", "uvicorn", "statsmodels", "scipy", "numpy", "matplotlib",
    "apprise", "pydantic_settings", "schedule", "yaml", "jinja2", "rich", "prometheus_api_client",
    "promql_parser", "re2", "opentelemetry.sdk", "opentelemetry.proto",
)  # fmt: skip
PROBE = """
import importlib.abc, json, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{{name}} is a daemon dependency")
sys.meta_path.insert(0, Block())
import watcher, watcher.instrument as instrument
from prometheus_client import CollectorRegistry
registry = CollectorRegistry()
instrument.configure(registry=registry)
with instrument.llm_call(provider="openai", model="gpt-4o-mini") as rec:
    rec.input_tokens, rec.output_tokens = 1000, 100
with instrument.retrieval("faq-index", k=2) as r:
    r.add("doc-1", 0.9)
assert instrument.flush(30)
print(json.dumps({{
    "file": watcher.__file__,
    "cost": rec.cost_usd,
    "known": rec.cost_known,
    "requests": registry.get_sample_value("llm_requests_total", {{"provider": "openai",
        "model": "gpt-4o-mini", "operation": "chat", "tenant": "", "feature": "", "outcome": "ok"}}),
    "errors": instrument.hooks.stats().errors,
}}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="hatchling (test extra) builds the wheel offline")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [*PIP_WHEEL, "--wheel-dir", str(out), str(ROOT / "hooks")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = out.glob("watcher_llm_hooks-*.whl")
    return built


def test_wheel_holds_the_hooks_and_the_tables_only(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {n for n in names if not n.startswith("watcher_llm_hooks-")}
    instrument = {f"watcher/instrument/{p.name}" for p in (ROOT / "watcher" / "instrument").glob("*.py")}
    assert package == instrument | {
        "watcher/__init__.py",
        "watcher/store/__init__.py",
        "watcher/store/tables.py",
    }


def test_wheel_depends_on_the_light_libraries_only(wheel: Path) -> None:
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    lines = zipfile.ZipFile(wheel).read(meta).decode().splitlines()
    required = {
        ln.split(": ", 1)[1].lower()
        for ln in lines
        if ln.startswith("Requires-Dist:") and "extra ==" not in ln
    }
    assert required == {d.lower() for d in LIGHT}
    assert "Name: watcher-llm-hooks" in lines and "Provides-Extra: store" in lines


def test_it_imports_and_records_without_the_daemon_dependencies(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("WATCHER_PRICING_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(blocked=DAEMON_ONLY)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the checkout: only the wheel's `watcher` is importable
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(site))
    assert got["known"] and got["cost"] > 0 and got["requests"] == 1.0 and got["errors"] == 0
