"""``import watcher.instrument`` loads no ORM, no YAML parser, no price table and no Prometheus client;
``configure()`` loads the price table on a background thread.

Each check runs in a fresh interpreter (the test process has imported everything already). Speed is
measured by `python -X importtime` (docs/benchmarks.md), not here: these tests pin what is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from watcher.instrument.hooks import _LIMITS
from watcher.store.tables import Call, Payload, Score

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "sqlmodel", "yaml", "genai_prices", "pydantic", "prometheus_client", "watcher.store")


def loaded_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; return which of ``HEAVY`` it left in ``sys.modules``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WATCHER_PRICING_FILE", None)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    result: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_loads_nothing_heavy() -> None:
    assert loaded_after("import watcher.instrument") == dict.fromkeys(HEAVY, False)


def test_a_call_without_a_store_loads_no_orm() -> None:
    code = (
        "from watcher import instrument\n"
        "with instrument.llm_call(provider='openai', model='gpt-4o-mini') as rec:\n"
        "    rec.input_tokens, rec.output_tokens = 10, 2\n"
        "instrument.flush()\n"
    )
    loaded = loaded_after(code)
    assert not loaded["sqlalchemy"] and not loaded["sqlmodel"] and not loaded["watcher.store"]
    assert loaded["prometheus_client"] and loaded["genai_prices"]  # metrics and the price of the call


def test_a_store_loads_the_tables_with_its_writer(tmp_path: Path) -> None:
    code = (
        "import sqlalchemy\n"
        "from watcher import instrument\n"
        "import sys; assert 'watcher.store' not in sys.modules\n"
        f"instrument.configure(sqlalchemy.create_engine('sqlite:///{tmp_path}/w.db'))\n"
    )
    assert loaded_after(code)["watcher.store"]


def test_configure_warms_the_price_table_in_the_background_without_a_call() -> None:
    code = (
        "from watcher import instrument\n"
        "from watcher.instrument import pricing\n"
        "instrument.configure(metrics=False)\n"
        "thread = pricing._warming\n"
        "assert thread is not None and thread.daemon and thread.name == 'watcher-prices'\n"
        "thread.join(60)\n"
        "assert pricing._genai, 'the snapshot is loaded'\n"
        "instrument.configure(metrics=False)\n"
        "assert pricing._warming is thread  # once per process\n"
    )
    loaded = loaded_after(code)
    assert loaded["genai_prices"] and not loaded["sqlalchemy"] and not loaded["prometheus_client"]


def test_configure_can_leave_the_price_table_to_the_first_call() -> None:
    code = "from watcher import instrument\ninstrument.configure(metrics=False, warm_prices=False)\n"
    assert not loaded_after(code)["genai_prices"]


def test_the_hooks_column_limits_match_the_tables() -> None:
    for model in (Call, Score, Payload):
        table: sa.Table = model.__table__  # type: ignore[attr-defined]
        lengths = {c.name: c.type.length for c in table.columns if getattr(c.type, "length", None)}
        assert _LIMITS[table.name] == lengths, table.name
